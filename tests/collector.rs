//! Integration tests of `netmon run`: the real binary, the real eBPF
//! programs, real connections on loopback.
//!
//! The eBPF modes need root: those tests are ignored by plain `cargo test`
//! and run by `cargo xtask test`, one at a time, since they share the
//! kernel's tracepoints. Proc mode, refusals to start and `--mode auto`
//! where any mode will do (proc mode without root) run as any user. Each
//! test makes its connections in its own [`Block`] of addresses, so none
//! of them depends on another's traffic.
use std::{
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddrV4, TcpListener},
    path::Path,
    process::Command,
    sync::mpsc,
    thread,
};

use netmon_scenario::{
    case::Setting,
    check::{
        Peers, Sees, Verdict, check_workload, expect_peers, has, inbound, outbound,
        read_checkpoint, read_peers, tcp_port,
    },
    files::temp_output,
    harness::{self, chosen_mode, one_at_a_time, skip_reasons},
    isolate,
    net::Block,
    result::record_host_verdict,
    workload::{Workload, connect_from, workload, workload_held_open},
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// The shared harness, running the `netmon` cargo built for these tests.
struct Netmon;

impl Netmon {
    fn start(output: &Path, mode: &str, extra: &[&str]) -> harness::Netmon {
        harness::Netmon::start(NETMON, output, mode, extra)
    }

    fn ready(output: &Path, mode: &str) -> harness::Netmon {
        harness::Netmon::ready(NETMON, output, mode)
    }
}

/// Leaves this kernel's row of the kernel matrix under target/tmp.
fn record_row(case: &str, chosen: &str, verdict: Option<&Verdict>, ok: bool, note: &str) {
    let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    record_host_verdict(target_tmp, case, chosen, verdict, ok, note);
}

/// The mode auto must choose on this kernel (which has BTF).
fn expected_auto_mode() -> &'static str {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        "kprobe"
    } else {
        "btf-tracepoint"
    }
}

fn kernel_has_kprobes() -> bool {
    expected_auto_mode() == "kprobe"
}

