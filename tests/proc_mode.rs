//! proc mode against what real clients and servers do: clients that close
//! long after their server. Each connection must be recorded once, in its
//! own direction. proc mode needs no root, so these run in plain
//! `cargo test`.
use std::{
    net::{Shutdown, SocketAddrV4, TcpListener},
    thread,
    time::Duration,
};

use netmon_scenario::{
    check::{Peers, expect_peers, read_peers},
    files::temp_output,
    harness::{Netmon, one_at_a_time},
    net::Block,
    workload::connect_from,
};
use serde_json::{Value, json};

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

/// The peer's connections one way and the other, and its ports.
fn counted(outbound: u64, inbound: u64, remote: &[u16], local: &[u16]) -> impl Fn(&Value) -> bool {
    let wanted = (json!(outbound), json!(inbound), json!(remote), json!(local));
    move |peer| {
        (
            peer["outbound"].clone(),
            peer["inbound"].clone(),
            peer["remote_ports"].clone(),
            peer["local_ports"].clone(),
        ) == wanted
    }
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
