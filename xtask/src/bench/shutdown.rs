//! Stopping under load: netmon (raw-tracepoint mode) gets SIGTERM halfway
//! through an all-new storm and must write its checkpoint and exit within
//! two seconds, as a service manager expects of it.
use std::{
    fs, thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use netmon_scenario::check::read_peers;

use super::{
    Bench, EBPF_MODE,
    netns::Netns,
    storm::{Family, Pattern, Protocol, Storm},
    table::{Table, thousands},
};

/// Its netmon runs only during its own storm: the first block will do
/// (the blocks after the capture and user storms' run past 127.255).
const BLOCK: u8 = 0;
/// What systemd and Kubernetes allow before they kill, at the least.
const TARGET: Duration = Duration::from_secs(2);
/// How often to look whether netmon has exited.
const POLL: Duration = Duration::from_millis(2);

pub fn shutdown(bench: &Bench, table: &mut Table) {
    match stop_mid_storm(bench) {
        Ok((took, peers)) => table.check(
            "shutdown",
            "SIGTERM mid-storm to exit, final checkpoint included",
            format!(
                "{:.0} ms, with {} peers in the file",
                took.as_secs_f64() * 1000.0,
                thousands(peers as u64)
            ),
            format!("< {} ms", TARGET.as_millis()),
            took < TARGET,
        ),
        Err(err) => table.failed("shutdown", &format!("{err:#}")),
    }
}

/// Time from SIGTERM to netmon's exit, and the peers its file then holds.
fn stop_mid_storm(bench: &Bench) -> anyhow::Result<(Duration, usize)> {
    eprintln!("xtask: bench: SIGTERM mid-storm");
    let netns = Netns::new("shutdown")?;
    let dir = bench.dir.join("shutdown");
    fs::create_dir_all(&dir)?;
    let output = dir.join("peers.json");
    let netmon = bench.start_netmon(&netns, &output, EBPF_MODE)?;
    let storm = Storm::prepare(
        &netns,
        Family::V4,
        BLOCK,
        Protocol::Tcp,
        Pattern::Distinct,
        bench.storm,
    )?;
    let storm = thread::spawn(move || storm.go());
    thread::sleep(bench.storm / 2);
    let pid = netmon.pid();
    let signalled = Instant::now();
    // SAFETY: kill(2) on netmon, our child, not yet waited for.
    if unsafe { libc::kill(pid as i32, libc::SIGTERM) } != 0 {
        bail!("cannot send SIGTERM to netmon");
    }
    // An exited child stays a zombie until waited for: its state says
    // when it exited, without the harness's own waits in the figure.
    let took = loop {
        if exited(pid)? {
            break signalled.elapsed();
        }
        if signalled.elapsed() > 10 * TARGET {
            bail!("netmon still running {:?} after SIGTERM", 10 * TARGET);
        }
        thread::sleep(POLL);
    };
    let (status, log) = netmon.wait();
    storm
        .join()
        .map_err(|_| anyhow::anyhow!("the storm thread panicked"))??;
    if !status.success() {
        bail!("netmon exited with {status} on SIGTERM:\n{log}");
    }
    Ok((took, read_peers(&output).len()))
}

/// Whether `pid` has exited (is a zombie, or gone).
pub(super) fn exited(pid: u32) -> anyhow::Result<bool> {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Ok(true);
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .context("/proc/PID/stat without a state")?;
    Ok(state == "Z" || state == "X")
}
