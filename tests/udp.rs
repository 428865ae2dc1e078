//! UDP peers made by real software from Debian, recorded by the real
//! `netmon run` in its default (auto) eBPF mode on the host: dnsmasq
//! answering dig, chronyd serving chronyd -Q, socat; with the owner a
//! systemd-like or container-like cgroup gives, and each peer under the
//! network namespace it was seen in.
//!
//! As root (`cargo xtask test` runs it): the software runs in network
//! namespaces the test makes, joined by veths with no default route, or
//! on the test's block of loopback. chronyd never sets the clock (the
//! server runs with -x, the client with -Q) and knows only the test's
//! server.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use netmon_scenario::{
    fleet::{Fleet, run_in},
    harness::{Netmon, chosen_mode, one_at_a_time},
    net::{Block, closed_port},
    software::{self, Cgroup, Daemon, dig, dnsmasq, netns_inode},
};
use serde_json::Value;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// dig queries per test: each is one datagram from a socket of its own.
const QUERIES: u64 = 5;

/// `netmon run` on the host in auto mode, writing into a new tempdir.
struct Run {
    _dir: tempfile::TempDir,
    path: PathBuf,
    netmon: Netmon,
}

impl Run {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let netmon = Netmon::ready(NETMON, &path, "auto");
        Self {
            _dir: dir,
            path,
            netmon,
        }
    }

    /// Stops netmon, which writes every count it holds; the checkpoint.
    fn stop(self) -> Checkpoint {
        let (status, log) = self.netmon.stop();
        assert!(status.success(), "netmon exited with {status}:\n{log}");
        let mode = chosen_mode(&log).unwrap_or_default().to_owned();
        assert_ne!(mode, "proc", "auto mode fell back to proc:\n{log}");
        Checkpoint {
            _dir: self._dir,
            path: self.path,
        }
    }
}

/// A written checkpoint, read through `netmon list` and `netmon rules`.
struct Checkpoint {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Checkpoint {
    /// `netmon SUBCOMMAND ARGS FILE`, which must succeed: its stdout.
    fn netmon(&self, subcommand: &str, args: &[&str]) -> String {
        let output = Command::new(NETMON)
            .arg(subcommand)
            .args(args)
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "netmon {subcommand} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// `netmon list --format json ARGS`: the peers.
    fn list(&self, args: &[&str]) -> Vec<Value> {
        let args: Vec<&str> = ["--format", "json"].iter().chain(args).copied().collect();
        serde_json::from_str(&self.netmon("list", &args)).unwrap()
    }

    /// Printed, so a failure shows it: the mode, and what netmon could not
    /// count (a storm elsewhere on the host fills the same maps).
    fn describe(&self) {
        let text = fs::read_to_string(&self.path).unwrap();
        let file: Value = serde_json::from_str(&text).unwrap();
        eprintln!(
            "mode {}, lost_events {}, uncounted_connections {}",
            file["mode"], file["lost_events"], file["uncounted_connections"]
        );
    }

    /// The peers recorded in the network namespace `ns`.
    fn in_netns(&self, ns: &str) -> Vec<Value> {
        self.list(&["--netns", &netns_inode(ns).to_string()])
    }
}

/// The one peer at `ip` in `peers`, which must hold nothing else.
fn only_peer<'a>(peers: &'a [Value], ip: Ipv4Addr, what: &str) -> &'a Value {
    let ip = ip.to_string();
    let found: Vec<&Value> = peers.iter().filter(|peer| peer["ip"] == ip).collect();
    assert!(
        found.len() == 1 && peers.len() == 1,
        "{what}: wanted {ip} alone, got:\n{}",
        pretty(peers)
    );
    found[0]
}

fn pretty(peers: &[Value]) -> String {
    peers
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The expected side of a peer: which count and which list of ports hold
/// the datagrams, the other two empty (a reply made no peer).
fn assert_side(peer: &Value, outbound: bool, count: u64, port: &str) {
    let (counted, silent, ports, no_ports) = if outbound {
        ("outbound", "inbound", "remote_ports", "local_ports")
    } else {
        ("inbound", "outbound", "local_ports", "remote_ports")
    };
    let wanted = serde_json::json!({
        counted: count,
        silent: 0,
        ports: [port],
        no_ports: [],
    });
    let got = serde_json::json!({
        counted: peer[counted],
        silent: peer[silent],
        ports: peer[ports],
        no_ports: peer[no_ports],
    });
    assert_eq!(got, wanted, "peer {peer}");
}

fn has(list: &Value, item: &str) -> bool {
    list.as_array()
        .is_some_and(|items| items.iter().any(|i| i == item))
}

/// dig sends from a thread of BIND's network manager, named
/// `isc-net-0000`, and netmon records the sending thread's name (the
/// task's comm), not the process's.
fn is_dig(peer: &Value) -> bool {
    has(&peer["processes"], "dig") || has(&peer["processes"], "isc-net-0000")
}

/// A container ID as a runtime makes it: 64 hex digits, unique per run.
fn container_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:016x}{:048x}", nanos as u64, std::process::id())
}

