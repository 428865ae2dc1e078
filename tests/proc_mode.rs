//! proc mode against what real clients and servers do: a client that
//! connects from a port a listener has just left, clients that close long
//! after their server, a client that holds a connection its server reset.
//! Each connection must be recorded once, in its own direction. proc mode needs no root, so these run in plain
//! `cargo test`.
use std::{
    net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener},
    thread,
    time::Duration,
};

use netmon_scenario::{
    check::{Peers, expect_peers, read_peers, tcp_ports},
    files::temp_output,
    harness::{Netmon, one_at_a_time},
    net::Block,
    workload::connect_from,
};
use serde_json::{Value, json};
use socket2::{Domain, Socket, Type};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// netmon in proc mode with `extra` flags while `work` runs: the peers it
/// wrote, and what `work` returned, which is dropped only after netmon has
/// stopped.
fn in_proc_mode<T>(extra: &[&str], work: impl FnOnce() -> T) -> (Peers, T) {
    let _turn = one_at_a_time();
    let (_dir, path) = temp_output();
    let netmon = Netmon::start(NETMON, &path, "proc", extra);
    netmon.wait_ready().unwrap();
    let kept = work();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    (read_peers(&path), kept)
}

/// A TCP connection from exactly `local` (address and port) to `dest`.
fn connect_from_port(local: SocketAddrV4, dest: SocketAddrV4) -> Socket {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(local).into()).unwrap();
    socket.connect(&SocketAddr::from(dest).into()).unwrap();
    socket
}

/// The peer's connections one way and the other, and its ports.
fn counted(outbound: u64, inbound: u64, remote: &[u16], local: &[u16]) -> impl Fn(&Value) -> bool {
    let wanted = (
        json!(outbound),
        json!(inbound),
        tcp_ports(remote),
        tcp_ports(local),
    );
    move |peer| {
        (
            peer["outbound"].clone(),
            peer["inbound"].clone(),
            peer["remote_ports"].clone(),
            peer["local_ports"].clone(),
        ) == wanted
    }
}

/// A port is a listener's only while the listener is there. Once it has
/// gone (and netmon has polled since), a client that connects from that
/// port, as `curl --local-port` does, is outbound: whether netmon hears of
/// its connection as it closes or sees it open in a poll.
#[test]
fn a_port_is_a_listeners_only_while_the_listener_is_there() {
    // Long enough for a few polls, however busy the machine is.
    const SOME_POLLS: Duration = Duration::from_secs(1);
    let net = Block::ProcListenerGone;
    let extra = ["--poll-interval", "100"];
    let (peers, (port, server_port, _held)) = in_proc_mode(&extra, || {
        let gone = TcpListener::bind((net.addr(0, 1), 0)).unwrap();
        let port = gone.local_addr().unwrap().port();
        // Polled while listening, then heard of as it closes.
        thread::sleep(SOME_POLLS);
        drop(gone);
        thread::sleep(SOME_POLLS);

        let server = TcpListener::bind("0.0.0.0:0").unwrap();
        let server_port = server.local_addr().unwrap().port();
        let to = |d| SocketAddrV4::new(net.addr(1, d), server_port);
        let closed = connect_from_port(SocketAddrV4::new(net.addr(0, 1), port), to(1));
        drop((closed, server.accept().unwrap()));
        let held = connect_from_port(SocketAddrV4::new(net.addr(0, 2), port), to(2));
        let accepted = server.accept().unwrap();
        thread::sleep(SOME_POLLS);
        (port, server_port, (held, accepted, server))
    });
    expect_peers(
        &peers,
        &[net.addr(1, 1), net.addr(1, 2)],
        &format!("one outbound connection to port {server_port}, none inbound on {port}"),
        counted(1, 0, &[server_port], &[]),
    );
    expect_peers(
        &peers,
        &[net.addr(0, 1), net.addr(0, 2)],
        &format!("one inbound connection on port {server_port}"),
        counted(0, 1, &[], &[server_port]),
    );
}

