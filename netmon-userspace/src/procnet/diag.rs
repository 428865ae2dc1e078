//! NETLINK_SOCK_DIAG: the socket tables as `ss` reads them.
//!
//! Two things the text under /proc/net cannot do:
//! - a dump filtered by state in the kernel, in binary: a poll that skips
//!   tens of thousands of TIME_WAIT sockets formats none of them;
//! - notifications of every socket the kernel destroys (Linux 4.10+), so a
//!   connection that opens and closes between two polls, or an attempt
//!   that is refused, is still seen.
//!
//! Messages are read in place from one buffer; nothing is allocated per
//! socket.
use std::{
    collections::HashSet,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use log::debug;
use netmon_common::tcp_state;

use super::{Proto, Row, markers::Markers};

/// `SOCK_DIAG_BY_FAMILY` (linux/sock_diag.h).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// Multicast groups of destroyed sockets (`SKNLGRP_*`, linux/sock_diag.h).
const DESTROY_GROUPS: [u32; 4] = [1, 2, 3, 4];
const NLMSG_HDR_LEN: usize = 16;
/// `struct inet_diag_req_v2`.
const REQ_LEN: usize = 56;
/// The part of `struct inet_diag_msg` read here: family, state, timer,
/// retrans, then `struct inet_diag_sockid` (ports, addresses, interface,
/// cookie).
const MSG_LEN: usize = 52;
/// The whole `struct inet_diag_msg`; attributes follow it.
const MSG_FULL_LEN: usize = 72;
/// `idiag_timer` of a TIME_WAIT socket, whatever state it stands in: no
/// full socket reports it.
const TIMER_TIME_WAIT: u8 = 3;
/// A dump answers in messages of at most 32 KiB (the kernel's cap).
const DUMP_BUF: usize = 32 * 1024;
/// Receive buffer asked for the notifications (the kernel doubles it):
/// seconds of the fastest storm's notifications, so a busy moment loses
/// none (measured in docs/performance.md).
const NOTIFY_RCVBUF: i32 = 16 << 20;

/// A netlink socket for state-filtered dumps.
pub struct Dumper {
    fd: OwnedFd,
    buf: Box<[u8]>,
    seq: u32,
}

impl Dumper {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            fd: netlink_socket(0)?,
            buf: vec![0; DUMP_BUF].into_boxed_slice(),
            seq: 0,
        })
    }

    /// Calls `sink` for every socket of `proto` over IPv4 (or over IPv6,
    /// `v6`) whose state is in `states`, a bit mask of `1 << state`.
    pub fn dump(
        &mut self,
        proto: Proto,
        v6: bool,
        states: u32,
        mut sink: impl FnMut(Row),
    ) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        send_all(&self.fd, &request(self.seq, proto, v6, states))?;
        loop {
            let len = recv(&self.fd, &mut self.buf, 0)?;
            for (seq, message) in Messages::new(&self.buf[..len]) {
                // The rest of an earlier dump that ended in an error.
                if seq.is_some_and(|seq| seq != self.seq) {
                    continue;
                }
                match message? {
                    Message::Done => return Ok(()),
                    Message::Socket(payload) => {
                        sink(parse_socket(payload).ok_or_else(short_message)?);
                    }
                    Message::Other => {}
                }
            }
        }
    }
}

/// A netlink socket subscribed to the sockets the kernel destroys.
pub struct Destroyed {
    fd: OwnedFd,
    buf: Box<[u8]>,
    /// See [`Destroyed::close_markers`].
    markers: Markers,
}

