//! `netmon-scenario NETMON CASE RESULTS`: runs one case of the kernel
//! matrix inside a VM and appends its result line to RESULTS.
//!
//! The workload and the checks are the integration tests' own
//! (`netmon_scenario::{workload, check}`). Every outcome, a panic included,
//! ends in a result line; a case that cannot even print one is noticed by
//! the host as a missing line.
use std::{
    any::Any,
    env, fs,
    io::Write as _,
    panic,
    path::{Path, PathBuf},
    process::ExitCode,
};

use netmon_scenario::{
    case::{Case, Workload},
    check::{Sees, check_workload, peers_in, read_checkpoint, read_ip_peers, read_peers},
    harness::{Netmon, chosen_mode},
    ipv6, isolate, mptcp,
    net::Net,
    netns::OwnNetns,
    result::Row,
    udp,
    workload::{workload, workload_held_open},
};

/// Connections per case: enough that a hook which misses some shows it,
/// few enough for an emulated CPU.
const CONNECTIONS: u8 = 20;

/// Sources of the MPTCP workload, making 1, 2, ... connections each.
const MPTCP_SOURCES: u8 = 3;

/// Clients of the UDP workload, making 1, 2, ... exchanges each.
const UDP_CLIENTS: u8 = 5;

/// Pairs of the IPv6 workload, TCP and UDP each, client i making i
/// connections or exchanges.
const IPV6_PAIRS: u8 = 5;

