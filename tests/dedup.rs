//! Counts and peers through the kernel's dedup map: exact counts, and no
//! peer lost when events do not fit in the ring buffer, with netmon
//! stopped (SIGSTOP) while connections arrive.
//!
//! The map is emptied by generations rather than evicted, so with netmon
//! stopped it holds every key up to its size, however the keys fall on
//! CPUs; beyond it, what is lost is counted in `uncounted_connections`.
use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    path::Path,
    thread,
};

use netmon_scenario::{
    check::{peers_of, read_checkpoint},
    files::temp_output,
    harness,
    net::{Block, closed_port},
    workload::connect_from,
};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

fn start(output: &Path, extra: &[&str]) -> harness::Netmon {
    let netmon = harness::Netmon::start(NETMON, output, "auto", extra);
    netmon.wait_ready().unwrap();
    netmon
}

/// Sends `signal` to netmon.
fn signal(netmon: &harness::Netmon, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(netmon.pid()).unwrap();
    // SAFETY: plain syscall on a child we started.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {signal}");
}

fn listen(ip: Ipv4Addr) -> (TcpListener, SocketAddrV4) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, SocketAddrV4::new(ip, port))
}

/// `count` distinct source addresses of `block`, 250 per /24.
fn sources(block: Block, count: u32) -> Vec<Ipv4Addr> {
    (0..count)
        .map(|i| {
            block.addr(
                u8::try_from(i / 250).unwrap(),
                u8::try_from(i % 250 + 1).unwrap(),
            )
        })
        .collect()
}

/// Connects from every source to every listener and closes both ends, on
/// one CPU: loopback's receiving side runs on the sender's CPU, so every
/// key lands in that CPU's share of the map, where a per-CPU LRU would
/// evict beyond its slice.
fn connect_all_on_one_cpu(sources: &[Ipv4Addr], listeners: &[(TcpListener, SocketAddrV4)]) {
    thread::scope(|scope| {
        scope.spawn(|| {
            pin_to_cpu(0);
            for &source in sources {
                for (listener, dest) in listeners {
                    let client = connect_from(source, *dest).unwrap();
                    drop((listener.accept().unwrap(), client));
                }
            }
        });
    });
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and the syscall
    // get valid pointers.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity"
        );
    }
}

/// Counts survive the kernel's dedup exactly: a key seen once (sent alone,
/// never in the dedup map), one seen twice (the second starts a series),
/// and one seen hundreds of times within the window (most counted only in
/// the map, picked up by the harvest at exit).
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn connection_counts_are_exact_through_the_kernels_dedup() {
    let (listener, dest) = listen(Block::DedupCounts.addr(0, 1));
    let (_dir, path) = temp_output();
    let netmon = harness::Netmon::ready(NETMON, &path, "auto");
    let sources = [
        (Block::DedupCounts.addr(1, 1), 1),
        (Block::DedupCounts.addr(1, 2), 2),
        (Block::DedupCounts.addr(1, 3), 300),
    ];
    for (source, times) in sources {
        for _ in 0..times {
            let client = connect_from(source, dest).unwrap();
            drop((listener.accept().unwrap(), client));
        }
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = peers_of(&read_checkpoint(&path));
    let count = |ip: Ipv4Addr, direction: &str| peers.get(&ip).map(|peer| peer[direction].clone());
    let expected: Vec<_> = sources
        .iter()
        .map(|&(source, times)| (source, Some(times.into())))
        .chain([(*dest.ip(), Some(303.into()))])
        .collect();
    let actual: Vec<_> = sources
        .iter()
        .map(|&(source, _)| (source, count(source, "inbound")))
        .chain([(*dest.ip(), count(*dest.ip(), "outbound"))])
        .collect();
    assert_eq!(
        actual, expected,
        "inbound per source, outbound to the listener:\n{log}"
    );
}

/// Events that do not fit in the ring buffer lose no peer and no count:
/// with netmon stopped and the smallest ring, most first sightings are
/// lost, and the kernel's dedup map carries them to the harvest.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn peers_whose_events_are_lost_still_reach_the_file() {
    let (listener, dest) = listen(Block::LostEvents.addr(255, 1));
    let (_dir, path) = temp_output();
    let netmon = start(&path, &["--ring-buffer", "4"]);
    signal(&netmon, libc::SIGSTOP);
    let sources: Vec<_> = (1..=200).map(|i| Block::LostEvents.addr(0, i)).collect();
    for &source in &sources {
        let client = connect_from(source, dest).unwrap();
        drop((listener.accept().unwrap(), client));
    }
    signal(&netmon, libc::SIGCONT);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let file = read_checkpoint(&path);
    assert!(
        file["lost_events"].as_u64() > Some(0),
        "a 4 KiB ring held 400 events?\n{log}"
    );
    let peers = peers_of(&file);
    let missing: Vec<_> = sources
        .iter()
        .filter(|source| peers.get(source).map(|p| p["inbound"].clone()) != Some(1.into()))
        .collect();
    assert_eq!(
        missing,
        Vec::<&Ipv4Addr>::new(),
        "sources without exactly one inbound:\n{log}"
    );
    assert_eq!(peers[dest.ip()]["outbound"], 200, "{log}");
}

