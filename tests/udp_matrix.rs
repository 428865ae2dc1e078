//! The kernel matrix's UDP cases on the host kernel: the workload the VMs
//! run (`netmon_scenario::udp`) under each eBPF mode, each exchange
//! counted once at both ends, later datagrams and replies not at all.
//!
//! As root (`cargo xtask test` runs it), on the host's loopback; each
//! test leaves the host's row of the kernel matrix's case.
use std::path::Path;

use netmon_scenario::{
    check::read_ip_peers,
    files::temp_output,
    harness::{self, chosen_mode, one_at_a_time},
    net::Block,
    result::record_host_verdict,
    udp,
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Clients making one, two, ... exchanges.
const CLIENTS: u8 = 5;

fn counts_every_exchange(case: &str, mode: &str, block: Block) {
    let _turn = one_at_a_time();
    let (_dir, path) = temp_output();
    let netmon = harness::Netmon::ready(NETMON, &path, mode);
    let work =
        udp::workload(block.net(), CLIENTS).unwrap_or_else(|err| panic!("UDP datagrams: {err}"));
    let (status, log) = netmon.stop();
    assert!(status.success(), "netmon exited with {status}:\n{log}");
    assert_eq!(chosen_mode(&log), Some(mode), "{log}");
    let peers = read_ip_peers(&path);
    let verdict = udp::check(&peers, &work, true);
    let mut problems = verdict.problems();
    problems.extend(
        log.lines()
            .filter(|line| line.contains("UDP peers are not recorded"))
            .map(str::to_owned),
    );
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let note = problems.join("; ");
    record_host_verdict(
        target_tmp,
        case,
        mode,
        Some(&verdict),
        problems.is_empty(),
        &note,
    );
    if !verdict.complete() {
        eprintln!("peers: {peers:#?}\nlog:\n{log}");
    }
    verdict.assert_complete();
    assert_eq!(work.exchanges(), 15, "1 + 2 + ... + {CLIENTS} exchanges");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn tracepoint_mode_counts_every_udp_exchange() {
    counts_every_exchange("udp-tp", "tracepoint", Block::UdpTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn raw_tracepoint_mode_counts_every_udp_exchange() {
    counts_every_exchange("udp-raw-tp", "raw-tracepoint", Block::UdpRawTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn btf_tracepoint_mode_counts_every_udp_exchange() {
    counts_every_exchange("udp-btf-tp", "btf-tracepoint", Block::UdpBtfTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn kprobe_mode_counts_every_udp_exchange() {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        eprintln!("skipped: kernel has no kprobe support (CONFIG_KPROBES)");
        return;
    }
    counts_every_exchange("udp-kprobe", "kprobe", Block::UdpKprobe);
}
