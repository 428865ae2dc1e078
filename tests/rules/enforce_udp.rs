//! Hooked-in rules against real UDP software.
//!
//! Two namespaces of the test's own joined by a veth pair: `server`, where
//! dnsmasq answers one name from its own configuration, and `client`,
//! where dig asks it, with no default route, so no query can leave. netmon
//! runs on the host in its default eBPF mode, whose cgroup programs see
//! every namespace: it must record the server as the client namespace's
//! outbound peer on 53/udp, and only there.
//!
//! The client namespace's output rules (`--netns INODE --direction out`),
//! loaded and hooked inside it, must still let dig resolve, and must drop
//! datagrams to the same server on another port and to another address of
//! it, each answered by a UDP echo before the rules, with the output drop
//! counter moving. The server namespace's input rules, hooked inside it,
//! must let the client's queries in and drop its datagrams to the other
//! port.
use std::{
    net::{Ipv4Addr, UdpSocket},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use netmon_scenario::harness::Netmon;
use serde_json::Value;
use tempfile::TempDir;

use super::{Family, Tool, inside};
use crate::{Netns, find, netmon_rules, veth_pair};

/// The server's address (dnsmasq's), its other address, and the client's;
/// a block no other test uses, and only ever inside these namespaces.
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const SERVER_OTHER: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 3);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
/// The name dnsmasq answers, and the address it answers with: from its own
/// configuration, never from a resolver.
const NAME: &str = "netmon.test";
const ANSWER: &str = "10.77.1.99";
/// A port of the server's nobody queried.
const UNUSED_PORT: u16 = 5353;

/// How long a datagram that must be dropped is waited for an answer: the
/// drop counter, not this timeout, is what shows it was dropped.
const DROPPED: Duration = Duration::from_secs(1);

/// The namespaces, their veth pair and addresses, ready before the first
/// packet; deleting the namespaces deletes the pair.
struct Topology {
    client: Netns,
    server: Netns,
}

impl Topology {
    fn new() -> Self {
        let (client, server) = veth_pair(
            ("udp-client", "udp-server"),
            ("c0", "s0"),
            (&[CLIENT.into()], &[SERVER.into(), SERVER_OTHER.into()]),
        );
        Self { client, server }
    }
}

/// The namespace's inode, as netmon records it and `--netns` takes it.
fn inode(netns: &Netns) -> u64 {
    let path = format!("/run/netns/{}", netns.name);
    std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// A process of the test's own, killed by its PID when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq in `netns`, on SERVER only, answering NAME from its command
/// line: no configuration file, resolver list or hosts file of the host's,
/// no DHCP, its PID file in `dir`.
fn dnsmasq(netns: &Netns, dir: &Path) -> Daemon {
    let dnsmasq = find("dnsmasq")
        .expect("dnsmasq is missing: `apt-get install -y dnsmasq-base` (cargo xtask test does)");
    let child = Command::new(find("ip").unwrap())
        .args(["netns", "exec", &netns.name])
        .arg(dnsmasq)
        .args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--port=53",
            "--log-facility=-",
            &format!("--listen-address={SERVER}"),
            &format!("--address=/{NAME}/{ANSWER}"),
        ])
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq");
    Daemon(child)
}