/// A server that closes first (its FIN acknowledged by the time it closes
/// the socket) leaves in its socket's place a TIME_WAIT socket in
/// FIN_WAIT2, for as long as the client waits to send its own FIN (2.5 s
/// for some real clients), under a cookie of its own. Polls that see it
/// must not count the connection again: each peer is counted once.
#[test]
fn a_connection_whose_client_closes_late_is_counted_once() {
    const CLIENTS: u8 = 30;
    let net = Block::ProcLateFin;
    // The default poll interval, 1 s: most servers' sockets open and close
    // unseen between two polls, so only their TIME_WAIT sockets are.
    let (peers, port) = in_proc_mode(&[], || {
        // Past the first poll, which comes as soon as netmon is ready.
        thread::sleep(Duration::from_millis(300));
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (clients, servers): (Vec<_>, Vec<_>) = (1..=CLIENTS)
            .map(|i| {
                let dest = SocketAddrV4::new(net.addr(10, i), port);
                let client = connect_from(net.addr(20, i), dest).unwrap();
                let (server, _) = listener.accept().unwrap();
                // As nginx closes: its FIN first, the socket a moment later.
                server.shutdown(Shutdown::Write).unwrap();
                (client, server)
            })
            .unzip();
        thread::sleep(Duration::from_millis(20));
        drop(servers);
        thread::sleep(Duration::from_millis(2500));
        drop(clients);
        port
    });
    let addrs = |c| (1..=CLIENTS).map(|i| net.addr(c, i)).collect::<Vec<_>>();
    expect_peers(
        &peers,
        &addrs(10),
        "one outbound connection",
        counted(1, 0, &[port], &[]),
    );
    expect_peers(
        &peers,
        &addrs(20),
        "one inbound connection",
        counted(0, 1, &[], &[port]),
    );
}

/// A connection reset by its server leaves the tables at once, but the
/// kernel announces the client's socket only when the client closes it,
/// which a connection pool may do much later. Seen open by polls, then
/// announced polls later, it is still one connection.
#[test]
fn a_connection_announced_long_after_it_was_reset_is_counted_once() {
    let net = Block::ProcHeldAfterReset;
    let extra = ["--poll-interval", "100"];
    let (peers, port) = in_proc_mode(&extra, || {
        let listener = TcpListener::bind((net.addr(0, 1), 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = connect_from(net.addr(1, 1), SocketAddrV4::new(net.addr(0, 1), port)).unwrap();
        let (server, _) = listener.accept().unwrap();
        thread::sleep(Duration::from_millis(500));
        socket2::SockRef::from(&server)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(server);
        thread::sleep(Duration::from_millis(500));
        drop(client);
        port
    });
    expect_peers(
        &peers,
        &[net.addr(0, 1)],
        "one outbound connection",
        counted(1, 0, &[port], &[]),
    );
    expect_peers(
        &peers,
        &[net.addr(1, 1)],
        "one inbound connection",
        counted(0, 1, &[], &[port]),
    );
}

/// A connected UDP socket that opens and closes between two polls: proc
/// mode hears of it from the kernel's notification of its destruction,
/// which names its protocol, so its port is UDP's, not TCP's.
#[test]
fn a_udp_socket_closed_between_polls_is_udp() {
    let block = Block::ProcUdp;
    let (server, client) = (block.addr(0, 1), block.addr(0, 2));
    let (peers, ()) = in_proc_mode(&["--poll-interval", "5000"], || {
        let listener = std::net::UdpSocket::bind((server, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let socket = std::net::UdpSocket::bind((client, 0)).unwrap();
        socket.connect((server, port)).unwrap();
        socket.send(b"datagram").unwrap();
        drop(socket);
        // Past the notification's trip, well within the 5 s poll.
        thread::sleep(Duration::from_millis(300));
        drop(listener);
    });
    let recorded = &peers[&server];
    let ports = recorded["remote_ports"].as_array().unwrap();
    assert!(
        !ports.is_empty() && ports.iter().all(|p| p.as_str().unwrap().ends_with("/udp")),
        "{recorded}"
    );
}
