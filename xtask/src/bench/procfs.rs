//! CPU time and memory of a process, read the way `top` and `ps` read
//! them, so anyone can check a figure with the same public tools.
use std::{fs, thread, time::Duration};

use anyhow::Context as _;

/// utime + stime of every thread of `pid` (fields 14 and 15 of
/// /proc/PID/stat), in milliseconds.
pub fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; count after its ')'.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in /proc/PID/stat")?;
    // After the name come field 3 (state) onwards: utime is the 12th.
    let mut fields = after_comm.split_whitespace().skip(11);
    let mut next_ticks = || -> anyhow::Result<u64> {
        Ok(fields.next().context("/proc/PID/stat too short")?.parse()?)
    };
    let ticks = next_ticks()? + next_ticks()?;
    Ok(ticks as f64 * tick_ms())
}

/// Time every live thread of `pid` has run (the first field of each
/// /proc/PID/task/TID/schedstat), in nanoseconds: exact where utime and
/// stime advance by clock ticks, but blind to threads that have ended.
pub fn run_ns(pid: u32) -> anyhow::Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut ns = 0;
    for task in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended since the listing ran no more.
        let Ok(stat) = fs::read_to_string(&path) else {
            continue;
        };
        let first = stat.split_whitespace().next().unwrap_or_default();
        ns += first
            .parse::<u64>()
            .with_context(|| format!("{}: {stat:?}", path.display()))?;
    }
    Ok(ns)
}

/// One clock tick (USER_HZ), the unit of utime and stime, in ms.
pub fn tick_ms() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1000.0 / per_second as f64
}

/// Resident memory now (VmRSS) and at its peak (VmHWM), in KiB.
pub struct Memory {
    pub rss_kib: u64,
    pub peak_kib: u64,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// Share of all cores' time spent on anything but idling and waiting for
/// I/O over `window` (the first line of /proc/stat, read twice).
pub fn busy_percent(window: Duration) -> anyhow::Result<f64> {
    let sample = || -> anyhow::Result<(u64, u64)> {
        let stat = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()?;
        // user nice system idle iowait irq softirq steal ...; guest time
        // is already in user.
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        let total = ticks.iter().take(8).sum();
        Ok((idle, total))
    };
    let (idle_before, total_before) = sample()?;
    thread::sleep(window);
    let (idle, total) = sample()?;
    let total = total.saturating_sub(total_before).max(1);
    let idle = idle.saturating_sub(idle_before);
    Ok(100.0 * (total - idle.min(total)) as f64 / total as f64)
}
