//! `cargo xtask soak --minutes N`: netmon under continuous connection churn,
//! watching its memory and file descriptors.
//!
//! The churn cycles through a fixed set of 1000 loopback peers, so once
//! every peer is known the set stops growing and so must netmon: RSS and
//! open fds that keep climbing are a leak. Samples every 10 s; fails when
//! fds late in the run stay above where they were early on, or RSS ends
//! more than 10% above its level after the first minute. Run it on an
//! otherwise quiet machine: netmon records every peer of every workload.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

use crate::build::{self, Profile};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const PEERS: u32 = 1000;

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    connections: u64,
}

pub fn soak(minutes: u64, mode: &str) -> anyhow::Result<()> {
    let binary = build::build(Profile::Release)?;
    let dir = std::env::temp_dir().join(format!("netmon-soak-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let mut netmon = Netmon(
        Command::new(&binary)
            .args(["run", "--mode", mode, "--interval", "5", "--output"])
            .arg(dir.join("peers.json"))
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?,
    );
    thread::sleep(Duration::from_secs(2));
    let pid = netmon.0.id();

    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(AtomicU64::new(0));
    let churn = {
        let (stop, connections) = (Arc::clone(&stop), Arc::clone(&connections));
        thread::spawn(move || churn(&stop, &connections))
    };

    let start = Instant::now();
    let deadline = Duration::from_secs(minutes * 60);
    let mut samples = Vec::new();
    println!(
        "{:>8} {:>10} {:>6} {:>12}",
        "time", "RSS KiB", "fds", "connections"
    );
    while start.elapsed() < deadline {
        thread::sleep(SAMPLE_EVERY.min(deadline.saturating_sub(start.elapsed())));
        let sample = Sample {
            at: start.elapsed(),
            rss_kib: rss_kib(pid)?,
            fds: fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
            connections: connections.load(Ordering::Relaxed),
        };
        println!(
            "{:>7}s {:>10} {:>6} {:>12}",
            sample.at.as_secs(),
            sample.rss_kib,
            sample.fds,
            sample.connections
        );
        samples.push(sample);
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().expect("churn thread")?;
    netmon.stop()?;
    let _ = fs::remove_dir_all(&dir);
    verdict(&samples)
}

fn verdict(samples: &[Sample]) -> anyhow::Result<()> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        bail!("no samples: run for at least one minute");
    };
    let warm = samples
        .iter()
        .find(|s| s.at >= Duration::from_secs(60))
        .unwrap_or(first);
    let rate = last.connections as f64 / last.at.as_secs_f64();
    println!(
        "soak: {} connections ({rate:.0}/s) over {} s; RSS {} -> {} KiB (after 1 min: {}); fds {} -> {}",
        last.connections,
        last.at.as_secs(),
        first.rss_kib,
        last.rss_kib,
        warm.rss_kib,
        first.fds,
        last.fds
    );
    // A checkpoint holds a temp file and the directory open for a moment;
    // a leak is the fewest fds late in the run above the most early on.
    let third = samples.len().div_ceil(3);
    let early = samples[..third].iter().map(|s| s.fds).max().unwrap_or(0);
    let late = samples[samples.len() - third..]
        .iter()
        .map(|s| s.fds)
        .min()
        .unwrap_or(0);
    if late > early {
        bail!("open fds grew from {early} to {late}");
    }
    if last.rss_kib * 10 > warm.rss_kib * 11 {
        bail!(
            "RSS grew from {} KiB to {} KiB after warm-up",
            warm.rss_kib,
            last.rss_kib
        );
    }
    Ok(())
}

/// Connects from 127.72.x.y (cycling through PEERS sources) to a listener
/// on 127.73.0.1 until told to stop. The acceptor thread ends with xtask.
fn churn(stop: &AtomicBool, connections: &AtomicU64) -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.73.0.1:0")?;
    let dest = listener.local_addr()?;
    thread::spawn(move || listener.incoming().for_each(drop));
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let source = Ipv4Addr::new(127, 72, (i / 250) as u8, (i % 250 + 1) as u8);
        connect_from(source, dest).with_context(|| format!("connect from {source} to {dest}"))?;
        connections.fetch_add(1, Ordering::Relaxed);
        i = (i + 1) % PEERS;
    }
    Ok(())
}

fn connect_from(source: Ipv4Addr, dest: SocketAddr) -> std::io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&dest.into())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

/// The running netmon; killed if the soak fails before stopping it.
struct Netmon(Child);

impl Netmon {
    fn stop(&mut self) -> anyhow::Result<()> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let status = self.0.wait()?;
        if !status.success() {
            bail!("netmon exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
