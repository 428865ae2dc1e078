//! A UDP service and its clients on loopback, which every eBPF mode must
//! record through its cgroup programs: each exchange (the first datagram
//! of a socket and peer) once as an outbound peer at the client and once
//! as an inbound peer at the service, later datagrams and the service's
//! replies as nothing more.
//!
//! Service `i` is bound to 127.N.0.i on one explicit port; client `i`
//! queries it from 127.N.1.i with `i` sockets on ports the kernel picks,
//! each sending two queries, each answered before the next. Every
//! address is one peer with one count, so a hook that misses an exchange,
//! counts a later datagram or a reply, or reads the wrong end shows it in
//! that address.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{
    check::{Peers, Tally, Verdict, has},
    net::Net,
};

/// How long either end waits for a datagram: on loopback one arrives at
/// once, so this only bounds a run whose datagram vanished.
const WAIT: Duration = Duration::from_secs(10);
/// Queries from each client socket: more than one, so a later datagram
/// counted as an exchange shows.
const QUERIES: u8 = 2;

/// What [`workload`] did.
pub struct UdpWorkload {
    pub net: Net,
    pub port: u16,
    /// Each service address, the client address talking to it, and how
    /// many exchanges (client sockets) they had.
    pub exchanges: Vec<(Ipv4Addr, Ipv4Addr, u64)>,
}

impl UdpWorkload {
    pub fn exchanges(&self) -> u64 {
        self.exchanges.iter().map(|&(_, _, times)| times).sum()
    }
}

/// A UDP port as a checkpoint writes it.
pub fn udp_port(port: u16) -> Value {
    format!("{port}/udp").into()
}

/// `pairs` services and clients of 127.N, client `i` making `i`
/// exchanges with service `i`. The clients send from a thread named
/// `nm-client`, the services answer from one named `nm-acceptor` (the
/// TCP workload's names).
pub fn workload(net: Net, pairs: u8) -> io::Result<UdpWorkload> {
    let services = bind_services(net, pairs)?;
    let port = services[0].local_addr()?.port();
    let server =
        thread::Builder::new()
            .name("nm-acceptor".into())
            .spawn(move || -> io::Result<()> {
                let mut buf = [0; 64];
                for (i, service) in (1..=pairs).zip(&services) {
                    service.set_read_timeout(Some(WAIT))?;
                    for _ in 0..i * QUERIES {
                        let (len, from) = service.recv_from(&mut buf)?;
                        service.send_to(&buf[..len], from)?;
                    }
                }
                Ok(())
            })?;
    let client = thread::Builder::new()
        .name("nm-client".into())
        .spawn(move || exchange_all(net, port, pairs))?;
    let exchanges = client.join().expect("the UDP client thread panicked")?;
    server.join().expect("the UDP service thread panicked")?;
    Ok(UdpWorkload {
        net,
        port,
        exchanges,
    })
}

/// Client `i`'s `i` sockets, each querying service `i` `QUERIES` times.
fn exchange_all(net: Net, port: u16, pairs: u8) -> io::Result<Vec<(Ipv4Addr, Ipv4Addr, u64)>> {
    let mut exchanges = Vec::new();
    let mut buf = [0; 64];
    for i in 1..=pairs {
        let (service, source) = (net.addr(0, i), net.addr(1, i));
        let to = SocketAddrV4::new(service, port);
        for n in 0..i {
            let socket = UdpSocket::bind((source, 0))?;
            socket.set_read_timeout(Some(WAIT))?;
            for q in 0..QUERIES {
                socket.send_to(&[i, n, q], to)?;
                let (_, from) = socket.recv_from(&mut buf)?;
                assert_eq!(from, to.into(), "a reply");
            }
        }
        exchanges.push((service, source, u64::from(i)));
    }
    Ok(exchanges)
}

/// The services, all on one port the kernel picked for the first and
/// then asked for by number, so each is bound to an explicit port as a
/// real service is (a socket bound to port 0 would be a client).
fn bind_services(net: Net, pairs: u8) -> io::Result<Vec<UdpSocket>> {
    let port = UdpSocket::bind((net.addr(0, 1), 0))?.local_addr()?.port();
    (1..=pairs)
        .map(|i| UdpSocket::bind((net.addr(0, i), port)))
        .collect()
}

/// Checks `work` against a checkpoint: exact counts of exchanges at both
/// ends, nothing from later datagrams or replies, and no peer the
/// workload did not make.
/// `process`: the names of the sending and receiving threads too.
pub fn check(peers: &Peers, work: &UdpWorkload, process: bool) -> Verdict {
    let port = udp_port(work.port);
    let times = |ip: Ipv4Addr| {
        work.exchanges
            .iter()
            .find(|&&(service, source, _)| ip == service || ip == source)
            .map(|&(_, _, times)| times)
    };
    let ip_of = |peer: &Value| peer["ip"].as_str().and_then(|ip| ip.parse().ok());
    let named = |peer: &Value, name: &str| !process || has(&peer["processes"], name.into());
    let only = |ports: &Value| {
        ports
            .as_array()
            .is_some_and(|p| p == std::slice::from_ref(&port))
    };
    let empty = |ports: &Value| ports.as_array().is_some_and(Vec::is_empty);
    let services: Vec<Ipv4Addr> = work.exchanges.iter().map(|e| e.0).collect();
    let sources: Vec<Ipv4Addr> = work.exchanges.iter().map(|e| e.1).collect();
    let with_process = if process { " and process" } else { "" };
    let strays = peers
        .keys()
        .copied()
        .filter(|&ip| work.net.contains(ip) && times(ip).is_none())
        .collect();
    Verdict {
        outbound: vec![Tally::new(
            peers,
            &services,
            &format!(
                "outbound i times (127.N.0.i), to {port}{with_process}, no inbound from replies"
            ),
            |peer| {
                peer["outbound"].as_u64() == ip_of(peer).and_then(times)
                    && peer["inbound"].as_u64() == Some(0)
                    && only(&peer["remote_ports"])
                    && empty(&peer["local_ports"])
                    && named(peer, "nm-client")
            },
        )],
        inbound: vec![Tally::new(
            peers,
            &sources,
            &format!(
                "inbound i times (127.N.1.i), to our {port}{with_process}, no outbound from replies"
            ),
            |peer| {
                peer["inbound"].as_u64() == ip_of(peer).and_then(times)
                    && peer["outbound"].as_u64() == Some(0)
                    && only(&peer["local_ports"])
                    && empty(&peer["remote_ports"])
                    && named(peer, "nm-acceptor")
            },
        )],
        phantom: strays,
    }
}