/// dnsmasq in its namespace, dig from the client's, over a veth each; the
/// checkpoint, after `QUERIES` queries, with the two namespaces' peers
/// checked: the client's only peer the server, outbound to 53/udp, the
/// server's only peer the client, inbound on 53/udp, one count per query
/// on both sides. Returns the checkpoint, the client's peer and the
/// server's.
fn dns_between_namespaces(
    tag: &str,
    server_cgroup: Option<&Cgroup>,
    client_cgroup: Option<&Cgroup>,
) -> (Checkpoint, Value, Value) {
    let fleet = Fleet::new(tag, &["dns", "client"]);
    let (server, client) = (fleet.addr("dns"), fleet.addr("client"));
    let run = Run::start();
    let daemon = dnsmasq(&fleet.ns("dns"), server, server_cgroup);
    for _ in 0..QUERIES {
        dig(&fleet.ns("client"), server, None, client_cgroup);
    }
    drop(daemon);
    let checkpoint = run.stop();
    checkpoint.describe();

    let at_client = checkpoint.in_netns(&fleet.ns("client"));
    let to_server = only_peer(&at_client, server, "the client's namespace").clone();
    assert_side(&to_server, true, QUERIES, "53/udp");
    assert!(is_dig(&to_server), "{to_server}");

    let at_server = checkpoint.in_netns(&fleet.ns("dns"));
    let from_client = only_peer(&at_server, client, "the server's namespace").clone();
    assert_side(&from_client, false, QUERIES, "53/udp");
    assert!(has(&from_client["processes"], "dnsmasq"), "{from_client}");
    (checkpoint, to_server, from_client)
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn dig_to_dnsmasq_is_outbound_at_the_client_and_inbound_at_the_server() {
    let _turn = one_at_a_time();
    dns_between_namespaces("udp-dns", None, None);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_service_cgroup_and_a_container_cgroup_own_their_peers() {
    let _turn = one_at_a_time();
    let root = netmon::owner::cgroup2_root().unwrap();
    let id = container_id();
    // Declared before the processes that use them, dropped after.
    let service = Cgroup::new(&root, "system.slice/netmon-test-dns.service");
    let container = Cgroup::new(&root, &format!("netmon-test/docker-{id}.scope"));
    let (checkpoint, to_server, from_client) =
        dns_between_namespaces("udp-owner", Some(&service), Some(&container));
    let container_owner = format!("container:{}", &id[..12]);
    assert_eq!(to_server["owners"], serde_json::json!([container_owner]));
    assert_eq!(
        from_client["owners"],
        serde_json::json!(["netmon-test-dns.service"])
    );

    let owned = checkpoint.list(&["--netns", "all", "--owner", "netmon-test-dns.service"]);
    assert_eq!(owned, [from_client], "{}", pretty(&owned));
    let owned = checkpoint.list(&["--netns", "all", "--owner", "container:*"]);
    assert_eq!(owned, [to_server], "{}", pretty(&owned));
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn chronyd_query_to_a_chronyd_server_is_one_ntp_peer_each_side() {
    let _turn = one_at_a_time();
    let fleet = Fleet::new("udp-ntp", &["ntp", "client"]);
    let (server, client) = (fleet.addr("ntp"), fleet.addr("client"));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.conf");
    let file = |name: &str| dir.path().join(name).display().to_string();
    fs::write(
        &conf,
        format!(
            "port 123\nbindaddress {server}\nallow {client}\nlocal stratum 8\ncmdport 0\n\
             pidfile {}\ndriftfile {}\n",
            file("server.pid"),
            file("drift"),
        ),
    )
    .unwrap();
    let run = Run::start();
    let conf = conf.display().to_string();
    // -x: serves its clock, never sets it.
    let serve = software::command(
        Some(&fleet.ns("ntp")),
        None,
        &["chronyd", "-d", "-x", "-u", "root", "-f", &conf],
    );
    let mut daemon = Daemon::start(serve, "chronyd");
    software::wait_udp_listener(&fleet.ns("ntp"), server, 123, &mut daemon);
    // -Q: asks once and prints the offset; the server on the command
    // line is its whole configuration.
    let ask = software::command(
        Some(&fleet.ns("client")),
        None,
        &[
            "timeout",
            "30",
            "chronyd",
            "-Q",
            "-u",
            "root",
            "-t",
            "20",
            &format!("server {server} iburst maxsamples 1"),
            &format!("pidfile {}", file("client.pid")),
            "cmdport 0",
        ],
    )
    .output()
    .unwrap();
    assert!(
        ask.status.success(),
        "chronyd -Q: {}",
        String::from_utf8_lossy(&ask.stderr)
    );
    drop(daemon);
    let checkpoint = run.stop();

    let at_client = checkpoint.in_netns(&fleet.ns("client"));
    let to_server = only_peer(&at_client, server, "the client's namespace");
    let requests = to_server["outbound"].as_u64().unwrap();
    assert!(requests >= 1, "{to_server}");
    assert_side(to_server, true, requests, "123/udp");
    assert!(has(&to_server["processes"], "chronyd"), "{to_server}");

    let at_server = checkpoint.in_netns(&fleet.ns("ntp"));
    let from_client = only_peer(&at_server, client, "the server's namespace");
    assert_side(from_client, false, requests, "123/udp");
    assert!(has(&from_client["processes"], "chronyd"), "{from_client}");
}

/// Client addresses of the socat test, each sending one more datagram
/// than the one before.
const SOCAT_CLIENTS: u8 = 3;

/// socat peeks at every datagram (recvmsg with MSG_PEEK) before it reads
/// it, twice with `fork`: a datagram is still one, at each end.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn socat_datagrams_count_once_each_at_both_ends_on_loopback() {
    let _turn = one_at_a_time();
    let block = Block::UdpSocat;
    let server = block.addr(0, 1);
    let port = closed_port();
    let run = Run::start();
    let listen = format!("UDP4-RECVFROM:{port},bind={server},fork");
    let mut daemon = Daemon::start(
        software::command(None, None, &["socat", &listen, "EXEC:cat"]),
        "socat",
    );
    wait_udp_host(server, port, &mut daemon);
    let mut sent = 0;
    for client in 1..=SOCAT_CLIENTS {
        let to = format!("UDP4-SENDTO:{server}:{port},bind={}", block.addr(1, client));
        // One socat per datagram: one sendto each, the echo awaited.
        for _ in 0..client {
            let echoed = software::command(None, None, &["socat", "-t", "2", "-", &to])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .and_then(|mut child| {
                    use std::io::Write as _;
                    child.stdin.take().unwrap().write_all(b"ping\n")?;
                    child.wait_with_output()
                })
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&echoed.stdout), "ping\n");
            sent += 1;
        }
    }
    drop(daemon);
    let checkpoint = run.stop();

    let udp_port = format!("{port}/udp");
    let peers: Vec<Value> = checkpoint
        .list(&[])
        .into_iter()
        .filter(|peer| {
            let ip: Ipv4Addr = peer["ip"].as_str().unwrap().parse().unwrap();
            block.net().contains(ip)
        })
        .collect();
    checkpoint.describe();
    eprintln!("peers:\n{}", pretty(&peers));
    assert_eq!(
        peers.len(),
        1 + usize::from(SOCAT_CLIENTS),
        "{}",
        pretty(&peers)
    );
    let to_server = peers.iter().find(|p| p["ip"] == server.to_string());
    assert_side(to_server.unwrap(), true, sent, &udp_port);
    for client in 1..=SOCAT_CLIENTS {
        let ip = block.addr(1, client).to_string();
        let from = peers.iter().find(|p| p["ip"] == ip);
        let from = from.unwrap_or_else(|| panic!("no {ip}:\n{}", pretty(&peers)));
        assert_side(from, false, u64::from(client), &udp_port);
        assert!(has(&from["processes"], "socat"), "{from}");
    }
}

