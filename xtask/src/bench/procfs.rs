//! CPU time and memory of a process, read the way `top` and `ps` read
//! them, so anyone can check a figure with the same public tools.
use std::fs;

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
