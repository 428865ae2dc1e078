//! The loopback workload: connections between distinct addresses, so every
//! peer in a checkpoint can be traced to exactly one connection.
use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    thread,
    time::Duration,
};

use socket2::{Domain, Socket, Type};

use crate::net::{Net, closed_port};

/// What a workload did, for the checks.
pub struct Workload {
    pub port: u16,
    pub refused_port: u16,
    pub destinations: Vec<Ipv4Addr>,
    pub refused: Vec<Ipv4Addr>,
    pub sources: Vec<Ipv4Addr>,
    pub refused_sources: Vec<Ipv4Addr>,
    /// Open until the workload is dropped, as a server's would be: proc
    /// mode tells an accepted connection from an outbound one by the
    /// listening socket on its local port, and may look after the
    /// connection has closed.
    pub listener: TcpListener,
    /// Both ends of every connection, when they were asked to stay open;
    /// dropping the workload closes them.
    pub held: Option<Held>,
}

/// What [`workload_held_open`] keeps open.
pub struct Held {
    pub clients: Vec<Socket>,
    pub servers: Vec<TcpStream>,
}

/// Whether connections are closed as soon as they are made.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hold {
    Close,
    /// Kept open until the [`Workload`] is dropped: proc mode only sees
    /// connections that are in the socket table when it polls.
    Open,
}

/// A TCP socket bound to `source` before connecting, so each connection
/// comes from its own loopback address.
pub fn connect_from(source: Ipv4Addr, dest: SocketAddrV4) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect(&SocketAddr::from(dest).into())?;
    Ok(socket)
}

/// The third octet of each kind of address in a workload's [`Net`].
const DESTINATIONS: u8 = 10;
const REFUSED: u8 = 11;
const SOURCES: u8 = 20;
const REFUSED_SOURCES: u8 = 21;

/// `count` connections from distinct 127.N.20.i to distinct 127.N.10.i
/// (a listener on 0.0.0.0), every other one closed with RST, plus `count`
/// refused attempts from 127.N.21.i to 127.N.11.i, N being `net`'s.
/// Connections are made by a thread named `nm-client`, accepted by one
/// named `nm-acceptor`.
pub fn workload(net: impl Into<Net>, count: u8) -> Workload {
    run(net.into(), count, Hold::Close)
}

/// [`workload`], but every connection stays open until the result is
/// dropped (so none is closed with RST).
pub fn workload_held_open(net: impl Into<Net>, count: u8) -> Workload {
    run(net.into(), count, Hold::Open)
}

fn run(net: Net, count: u8, hold: Hold) -> Workload {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused_port = closed_port();
    let acceptor = thread::Builder::new()
        .name("nm-acceptor".into())
        .spawn(move || {
            let accepted = (0..count)
                .map(|_| {
                    let (stream, from) = listener.accept().unwrap();
                    ((hold == Hold::Open).then_some(stream), from.ip())
                })
                .collect::<Vec<_>>();
            (listener, accepted)
        })
        .unwrap();
    let client = thread::Builder::new()
        .name("nm-client".into())
        .spawn(move || {
            let mut open = Vec::new();
            for i in 1..=count {
                let dest = SocketAddrV4::new(net.addr(DESTINATIONS, i), port);
                let socket = connect_from(net.addr(SOURCES, i), dest).unwrap();
                if hold == Hold::Open {
                    open.push(socket);
                } else if i % 2 == 0 {
                    socket.set_linger(Some(Duration::ZERO)).unwrap();
                }
                let refused = SocketAddrV4::new(net.addr(REFUSED, i), refused_port);
                let err = connect_from(net.addr(REFUSED_SOURCES, i), refused).unwrap_err();
                assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
            }
            open
        })
        .unwrap();
    let clients = client.join().unwrap();
    let (listener, accepted) = acceptor.join().unwrap();
    let addrs = |kind: u8| (1..=count).map(|i| net.addr(kind, i)).collect::<Vec<_>>();
    let accepted_from: BTreeSet<_> = accepted.iter().map(|(_, from)| *from).collect();
    assert_eq!(
        accepted_from.len(),
        usize::from(count),
        "every connection accepted"
    );
    let held = (hold == Hold::Open).then(|| Held {
        clients,
        servers: accepted
            .into_iter()
            .filter_map(|(stream, _)| stream)
            .collect(),
    });
    Workload {
        port,
        refused_port,
        destinations: addrs(DESTINATIONS),
        refused: addrs(REFUSED),
        sources: addrs(SOURCES),
        refused_sources: addrs(REFUSED_SOURCES),
        listener,
        held,
    }
}
