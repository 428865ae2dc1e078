//! Scale: netmon started on a checkpoint of 100k and of 1M peers (written
//! by the scenario crate, in the checkpoint format of docs/design.md), its memory once
//! ready, how long it took to load the file and to write its first
//! checkpoint, and `netmon list` on the 1M file.
use std::{
    fmt,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use netmon_scenario::{files::write_big_checkpoint, harness::READY_TIMEOUT};

use super::{
    Bench,
    netns::Netns,
    procfs,
    table::{Table, thousands},
};

const SIZES: [u32; 2] = [100_000, 1_000_000];
/// Issue 19's targets: peak included, for the RSS.
const RSS_TARGET_MIB: f64 = 100.0;
const LOAD_TARGET_MS: f64 = 1000.0;
const CHECKPOINT_TARGET_MS: f64 = 300.0;
const LIST_TARGET_MS: f64 = 400.0;
/// How often the log is looked at for the wall-clock fallback.
const POLL: Duration = Duration::from_millis(2);

pub fn scale(bench: &Bench, table: &mut Table) {
    for peers in SIZES {
        let path = bench.dir.join(format!("scale-{peers}")).join("peers.json");
        let started = match write_big_checkpoint(&path, peers)
            .context("cannot write the checkpoint")
            .and_then(|()| Started::measure(bench, &path, peers))
        {
            Ok(started) => started,
            Err(err) => {
                table.failed(
                    "scale",
                    &format!("{} peers: {err:#}", thousands(peers.into())),
                );
                continue;
            }
        };
        let size = if peers >= 1_000_000 {
            format!("{}M", peers / 1_000_000)
        } else {
            format!("{}k", peers / 1000)
        };
        let rss = format!(
            "{:.0} MiB (peak {:.0} MiB)",
            started.rss_mib, started.peak_mib
        );
        let (load, checkpoint) = (started.load.to_string(), started.checkpoint.to_string());
        if peers < 1_000_000 {
            table.info(
                "scale",
                format!("{size} peers: RSS / load / checkpoint"),
                format!("{rss} / {load} / {checkpoint}"),
            );
            continue;
        }
        table.check(
            "scale",
            format!("{size} peers: RSS"),
            rss,
            format!("< {RSS_TARGET_MIB:.0} MiB"),
            started.rss_mib.max(started.peak_mib) < RSS_TARGET_MIB,
        );
        table.check(
            "scale",
            format!("{size} peers: load"),
            load,
            format!("< {LOAD_TARGET_MS:.0} ms"),
            started.load.ms < LOAD_TARGET_MS,
        );
        table.check(
            "scale",
            format!("{size} peers: checkpoint"),
            checkpoint,
            format!("< {CHECKPOINT_TARGET_MS:.0} ms"),
            started.checkpoint.ms < CHECKPOINT_TARGET_MS,
        );
        match list(bench, &path) {
            Ok(took) => table.check(
                "scale",
                format!("netmon list --format plain, {size} peers"),
                format!("{:.0} ms", took.as_secs_f64() * 1000.0),
                format!("< {LIST_TARGET_MS:.0} ms"),
                took.as_secs_f64() * 1000.0 < LIST_TARGET_MS,
            ),
            Err(err) => table.failed("scale", &format!("netmon list: {err:#}")),
        }
    }
}

/// netmon once it has loaded a big checkpoint and written its first one.
struct Started {
    rss_mib: f64,
    peak_mib: f64,
    load: Timed,
    checkpoint: Timed,
}

/// A time from netmon's own log line, or else from the wall clock.
struct Timed {
    ms: f64,
    logged: bool,
}

impl Timed {
    /// The time netmon logged on the first line with one of `markers`,
    /// else `wall`.
    fn from_log(log: &str, markers: &[&str], wall: Option<Duration>) -> Option<Self> {
        match logged_ms(log, markers) {
            Some(ms) => Some(Self { ms, logged: true }),
            None => wall.map(|wall| Self {
                ms: wall.as_secs_f64() * 1000.0,
                logged: false,
            }),
        }
    }
}

impl fmt::Display for Timed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = if self.logged {
            "netmon's log"
        } else {
            "wall clock"
        };
        write!(f, "{:.0} ms ({source})", self.ms)
    }
}

