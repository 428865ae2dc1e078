//! The IPv6 workload, made inside a network namespace of the test's own
//! ([`crate::netns::OwnNetns::with_ula`]) with netmon running in it:
//!
//! - TCP between unique-local addresses, client `i` (fd6e:6d00:0:N::20:i)
//!   connecting `i` times to server `i` (fd6e:6d00:0:N::10:i), all servers
//!   on one port: each server an outbound peer `i` times, each client an
//!   inbound one `i` times, so a hook that reads the wrong end, a
//!   truncated address or the wrong port shows it in that address;
//! - UDP exchanges between unique-local addresses ([`crate::udp`] over
//!   IPv6);
//! - one TCP connection between two dual-stack sockets over IPv4-mapped
//!   addresses (`::ffff:127.N.30.1` from `::ffff:127.N.31.1`), which must
//!   be recorded as the IPv4 peers 127.N.30.1 and 127.N.31.1.
//!
//! proc mode sees what is in the socket tables, so for it every
//! connection and client socket stays open until the workload is dropped.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    thread,
};

use serde_json::Value;
use socket2::{Domain, Socket, Type};

use crate::{
    check::{IpPeers, Sees, Tally, Verdict, has, tcp_port},
    net::{Family, Net},
    udp::{self, Sockets, UdpWorkload},
};

/// The third group of each kind of address (UDP's are [`crate::udp`]'s,
/// 0 and 1).
const SERVERS: u8 = 10;
const CLIENTS: u8 = 20;
/// The third octet of the IPv4-mapped server and client.
const MAPPED_SERVER: u8 = 30;
const MAPPED_CLIENT: u8 = 31;

/// What [`workload`] did.
pub struct Ipv6Workload {
    pub net: Net,
    pub tcp: TcpPairs,
    pub udp: UdpWorkload,
    /// Whether everything was held open (for proc mode).
    pub held_open: bool,
}

/// TCP connections: each server, its client and how many connections
/// they made, over IPv6 and over IPv4-mapped addresses.
pub struct TcpPairs {
    pub port: u16,
    pub pairs: Vec<(IpAddr, IpAddr, u64)>,
    /// The port of the IPv4-mapped listener, and its peers as netmon must
    /// record them (IPv4).
    pub mapped_port: u16,
    pub mapped: (Ipv4Addr, Ipv4Addr),
    /// Open until dropped, as a server's would be: proc mode tells an
    /// accepted connection from an outbound one by the listener on its
    /// local port.
    _listeners: Vec<TcpListener>,
    /// Both ends of every connection, where they are held open.
    _held: Vec<(Socket, TcpStream)>,
}

/// `pairs` TCP pairs and `pairs` UDP pairs of `net`'s IPv6 addresses, and
/// the IPv4-mapped connection; everything held open if `held_open`. Call
/// it inside the namespace that routes `net`'s /64.
pub fn workload(net: Net, pairs: u8, held_open: bool) -> io::Result<Ipv6Workload> {
    let tcp = tcp_pairs(net, pairs, held_open)?;
    let sockets = if held_open {
        Sockets::ConnectedHeldOpen
    } else {
        Sockets::Unconnected
    };
    let udp = udp::workload_over(net, Family::V6, sockets, pairs)?;
    Ok(Ipv6Workload {
        net,
        tcp,
        udp,
        held_open,
    })
}

fn tcp_pairs(net: Net, pairs: u8, held_open: bool) -> io::Result<TcpPairs> {
    // The listeners, and how many connections each must accept.
    let first = TcpListener::bind((net.addr6(SERVERS, 1), 0))?;
    let port = first.local_addr()?.port();
    let mut accepts = vec![(first, 1)];
    for i in 2..=pairs {
        accepts.push((TcpListener::bind((net.addr6(SERVERS, i), port))?, i));
    }
    let (server, client) = (net.addr(MAPPED_SERVER, 1), net.addr(MAPPED_CLIENT, 1));
    let mapped = dual_stack(SocketAddr::new(server.to_ipv6_mapped().into(), 0))?;
    mapped.listen(16)?;
    let mapped_port = local_port(&mapped)?;
    accepts.push((mapped.into(), 1));
    let acceptor =
        thread::Builder::new()
            .name("nm-acceptor".into())
            .spawn(move || -> io::Result<_> {
                let mut accepted = Vec::new();
                for (listener, times) in &accepts {
                    for _ in 0..*times {
                        accepted.push(listener.accept()?.0);
                    }
                }
                let listeners = accepts.into_iter().map(|(listener, _)| listener).collect();
                Ok((listeners, accepted))
            })?;
    let connector = thread::Builder::new().name("nm-client".into()).spawn(
        move || -> io::Result<Vec<Socket>> {
            let mut made = Vec::new();
            for i in 1..=pairs {
                let to = SocketAddr::new(net.addr6(SERVERS, i).into(), port);
                for _ in 0..i {
                    made.push(connect(
                        Socket::new(Domain::IPV6, Type::STREAM, None)?,
                        net.addr6(CLIENTS, i).into(),
                        to,
                    )?);
                }
            }
            let to = SocketAddr::new(server.to_ipv6_mapped().into(), mapped_port);
            let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
            socket.set_only_v6(false)?;
            made.push(connect(socket, client.to_ipv6_mapped().into(), to)?);
            Ok(made)
        },
    )?;
    let made = connector.join().expect("the TCP client thread panicked")?;
    let (listeners, accepted) = acceptor.join().expect("the TCP acceptor panicked")?;
    let held = if held_open {
        made.into_iter().zip(accepted).collect()
    } else {
        Vec::new()
    };
    Ok(TcpPairs {
        port,
        pairs: (1..=pairs)
            .map(|i| {
                let server = net.addr6(SERVERS, i).into();
                (server, net.addr6(CLIENTS, i).into(), u64::from(i))
            })
            .collect(),
        mapped_port,
        mapped: (server, client),
        _listeners: listeners,
        _held: held,
    })
}

