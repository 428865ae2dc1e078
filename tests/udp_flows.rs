//! Which UDP datagrams make peers, and how exchanges count, in the cases
//! the real services of tests/udp.rs do not reach: a dual-stack server's
//! IPv4 clients, a service socket that starts an exchange itself (ntpd,
//! from port 123), a connected client that connected before netmon
//! started, and datagrams peeked at before they are read.
//!
//! As root (`cargo xtask test` runs them), in auto mode, on loopback
//! addresses of each test's own block.
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use netmon_scenario::{
    check::{read_peers, udp_port},
    files::temp_output,
    harness::{Netmon, one_at_a_time},
    net::Block,
};
use serde_json::{Value, json};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Queries in each test, each with its answer, all on one socket: one
/// exchange, counted once at each end.
const QUERIES: u64 = 7;

/// One query from `client` to `server` (as the client addresses it), and
/// the server's answer.
fn exchange(client: &UdpSocket, to: SocketAddr, server: &UdpSocket) {
    client.send_to(b"query", to).unwrap();
    let mut buf = [0; 16];
    let (_, from) = server.recv_from(&mut buf).unwrap();
    server.send_to(b"answer", from).unwrap();
    client.recv_from(&mut buf).unwrap();
}

fn socket(addr: Ipv4Addr, port: u16) -> UdpSocket {
    let socket = UdpSocket::bind((addr, port)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// The peer's counts and ports, as the checkpoint has them.
fn summary(peer: Option<&Value>) -> Value {
    let Some(peer) = peer else {
        return Value::Null;
    };
    json!({
        "outbound": peer["outbound"],
        "inbound": peer["inbound"],
        "remote_ports": peer["remote_ports"],
        "local_ports": peer["local_ports"],
    })
}

fn outbound(count: u64, port: u16) -> Value {
    json!({"outbound": count, "inbound": 0, "remote_ports": [udp_port(port)], "local_ports": []})
}

fn inbound(count: u64, port: u16) -> Value {
    json!({"outbound": 0, "inbound": count, "remote_ports": [], "local_ports": [udp_port(port)]})
}

/// A server on `[::]` receives its IPv4 clients through the IPv6 hooks,
/// as `::ffff:a.b.c.d`: they are IPv4 peers like any other.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_dual_stack_servers_ipv4_clients_are_peers() {
    let _turn = one_at_a_time();
    let block = Block::UdpDualStack;
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let server = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).unwrap();
    server
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let port = server.local_addr().unwrap().port();
    let (client_addr, server_addr) = (block.addr(0, 1), block.addr(0, 2));
    let client = socket(client_addr, 0);
    // Sent to the server's IPv4 address; it answers from the same one.
    let to = SocketAddr::from((server_addr, port));
    for _ in 0..QUERIES {
        exchange(&client, to, &server);
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    assert_eq!(summary(peers.get(&server_addr)), outbound(1, port));
    assert_eq!(summary(peers.get(&client_addr)), inbound(1, port));
}

/// A service socket that starts an exchange itself, as ntpd queries its
/// upstream servers from port 123: an outbound peer, whose answers are
/// replies, not inbound peers.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_service_socket_that_asks_first_makes_an_outbound_peer() {
    let _turn = one_at_a_time();
    let block = Block::UdpServiceFirst;
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let (ours, upstream) = (block.addr(0, 1), block.addr(0, 2));
    let server = socket(upstream, 0);
    let port = server.local_addr().unwrap().port();
    // Both ends bound to the same port, as NTP's symmetric mode has it:
    // ours explicitly, as a service's is.
    let local = socket(ours, port);
    for _ in 0..QUERIES {
        exchange(&local, SocketAddr::from((upstream, port)), &server);
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    assert_eq!(summary(peers.get(&upstream)), outbound(1, port));
    assert_eq!(summary(peers.get(&ours)), inbound(1, port));
}

/// A client connected before netmon started reads its answers with
/// `recvfrom`, as glibc's resolver does: they are replies, however the
/// first one netmon sees arrives before any query of its own.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_client_connected_before_the_start_gets_no_inbound_peer() {
    let _turn = one_at_a_time();
    let block = Block::UdpConnectedBefore;
    let (client_addr, server_addr) = (block.addr(0, 1), block.addr(0, 2));
    let server = socket(server_addr, 0);
    let port = server.local_addr().unwrap().port();
    let client = socket(client_addr, 0);
    client.connect((server_addr, port)).unwrap();
    // A query in flight when netmon starts: its answer is the first
    // datagram of this socket netmon sees.
    client.send(b"query").unwrap();
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let mut buf = [0; 16];
    let (_, from) = server.recv_from(&mut buf).unwrap();
    server.send_to(b"answer", from).unwrap();
    client.recv_from(&mut buf).unwrap();
    for _ in 0..QUERIES {
        client.send(b"query").unwrap();
        let (_, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(b"answer", from).unwrap();
        client.recv_from(&mut buf).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    // Its connect() came before netmon: the start-up scan records the
    // peer, counting nothing, and no answer makes the server inbound.
    assert_eq!(summary(peers.get(&server_addr)), outbound(0, port));
    // The server's receives are the client's queries: one exchange,
    // opened by the query in flight.
    assert_eq!(summary(peers.get(&client_addr)), inbound(1, port));
}

/// A datagram peeked at with its source (`recvfrom(MSG_PEEK)`, as socat
/// does) and then read is one datagram: each client socket is one
/// exchange at both ends, whatever it sends.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn peeked_datagrams_and_many_per_socket_count_one_exchange() {
    let _turn = one_at_a_time();
    let block = Block::UdpPeek;
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let server_addr = block.addr(0, 1);
    let server = socket(server_addr, 0);
    let port = server.local_addr().unwrap().port();
    let mut buf = [0; 16];
    // Client i sends i datagrams, each peeked at, then read.
    let clients: Vec<Ipv4Addr> = (1..=3).map(|i| block.addr(1, i)).collect();
    for (index, &addr) in clients.iter().enumerate() {
        let client = socket(addr, 0);
        for _ in 0..=index {
            client.send_to(b"datagram", (server_addr, port)).unwrap();
            server.peek_from(&mut buf).unwrap();
            server.recv_from(&mut buf).unwrap();
        }
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    assert_eq!(summary(peers.get(&server_addr)), outbound(3, port));
    for addr in clients {
        assert_eq!(summary(peers.get(&addr)), inbound(1, port), "{addr}");
    }
}

/// An exchange that goes on counts once, but its peer's last sighting
/// follows it: a months-long syslog stream must not look idle to
/// `--since`.
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_long_exchange_counts_once_and_stays_fresh() {
    let _turn = one_at_a_time();
    let block = Block::UdpLongExchange;
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let (client_addr, server_addr) = (block.addr(0, 1), block.addr(0, 2));
    let server = socket(server_addr, 0);
    let port = server.local_addr().unwrap().port();
    let client = socket(client_addr, 0);
    let mut buf = [0; 16];
    // Across three whole seconds, so the last sighting must move.
    for _ in 0..14 {
        client.send_to(b"log line", (server_addr, port)).unwrap();
        server.recv_from(&mut buf).unwrap();
        thread::sleep(Duration::from_millis(250));
    }
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    for (addr, want) in [
        (server_addr, outbound(1, port)),
        (client_addr, inbound(1, port)),
    ] {
        let peer = &peers[&addr];
        assert_eq!(summary(Some(peer)), want, "{addr}");
        let seen = |field: &str| -> i64 {
            let time: humantime::Timestamp = peer[field].as_str().unwrap().parse().unwrap();
            std::time::SystemTime::from(time)
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64
        };
        assert!(seen("last_seen") - seen("first_seen") >= 2, "{peer}");
    }
}

/// An answer from another address than the one asked (a server on a
/// wildcard address answering from another of its own, or an exchange
/// whose flow a storm of newer ones pushed out of the kernel's table) is
/// still an answer: a socket that asked first, from a port the kernel
/// picked, gets no inbound peer from it. A service's socket, bound to its
/// port, still does, though it asked first too (ntpd).
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn an_answer_from_another_address_is_no_inbound_peer() {
    let _turn = one_at_a_time();
    let block = Block::UdpOtherAddress;
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let (client_addr, asked, answering) = (block.addr(0, 1), block.addr(0, 2), block.addr(0, 3));
    let client = socket(client_addr, 0);
    let server = socket(asked, 0);
    let other = socket(answering, 0);
    let mut buf = [0; 16];
    client
        .send_to(b"query", server.local_addr().unwrap())
        .unwrap();
    let (_, from) = server.recv_from(&mut buf).unwrap();
    other.send_to(b"answer", from).unwrap();
    client.recv_from(&mut buf).unwrap();
    // A service that asks first, then hears from a stranger: inbound.
    let (service_addr, upstream_addr, stranger_addr) =
        (block.addr(1, 1), block.addr(1, 2), block.addr(1, 3));
    let upstream = socket(upstream_addr, 0);
    let port = upstream.local_addr().unwrap().port();
    let service = socket(service_addr, port);
    exchange(&service, SocketAddr::from((upstream_addr, port)), &upstream);
    let stranger = socket(stranger_addr, 0);
    stranger.send_to(b"query", (service_addr, port)).unwrap();
    service.recv_from(&mut buf).unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let peers = read_peers(&path);
    let server_port = server.local_addr().unwrap().port();
    assert_eq!(summary(peers.get(&asked)), outbound(1, server_port));
    assert_eq!(summary(peers.get(&answering)), Value::Null, "{peers:#?}");
    assert_eq!(summary(peers.get(&stranger_addr)), inbound(1, port));
}
