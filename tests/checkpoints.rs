//! Checkpoints written while collecting: a storm of new peers across the
//! background checkpoints of a large set loses no event. The real binary
//! and programs; needs root, run by `cargo xtask test`.
use std::{
    collections::HashSet,
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use netmon_scenario::{
    check::read_checkpoint,
    files::{temp_output, write_big_checkpoint},
    harness::Netmon,
    net::Block,
    workload::connect_from,
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Peers in the file of the storm test: enough that writing them at once
/// takes the debug build the tests run over half a second, few enough that
/// its checkpoints during the storm end before the storm's addresses do.
const STORM_SET: u32 = 200_000;

/// A storm of new peers over several checkpoints of a large set loses no
/// event: the loop drains the ring buffer between the chunks of each
/// checkpoint. Every peer the storm made reaches the file through its
/// events alone, so none depends on the kernel's dedup map.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_storm_during_checkpoints_of_a_large_set_loses_no_event() {
    let (_dir, path) = temp_output();
    write_big_checkpoint(&path, STORM_SET).unwrap();
    // 128 KiB holds about 2,300 events: plenty while the loop drains it,
    // too few for a storm during a checkpoint written at once.
    let args = ["--ring-buffer", "128", "--interval", "1"];
    let netmon = Netmon::start(NETMON, &path, "auto", &args);
    netmon.wait_ready().unwrap();
    let block = Block::CheckpointStorm;
    let listener = TcpListener::bind(SocketAddrV4::new(block.addr(255, 1), 0)).unwrap();
    let dest = SocketAddrV4::new(block.addr(255, 1), listener.local_addr().unwrap().port());
    // Each checkpoint renames a new file into place. The first periodic
    // one starts a second after `ready:`, when the storm is under way, so
    // even one replacement is a checkpoint written wholly during it.
    let inode = || fs::metadata(&path).unwrap().ino();
    let (mut last, mut replaced) = (inode(), 0);
    let mut sources = Vec::new();
    // New peers until two checkpoints have replaced the file; should the
    // block's addresses run out first (a slow machine: the debug build's
    // checkpoints take seconds), its peers again, for a minute at most.
    let addresses = (0..255).flat_map(|c| (1..=254).map(move |d| block.addr(c, d)));
    let deadline = Instant::now() + Duration::from_secs(60);
    for (made, source) in addresses.clone().chain(addresses.cycle()).enumerate() {
        let client = connect_from(source, dest).unwrap();
        drop((client, listener.accept().unwrap()));
        if made < 255 * 254 {
            sources.push(source);
        }
        if inode() != last {
            (last, replaced) = (inode(), replaced + 1);
        }
        if replaced == 2 || (made >= 255 * 254 && Instant::now() > deadline) {
            break;
        }
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(
        replaced >= 1,
        "no checkpoint during a storm of {} peers:\n{log}",
        sources.len()
    );
    let file = read_checkpoint(&path);
    assert_eq!(file["lost_events"], 0, "{log}");
    let held: HashSet<Ipv4Addr> = file["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|peer| peer["ip"].as_str()?.parse().ok())
        .collect();
    let missing = sources.iter().filter(|s| !held.contains(s)).count();
    assert_eq!(missing, 0, "of {} storm peers:\n{log}", sources.len());
}