/// A TCP socket of both families bound to `addr`.
fn dual_stack(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(false)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

fn local_port(socket: &Socket) -> io::Result<u16> {
    socket
        .local_addr()?
        .as_socket()
        .map(|addr| addr.port())
        .ok_or_else(|| io::Error::other("a socket of neither IP family"))
}

/// `socket` bound to `source` (a port the kernel picks), connected to
/// `dest`.
fn connect(socket: Socket, source: IpAddr, dest: SocketAddr) -> io::Result<Socket> {
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&dest.into())?;
    Ok(socket)
}

/// Checks `work` against the checkpoint's peers in the namespace it was
/// made in, as a mode that `sees` can: exact counts at both ends of every
/// TCP pair and UDP exchange (what proc mode sees of UDP, where
/// everything was held open), the IPv4-mapped connection as IPv4 peers,
/// and no other peer of `work`'s net nor any peer written as an
/// IPv4-mapped address.
pub fn check(peers: &IpPeers, work: &Ipv6Workload, sees: Sees) -> Verdict {
    let tcp = check_tcp(peers, &work.tcp, work.net, sees);
    let udp = if work.held_open {
        udp::check_connected(peers, &work.udp)
    } else {
        udp::check(peers, &work.udp, sees.outbound_process)
    };
    // A stray is an address neither part made.
    let mut phantom: Vec<IpAddr> = tcp
        .phantom
        .iter()
        .copied()
        .filter(|ip| udp.phantom.contains(ip))
        .collect();
    phantom.extend(peers.keys().filter(|ip| ip.to_canonical() != **ip));
    Verdict {
        outbound: tcp.outbound.into_iter().chain(udp.outbound).collect(),
        inbound: tcp.inbound.into_iter().chain(udp.inbound).collect(),
        phantom,
    }
}

fn check_tcp(peers: &IpPeers, work: &TcpPairs, net: Net, sees: Sees) -> Verdict {
    let (mapped_server, mapped_client) = (IpAddr::V4(work.mapped.0), IpAddr::V4(work.mapped.1));
    let times = |ip: IpAddr| {
        work.pairs
            .iter()
            .find(|&&(server, client, _)| ip == server || ip == client)
            .map(|&(_, _, times)| times)
            .or_else(|| (ip == mapped_server || ip == mapped_client).then_some(1))
    };
    let port_of = |ip: IpAddr| {
        if ip == mapped_server || ip == mapped_client {
            tcp_port(work.mapped_port)
        } else {
            tcp_port(work.port)
        }
    };
    let ip_of = |peer: &Value| peer["ip"].as_str()?.parse::<IpAddr>().ok();
    let only = |ports: &Value, ip: Option<IpAddr>| {
        ip.is_some_and(|ip| ports.as_array() == Some(&vec![port_of(ip)]))
    };
    let empty = |ports: &Value| ports.as_array().is_some_and(Vec::is_empty);
    let named =
        |peer: &Value, wanted: bool, name: &str| !wanted || has(&peer["processes"], name.into());
    let servers: Vec<IpAddr> = work
        .pairs
        .iter()
        .map(|p| p.0)
        .chain([mapped_server])
        .collect();
    let clients: Vec<IpAddr> = work
        .pairs
        .iter()
        .map(|p| p.1)
        .chain([mapped_client])
        .collect();
    let phantom = peers
        .keys()
        .copied()
        .filter(|&ip| net.holds(ip) && times(ip).is_none())
        .collect();
    let process = |wanted: bool| if wanted { " and process" } else { "" };
    Verdict {
        outbound: vec![Tally::new(
            peers,
            &servers,
            &format!(
                "TCP outbound i times (server i, 127.N.30.1 once), to its port{}, no inbound",
                process(sees.outbound_process)
            ),
            |peer| {
                let ip = ip_of(peer);
                peer["outbound"].as_u64() == ip.and_then(times)
                    && peer["inbound"].as_u64() == Some(0)
                    && only(&peer["remote_ports"], ip)
                    && empty(&peer["local_ports"])
                    && named(peer, sees.outbound_process, "nm-client")
            },
        )],
        inbound: vec![Tally::new(
            peers,
            &clients,
            &format!(
                "TCP inbound i times (client i, 127.N.31.1 once), to our port{}, no outbound",
                process(sees.inbound_process)
            ),
            |peer| {
                let ip = ip_of(peer);
                peer["inbound"].as_u64() == ip.and_then(times)
                    && peer["outbound"].as_u64() == Some(0)
                    && only(&peer["local_ports"], ip)
                    && empty(&peer["remote_ports"])
                    && named(peer, sees.inbound_process, "nm-acceptor")
            },
        )],
        phantom,
    }
}
