//! `cargo xtask bench`: issue 6's figures, every one measured in the same
//! run, side by side, with public tools (the kernel's bpf stats through
//! bpftool, /proc/PID/stat and /proc/PID/status), in one table with the
//! targets beside them.
//!
//! It is a benchmark, not a test: a missed target is reported, not an
//! error. Parts: capture and kernel cost (capture.rs), user cost
//! (cost.rs) with stopping under load (shutdown.rs), scale (scale.rs)
//! with a storm across the checkpoints of a large set (checkpoints.rs),
//! the restart gap (restart.rs), an IPv6 storm (ipv6.rs), and this build
//! beside another (baseline.rs). Each storm and each start-up runs in a
//! network namespace of its own (netns.rs).
mod baseline;
mod bpf_stats;
mod capture;
mod checkpoints;
mod compare;
mod cost;
mod ipv6;
mod netns;
mod outcome;
mod poller;
mod procfs;
mod restart;
mod scale;
mod shutdown;
mod storm;
mod table;
mod udp;
mod udp_storm;
mod watch;
mod worker;

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail};
use netmon_scenario::harness::Netmon;

pub use worker::WorkerArgs;

/// One worker process of a storm: connections, or datagrams to a UDP
/// service (`--udp-port`).
pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    match args.udp_port {
        Some(port) => udp_storm::worker(args, port),
        None => worker::tcp(args),
    }
}

use crate::{build, setup};
use netns::Netns;
use table::{Table, Verdict};

/// The eBPF mode measured against the targets: the one `--mode auto`
/// picks on the bench's machine (a kernel without kprobes, with BTF).
/// The raw and plain tracepoints run one storm each beside it.
pub const EBPF_MODE: &str = "btf-tracepoint";

/// How long the machine's own load is sampled before and after.
const BUSY_SAMPLE: Duration = Duration::from_secs(1);
/// Busier than this (percent of all cores) and the figures say more about
/// the other work than about netmon.
const BUSY_WARNING: f64 = 20.0;

/// `ip` for the namespaces, psutil for the poller, bpftool for the stats.
const PACKAGES: &[&str] = &["iproute2", "python3-psutil", "bpftool"];

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Benchmark this netmon binary instead of building one.
    #[arg(long, value_name = "BINARY")]
    netmon: Option<PathBuf>,
    /// Another build of netmon (say the previous commit's) to measure
    /// beside this one in the baseline part, storm by storm.
    #[arg(long, value_name = "BINARY")]
    baseline: Option<PathBuf>,
    /// Seconds each connection storm lasts (the on/off pairs': twice that).
    #[arg(long, default_value_t = 5)]
    storm_seconds: u64,
    /// On/off pairs of storms for the kernel's on/off ratio. A pair's
    /// ratio moves by about 8% with the host's other load, so the median of
    /// 9 can land a few points either side of the true ratio; 36 pin it
    /// down to within about 2 points (about 15 minutes more).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u8).range(1..=100))]
    pairs: u8,
    /// Run only these parts (repeatable); all by default.
    #[arg(long = "part", value_enum)]
    parts: Vec<Part>,
}

/// The parts of the table, in the order they run.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    /// Peers held in a storm, lost events, kernel cost (4 storms and the
    /// on/off pairs).
    Capture,
    /// netmon's and the poller's CPU on the same storms, and SIGTERM in
    /// the middle of one (3 storms).
    User,
    /// Memory and times at 100k and 1M peers, and a storm across the
    /// checkpoints of 1M (1 storm).
    Scale,
    /// Connections missed while netmon restarts on a 1M-peer file, three
    /// ways of starting the next one.
    Restart,
    /// UDP queries to a resolver-like service: peers held with exact
    /// counts, lost events, the cgroup programs' cost, on/off pairs.
    Udp,
    /// An IPv6 storm in each tracepoint mode: peers held, lost events,
    /// cost per run (2 storms).
    Ipv6,
    /// This build and `--baseline` taking turns: each tracepoint mode's
    /// cost per run and peers held, and on/off pairs (7 storms a pair;
    /// only with `--baseline`).
    Baseline,
}

