//! A UDP service and its clients on loopback, which every eBPF mode must
//! record through its cgroup programs: each exchange (the first datagram
//! of a socket and peer) once as an outbound peer at the client and once
//! as an inbound peer at the service, later datagrams and the service's
//! replies as nothing more.
//!
//! Service `i` is bound to 127.N.0.i (fd6e:6d00:0:N::i over IPv6) on one
//! explicit port; client `i` queries it from 127.N.1.i (fd6e:6d00:0:N::1:i)
//! with `i` sockets on ports the kernel picks, each sending two queries,
//! each answered before the next. Every address is one peer with one
//! count, so a hook that misses an exchange, counts a later datagram or a
//! reply, or reads the wrong end shows it in that address.
//!
//! proc mode sees only connected sockets that are in the socket tables,
//! so for it [`Sockets::ConnectedHeldOpen`] clients connect and stay open
//! until the workload is dropped.
use std::{
    io,
    net::{IpAddr, SocketAddr, UdpSocket},
    thread,
    time::Duration,
};

use serde_json::Value;

use crate::{
    check::{IpPeers, Tally, Verdict, has},
    net::{Family, Net},
};

/// How long either end waits for a datagram: on loopback one arrives at
/// once, so this only bounds a run whose datagram vanished.
const WAIT: Duration = Duration::from_secs(10);
/// Queries from each client socket: more than one, so a later datagram
/// counted as an exchange shows.
const QUERIES: u8 = 2;

/// How the clients' sockets send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sockets {
    /// `sendto` from unconnected sockets, closed after their queries.
    Unconnected,
    /// Connected first, and open until the [`UdpWorkload`] is dropped.
    ConnectedHeldOpen,
}

/// What [`workload`] did.
pub struct UdpWorkload {
    pub net: Net,
    pub port: u16,
    /// Each service address, the client address talking to it, and how
    /// many exchanges (client sockets) they had.
    pub exchanges: Vec<(IpAddr, IpAddr, u64)>,
    /// The clients' sockets, where they are held open.
    pub held: Vec<UdpSocket>,
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
    workload_over(net, Family::V4, Sockets::Unconnected, pairs)
}

/// [`workload`] over `family`'s addresses of `net`, the clients sending
/// as `sockets` says.
pub fn workload_over(
    net: Net,
    family: Family,
    sockets: Sockets,
    pairs: u8,
) -> io::Result<UdpWorkload> {
    let services = bind_services(net, family, pairs)?;
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
        .spawn(move || exchange_all(net, family, sockets, port, pairs))?;
    let (exchanges, held) = client.join().expect("the UDP client thread panicked")?;
    server.join().expect("the UDP service thread panicked")?;
    Ok(UdpWorkload {
        net,
        port,
        exchanges,
        held,
    })
}

/// Each service, client and number of exchanges; the sockets held open.
type Exchanges = (Vec<(IpAddr, IpAddr, u64)>, Vec<UdpSocket>);

/// Client `i`'s `i` sockets, each querying service `i` `QUERIES` times.
fn exchange_all(
    net: Net,
    family: Family,
    sockets: Sockets,
    port: u16,
    pairs: u8,
) -> io::Result<Exchanges> {
    let mut exchanges = Vec::new();
    let mut held = Vec::new();
    let mut buf = [0; 64];
    for i in 1..=pairs {
        let (service, source) = (net.ip(family, 0, i), net.ip(family, 1, i));
        let to = SocketAddr::new(service, port);
        for n in 0..i {
            let socket = UdpSocket::bind((source, 0))?;
            socket.set_read_timeout(Some(WAIT))?;
            if sockets == Sockets::ConnectedHeldOpen {
                socket.connect(to)?;
            }
            for q in 0..QUERIES {
                socket.send_to(&[i, n, q], to)?;
                let (_, from) = socket.recv_from(&mut buf)?;
                assert_eq!(from, to, "a reply");
            }
            if sockets == Sockets::ConnectedHeldOpen {
                held.push(socket);
            }
        }
        exchanges.push((service, source, u64::from(i)));
    }
    Ok((exchanges, held))
}

/// The services, all on one port the kernel picked for the first and
/// then asked for by number, so each is bound to an explicit port as a
/// real service is (a socket bound to port 0 would be a client).
fn bind_services(net: Net, family: Family, pairs: u8) -> io::Result<Vec<UdpSocket>> {
    let first = net.ip(family, 0, 1);
    let port = UdpSocket::bind((first, 0))?.local_addr()?.port();
    (1..=pairs)
        .map(|i| UdpSocket::bind((net.ip(family, 0, i), port)))
        .collect()
}

/// Checks `work` against a checkpoint: exact counts of exchanges at both
/// ends, nothing from later datagrams or replies, and no peer the
/// workload did not make.
/// `process`: the names of the sending and receiving threads too.
pub fn check(peers: &IpPeers, work: &UdpWorkload, process: bool) -> Verdict {
    let port = udp_port(work.port);
    let times = |ip: IpAddr| {
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
    let services: Vec<IpAddr> = work.exchanges.iter().map(|e| e.0).collect();
    let sources: Vec<IpAddr> = work.exchanges.iter().map(|e| e.1).collect();
    let with_process = if process { " and process" } else { "" };
    let strays = peers
        .keys()
        .copied()
        .filter(|&ip| work.net.holds(ip) && times(ip).is_none())
        .collect();
    Verdict {
        outbound: vec![Tally::new(
            peers,
            &services,
            &format!(
                "outbound i times (service i), to {port}{with_process}, no inbound from replies"
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
                "inbound i times (client i), to our {port}{with_process}, no outbound from replies"
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

/// Checks a [`Sockets::ConnectedHeldOpen`] workload as proc mode sees it:
/// every service an outbound peer on the port (counted or not: the
/// sockets are still open), and nothing else of the net, the clients
/// included (the services' sockets are unconnected, so the socket tables
/// hold no peer of theirs).
pub fn check_connected(peers: &IpPeers, work: &UdpWorkload) -> Verdict {
    let port = udp_port(work.port);
    let services: Vec<IpAddr> = work.exchanges.iter().map(|e| e.0).collect();
    let strays = peers
        .keys()
        .copied()
        .filter(|&ip| work.net.holds(ip) && !services.contains(&ip))
        .collect();
    Verdict {
        outbound: vec![Tally::new(
            peers,
            &services,
            &format!("outbound to {port} alone, no inbound"),
            |peer| {
                peer["inbound"].as_u64() == Some(0)
                    && peer["remote_ports"].as_array() == Some(&vec![port.clone()])
                    && peer["local_ports"].as_array().is_some_and(Vec::is_empty)
            },
        )],
        inbound: Vec::new(),
        phantom: strays,
    }
}
