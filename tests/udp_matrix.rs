//! The kernel matrix's UDP cases on the host kernel: the workload the VMs
//! run (`netmon_scenario::udp`) under each eBPF mode, each exchange
//! counted once at both ends, later datagrams and replies not at all.
//!
//! As root (`cargo xtask test` runs it), on the host's loopback; each
//! test leaves the host's row of the kernel matrix's case.
use std::path::Path;

use netmon_scenario::{
    check::read_peers,
    files::temp_output,
    harness::{self, chosen_mode, one_at_a_time},
    net::Block,
    result::{Row, record_host_row},
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
    let peers = read_peers(&path);
    let verdict = udp::check(&peers, &work, true);
    let mut problems = verdict.problems();
    problems.extend(
        log.lines()
            .filter(|line| line.contains("UDP peers are not recorded"))
            .map(str::to_owned),
    );
    let row = Row {
        on: "host".into(),
        kernel: Row::kernel_release(),
        case: case.into(),
        chosen: mode.into(),
        outbound: Some(verdict.outbound_count()),
        inbound: Some(verdict.inbound_count()),
        ok: problems.is_empty(),
        note: problems.join("; "),
    };
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    record_host_row(target_tmp, &row).unwrap_or_else(|e| panic!("recording {row}: {e}"));
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
fn kprobe_mode_counts_every_udp_exchange() {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        eprintln!("skipped: kernel has no kprobe support (CONFIG_KPROBES)");
        return;
    }
    counts_every_exchange("udp-kprobe", "kprobe", Block::UdpKprobe);
}