impl Destroyed {
    /// Subscribes to TCP and UDP over IPv4 and IPv6, in this thread's
    /// network namespace, where the markers are made too. Non-blocking:
    /// read it when it is readable.
    pub fn subscribe() -> io::Result<Self> {
        let fd = netlink_socket(libc::SOCK_NONBLOCK)?;
        // Bound, for a port id of its own: the kernel skips a listener
        // whose port id is its own (0) when it broadcasts.
        bind(&fd)?;
        for group in DESTROY_GROUPS {
            setsockopt(&fd, libc::SOL_NETLINK, libc::NETLINK_ADD_MEMBERSHIP, group)?;
        }
        // Forcing the size needs CAP_NET_ADMIN; without it the kernel's
        // net.core.rmem_max caps the plain request.
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, NOTIFY_RCVBUF).is_err() {
            let _ = setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, NOTIFY_RCVBUF);
        }
        let markers = Markers::new().unwrap_or_else(|err| {
            debug!("no markers to end notifications with: {err}");
            Markers::default()
        });
        Ok(Self {
            fd,
            buf: vec![0; DUMP_BUF].into_boxed_slice(),
            markers,
        })
    }

    /// Closes the markers (`markers.rs`) and returns their cookies,
    /// whose notifications are to be waited for.
    pub fn close_markers(&mut self) -> HashSet<u64> {
        std::mem::take(&mut self.markers).close()
    }

    /// Waits until notifications are waiting, or `timeout` has passed.
    pub fn wait(&self, timeout: Duration) -> io::Result<()> {
        let mut pollfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, for the length given.
        if unsafe { libc::poll(&mut pollfd, 1, ms) } < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Calls `sink` for every notification waiting, with the socket's
    /// protocol. Returns whether the kernel dropped some because the
    /// receive buffer was full (each drop is reported once).
    pub fn drain(&mut self, mut sink: impl FnMut(Proto, Row)) -> io::Result<bool> {
        let mut overflowed = false;
        loop {
            let len = match recv(&self.fd, &mut self.buf, libc::MSG_DONTWAIT) {
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(overflowed),
                Err(err) if err.raw_os_error() == Some(libc::ENOBUFS) => {
                    overflowed = true;
                    continue;
                }
                Err(err) => return Err(err),
            };
            for socket in notified_sockets(&self.buf[..len]) {
                let (proto, row) = socket?;
                sink(proto, row);
            }
        }
    }
}

/// The sockets in one datagram of destroy notifications, each with its
/// protocol; an error for a datagram that is not one.
pub fn notified_sockets(datagram: &[u8]) -> impl Iterator<Item = io::Result<(Proto, Row)>> + '_ {
    Messages::new(datagram).filter_map(|(_, message)| match message {
        Ok(Message::Socket(payload)) => {
            let proto = match payload.get(MSG_FULL_LEN..).and_then(protocol_attr) {
                Some(libc::IPPROTO_UDP) => Proto::Udp,
                _ => Proto::Tcp,
            };
            Some(
                parse_socket(payload)
                    .map(|row| (proto, row))
                    .ok_or_else(short_message),
            )
        }
        Ok(Message::Done | Message::Other) => None,
        Err(err) => Some(Err(err)),
    })
}

