//! What netmon relies on in a container: reading the socket tables of a
//! network namespace other than its own through /proc/PID/net (the image
//! runs `--proc-net /proc/1/net`, which under `--pid host` is the host's).
//!
//! As root (`cargo xtask test` runs it): it makes a network namespace.
use std::{path::Path, process::Command};

use netmon_scenario::{
    check::{Sees, check_workload, read_peers},
    harness::Netmon,
    net::Block,
    workload::workload_held_open,
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// `netmon run --mode proc` in a network namespace of its own, as in a
/// container without host networking, with `extra` flags.
fn in_own_netns(output: &Path, extra: &[&str]) -> Netmon {
    let mut command = Command::new("unshare");
    command
        .args(["--net", "--", NETMON, "run", "--mode", "proc", "--output"])
        .arg(output)
        .args(extra);
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    netmon
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn proc_net_reads_the_tables_of_another_network_namespace() {
    let dir = tempfile::tempdir().unwrap();
    // This test's namespace stands in for the host's, this process for
    // the host's init.
    let host_tables = format!("/proc/{}/net", std::process::id());

    let isolated = dir.path().join("isolated.json");
    let netmon = in_own_netns(&isolated, &[]);
    let unseen = workload_held_open(Block::OwnNetns, 3);
    assert!(netmon.stop().0.success());
    let peers = read_peers(&isolated);
    assert!(
        unseen.destinations.iter().all(|ip| !peers.contains_key(ip)),
        "without --proc-net its own namespace's tables must not show this one's connections: {peers:?}"
    );
    drop(unseen);

    let host = dir.path().join("host.json");
    let netmon = in_own_netns(&host, &["--proc-net", &host_tables]);
    // Held open until netmon has stopped: proc mode sees what is in the
    // table, and polls once more on the way out.
    let work = workload_held_open(Block::ProcNet, 5);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    check_workload(&read_peers(&host), &work, Sees::mode("proc")).assert_complete();
}
