//! MPTCP connections under each eBPF mode: counted as plain TCP's are, one
//! per connect at each end, with nothing recorded for the MPTCP socket
//! that carries the subflows.
//!
//! As root (`cargo xtask test` runs it): the connections are made in a
//! network namespace of the test's own, on its loopback.
use std::path::Path;

use netmon_scenario::{
    check::{peers_in, read_checkpoint},
    files::temp_output,
    harness::{self, chosen_mode, one_at_a_time},
    mptcp,
    net::Block,
    result::record_host_verdict,
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Three sources making one, two and three connections.
const SOURCES: u8 = 3;

/// Runs `mode` over MPTCP connections and checks every count, leaving
/// the host's row of the kernel matrix's `case` under target/tmp.
fn counts_match_tcp(case: &str, mode: &str, block: Block) {
    if let Some(why) = mptcp::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let _turn = one_at_a_time();
    let (_dir, path) = temp_output();
    let netmon = harness::Netmon::ready(NETMON, &path, mode);
    let work = mptcp::workload(block.net(), SOURCES).unwrap_or_else(|err| {
        panic!("MPTCP connections: {err}");
    });
    let (status, log) = netmon.stop();
    assert!(status.success(), "netmon exited with {status}:\n{log}");
    assert_eq!(chosen_mode(&log), Some(mode), "{log}");
    let peers = peers_in(&read_checkpoint(&path), Some(work.netns));
    let verdict = mptcp::check(&peers, &work, true);
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let note = verdict.problems().join("; ");
    record_host_verdict(target_tmp, case, mode, Some(&verdict), true, &note);
    if !verdict.complete() {
        eprintln!("peers: {peers:#?}");
    }
    verdict.assert_complete();
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn tracepoint_mode_counts_mptcp_connections_as_tcp() {
    counts_match_tcp("mptcp-tp", "tracepoint", Block::MptcpTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn raw_tracepoint_mode_counts_mptcp_connections_as_tcp() {
    counts_match_tcp("mptcp-raw-tp", "raw-tracepoint", Block::MptcpRawTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn btf_tracepoint_mode_counts_mptcp_connections_as_tcp() {
    counts_match_tcp("mptcp-btf-tp", "btf-tracepoint", Block::MptcpBtfTracepoint);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn kprobe_mode_counts_mptcp_connections_as_tcp() {
    if !Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        eprintln!("skipped: kernel has no kprobe support (CONFIG_KPROBES)");
        return;
    }
    counts_match_tcp("mptcp-kprobe", "kprobe", Block::MptcpKprobe);
}
