//! Kernel cost of netmon's eBPF programs: the kernel's own run counters
//! (`kernel.bpf_stats_enabled`), read with `bpftool prog show -j`.
use std::{collections::BTreeMap, fs, process::Command};

use anyhow::Context as _;
use serde_json::Value;

use crate::cmd::output_of;

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// `kernel.bpf_stats_enabled=1` until dropped, then the value it had.
/// The counters cost two clock reads per program run, so they are off
/// unless someone measures.
pub struct StatsEnabled {
    before: String,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<Self> {
        let before = fs::read_to_string(SYSCTL).with_context(|| format!("cannot read {SYSCTL}"))?;
        fs::write(SYSCTL, "1").with_context(|| format!("cannot enable {SYSCTL}"))?;
        Ok(Self { before })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(err) = fs::write(SYSCTL, self.before.trim()) {
            eprintln!(
                "xtask: cannot restore {SYSCTL} to {}: {err}",
                self.before.trim()
            );
        }
    }
}

/// Total runs and time of a set of programs.
#[derive(Clone, Copy, Default)]
pub struct Runs {
    pub count: u64,
    pub nanos: u64,
}

impl Runs {
    /// The programs `pid` holds open, by name: their ids from
    /// /proc/PID/fdinfo, their counters from bpftool.
    pub fn by_program(pid: u32) -> anyhow::Result<BTreeMap<String, Self>> {
        let ids = program_ids(pid)?;
        let json = output_of(Command::new("bpftool").args(["prog", "show", "-j"]))?;
        let programs: Vec<Value> = serde_json::from_str(&json).context("bpftool prog show -j")?;
        let held = |program: &&Value| program["id"].as_u64().is_some_and(|id| ids.contains(&id));
        let mut runs = BTreeMap::new();
        for program in programs.iter().filter(held) {
            let name = program["name"].as_str().unwrap_or("?").to_owned();
            let these = Self {
                count: program["run_cnt"].as_u64().unwrap_or(0),
                nanos: program["run_time_ns"].as_u64().unwrap_or(0),
            };
            runs.entry(name)
                .and_modify(|sum: &mut Self| *sum = sum.plus(these))
                .or_insert(these);
        }
        Ok(runs)
    }

    /// All of `programs` together.
    pub fn total(programs: &BTreeMap<String, Self>) -> Self {
        programs.values().copied().fold(Self::default(), Self::plus)
    }

    pub fn since(self, before: Self) -> Self {
        Self {
            count: self.count - before.count,
            nanos: self.nanos - before.nanos,
        }
    }

    pub fn plus(self, other: Self) -> Self {
        Self {
            count: self.count + other.count,
            nanos: self.nanos + other.nanos,
        }
    }

    pub fn mean_ns(self) -> Option<f64> {
        (self.count > 0).then(|| self.nanos as f64 / self.count as f64)
    }
}

/// Ids of the eBPF programs whose descriptors `pid` holds (`prog_id:` in
/// the fdinfo of each). bpftool can name a program's holders too, but
/// only when built with BPF skeletons, which Debian's is not.
fn program_ids(pid: u32) -> anyhow::Result<Vec<u64>> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut ids = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        // A descriptor closed since the listing is not a program of ours.
        let Ok(info) = fs::read_to_string(entry?.path()) else {
            continue;
        };
        let id = info.lines().find_map(|line| line.strip_prefix("prog_id:"));
        ids.extend(id.and_then(|id| id.trim().parse::<u64>().ok()));
    }
    Ok(ids)
}