/// What every part needs.
pub struct Bench {
    netmon: PathBuf,
    /// Scratch space, emptied at the start of each run.
    dir: PathBuf,
    storm: Duration,
    pairs: u8,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    setup::require_root("cargo xtask bench loads eBPF programs and creates network namespaces")?;
    setup::debian_packages(PACKAGES)?;
    let netmon = match &args.netmon {
        Some(binary) if !binary.is_file() => bail!("--netmon {}: no such file", binary.display()),
        Some(binary) => binary.clone(),
        None => build::build(build::Profile::Release)?,
    };
    match &args.baseline {
        Some(binary) if !binary.is_file() => {
            bail!("--baseline {}: no such file", binary.display())
        }
        None if args.parts.contains(&Part::Baseline) => {
            bail!("--part baseline needs --baseline BINARY")
        }
        _ => {}
    }
    netns::remove_stale();
    let dir = build::root().join("target/bench");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    let bench = Bench {
        netmon,
        dir,
        storm: Duration::from_secs(args.storm_seconds),
        pairs: args.pairs,
    };

    let started = Instant::now();
    let busy_before = procfs::busy_percent(BUSY_SAMPLE)?;
    let mut table = Table::default();
    for part in [
        Part::Capture,
        Part::User,
        Part::Scale,
        Part::Restart,
        Part::Udp,
        Part::Ipv6,
        Part::Baseline,
    ] {
        if !args.parts.is_empty() && !args.parts.contains(&part) {
            continue;
        }
        match part {
            Part::Capture => capture::capture(&bench, &mut table),
            Part::User => {
                cost::user_cost(&bench, &mut table);
                shutdown::shutdown(&bench, &mut table);
            }
            Part::Scale => {
                scale::scale(&bench, &mut table);
                checkpoints::checkpoints(&bench, &mut table);
            }
            Part::Restart => restart::restart(&bench, &mut table),
            Part::Udp => udp::udp(&bench, &mut table),
            Part::Ipv6 => ipv6::ipv6(&bench, &mut table),
            Part::Baseline => {
                if let Some(baseline) = &args.baseline {
                    baseline::baseline(&bench, baseline, &mut table);
                }
            }
        }
    }
    println!("\n{table}");
    let busy_after = procfs::busy_percent(BUSY_SAMPLE)?;
    println!(
        "bench: {} targets met, {} missed, {} not measured; {:.0} s on {} cores ({})",
        table.count(Verdict::Met),
        table.count(Verdict::Missed),
        table.count(Verdict::NotMeasured),
        started.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        bench.netmon.display()
    );
    println!(
        "bench: CPU busy with other work: {busy_before:.0}% just before, {busy_after:.0}% just after"
    );
    if busy_before.max(busy_after) > BUSY_WARNING {
        println!(
            "bench: the machine was busy: storm rates, the on/off ratio and the times vary with that load; rerun on a quiet machine for figures to compare"
        );
    }
    Ok(())
}

impl Bench {
    /// `netmon run --mode MODE` in `netns`, checkpointing only when
    /// stopped (so no periodic checkpoint lands in a measured window);
    /// not waited for.
    fn spawn_netmon(&self, netns: &Netns, output: &Path, mode: &str) -> Netmon {
        let mut command = Netmon::command(&self.netmon, output, mode, &["--interval", "3600"]);
        netns.enter(&mut command);
        Netmon::spawn(command)
    }

    /// [`Bench::spawn_netmon`], once it says it is ready.
    fn start_netmon(&self, netns: &Netns, output: &Path, mode: &str) -> anyhow::Result<Netmon> {
        let netmon = self.spawn_netmon(netns, output, mode);
        netmon
            .wait_ready()
            .map_err(|log| anyhow!("netmon --mode {mode} {log}"))?;
        Ok(netmon)
    }
}
