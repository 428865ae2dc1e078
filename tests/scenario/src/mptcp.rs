//! MPTCP connections, which the eBPF modes must count as plain TCP's: one
//! per connect at each end.
//!
//! An MPTCP connection is an MPTCP socket (`IPPROTO_MPTCP`) over TCP
//! subflows, and the MPTCP socket passes through `inet_sock_set_state`
//! too, CLOSE -> SYN_SENT included: a hook that does not ask which
//! protocol a socket speaks records it beside its subflow.
use std::{
    fs, io,
    mem::zeroed,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
    thread,
};

use serde_json::Value;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    check::{Peers, Tally, Verdict, inbound, outbound},
    net::Net,
};

/// Where the kernel says whether MPTCP sockets may be made, per network
/// namespace.
const ENABLED: &str = "/proc/sys/net/mptcp/enabled";

/// What [`workload`] did.
pub struct MptcpWorkload {
    pub net: Net,
    /// The listener every connection went to.
    pub dest: SocketAddrV4,
    /// Each source and how many connections it made.
    pub sources: Vec<(Ipv4Addr, u64)>,
    /// The inode of the namespace they were made in: netmon records them
    /// as that namespace's peers, not the host's.
    pub netns: u64,
}

impl MptcpWorkload {
    pub fn connections(&self) -> u64 {
        self.sources.iter().map(|&(_, times)| times).sum()
    }
}

/// Why this kernel cannot make MPTCP connections, if it cannot.
pub fn unavailable() -> Option<String> {
    (!Path::new(ENABLED).exists())
        .then(|| format!("{ENABLED} does not exist: kernel without MPTCP (CONFIG_MPTCP, 5.6+)"))
}

/// From each 127.N.1.i (i = 1..=`sources`), i MPTCP connections to a
/// listener on 127.N.0.1, each accepted and closed before the next.
///
/// All of it happens in a network namespace of a thread's own (named
/// `nm-client`, as the TCP workload's connecting thread is), where
/// `net.mptcp.enabled` is this test's whatever the host's is; its
/// loopback is the only interface, so no packet can leave it.
pub fn workload(net: Net, sources: u8) -> io::Result<MptcpWorkload> {
    thread::Builder::new()
        .name("nm-client".into())
        .spawn(move || {
            enter_own_netns()?;
            let netns = fs::metadata("/proc/thread-self/ns/net")?.ino();
            Ok(MptcpWorkload {
                netns,
                ..connect_all(net, sources)?
            })
        })?
        .join()
        .expect("the MPTCP workload's thread panicked")
}

fn connect_all(net: Net, sources: u8) -> io::Result<MptcpWorkload> {
    let listener = mptcp_socket()?;
    listener.bind(&SocketAddr::from((net.addr(0, 1), 0)).into())?;
    listener.listen(16)?;
    let dest = listener
        .local_addr()?
        .as_socket_ipv4()
        .expect("bound to an IPv4 address");
    let mut made = Vec::new();
    for i in 1..=sources {
        let source = net.addr(1, i);
        for _ in 0..i {
            let client = mptcp_socket()?;
            client.bind(&SocketAddr::from((source, 0)).into())?;
            client.connect(&SocketAddr::from(dest).into())?;
            let (server, _) = listener.accept()?;
            // Proof that both ends are MPTCP sockets, not TCP ones.
            for socket in [&client, &server] {
                let protocol = socket.protocol()?;
                assert_eq!(protocol, Some(Protocol::MPTCP), "an MPTCP socket");
            }
        }
        made.push((source, u64::from(i)));
    }
    Ok(MptcpWorkload {
        net,
        dest,
        sources: made,
        netns: 0,
    })
}

fn mptcp_socket() -> io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::MPTCP))
        .map_err(|err| io::Error::new(err.kind(), format!("socket(IPPROTO_MPTCP): {err}")))
}

/// Moves this thread into a new network namespace, loopback up and
/// MPTCP enabled.
fn enter_own_netns() -> io::Result<()> {
    // SAFETY: unshare(2) with a constant flag; only this thread moves.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // /proc/sys/net is the opening thread's namespace's.
    if fs::read_to_string(ENABLED)?.trim() != "1" {
        fs::write(ENABLED, "1")?;
    }
    loopback_up()
}

fn loopback_up() -> io::Result<()> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, None)?;
    // SAFETY: ifreq is plain data; zero is a valid value of every field.
    let mut request: libc::ifreq = unsafe { zeroed() };
    for (to, from) in request.ifr_name.iter_mut().zip(b"lo") {
        *to = *from as libc::c_char;
    }
    let fd = socket.as_raw_fd();
    // SAFETY: both ioctls read and write the ifreq passed, which outlives
    // them. (`as _`: the request is a c_ulong in glibc, a c_int in musl.)
    unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut request) != 0 {
            return Err(io::Error::last_os_error());
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &request) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Checks `work` against a checkpoint: exact counts at both ends, and no
/// peer the workload did not make. `outbound_process`: the mode names
/// the connecting process (every eBPF mode does).
pub fn check(peers: &Peers, work: &MptcpWorkload, outbound_process: bool) -> Verdict {
    let (dest, port) = (*work.dest.ip(), work.dest.port());
    let total = work.connections();
    let to_listener = outbound(port, outbound_process);
    let times_from = |peer: &Value| {
        let ip: Option<Ipv4Addr> = peer["ip"].as_str().and_then(|ip| ip.parse().ok());
        work.sources
            .iter()
            .find(|&&(source, _)| Some(source) == ip)
            .map(|&(_, times)| times)
    };
    let from_source = inbound(port, false);
    let sources: Vec<Ipv4Addr> = work.sources.iter().map(|&(source, _)| source).collect();
    let expected: Vec<Ipv4Addr> = sources.iter().copied().chain([dest]).collect();
    // The MPTCP socket goes to SYN_SENT before it has a peer.
    let strays = peers
        .keys()
        .copied()
        .filter(|&ip| ip.is_unspecified() || work.net.contains(ip) && !expected.contains(&ip))
        .map(IpAddr::V4)
        .collect();
    Verdict {
        outbound: vec![Tally::new(
            peers,
            &[dest],
            &format!("outbound {total} times, to port {port}"),
            |peer| to_listener(peer) && peer["outbound"].as_u64() == Some(total),
        )],
        inbound: vec![Tally::new(
            peers,
            &sources,
            "inbound once per connection (i times from 127.N.1.i), to our port",
            |peer| from_source(peer) && peer["inbound"].as_u64() == times_from(peer),
        )],
        phantom: strays,
    }
}