impl AsRawFd for Destroyed {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The states a poll asks for: every one but handshakes in progress (a
/// request socket is a different socket from the connection it becomes,
/// and the connection, or its destruction, is seen anyway) and, unless
/// `time_wait`, TIME_WAIT.
pub fn poll_states(time_wait: bool) -> u32 {
    let handshakes = 1 << tcp_state::SYN_RECV | 1 << tcp_state::NEW_SYN_RECV;
    let closed = if time_wait {
        0
    } else {
        1 << tcp_state::TIME_WAIT
    };
    !(handshakes | closed)
}

fn netlink_socket(flags: i32) -> io::Result<OwnedFd> {
    socket(
        libc::AF_NETLINK,
        libc::SOCK_DGRAM | flags,
        libc::NETLINK_SOCK_DIAG,
    )
}

pub(super) fn socket(domain: i32, kind: i32, protocol: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned from here on.
    let fd = unsafe { libc::socket(domain, kind | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_nl is valid; the kernel picks the port id.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: addr is a sockaddr_nl of the length given.
    zero_or_errno(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })
}

fn setsockopt(fd: &OwnedFd, level: i32, name: i32, value: impl Copy) -> io::Result<()> {
    // SAFETY: value is a plain integer that outlives the call.
    zero_or_errno(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            size_of_val(&value) as libc::socklen_t,
        )
    })
}

/// A call's 0 as success, anything else as the error in errno.
pub(super) fn zero_or_errno(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A byte count from `call`, which is made again when a signal
/// interrupted it.
fn count_retrying(mut call: impl FnMut() -> libc::ssize_t) -> io::Result<usize> {
    loop {
        if let Ok(len) = usize::try_from(call()) {
            return Ok(len);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn send_all(fd: &OwnedFd, bytes: &[u8]) -> io::Result<()> {
    // SAFETY: bytes is valid for its length; netlink takes the whole
    // message or nothing.
    count_retrying(|| unsafe { libc::send(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) })
        .map(drop)
}

fn recv(fd: &OwnedFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of its length.
    count_retrying(|| unsafe {
        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags)
    })
}

/// `nlmsghdr` + `inet_diag_req_v2` asking for a dump.
fn request(seq: u32, proto: Proto, v6: bool, states: u32) -> [u8; NLMSG_HDR_LEN + REQ_LEN] {
    const LEN: usize = NLMSG_HDR_LEN + REQ_LEN;
    let mut bytes = [0; LEN];
    bytes[0..4].copy_from_slice(&(LEN as u32).to_ne_bytes());
    bytes[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    bytes[6..8].copy_from_slice(&flags.to_ne_bytes());
    bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
    let req = &mut bytes[NLMSG_HDR_LEN..];
    req[0] = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    req[1] = match proto {
        Proto::Tcp => libc::IPPROTO_TCP,
        Proto::Udp => libc::IPPROTO_UDP,
    } as u8;
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    bytes
}

enum Message<'a> {
    /// A socket's `inet_diag_msg` and attributes.
    Socket(&'a [u8]),
    Done,
    Other,
}

/// The netlink messages in one datagram, each with the sequence number of
/// the request it answers (none for a datagram too short to say).
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(datagram: &'a [u8]) -> Self {
        Self { rest: datagram }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = (Option<u32>, io::Result<Message<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLMSG_HDR_LEN {
            return None;
        }
        let len = u32_at(self.rest, 0) as usize;
        if len < NLMSG_HDR_LEN || len > self.rest.len() {
            self.rest = &[];
            return Some((None, Err(short_message())));
        }
        let (kind, seq) = (u16_at(self.rest, 4), u32_at(self.rest, 8));
        let payload = &self.rest[NLMSG_HDR_LEN..len];
        self.rest = &self.rest[len.next_multiple_of(4).min(self.rest.len())..];
        let message = match kind {
            SOCK_DIAG_BY_FAMILY => Ok(Message::Socket(payload)),
            k if k == libc::NLMSG_DONE as u16 => Ok(Message::Done),
            k if k == libc::NLMSG_ERROR as u16 => match payload.get(..4) {
                Some(errno) => match i32::from_ne_bytes(errno.try_into().unwrap()) {
                    0 => Ok(Message::Other),
                    errno => Err(io::Error::from_raw_os_error(errno.saturating_neg())),
                },
                None => Err(short_message()),
            },
            _ => Ok(Message::Other),
        };
        Some((Some(seq), message))
    }
}

/// The addresses, ports, state and cookie of one `inet_diag_msg`; an
/// IPv4-mapped address is its IPv4 address.
fn parse_socket(msg: &[u8]) -> Option<Row> {
    let msg = msg.get(..MSG_LEN)?;
    let address = |bytes: &[u8]| match i32::from(msg[0]) {
        libc::AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
            <[u8; 4]>::try_from(&bytes[..4]).unwrap(),
        ))),
        _ => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())).to_canonical()),
    };
    let cookie = u64::from(u32_at(msg, 44)) | u64::from(u32_at(msg, 48)) << 32;
    Some(Row {
        local: address(&msg[8..24]),
        local_port: u16::from_be_bytes([msg[4], msg[5]]),
        remote: address(&msg[24..40]),
        remote_port: u16::from_be_bytes([msg[6], msg[7]]),
        state: i32::from(msg[1]),
        cookie: Some(cookie),
        timewait: msg[2] == TIMER_TIME_WAIT,
    })
}

