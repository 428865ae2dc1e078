//! IPv6 peers, recorded by the real `netmon run` in each mode this kernel
//! has, running inside a network namespace of the test's own: TCP
//! connections and UDP exchanges between unique-local addresses of a /64
//! routed to the namespace's loopback, checked peer by peer (direction,
//! exact counts, ports, process), and an IPv4-mapped connection between
//! dual-stack sockets, which must be recorded as IPv4 peers
//! ([`netmon_scenario::ipv6`]). Then `netmon list --family` must split the
//! checkpoint's peers by family.
//!
//! As root (`cargo xtask test` runs it); each test leaves the host's row
//! of the kernel matrix's case of the same name. The namespace's loopback
//! is its only interface, so nothing leaves it.
use std::{net::IpAddr, path::Path, process::Command};

use netmon_scenario::{
    check::{IpPeers, Sees, read_ip_peers},
    files::temp_output,
    harness::{Netmon, chosen_mode, one_at_a_time},
    ipv6,
    net::Block,
    netns::OwnNetns,
    result::record_host_verdict,
};
use serde_json::Value;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// TCP pairs and UDP pairs, client i making i connections or exchanges.
const PAIRS: u8 = 5;

/// Runs the IPv6 workload under `mode` in a namespace of its own, with
/// netmon in that namespace, and checks every peer of the checkpoint and
/// of `netmon list --family`.
fn records_ipv6_peers(case: &str, mode: &str, block: Block) {
    let _turn = one_at_a_time();
    let net = block.net();
    let netns = OwnNetns::with_ula(net).unwrap_or_else(|err| panic!("{err}"));
    let (_dir, path) = temp_output();
    let mut command = Netmon::command(NETMON, &path, mode, &[]);
    netns.confine(&mut command);
    let netmon = Netmon::spawn(command);
    if let Err(err) = netmon.wait_ready() {
        panic!("netmon --mode {mode} {err}");
    }
    let held_open = mode == "proc";
    let work = netns
        .run_in(|| ipv6::workload(net, PAIRS, held_open))
        .unwrap_or_else(|err| panic!("IPv6 workload: {err}"));
    let (status, log) = netmon.stop();
    // Held open (for proc mode) until netmon has stopped.
    let peers = read_ip_peers(&path);
    let chosen = chosen_mode(&log).unwrap_or("-");
    let verdict = ipv6::check(&peers, &work, Sees::mode(chosen));
    drop(work);
    let mut problems = verdict.problems();
    if !status.success() {
        problems.push(format!("netmon exited with {status}"));
    }
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let note = problems.join("; ");
    record_host_verdict(
        target_tmp,
        case,
        chosen,
        Some(&verdict),
        problems.is_empty(),
        &note,
    );
    if !verdict.complete() {
        eprintln!("peers: {peers:#?}\nlog:\n{log}");
    }
    assert!(status.success(), "netmon exited with {status}:\n{log}");
    assert_eq!(chosen, mode, "{log}");
    verdict.assert_complete();
    lists_split_by_family(&path, &peers);
}

/// `netmon list --family 4` and `--family 6` list the checkpoint's peers
/// of that family, all of them, numerically sorted.
fn lists_split_by_family(path: &Path, peers: &IpPeers) {
    for (family, of_family) in [
        ("4", IpAddr::is_ipv4 as fn(&IpAddr) -> bool),
        ("6", IpAddr::is_ipv6),
    ] {
        let output = Command::new(NETMON)
            .args(["list", "--format", "json", "--family", family])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "netmon list --family {family}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let listed: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        let listed: Vec<IpAddr> = listed
            .iter()
            .map(|peer| peer["ip"].as_str().unwrap().parse().unwrap())
            .collect();
        // The checkpoint's peers in order (IpAddr's order: numeric within
        // each family).
        let expected: Vec<IpAddr> = peers.keys().copied().filter(of_family).collect();
        assert!(!expected.is_empty(), "no IPv{family} peer: {peers:#?}");
        assert_eq!(listed, expected, "netmon list --family {family}");
    }
}

fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn tracepoint_mode_records_ipv6_peers() {
    records_ipv6_peers("ipv6-tp", "tracepoint", Block::Ipv6Tracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn raw_tracepoint_mode_records_ipv6_peers() {
    records_ipv6_peers("ipv6-raw-tp", "raw-tracepoint", Block::Ipv6RawTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn btf_tracepoint_mode_records_ipv6_peers() {
    records_ipv6_peers("ipv6-btf-tp", "btf-tracepoint", Block::Ipv6BtfTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn kprobe_mode_records_ipv6_peers() {
    if !kernel_has_kprobes() {
        eprintln!("skipped: kernel has no kprobe support (CONFIG_KPROBES)");
        return;
    }
    records_ipv6_peers("ipv6-kprobe", "kprobe", Block::Ipv6Kprobe);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn proc_mode_records_ipv6_peers() {
    records_ipv6_peers("ipv6-proc", "proc", Block::Ipv6Proc);
}