/// Runs the workload under `mode` and checks every peer.
fn capture_all_peers(mode: &str, block: Block) -> String {
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(&path, mode);
    let work = workload(block, 20);
    let (status, log) = netmon.stop();
    assert!(status.success(), "netmon exited with {status}:\n{log}");

    // What is checked depends on the mode netmon ran in: the kretprobe runs
    // in the accepting process; the tracepoint's inbound transition runs in
    // softirq and cannot name it.
    let chosen = chosen_mode(&log).unwrap_or("-");
    let verdict = check_workload(&read_peers(&path), &work, Sees::mode(chosen));
    record_row(mode, chosen, Some(&verdict), true, &skip_reasons(&log));
    verdict.assert_complete();
    log
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn auto_mode_picks_the_best_rung_and_captures_every_peer() {
    let log = capture_all_peers("auto", Block::AutoMode);
    let expected = expected_auto_mode();
    assert!(
        log.contains(&format!("mode: {expected}")),
        "auto should choose {expected}:\n{log}"
    );
    if expected != "kprobe" {
        assert!(
            log.contains("skipped kprobe: kernel has no kprobe support (CONFIG_KPROBES)"),
            "auto should say why kprobe was skipped:\n{log}"
        );
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn tracepoint_mode_captures_every_peer() {
    let log = capture_all_peers("tracepoint", Block::TracepointMode);
    assert!(log.contains("mode: tracepoint"), "{log}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn raw_tracepoint_mode_captures_every_peer() {
    let log = capture_all_peers("raw-tracepoint", Block::RawTracepointMode);
    assert!(log.contains("mode: raw-tracepoint"), "{log}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn btf_tracepoint_mode_captures_every_peer() {
    let log = capture_all_peers("btf-tracepoint", Block::BtfTracepointMode);
    assert!(log.contains("mode: btf-tracepoint"), "{log}");
}

/// `netmon run --mode MODE` with the kernel's BTF hidden, as the kernel
/// matrix's no-BTF case hides it.
fn start_without_btf(output: &Path, mode: &str) -> harness::Netmon {
    let mut command = harness::Netmon::command(NETMON, output, mode, &[]);
    isolate::apply(Setting::NoBtf, &mut command);
    harness::Netmon::spawn(command)
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn without_btf_auto_skips_the_btf_and_raw_tracepoints_and_says_why() {
    if kernel_has_kprobes() {
        return; // auto stops at kprobe, which takes default offsets
    }
    let (_dir, path) = temp_output();
    let netmon = start_without_btf(&path, "auto");
    netmon.wait_ready().unwrap();
    let work = workload(Block::NoBtf, 5);
    let (status, log) = netmon.stop();
    assert!(status.success(), "netmon exited with {status}:\n{log}");
    assert_eq!(chosen_mode(&log), Some("tracepoint"), "{log}");
    assert!(
        log.contains("skipped btf-tracepoint: no struct sock offsets from BTF")
            && log.contains("skipped raw-tracepoint: no struct sock offsets from BTF"),
        "auto should say why the BTF and raw tracepoints were skipped:\n{log}"
    );
    check_workload(&read_peers(&path), &work, Sees::mode("tracepoint")).assert_complete();

    // `netmon probe` says the BTF program is not for this kernel rather
    // than rejected by it, and succeeds.
    let mut probe = Command::new(NETMON);
    probe.arg("probe");
    isolate::apply(Setting::NoBtf, &mut probe);
    let output = probe.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("program inet_sock_set_state_btf (BTF tracepoint inet_sock_set_state): not loaded: no kernel BTF"),
        "{stdout}"
    );

    let (status, log) = start_without_btf(&path, "raw-tracepoint").wait();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "netmon: --mode raw-tracepoint: cannot attach: no struct sock offsets from BTF"
        ),
        "the error must name BTF:\n{log}"
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn kprobe_mode_captures_every_peer_or_fails_with_the_reason() {
    if kernel_has_kprobes() {
        let log = capture_all_peers("kprobe", Block::KprobeMode);
        assert!(log.contains("mode: kprobe"), "{log}");
        return;
    }
    let (_dir, path) = temp_output();
    let (status, log) = Netmon::start(&path, "kprobe", &[]).wait();
    let reason = log.lines().last().unwrap_or_default();
    record_row("kprobe", "refused", None, status.code() == Some(1), reason);
    assert_eq!(
        status.code(),
        Some(1),
        "forced kprobe mode must fail here:\n{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "netmon: --mode kprobe: cannot attach: kernel has no kprobe support (CONFIG_KPROBES)"
        ),
        "the error must name the missing kernel feature:\n{log}"
    );
    assert!(
        !path.exists(),
        "a refused start must not write {}",
        path.display()
    );
}

#[test]
fn proc_mode_records_connections_in_the_socket_table() {
    let _turn = one_at_a_time();
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(&path, "proc");
    // Held open until netmon has stopped: proc mode sees what is in the
    // table, and polls once more on the way out.
    let work = workload_held_open(Block::ProcMode, 5);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("mode: proc"), "{log}");
    let verdict = check_workload(&read_peers(&path), &work, Sees::mode("proc"));
    record_row("proc", "proc", Some(&verdict), true, "");
    verdict.assert_complete();
}

/// Over netlink proc mode hears of every socket the kernel destroys: the
/// workload's connections open and close, and its attempts are refused,
/// long before the first poll (a minute away), yet every peer is there,
/// counted once.
#[test]
fn proc_mode_sees_connections_that_close_between_polls() {
    let (peers, work, log) = in_proc_mode(&["--poll-interval", "60000"], || {
        workload(Block::ProcNotified, 10)
    });
    assert!(
        log.contains("socket tables: netlink sock_diag, with destroy notifications"),
        "{log}"
    );
    let verdict = check_workload(&peers, &work, Sees::proc_notified());
    record_row("proc-notified", "proc", Some(&verdict), true, "");
    verdict.assert_complete();
    // Every other connection closes gracefully: its socket keeps its port.
    let graceful: Vec<Ipv4Addr> = work.destinations.iter().step_by(2).copied().collect();
    expect_peers(
        &peers,
        &graceful,
        "outbound with port (closed gracefully)",
        outbound(work.port, false),
    );
    let once = |direction: &'static str| move |peer: &serde_json::Value| peer[direction] == 1;
    expect_peers(
        &peers,
        &work.destinations,
        "one outbound connection",
        once("outbound"),
    );
    expect_peers(
        &peers,
        &work.refused,
        "one outbound attempt",
        once("outbound"),
    );
    expect_peers(
        &peers,
        &work.sources,
        "one inbound connection",
        once("inbound"),
    );
}

/// `--socket-tables procfs`, what a kernel without sock_diag leaves: polls
/// of the /proc/net text, which see what is in the table at the time.
#[test]
fn proc_mode_reads_the_text_tables_when_told() {
    let (peers, work, log) = in_proc_mode(&["--socket-tables", "procfs"], || {
        workload_held_open(Block::ProcText, 5)
    });
    for line in [
        "socket tables: the text of /proc/net",
        "no notifications of closed sockets (the /proc/net text has no notifications): polls read TIME_WAIT sockets",
    ] {
        assert!(log.contains(line), "log lacks {line:?}:\n{log}");
    }
    check_workload(&peers, &work, Sees::mode("proc")).assert_complete();
}

/// netmon in proc mode with `extra` flags while `work` runs: the peers it
/// wrote, the workload (still holding what it holds open) and the log.
fn in_proc_mode(extra: &[&str], work: impl FnOnce() -> Workload) -> (Peers, Workload, String) {
    let _turn = one_at_a_time();
    let (_dir, path) = temp_output();
    let netmon = Netmon::start(&path, "proc", extra);
    netmon.wait_ready().unwrap();
    let work = work();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    (read_peers(&path), work, log)
}

/// Netlink reaches a network namespace, not a directory: a --proc-net that
/// is no /proc/PID/net cannot be read that way, and the flag is named.
#[test]
fn socket_tables_netlink_needs_a_namespace_directory() {
    let (dir, path) = temp_output();
    let tables = dir.path().join("tables");
    fs::create_dir(&tables).unwrap();
    fs::copy("/proc/net/tcp", tables.join("tcp")).unwrap();
    let tables = tables.to_str().unwrap();
    let (status, log) = Netmon::start(
        &path,
        "proc",
        &["--proc-net", tables, "--socket-tables", "netlink"],
    )
    .wait();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    let wanted = format!(
        "netmon: --socket-tables netlink: cannot read the sockets of {tables} over NETLINK_SOCK_DIAG (CONFIG_INET_DIAG): {tables} is not a /proc/PID/net directory"
    );
    assert_eq!(last, wanted, "{log}");
    assert!(
        !path.exists(),
        "a refused start must not write {}",
        path.display()
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_restart_keeps_every_peer_of_the_first_run() {
    let (_dir, path) = temp_output();
    let first = Netmon::ready(&path, "auto");
    let one = workload(Block::BeforeRestart, 5);
    assert!(first.stop().0.success());
    let second = Netmon::ready(&path, "auto");
    let two = workload(Block::AfterRestart, 5);
    let (status, log) = second.stop();
    assert!(status.success(), "{log}");
    // Attached before the file is read, however long reading it takes.
    let attached = log.find("] mode: ").unwrap_or(usize::MAX);
    assert!(attached < log.find("continuing from").unwrap(), "{log}");
    let peers = read_peers(&path);
    for work in [&one, &two] {
        expect_peers(
            &peers,
            &work.destinations,
            "outbound",
            outbound(work.port, false),
        );
        expect_peers(&peers, &work.sources, "inbound", inbound(work.port, false));
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn connections_open_before_start_are_recorded_by_the_startup_scan() {
    let (listener, dest) = listen(Block::StartupScan.addr(0, 1));
    let source = Block::StartupScan.addr(1, 1);
    let client = connect_from(source, dest).unwrap();
    let server = listener.accept().unwrap().0;
    let (_dir, path) = temp_output();
    let (status, log) = Netmon::ready(&path, "auto").stop();
    drop((client, server));
    assert!(status.success(), "{log}");
    // Recorded with its direction and port, but not counted: counts are
    // connections seen opening, so a restart does not count again the
    // connections that outlive it.
    let peers = read_peers(&path);
    let port = dest.port();
    expect_peers(&peers, &[*dest.ip()], "recorded outbound, uncounted", |p| {
        p["outbound"] == 0 && has(&p["remote_ports"], tcp_port(port))
    });
    expect_peers(&peers, &[source], "recorded inbound, uncounted", |p| {
        p["inbound"] == 0 && has(&p["local_ports"], tcp_port(port))
    });
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn accept_blocked_before_start_is_recorded_as_inbound() {
    let (listener, dest) = listen(Block::AcceptBlocked.addr(0, 1));
    let (blocked_tx, blocked) = mpsc::channel();
    let acceptor = thread::Builder::new()
        .name("nm-acceptor".into())
        .spawn(move || {
            blocked_tx.send(()).unwrap();
            listener.accept().unwrap().0
        })
        .unwrap();
    blocked.recv().unwrap();
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(&path, "auto");
    let source = Block::AcceptBlocked.addr(1, 1);
    let client = connect_from(source, dest).unwrap();
    let server = acceptor.join().unwrap();
    let (status, log) = netmon.stop();
    drop((client, server));
    assert!(status.success(), "{log}");
    expect_peers(
        &read_peers(&path),
        &[source],
        "inbound",
        inbound(dest.port(), false),
    );
}

/// A listener on `ip` and the address it took.
fn listen(ip: Ipv4Addr) -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, SocketAddrV4::new(ip, port))
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn probe_verifies_every_program_even_where_it_cannot_attach() {
    let output = Command::new(NETMON).arg("probe").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for program in [
        "tcp_connect (kprobe",
        "inet_csk_accept (kretprobe",
        "inet_sock_set_state (tracepoint",
        "inet_sock_set_state_raw (raw tracepoint",
        "inet_sock_set_state_btf (BTF tracepoint",
        "udp_bind4 (cgroup sock_addr bind4",
        "udp_bind6 (cgroup sock_addr bind6",
        "udp_connect4 (cgroup sock_addr connect4",
        "udp_sendmsg4 (cgroup sock_addr sendmsg4",
        "udp_recvmsg4 (cgroup sock_addr recvmsg4",
        "udp_connect6 (cgroup sock_addr connect6",
        "udp_sendmsg6 (cgroup sock_addr sendmsg6",
        "udp_recvmsg6 (cgroup sock_addr recvmsg6",
    ] {
        assert!(
            stdout.contains(&format!("program {program}")) && !stdout.contains("REJECTED"),
            "{stdout}"
        );
    }
    assert_eq!(stdout.matches(": verified").count(), 13, "{stdout}");
    assert!(
        stdout.contains("udp: available in every eBPF mode (cgroup programs on /sys/fs/cgroup"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "namespace and owner offsets: socket namespace from BTF, task namespace from BTF, socket cgroup from BTF"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("socket tables: netlink sock_diag, with destroy notifications"),
        "{stdout}"
    );
}

/// Each checkpoint records the host's own addresses of both families,
/// loopback's and IPv6 link-local ones excepted (every host has the same),
/// as `ip` lists them: what joins files from many hosts.
#[test]
fn a_checkpoint_records_the_hosts_own_addresses() {
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(&path, "proc");
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let listed = Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    let mut expected: Vec<IpAddr> = String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .nth(3)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .filter(|addr: &IpAddr| {
            !addr.is_loopback() && !matches!(addr, IpAddr::V6(v6) if v6.is_unicast_link_local())
        })
        .collect();
    expected.sort_unstable();
    expected.dedup();
    let file = read_checkpoint(&path);
    let recorded: Vec<IpAddr> = file["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|addr| addr.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(recorded, expected, "{log}");
}

#[test]
fn a_corrupt_file_is_refused_and_left_untouched() {
    let (_dir, path) = temp_output();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage = b"{\"version\": 1, \"peers\": [trunc";
    fs::write(&path, garbage).unwrap();
    let (status, log) = Netmon::start(&path, "auto", &[]).wait();
    assert_eq!(status.code(), Some(1), "{log}");
    // netmon attaches before it reads the file: what it logged about that
    // comes first, then one line of error.
    let errors: Vec<_> = log.lines().filter(|line| !line.starts_with('[')).collect();
    assert_eq!(errors.len(), 1, "one line of error:\n{log}");
    assert!(
        log.lines().last() == Some(errors[0])
            && errors[0].starts_with(&format!("netmon: {}: ", path.display())),
        "the error names the file, last:\n{log}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        garbage,
        "the file must be left as it was"
    );
}

#[test]
fn the_old_pollers_address_list_is_carried_over() {
    let (_dir, path) = temp_output();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, r#"["10.1.2.3", "192.168.7.7"]"#).unwrap();
    let (status, log) = Netmon::ready(&path, "auto").stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    for addr in ["10.1.2.3", "192.168.7.7"] {
        assert!(
            peers.contains_key(&addr.parse().unwrap()),
            "{addr} lost in migration: {peers:?}"
        );
    }
}

#[test]
fn a_bad_flag_is_named_in_the_error() {
    let output = Command::new(NETMON)
        .args(["run", "--interval", "0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--interval"), "{stderr}");
}