/// `INET_DIAG_PROTOCOL` among a notification's attributes: it is how a
/// destroyed socket says whether it was TCP or UDP.
fn protocol_attr(mut attrs: &[u8]) -> Option<i32> {
    const INET_DIAG_PROTOCOL: u16 = 10;
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0));
        if len < 4 || len > attrs.len() {
            return None;
        }
        if u16_at(attrs, 2) == INET_DIAG_PROTOCOL && len > 4 {
            return Some(i32::from(attrs[4]));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn short_message() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "truncated sock_diag message")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `inet_diag_msg` as the kernel writes it, plus attributes.
    fn message(family: i32, src: [u8; 16], dst: [u8; 16], attrs: &[u8]) -> Vec<u8> {
        let mut msg = vec![0; MSG_FULL_LEN];
        msg[0] = family as u8;
        msg[1] = 1; // ESTABLISHED
        msg[4..6].copy_from_slice(&40000u16.to_be_bytes());
        msg[6..8].copy_from_slice(&443u16.to_be_bytes());
        msg[8..24].copy_from_slice(&src);
        msg[24..40].copy_from_slice(&dst);
        msg[44..48].copy_from_slice(&7u32.to_ne_bytes());
        msg[48..52].copy_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(attrs);
        msg
    }

    fn v4(octets: [u8; 4]) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&octets);
        bytes
    }

    fn datagram(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((NLMSG_HDR_LEN + payload.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&[0; 2]);
        bytes.extend_from_slice(&9u32.to_ne_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn reads_addresses_ports_state_and_cookie() {
        let msg = message(libc::AF_INET, v4([127, 0, 0, 1]), v4([10, 1, 2, 3]), &[]);
        let row = parse_socket(&msg).unwrap();
        assert_eq!(
            row,
            Row {
                local: Some(Ipv4Addr::new(127, 0, 0, 1).into()),
                local_port: 40000,
                remote: Some(Ipv4Addr::new(10, 1, 2, 3).into()),
                remote_port: 443,
                state: 1,
                cookie: Some(1 << 32 | 7),
                timewait: false,
            }
        );
    }

    #[test]
    fn a_time_wait_socket_says_so_whatever_state_it_stands_in() {
        const FIN_WAIT2: i32 = 5;
        let mut msg = message(libc::AF_INET, v4([127, 0, 0, 1]), v4([10, 1, 2, 3]), &[]);
        msg[1] = FIN_WAIT2 as u8;
        msg[2] = TIMER_TIME_WAIT;
        let row = parse_socket(&msg).unwrap();
        assert_eq!((row.state, row.timewait), (FIN_WAIT2, true));
    }

    #[test]
    fn ipv6_reads_native_and_mapped_addresses() {
        let mapped = Ipv4Addr::new(10, 9, 8, 7).to_ipv6_mapped().octets();
        let any = Ipv6Addr::UNSPECIFIED.octets();
        let row = parse_socket(&message(libc::AF_INET6, any, mapped, &[])).unwrap();
        assert_eq!(row.local, Some(Ipv6Addr::UNSPECIFIED.into()));
        assert_eq!(row.remote, Some(Ipv4Addr::new(10, 9, 8, 7).into()));
        let native = "fd00::1".parse::<Ipv6Addr>().unwrap();
        let row = parse_socket(&message(libc::AF_INET6, any, native.octets(), &[])).unwrap();
        assert_eq!(
            (row.local, row.remote),
            (Some(Ipv6Addr::UNSPECIFIED.into()), Some(native.into()))
        );
    }

    #[test]
    fn a_notification_names_its_protocol() {
        // INET_DIAG_PROTOCOL (10), one byte, padded to 8.
        let attr = [5, 0, 10, 0, libc::IPPROTO_UDP as u8, 0, 0, 0];
        let msg = message(
            libc::AF_INET,
            v4([0; 4]),
            v4([1; 4]),
            &[8, 0, 8, 0, 0, 0, 0, 0],
        );
        assert_eq!(protocol_attr(&msg[MSG_FULL_LEN..]), None);
        let msg = message(libc::AF_INET, v4([0; 4]), v4([1; 4]), &attr);
        assert_eq!(protocol_attr(&msg[MSG_FULL_LEN..]), Some(libc::IPPROTO_UDP));
    }

    #[test]
    fn messages_end_at_done_and_carry_errors() {
        let msg = message(libc::AF_INET, v4([1; 4]), v4([2; 4]), &[]);
        let mut bytes = datagram(SOCK_DIAG_BY_FAMILY, &msg);
        bytes.extend(datagram(libc::NLMSG_DONE as u16, &[0; 4]));
        let kinds: Vec<_> = Messages::new(&bytes)
            .map(|(seq, m)| match m.unwrap() {
                Message::Socket(_) => format!("socket {seq:?}"),
                Message::Done => format!("done {seq:?}"),
                Message::Other => "other".into(),
            })
            .collect();
        assert_eq!(kinds, ["socket Some(9)", "done Some(9)"]);

        let error = datagram(libc::NLMSG_ERROR as u16, &(-libc::ENOENT).to_ne_bytes());
        let err = Messages::new(&error).next().unwrap().1.err().unwrap();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let msg = message(libc::AF_INET, v4([1; 4]), v4([2; 4]), &[]);
        let mut bytes = datagram(SOCK_DIAG_BY_FAMILY, &msg);
        bytes.truncate(40);
        let err = Messages::new(&bytes).next().unwrap().1.err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(parse_socket(&msg[..30]), None);
    }
}