/// What netmon's log line saying it loaded the file contains (`PATH:
/// continuing from N peers (loaded in X ms)`, or a later wording).
const LOADED: &[&str] = &["continuing from", "] loaded "];
/// ... and the one for a checkpoint (`checkpoint: N peers in X ms`).
const CHECKPOINTED: &[&str] = &["] checkpoint: "];

impl Started {
    /// Runs netmon in proc mode (the cheapest to attach, so start-up is
    /// load, scan and checkpoint) on `path` in an empty namespace, so the
    /// scan finds nothing and the times are the file's.
    fn measure(bench: &Bench, path: &Path, peers: u32) -> anyhow::Result<Self> {
        eprintln!("xtask: bench: netmon on {peers} peers");
        let netns = Netns::new(&format!("scale-{peers}"))?;
        let spawned = Instant::now();
        let netmon = bench.spawn_netmon(&netns, path, "proc");
        // Wall clock, for a netmon that does not log its times: spawn to
        // the line saying the file is loaded, and from there to `ready:`
        // (attaching proc mode and scanning an empty namespace take no
        // time, so that is the first checkpoint).
        let mut loaded = None;
        let ready = loop {
            if spawned.elapsed() > READY_TIMEOUT {
                bail!("netmon did not get ready:\n{}", netmon.log());
            }
            let log = netmon.log();
            if loaded.is_none() && LOADED.iter().any(|marker| log.contains(marker)) {
                loaded = Some(spawned.elapsed());
            }
            if log.contains("ready:") {
                break spawned.elapsed();
            }
            thread::sleep(POLL);
        };
        let memory = procfs::memory(netmon.pid())?;
        let (status, log) = netmon.stop();
        if !status.success() {
            bail!("netmon exited with {status}:\n{log}");
        }
        let mib = |kib: u64| kib as f64 / 1024.0;
        let unsaid = || format!("netmon never said it loaded the file:\n{log}");
        Ok(Self {
            rss_mib: mib(memory.rss_kib),
            peak_mib: mib(memory.peak_kib),
            load: Timed::from_log(&log, LOADED, loaded).with_context(unsaid)?,
            checkpoint: Timed::from_log(&log, CHECKPOINTED, loaded.map(|loaded| ready - loaded))
                .with_context(unsaid)?,
        })
    }
}

/// The X of `in X ms` in netmon's first line that has one of `markers`.
fn logged_ms(log: &str, markers: &[&str]) -> Option<f64> {
    let line = log
        .lines()
        .find(|line| markers.iter().any(|marker| line.contains(marker)))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    words.windows(3).find_map(|w| match w {
        ["in", ms, unit] if unit.trim_end_matches([')', ',', ';']) == "ms" => ms.parse().ok(),
        _ => None,
    })
}

/// Wall time of `netmon list FILE --format plain`, output discarded.
fn list(bench: &Bench, path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let status = Command::new(&bench.netmon)
        .arg("list")
        .arg(path)
        .args(["--format", "plain"])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        bail!("exited with {status}");
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
[2026-11-28T17:15:24Z INFO ] /x/peers.json: continuing from 100000 peers (loaded in 226 ms)
[2026-11-28T17:15:24Z INFO ] mode: proc
[2026-11-28T17:15:25Z INFO ] checkpoint: 100139 peers in 115.5 ms (0 lost events)
[2026-11-28T17:15:26Z INFO ] checkpoint: 100139 peers in 99 ms (0 lost events)";

    #[test]
    fn times_come_from_the_first_matching_line() {
        assert_eq!(logged_ms(LOG, LOADED), Some(226.0));
        assert_eq!(logged_ms(LOG, CHECKPOINTED), Some(115.5));
        assert_eq!(
            logged_ms("[..] loaded 5 peers from /p in 7 ms", LOADED),
            Some(7.0)
        );
    }

    #[test]
    fn untimed_lines_fall_back_to_the_wall_clock() {
        let log = "[..] /p: continuing from 5 peers";
        assert_eq!(logged_ms(log, LOADED), None);
        let timed = Timed::from_log(log, LOADED, Some(Duration::from_millis(40))).unwrap();
        assert_eq!(timed.to_string(), "40 ms (wall clock)");
        assert!(Timed::from_log(log, CHECKPOINTED, None).is_none());
    }
}
