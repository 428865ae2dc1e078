//! Integration tests of `netmon run`: the real binary, the real eBPF
//! programs, real connections on loopback.
//!
//! Needs root. Tests share the kernel's tracepoints and the loopback
//! addresses they use, so run them with `--test-threads=1` (as
//! `cargo xtask test` does). Every test uses its own 127.x.y.z addresses, so
//! none of them depends on another's traffic.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::Duration,
};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");
/// How long netmon may take to attach before a test gives up. Generous: it
/// is a hang detector, not a speed assertion.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `netmon run`; killed if a test fails before stopping it.
struct Netmon {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    ready: mpsc::Receiver<()>,
}

impl Netmon {
    fn start(output: &Path, mode: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(NETMON)
            .args(["run", "--output"])
            .arg(output)
            .args(["--mode", mode])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netmon");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, ready) = mpsc::channel();
        let lines = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("ready:") {
                    let _ = tx.send(());
                }
                lines.lock().unwrap().push(line);
            }
        });
        Self { child, log, ready }
    }

    /// Starts netmon and waits until it has attached and scanned.
    fn ready(output: &Path, mode: &str) -> Self {
        let netmon = Self::start(output, mode, &[]);
        if netmon.ready.recv_timeout(READY_TIMEOUT).is_err() {
            panic!("netmon --mode {mode} did not get ready:\n{}", netmon.log());
        }
        netmon
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGTERM, then the exit status and everything it logged.
    fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        // Let the reader thread see EOF.
        thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }

    /// Waits for a netmon that is expected to exit on its own.
    fn wait(mut self) -> (ExitStatus, String) {
        let status = self.child.wait().unwrap();
        thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }
}

impl Drop for Netmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mode auto must choose on this kernel.
fn expected_auto_mode() -> &'static str {
    if Path::new("/sys/bus/event_source/devices/kprobe").exists() {
        "kprobe"
    } else {
        "tracepoint"
    }
}

fn kernel_has_kprobes() -> bool {
    expected_auto_mode() == "kprobe"
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("peers.json");
    (dir, path)
}

/// A TCP socket bound to `source` before connecting, so each connection
/// comes from its own loopback address.
fn connect_from(source: Ipv4Addr, dest: SocketAddrV4) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&SocketAddr::from(dest).into())?;
    Ok(socket)
}