/// More distinct keys than one CPU's slice of a per-CPU LRU map (the map's
/// size over the possible CPUs) arrive on one CPU while netmon is stopped
/// and its ring buffer full: after SIGCONT every peer is in the file, and
/// every count is exact.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_stopped_collector_loses_no_peer_that_fits_in_the_map() {
    let listener = listen(Block::DedupStopped.addr(255, 1));
    let dest = listener.1;
    let sources = sources(Block::DedupStopped, 40_000);
    let (_dir, path) = temp_output();
    let netmon = start(&path, &["--ring-buffer", "4"]);
    signal(&netmon, libc::SIGSTOP);
    connect_all_on_one_cpu(&sources, &[listener]);
    signal(&netmon, libc::SIGCONT);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let file = read_checkpoint(&path);
    let peers = peers_of(&file);
    let wrong: Vec<_> = sources
        .iter()
        .filter(|source| peers.get(source).map(|p| p["inbound"].clone()) != Some(1.into()))
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} sources without exactly one inbound connection, first {:?}\n{log}",
        wrong.len(),
        sources.len(),
        wrong.first()
    );
    assert_eq!(peers[dest.ip()]["outbound"], 40_000, "{log}");
    assert_eq!(file["uncounted_connections"], 0, "{log}");
}

/// Beyond the map's size, with netmon stopped and its ring buffer full,
/// connections cannot all be kept: those lost are counted in the file and
/// said in the log, and no count is made up.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn connections_beyond_the_map_are_counted_as_uncounted() {
    // Two ports: two inbound keys per source, 80 000 in all, for a map of
    // 65 536.
    let listeners = [
        listen(Block::DedupFull.addr(255, 1)),
        listen(Block::DedupFull.addr(255, 1)),
    ];
    let dest = *listeners[0].1.ip();
    let sources = sources(Block::DedupFull, 40_000);
    let (_dir, path) = temp_output();
    let netmon = start(&path, &["--ring-buffer", "4"]);
    signal(&netmon, libc::SIGSTOP);
    connect_all_on_one_cpu(&sources, &listeners);
    signal(&netmon, libc::SIGCONT);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let file = read_checkpoint(&path);
    let peers = peers_of(&file);
    let inbound: Vec<u64> = sources
        .iter()
        .map(|source| {
            peers
                .get(source)
                .map_or(0, |p| p["inbound"].as_u64().unwrap())
        })
        .collect();
    assert!(
        inbound.iter().all(|&n| n <= 2),
        "a source counted more than twice\n{log}"
    );
    let missing = 80_000 - inbound.iter().sum::<u64>();
    let uncounted = file["uncounted_connections"].as_u64().unwrap();
    assert!(
        missing > 0 && missing <= uncounted,
        "{missing} connections missing, {uncounted} counted as uncounted\n{log}"
    );
    assert_eq!(peers[&dest]["outbound"], 80_000, "{log}");
    assert!(
        log.contains("connections neither sent nor kept"),
        "no warning of uncounted connections:\n{log}"
    );
}

/// A connection whose event did not fit in the ring buffer keeps its
/// process name: the kernel's map holds it beside the count.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn peers_whose_events_are_lost_keep_their_process() {
    let port = closed_port();
    let dests: Vec<_> = sources(Block::LostProcess, 300);
    let (_dir, path) = temp_output();
    let netmon = start(&path, &["--ring-buffer", "4"]);
    signal(&netmon, libc::SIGSTOP);
    thread::Builder::new()
        .name("lostproc".into())
        .spawn({
            let dests = dests.clone();
            move || {
                for dest in dests {
                    // Refused: nothing listens there.
                    connect_from(Ipv4Addr::LOCALHOST, SocketAddrV4::new(dest, port)).unwrap_err();
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
    signal(&netmon, libc::SIGCONT);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let file = read_checkpoint(&path);
    assert!(
        file["lost_events"].as_u64() > Some(0),
        "a 4 KiB ring held 300 events?\n{log}"
    );
    let peers = peers_of(&file);
    let nameless: Vec<_> = dests
        .iter()
        .filter(|dest| {
            peers
                .get(dest)
                .map(|p| (p["outbound"].clone(), p["processes"].clone()))
                != Some((1.into(), serde_json::json!(["lostproc"])))
        })
        .collect();
    assert!(
        nameless.is_empty(),
        "{} of 300 peers without one outbound connection by lostproc, first {:?}\n{log}",
        nameless.len(),
        nameless.first().map(|dest| peers.get(dest))
    );
}