/// `dig @SERVER NAME` from `netmon`: the addresses it answered, empty if it
/// got no answer in one try of two seconds.
fn dig(netns: &Netns) -> String {
    let dig = find("dig")
        .expect("dig is missing: `apt-get install -y bind9-dnsutils` (cargo xtask test does)");
    let output = Command::new(find("ip").unwrap())
        .args(["netns", "exec", &netns.name])
        .arg(dig)
        .args([
            &format!("@{SERVER}"),
            NAME,
            "A",
            "+short",
            "+tries=1",
            "+time=2",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A UDP echo on `addr:port` in `netns`, answering until dropped.
struct Echo {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Echo {
    fn new(netns: &Netns, addr: Ipv4Addr, port: u16) -> Self {
        let socket = inside(netns, || UdpSocket::bind((addr, port)).unwrap());
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut buf = [0; 512];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether a datagram from `netns` to `to:port` got its echo in time.
fn echoed(netns: &Netns, to: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let socket = inside(netns, || UdpSocket::bind((CLIENT, 0)).unwrap());
    socket.set_read_timeout(Some(timeout)).unwrap();
    // A datagram dropped on output fails its send with EPERM.
    match socket.send_to(b"ping", (to, port)) {
        Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => return false,
        sent => drop(sent.unwrap()),
    }
    let mut buf = [0; 16];
    matches!(socket.recv_from(&mut buf), Ok((4, _)))
}

/// The checkpoint's peer `ip` of the namespace `netns`, if any.
fn peer_in(file: &Value, ip: Ipv4Addr, netns: u64) -> Option<&Value> {
    file["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["ip"] == ip.to_string() && peer["netns"].as_u64() == Some(netns))
}

/// netmon on the host, in its default mode, while dig asks until dnsmasq
/// answers (it may still be starting); the checkpoint it wrote.
fn record(topology: &Topology, dir: &Path) -> Value {
    let checkpoint = dir.join("host.json");
    let netmon = Netmon::start(env!("CARGO_BIN_EXE_netmon"), &checkpoint, "auto", &[]);
    netmon.wait_ready().unwrap();
    let answered = (0..10).any(|_| dig(&topology.client) == ANSWER);
    let (status, log) = netmon.stop();
    assert!(answered, "dig got no answer {ANSWER} from dnsmasq");
    assert!(status.success(), "{log}");
    let text = std::fs::read(&checkpoint).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// A namespace whose rules of one direction are under test, and the
/// datagrams from `client` they must drop.
struct Case<'a> {
    client: &'a Netns,
    netns: &'a Netns,
    direction: &'a str,
    dropped: &'a [(Ipv4Addr, u16)],
}

/// Loads `case`'s rules from `checkpoint` with `tool` (checked first where
/// the tool can), hooks them in, and checks what passes and what is
/// dropped; then removes them.
fn enforce(tool: Tool, case: &Case<'_>, checkpoint: &str, dir: &Path) {
    let (netns, direction) = (case.netns, case.direction);
    let id = inode(netns).to_string();
    let format = tool.format(Family::V4);
    let args = [
        "rules",
        "--netns",
        &id,
        "--direction",
        direction,
        "--format",
        format,
        checkpoint,
    ];
    let text = netmon_rules(&args);
    assert!(
        text.contains("udp"),
        "{tool:?} {direction}: no UDP rule in\n{text}"
    );
    let script = dir.join(format!("{format}-{direction}"));
    std::fs::write(&script, &text).unwrap();
    let path = script.to_str().unwrap();
    match tool {
        Tool::Nft => drop(netns.run("nft", &["-c", "-f", path])),
        Tool::Iptables => drop(netns.run("iptables-restore", &["--test", "--noflush", path])),
        Tool::Ipset => {}
    }
    tool.apply(Family::V4, netns, &script, &text);

    assert_eq!(
        dig(case.client),
        ANSWER,
        "{tool:?} {direction}: dig must still resolve"
    );
    for &(to, port) in case.dropped {
        let before = tool.dropped(Family::V4, netns, direction, Some("udp"));
        assert!(
            !echoed(case.client, to, port, DROPPED),
            "{tool:?} {direction}: a datagram to {to}:{port} must be dropped"
        );
        let after = tool.dropped(Family::V4, netns, direction, Some("udp"));
        assert!(
            after > before,
            "{tool:?} {direction}: {to}:{port}: the drop counter stayed at {before}"
        );
    }
    tool.undo(Family::V4, netns, &[direction]);
    assert!(
        echoed(case.client, SERVER, UNUSED_PORT, Duration::from_secs(10)),
        "{tool:?} {direction}: the undo must let everything through again"
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn hooked_rules_let_dig_resolve_and_drop_other_datagrams() {
    let topology = Topology::new();
    let (client, server) = (&topology.client, &topology.server);
    let dir = TempDir::new().unwrap();
    let _dnsmasq = dnsmasq(server, dir.path());
    let _echoes = [
        Echo::new(server, SERVER, UNUSED_PORT),
        Echo::new(server, SERVER_OTHER, 53),
    ];
    let file = record(&topology, dir.path());
    let peer = peer_in(&file, SERVER, inode(client))
        .unwrap_or_else(|| panic!("no peer {SERVER} of the client's namespace: {file}"));
    assert_eq!(
        peer["remote_ports"],
        serde_json::json!(["53/udp"]),
        "{peer}"
    );
    let peer = peer_in(&file, CLIENT, inode(server))
        .unwrap_or_else(|| panic!("no peer {CLIENT} of the server's namespace: {file}"));
    assert_eq!(peer["local_ports"], serde_json::json!(["53/udp"]), "{peer}");
    let checkpoint = dir.path().join("host.json");
    let checkpoint = checkpoint.to_str().unwrap();

    // The host never talked to either: its rules (if it has any peers at
    // all) must not hold them.
    let host = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(["rules", "--format", "nft", checkpoint])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&host.stdout),
        String::from_utf8_lossy(&host.stderr),
    );
    assert!(
        host.status.success() || stderr.contains("no peers match"),
        "{stderr}"
    );
    for ip in [SERVER, CLIENT] {
        assert!(!stdout.contains(&ip.to_string()), "{stdout}");
    }

    // Both unlisted destinations answer without rules: silence later is
    // the rules' doing.
    let unlisted = [(SERVER, UNUSED_PORT), (SERVER_OTHER, 53)];
    for (to, port) in unlisted {
        assert!(
            echoed(client, to, port, Duration::from_secs(10)),
            "{to}:{port} does not echo"
        );
    }
    let cases = [
        Case {
            client,
            netns: client,
            direction: "out",
            dropped: &unlisted,
        },
        // On input, every packet is addressed to the server: its input
        // chain tells peers and ports apart, not its own addresses.
        Case {
            client,
            netns: server,
            direction: "in",
            dropped: &unlisted[..1],
        },
    ];
    for case in &cases {
        for tool in [Tool::Nft, Tool::Ipset, Tool::Iptables] {
            enforce(tool, case, checkpoint, dir.path());
        }
    }
}
