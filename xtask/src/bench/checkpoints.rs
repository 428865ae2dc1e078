//! Checkpoints under a storm: netmon (raw-tracepoint mode, the default
//! ring buffer) started on a 1M-peer file with `--interval 1`, and an
//! all-new storm across its checkpoints. Writing a million peers takes
//! long enough that a loop which stopped reading the ring buffer
//! meanwhile lost events at every one.
use std::{fs, net::IpAddr, os::unix::fs::MetadataExt as _, path::Path, thread, time::Duration};

use anyhow::{Context as _, bail};
use netmon_scenario::{
    check::{peers_of, read_checkpoint},
    files::write_big_checkpoint,
    harness::Netmon,
};

use super::{
    Bench, EBPF_MODE,
    compare::Compared,
    netns::Netns,
    outcome::Outcome,
    storm::{Family, Pattern, Protocol, Storm},
    table::{Table, thousands},
};

/// The parts run one after another, each storm in a namespace of its own
/// watched by a netmon of its own: the first block will do (the blocks
/// after the capture and user storms' run past 127.255).
const BLOCK: u8 = 0;
const PEERS: u32 = 1_000_000;
/// How often the file is looked at for a new checkpoint.
const POLL: Duration = Duration::from_millis(20);

pub fn checkpoints(bench: &Bench, table: &mut Table) {
    let measured = match storm_across_checkpoints(bench) {
        Ok(measured) => measured,
        Err(err) => {
            table.failed("scale", &format!("1M peers under a storm: {err:#}"));
            return;
        }
    };
    let Measured {
        outcome,
        lost,
        held,
        replaced,
    } = measured;
    table.check(
        "scale",
        "1M peers, storm across checkpoints: lost events",
        format!(
            "{} ({} checkpoints during {:.1} s at {} conn/s)",
            thousands(lost),
            replaced,
            outcome.secs,
            thousands(outcome.rate() as u64)
        ),
        "0",
        lost == 0,
    );
    table.check(
        "scale",
        "1M peers, storm across checkpoints: storm's peers held",
        held.to_string(),
        "100%, 0 invented",
        held.exact(),
    );
}

struct Measured {
    outcome: Outcome,
    /// The final file's `lost_events`.
    lost: u64,
    /// The final file's peers against the storm's.
    held: Compared,
    /// Checkpoints that replaced the file during the storm.
    replaced: u32,
}

fn storm_across_checkpoints(bench: &Bench) -> anyhow::Result<Measured> {
    eprintln!("xtask: bench: a storm across checkpoints of 1M peers");
    let output = bench.dir.join("checkpoints").join("peers.json");
    write_big_checkpoint(&output, PEERS).context("cannot write the checkpoint")?;
    let netns = Netns::new("checkpoints")?;
    let mut command = Netmon::command(&bench.netmon, &output, EBPF_MODE, &["--interval", "1"]);
    netns.enter(&mut command);
    let netmon = Netmon::spawn(command);
    netmon
        .wait_ready()
        .map_err(|log| anyhow::anyhow!("netmon --mode {EBPF_MODE} {log}"))?;
    let storm = Storm::prepare(
        &netns,
        Family::V4,
        BLOCK,
        Protocol::Tcp,
        Pattern::Distinct,
        bench.storm,
    )?;
    let storm = thread::spawn(move || storm.go());
    let mut replaced = 0;
    let mut last = inode(&output)?;
    while !storm.is_finished() {
        thread::sleep(POLL);
        let now = inode(&output)?;
        if now != last {
            (last, replaced) = (now, replaced + 1);
        }
    }
    let outcome = storm
        .join()
        .map_err(|_| anyhow::anyhow!("the storm thread panicked"))??;
    let (status, log) = netmon.stop();
    if !status.success() {
        bail!("netmon exited with {status}:\n{log}");
    }
    let file = read_checkpoint(&output);
    Ok(Measured {
        lost: file["lost_events"].as_u64().unwrap_or(u64::MAX),
        held: outcome.compare(peers_of(&file).into_keys().map(IpAddr::from)),
        outcome,
        replaced,
    })
}

/// Each checkpoint renames a new file into place.
fn inode(path: &Path) -> anyhow::Result<u64> {
    Ok(fs::metadata(path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .ino())
}