/// Waits until something on the host listens on UDP `addr`:`port`.
fn wait_udp_host(addr: Ipv4Addr, port: u16, daemon: &mut Daemon) {
    let filter = format!("src {addr}:{port}");
    netmon_scenario::harness::eventually(
        &format!("a UDP socket on {addr}:{port}"),
        || {
            daemon.assert_running();
            let out = Command::new("ss")
                .args(["-Hlun", &filter])
                .output()
                .unwrap();
            (!out.stdout.is_empty()).then_some(())
        },
        String::new,
    );
}

/// `netmon rules ARGS` on `checkpoint`: the rules, or `None` where no
/// peer is left to allow (netmon refuses to print rules allowing nobody).
fn rules(checkpoint: &Checkpoint, args: &[&str]) -> Option<String> {
    let output = Command::new(NETMON)
        .arg("rules")
        .args(args)
        .arg(&checkpoint.path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("no peers match") {
        return None;
    }
    assert!(output.status.success(), "netmon rules {args:?}: {stderr}");
    Some(String::from_utf8(output.stdout).unwrap())
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_namespace_s_own_traffic_is_its_own_and_not_in_the_host_s_rules() {
    let _turn = one_at_a_time();
    let fleet = Fleet::new("udp-solo", &["solo"]);
    let ns = fleet.ns("solo");
    // Two addresses of the namespace's own veth: rules leave loopback
    // out, so these are what the host's rules could wrongly allow.
    let server = fleet.addr("solo");
    let client = Ipv4Addr::new(10, 213, 0, 201);
    let added = Command::new("ip")
        .args([
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{client}/24"),
            "dev",
            "eth0",
        ])
        .status()
        .unwrap();
    assert!(added.success());
    let block = Block::UdpOwnNetns;
    let tcp_port = closed_port();
    let run = Run::start();
    // TCP and UDP, client and server, all inside the namespace.
    let daemon = dnsmasq(&ns, server, None);
    for _ in 0..QUERIES {
        dig(&ns, server, Some(client), None);
    }
    run_in(&ns, || {
        let listener = TcpListener::bind((server, tcp_port)).unwrap();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None);
        let socket = socket.unwrap();
        socket.bind(&SocketAddr::from((client, 0)).into()).unwrap();
        socket
            .connect(&SocketAddr::from((server, tcp_port)).into())
            .unwrap();
        let stream = TcpStream::from(socket);
        let accepted = listener.accept().unwrap();
        drop((stream, accepted));
    });
    // And one connection of the host's own, on its block of loopback.
    let host_listener = TcpListener::bind((block.addr(0, 1), 0)).unwrap();
    let host_stream = TcpStream::connect(host_listener.local_addr().unwrap()).unwrap();
    let host_accepted = host_listener.accept().unwrap();
    drop(daemon);
    let checkpoint = run.stop();
    drop((host_stream, host_accepted));

    let own = checkpoint.in_netns(&ns);
    let find = |ip: Ipv4Addr| {
        own.iter()
            .find(|peer| peer["ip"] == ip.to_string())
            .unwrap_or_else(|| panic!("no {ip} in {ns}:\n{}", pretty(&own)))
    };
    let (to_server, from_client) = (find(server), find(client));
    let ports = |peer: &Value, key: &str| {
        let mut ports: Vec<String> = serde_json::from_value(peer[key].clone()).unwrap();
        ports.sort();
        ports
    };
    let mut both = vec!["53/udp".to_owned(), format!("{tcp_port}/tcp")];
    both.sort();
    assert_eq!(ports(to_server, "remote_ports"), both, "{to_server}");
    assert_eq!(ports(from_client, "local_ports"), both, "{from_client}");
    assert_eq!(to_server["outbound"], QUERIES + 1, "{to_server}");
    assert_eq!(from_client["inbound"], QUERIES + 1, "{from_client}");

    // The host's view: none of it, in the list or the rules; its own
    // connection is there.
    let ours = |peer: &&Value| {
        let ip: Ipv4Addr = peer["ip"].as_str().unwrap().parse().unwrap();
        ip == server || ip == client || block.net().contains(ip)
    };
    let host = checkpoint.list(&[]);
    let seen: Vec<&str> = host
        .iter()
        .filter(ours)
        .filter_map(|p| p["ip"].as_str())
        .collect();
    assert_eq!(seen, [block.addr(0, 1).to_string()], "{}", pretty(&host));
    let inode = netns_inode(&ns).to_string();
    for format in ["nft", "iptables", "ipset"] {
        let host_rules = rules(&checkpoint, &["--format", format]).unwrap_or_default();
        let theirs = rules(&checkpoint, &["--format", format, "--netns", &inode]);
        let theirs = theirs.unwrap_or_else(|| panic!("no {format} rules for {ns}"));
        for ip in [server, client] {
            let ip = ip.to_string();
            assert!(!host_rules.contains(&ip), "host {format}:\n{host_rules}");
            assert!(theirs.contains(&ip), "{ns}'s {format}:\n{theirs}");
        }
    }
}