/// What netmon logs when its cgroup programs did not attach.
const UDP_NOT_RECORDED: &str = "UDP peers are not recorded";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let [netmon, name, results] = args.as_slice() else {
        eprintln!("usage: netmon-scenario NETMON CASE RESULTS");
        return ExitCode::from(2);
    };
    let Some((index, case)) = Case::find(name) else {
        eprintln!("netmon-scenario: no case {name:?}");
        return ExitCode::from(2);
    };
    // Distinct addresses per case, so no case can pass on another's peers.
    let net = Net::vm_case(index);
    let row =
        panic::catch_unwind(|| run(Path::new(netmon), case, net)).unwrap_or_else(|panic| Row {
            note: format!("panic: {}", message(&*panic)),
            ..unfinished(case)
        });
    println!("{row}");
    if let Err(err) = fs::OpenOptions::new()
        .append(true)
        .open(results)
        .and_then(|mut file| writeln!(file, "{row}"))
    {
        eprintln!("netmon-scenario: {results}: {err}");
        return ExitCode::FAILURE;
    }
    if row.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run(binary: &Path, case: &Case, net: Net) -> Row {
    if case.workload == Workload::Mptcp
        && let Some(why) = mptcp::unavailable()
    {
        // No MPTCP socket can exist to be miscounted.
        return Row {
            ok: true,
            note: format!("skipped: {why}"),
            ..unfinished(case)
        };
    }
    // The IPv6 workload's addresses exist only in a namespace of its own,
    // which netmon runs in.
    let netns = match case.workload {
        Workload::Ipv6 => match OwnNetns::with_ula(net) {
            Ok(netns) => Some(netns),
            Err(err) => {
                return Row {
                    note: format!("no network namespace for IPv6: {err}"),
                    ..unfinished(case)
                };
            }
        },
        _ => None,
    };
    let output = output_path(case);
    let mut command = Netmon::command(binary, &output, case.mode, case.extra);
    isolate::apply(case.setting, &mut command);
    if let Some(netns) = &netns {
        netns.confine(&mut command);
    }
    let netmon = Netmon::spawn(command);
    let mut row = unfinished(case);
    if let Err(err) = netmon.wait_ready() {
        eprintln!("netmon-scenario: {}: netmon {err}", case.name);
        let log = netmon.stop().1;
        row.chosen = chosen_mode(&log).unwrap_or("-").into();
        row.note = format!("not ready: {}", last_line(&log));
        return row;
    }
    let work = match case.workload {
        Workload::HeldOpen => Work::Tcp(workload_held_open(net, CONNECTIONS)),
        Workload::Closed | Workload::ClosedBeforePolls => Work::Tcp(workload(net, CONNECTIONS)),
        Workload::Mptcp => Work::Mptcp(
            mptcp::workload(net, MPTCP_SOURCES)
                .unwrap_or_else(|err| panic!("MPTCP connections: {err}")),
        ),
        Workload::Udp => Work::Udp(
            udp::workload(net, UDP_CLIENTS).unwrap_or_else(|err| panic!("UDP datagrams: {err}")),
        ),
        Workload::Ipv6 => {
            let held_open = case.expect_mode == "proc";
            let netns = netns.as_ref().expect("made above for this workload");
            Work::Ipv6(
                netns
                    .run_in(|| ipv6::workload(net, IPV6_PAIRS, held_open))
                    .unwrap_or_else(|err| panic!("IPv6 workload: {err}")),
            )
        }
    };
    let (status, log) = netmon.stop();
    let chosen = chosen_mode(&log).unwrap_or("-").to_owned();
    let sees = match case.workload {
        Workload::ClosedBeforePolls => Sees::proc_notified(),
        Workload::Closed
        | Workload::HeldOpen
        | Workload::Mptcp
        | Workload::Udp
        | Workload::Ipv6 => Sees::mode(&chosen),
    };
    let verdict = match &work {
        Work::Tcp(work) => check_workload(&read_peers(&output), work, sees),
        // Made in a namespace of their own: that namespace's peers.
        Work::Mptcp(work) => mptcp::check(
            &peers_in(&read_checkpoint(&output), Some(work.netns)),
            work,
            sees.outbound_process,
        ),
        Work::Udp(work) => udp::check(&read_ip_peers(&output), work, sees.outbound_process),
        // netmon ran in the workload's namespace: its own peers.
        Work::Ipv6(work) => ipv6::check(&read_ip_peers(&output), work, sees),
    };
    drop(work);

    let mut problems = verdict.problems();
    // Why the cgroup programs did not attach, where the missing peers
    // alone would not say.
    if let Some(line) = log.lines().find(|line| line.contains(UDP_NOT_RECORDED)) {
        problems.push(strip_log_prefix(line).to_owned());
    }
    if !status.success() {
        problems.push(format!("netmon exited with {status}"));
    }
    if chosen != case.expect_mode {
        problems.push(format!("ran in {chosen}, expected {}", case.expect_mode));
    }
    let mut evidence = Vec::new();
    for wanted in case.expect_log {
        match log.lines().find(|line| line.contains(wanted)) {
            Some(line) => evidence.push(strip_log_prefix(line)),
            None => problems.push(format!("log lacks {wanted:?}")),
        }
    }
    evidence.dedup();
    if !problems.is_empty() {
        eprintln!(
            "netmon-scenario: {} failed; netmon's log:\n{log}",
            case.name
        );
    }
    row.ok = problems.is_empty();
    row.note = if row.ok {
        evidence.join(" | ")
    } else {
        problems.join("; ")
    };
    row.chosen = chosen;
    row.outbound = Some(verdict.outbound_count());
    row.inbound = Some(verdict.inbound_count());
    row
}

/// What a case's workload did.
enum Work {
    Tcp(netmon_scenario::workload::Workload),
    Mptcp(mptcp::MptcpWorkload),
    Udp(udp::UdpWorkload),
    Ipv6(ipv6::Ipv6Workload),
}

/// The row of a case that has not passed (yet).
fn unfinished(case: &Case) -> Row {
    Row {
        on: "vm".into(),
        kernel: Row::kernel_release(),
        case: case.name.into(),
        chosen: "-".into(),
        outbound: None,
        inbound: None,
        ok: false,
        note: String::new(),
    }
}

fn output_path(case: &Case) -> PathBuf {
    let dir = env::temp_dir().join(format!("netmon-{}", case.name));
    let _ = fs::remove_dir_all(&dir);
    dir.join("peers.json")
}

/// `[2026-11-28T16:00:34Z INFO ] text` -> `text`.
fn strip_log_prefix(line: &str) -> &str {
    line.split_once("] ").map_or(line, |(_, text)| text)
}

fn last_line(log: &str) -> &str {
    log.lines().last().unwrap_or("(nothing logged)")
}

fn message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(no message)".into())
}