/// A port nothing listens on, on any address.
fn closed_port() -> u16 {
    let probe = TcpListener::bind("0.0.0.0:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// What a workload did, for the assertions.
struct Workload {
    port: u16,
    refused_port: u16,
    destinations: Vec<Ipv4Addr>,
    refused: Vec<Ipv4Addr>,
    sources: Vec<Ipv4Addr>,
    refused_sources: Vec<Ipv4Addr>,
}

/// `count` connections from distinct 127.20.`net`.i to distinct
/// 127.10.`net`.i (a listener on 0.0.0.0), every other one closed with RST,
/// plus `count` refused attempts from 127.21.`net`.i to 127.11.`net`.i.
/// Connections are made by a thread named `nm-client`, accepted by one
/// named `nm-acceptor`.
fn workload(net: u8, count: u8) -> Workload {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused_port = closed_port();
    let acceptor = thread::Builder::new()
        .name("nm-acceptor".into())
        .spawn(move || {
            (0..count)
                .map(|_| listener.accept().unwrap().1.ip())
                .collect::<BTreeSet<_>>()
        })
        .unwrap();
    let client = thread::Builder::new()
        .name("nm-client".into())
        .spawn(move || {
            for i in 1..=count {
                let dest = SocketAddrV4::new(Ipv4Addr::new(127, 10, net, i), port);
                let socket = connect_from(Ipv4Addr::new(127, 20, net, i), dest).unwrap();
                if i % 2 == 0 {
                    socket.set_linger(Some(Duration::ZERO)).unwrap();
                }
                drop(socket);
                let refused = SocketAddrV4::new(Ipv4Addr::new(127, 11, net, i), refused_port);
                let err = connect_from(Ipv4Addr::new(127, 21, net, i), refused).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
            }
        })
        .unwrap();
    client.join().unwrap();
    let accepted = acceptor.join().unwrap();
    let addrs = |a: u8| {
        (1..=count)
            .map(|i| Ipv4Addr::new(127, a, net, i))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        accepted.len(),
        usize::from(count),
        "every connection accepted"
    );
    Workload {
        port,
        refused_port,
        destinations: addrs(10),
        refused: addrs(11),
        sources: addrs(20),
        refused_sources: addrs(21),
    }
}

/// The checkpoint's peers by address.
fn read_peers(path: &Path) -> std::collections::BTreeMap<Ipv4Addr, Value> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["version"], 1, "{text}");
    file["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| (peer["ip"].as_str().unwrap().parse().unwrap(), peer.clone()))
        .collect()
}

fn has(list: &Value, wanted: Value) -> bool {
    list.as_array().is_some_and(|items| items.contains(&wanted))
}

/// Checks one expectation per peer and reports every miss at once.
fn expect_peers(
    peers: &std::collections::BTreeMap<Ipv4Addr, Value>,
    addrs: &[Ipv4Addr],
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let misses: Vec<String> = addrs
        .iter()
        .filter(|addr| !peers.get(addr).is_some_and(&check))
        .map(|addr| {
            format!(
                "{addr}: {}",
                peers.get(addr).map_or("absent".into(), Value::to_string)
            )
        })
        .collect();
    assert!(
        misses.is_empty(),
        "{} of {} peers are not {what}:\n{}",
        misses.len(),
        addrs.len(),
        misses.join("\n")
    );
}

fn outbound(port: u16, process: bool) -> impl Fn(&Value) -> bool {
    move |peer| {
        peer["outbound"].as_u64() > Some(0)
            && has(&peer["remote_ports"], port.into())
            && (!process || has(&peer["processes"], "nm-client".into()))
    }
}

fn inbound(port: u16, process: bool) -> impl Fn(&Value) -> bool {
    move |peer| {
        peer["inbound"].as_u64() > Some(0)
            && has(&peer["local_ports"], port.into())
            && (!process || has(&peer["processes"], "nm-acceptor".into()))
    }
}

/// Runs the workload under `mode` and checks every peer.
fn capture_all_peers(mode: &str, net: u8) -> String {
    let (_dir, path) = tempdir();
    let netmon = Netmon::ready(&path, mode);
    let work = workload(net, 20);
    let (status, log) = netmon.stop();
    assert!(status.success(), "netmon exited with {status}:\n{log}");

    let peers = read_peers(&path);
    expect_peers(
        &peers,
        &work.destinations,
        "outbound with port and process",
        outbound(work.port, true),
    );
    expect_peers(
        &peers,
        &work.refused,
        "outbound (refused) with port and process",
        outbound(work.refused_port, true),
    );
    // The kretprobe runs in the accepting process; the tracepoint's inbound
    // transition runs in softirq and cannot name it.
    let accepting_process_known = log.contains("mode: kprobe");
    expect_peers(
        &peers,
        &work.sources,
        "inbound with our port",
        inbound(work.port, accepting_process_known),
    );
    let phantom: Vec<_> = work
        .refused_sources
        .iter()
        .filter(|a| peers.contains_key(a))
        .collect();
    assert!(
        phantom.is_empty(),
        "refused sources never connected, yet recorded: {phantom:?}"
    );
    log
}

#[test]
fn auto_mode_picks_the_best_rung_and_captures_every_peer() {
    let log = capture_all_peers("auto", 1);
    let expected = expected_auto_mode();
    assert!(
        log.contains(&format!("mode: {expected}")),
        "auto should choose {expected}:\n{log}"
    );
    if expected == "tracepoint" {
        assert!(
            log.contains("skipped kprobe: kernel has no kprobe support (CONFIG_KPROBES)"),
            "auto should say why kprobe was skipped:\n{log}"
        );
    }
}

#[test]
fn tracepoint_mode_captures_every_peer() {
    let log = capture_all_peers("tracepoint", 2);
    assert!(log.contains("mode: tracepoint"), "{log}");
}

#[test]
fn kprobe_mode_captures_every_peer_or_fails_with_the_reason() {
    if kernel_has_kprobes() {
        let log = capture_all_peers("kprobe", 3);
        assert!(log.contains("mode: kprobe"), "{log}");
        return;
    }
    let (_dir, path) = tempdir();
    let (status, log) = Netmon::start(&path, "kprobe", &[]).wait();
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
    let (_dir, path) = tempdir();
    let netmon = Netmon::ready(&path, "proc");
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let destinations: Vec<_> = (1..=5).map(|i| Ipv4Addr::new(127, 12, 0, i)).collect();
    let sources: Vec<_> = (1..=5).map(|i| Ipv4Addr::new(127, 22, 0, i)).collect();
    // Held open until netmon has stopped: proc mode sees what is in the
    // table, and polls once more on the way out.
    let held: Vec<_> = destinations
        .iter()
        .zip(&sources)
        .map(|(dest, src)| {
            let client = connect_from(*src, SocketAddrV4::new(*dest, port)).unwrap();
            (client, listener.accept().unwrap().0)
        })
        .collect();
    let (status, log) = netmon.stop();
    drop(held);
    assert!(status.success(), "{log}");
    assert!(log.contains("mode: proc"), "{log}");
    let peers = read_peers(&path);
    expect_peers(&peers, &destinations, "outbound", |p| {
        p["outbound"].as_u64() > Some(0) && has(&p["remote_ports"], port.into())
    });
    expect_peers(&peers, &sources, "inbound", |p| {
        p["inbound"].as_u64() > Some(0) && has(&p["local_ports"], port.into())
    });
}

#[test]
fn a_restart_keeps_every_peer_of_the_first_run() {
    let (_dir, path) = tempdir();
    let first = Netmon::ready(&path, "auto");
    let one = workload(4, 5);
    assert!(first.stop().0.success());
    let second = Netmon::ready(&path, "auto");
    let two = workload(5, 5);
    let (status, log) = second.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("continuing from"), "{log}");
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
fn connections_open_before_start_are_recorded_by_the_startup_scan() {
    let listener = TcpListener::bind("127.30.0.1:0").unwrap();
    let dest = SocketAddrV4::new(
        Ipv4Addr::new(127, 30, 0, 1),
        listener.local_addr().unwrap().port(),
    );
    let client = connect_from(Ipv4Addr::new(127, 31, 0, 1), dest).unwrap();
    let server = listener.accept().unwrap().0;
    let (_dir, path) = tempdir();
    let (status, log) = Netmon::ready(&path, "auto").stop();
    drop((client, server));
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    expect_peers(
        &peers,
        &[*dest.ip()],
        "outbound",
        outbound(dest.port(), false),
    );
    expect_peers(
        &peers,
        &[Ipv4Addr::new(127, 31, 0, 1)],
        "inbound",
        inbound(dest.port(), false),
    );
}

#[test]
fn accept_blocked_before_start_is_recorded_as_inbound() {
    let listener = TcpListener::bind("127.40.0.1:0").unwrap();
    let dest = SocketAddrV4::new(
        Ipv4Addr::new(127, 40, 0, 1),
        listener.local_addr().unwrap().port(),
    );
    let (blocked_tx, blocked) = mpsc::channel();
    let acceptor = thread::Builder::new()
        .name("nm-acceptor".into())
        .spawn(move || {
            blocked_tx.send(()).unwrap();
            listener.accept().unwrap().0
        })
        .unwrap();
    blocked.recv().unwrap();
    let (_dir, path) = tempdir();
    let netmon = Netmon::ready(&path, "auto");
    let source = Ipv4Addr::new(127, 41, 0, 1);
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

#[test]
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
    ] {
        assert!(
            stdout.contains(&format!("program {program}")) && !stdout.contains("REJECTED"),
            "{stdout}"
        );
    }
    assert_eq!(stdout.matches(": verified").count(), 3, "{stdout}");
}

#[test]
fn a_corrupt_file_is_refused_and_left_untouched() {
    let (_dir, path) = tempdir();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let garbage = b"{\"version\": 1, \"peers\": [trunc";
    fs::write(&path, garbage).unwrap();
    let (status, log) = Netmon::start(&path, "auto", &[]).wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert_eq!(log.lines().count(), 1, "one line of error:\n{log}");
    assert!(
        log.starts_with(&format!("netmon: {}: ", path.display())),
        "the error names the file:\n{log}"
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        garbage,
        "the file must be left as it was"
    );
}

#[test]
fn the_old_pollers_address_list_is_carried_over() {
    let (_dir, path) = tempdir();
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
