//! UDP peers, from cgroup programs attached to the root of the cgroup v2
//! hierarchy: they run in the calling task for every socket on the host,
//! see the address of each call, and need no kprobes.
//!
//! A datagram exchange has no handshake to say who started it, so the
//! first datagram does, as conntrack has it: on each socket, the first
//! datagram to or from a peer's address and port opens a flow in its
//! direction (`UDP_FLOWS`) and counts once, as a TCP connection does (a
//! client's query, outbound; a service's client, inbound); datagrams the
//! other way are replies. Both ends of an exchange thus count it once,
//! however many datagrams it takes, and a datagram read twice (`MSG_PEEK`)
//! is not counted twice. Opened flows count in the kernel like TCP's
//! connections, so a resolver answering thousands of queries a second
//! sends an event per client and window.
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_socket_cookie, bpf_ktime_get_ns},
    },
    programs::SockAddrContext,
};
use netmon_common::{
    Addr, DIRECTION_INBOUND, DIRECTION_OUTBOUND, IPPROTO_UDP, PROTOCOL_UDP, PeerEvent,
    SOURCE_CGROUP_UDP, tcp_state::ESTABLISHED, udp_socket,
};

use crate::{
    count::{send, touch},
    maps::{Flow, FlowState, UDP_FLOWS, UDP_SOCKETS, config},
    origin,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// `cgroup/bind4` and `bind6`: a socket bound to a port of its own.
pub fn bind(ctx: &SockAddrContext) {
    if let Some(call) = Call::udp_any(ctx)
        && call.port != 0
    {
        mark(call.cookie, udp_socket::BOUND);
    }
}

/// `cgroup/connect4` and `cgroup/sendmsg4` (and their `6` twins, for IPv6
/// sockets, whose IPv4 peers come mapped): a datagram to the call's
/// address, now (sendmsg) or on every later send (connect).
pub fn send_to(ctx: &SockAddrContext, family: Family) {
    exchange(ctx, Call::udp(ctx, family), DIRECTION_OUTBOUND);
}

/// `cgroup/recvmsg4` and `recvmsg6`: a datagram from the call's address.
pub fn recv_from(ctx: &SockAddrContext, family: Family) {
    exchange(ctx, Call::udp(ctx, family), DIRECTION_INBOUND);
}

/// Which address of the context the attach type lets a program read.
#[derive(Clone, Copy)]
pub enum Family {
    V4,
    /// An IPv6 socket's, any IPv6 address (an IPv4 peer of a dual-stack
    /// socket comes IPv4-mapped, as netmon writes every IPv4 peer).
    V6,
}

/// A datagram in `direction`. The first of a flow opens it and counts
/// once, as a TCP connection does; later ones the same way only say the
/// peer is still there, once a window; the other way they are replies.
///
/// Replies and repeats, nearly every datagram, cost one map lookup: the
/// socket is read and the clock asked only past it.
fn exchange(ctx: &SockAddrContext, call: Option<Call>, direction: u8) {
    let Some(call) = call else {
        return;
    };
    let flow = Flow {
        cookie: call.cookie,
        addr: call.addr,
        port: call.port,
        _pad: [0; 6],
    };
    if let Some(state) = UDP_FLOWS.get_ptr_mut(flow) {
        // SAFETY: the map's value, valid for this run; a racing writer
        // can only make a touch come twice.
        unsafe {
            if (*state).direction != direction {
                return;
            }
            let now = bpf_ktime_get_ns();
            if now.wrapping_sub((*state).touched) < config(|c| &c.dedup_window_ns) {
                return;
            }
            (*state).touched = now;
        }
        touch(ctx, call.event(&Socket::of(ctx), direction));
        return;
    }
    let socket = Socket::of(ctx);
    if direction == DIRECTION_INBOUND {
        // A connected socket is a client of the peer it connected to,
        // whose connect() counted it: what it receives are replies,
        // however long before netmon it connected.
        if socket.connected || forgotten_reply(call.cookie, socket.port) {
            return;
        }
    }
    let state = FlowState {
        direction,
        _pad: [0; 7],
        // SAFETY: a helper call without arguments.
        touched: unsafe { bpf_ktime_get_ns() },
    };
    // Another CPU may have opened it meanwhile: then it counted it.
    if UDP_FLOWS.insert(flow, state, BPF_NOEXIST).is_ok() {
        if direction == DIRECTION_OUTBOUND {
            mark(call.cookie, udp_socket::SENT);
        }
        send(ctx, call.event(&socket, direction));
    }
}

/// Whether a datagram that would open an inbound flow is rather a reply
/// to an exchange whose flow was forgotten (a storm of newer flows pushed
/// it out of the LRU), or that the peer answers from another of its
/// addresses: the socket asked first, from a port the kernel picked, and
/// was never bound to one as a service's is.
fn forgotten_reply(cookie: u64, local_port: u16) -> bool {
    // SAFETY: the value is copied out at once.
    let known = unsafe { UDP_SOCKETS.get(cookie).copied() }.unwrap_or(0);
    known & udp_socket::SENT != 0
        && known & udp_socket::BOUND == 0
        && local_port >= config(|c| &c.ephemeral_low)
        && local_port <= config(|c| &c.ephemeral_high)
}

/// Sets `bit` in what is known of the socket.
fn mark(cookie: u64, bit: u8) {
    // SAFETY: the value is copied out at once.
    let known = unsafe { UDP_SOCKETS.get(cookie).copied() }.unwrap_or(0);
    if known & bit == 0 {
        let _ = UDP_SOCKETS.insert(cookie, known | bit, 0);
    }
}

/// What one call on a UDP socket says.
struct Call {
    cookie: u64,
    /// The address of the call (the destination of a send, the source of
    /// a received datagram).
    addr: Addr,
    /// Its port, host byte order.
    port: u16,
}

/// What a call's socket says of itself, read only for a datagram that
/// opens a flow or tells of one.
struct Socket {
    /// Its own port, host byte order (0 before it has one).
    port: u16,
    /// Whether it is connected to a peer.
    connected: bool,
}

impl Socket {
    fn of(ctx: &SockAddrContext) -> Self {
        // SAFETY: the context's socket, as the kernel passed it; each
        // field read whole, as the verifier requires.
        unsafe {
            let sk = core::ptr::read_volatile(&raw const (*ctx.sock_addr).__bindgen_anon_1.sk);
            if sk.is_null() {
                return Self {
                    port: 0,
                    connected: false,
                };
            }
            Self {
                port: core::ptr::read_volatile(&raw const (*sk).src_port) as u16,
                // UDP reuses TCP's state numbers: connected is ESTABLISHED.
                connected: core::ptr::read_volatile(&raw const (*sk).state) == ESTABLISHED as u32,
            }
        }
    }
}

impl Call {
    /// The call on `ctx`, if its socket is UDP, whatever its address
    /// (`bind()` to `::` is an IPv4 service too).
    fn udp_any(ctx: &SockAddrContext) -> Option<Self> {
        // SAFETY: as in `udp`.
        let port = unsafe {
            let addr = ctx.sock_addr;
            if core::ptr::read_volatile(&raw const (*addr).protocol) != u32::from(IPPROTO_UDP) {
                return None;
            }
            core::ptr::read_volatile(&raw const (*addr).user_port)
        };
        Some(Self {
            // SAFETY: a helper call on the context the kernel passed.
            cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
            addr: Addr::default(),
            port: u16::from_be(port as u16),
        })
    }

    /// The call on `ctx`, if its socket is UDP.
    fn udp(ctx: &SockAddrContext, family: Family) -> Option<Self> {
        // SAFETY: the context the kernel passed; each field is read whole,
        // as the verifier requires of context accesses, and only the
        // address fields the attach type allows.
        unsafe {
            let addr = ctx.sock_addr;
            if core::ptr::read_volatile(&raw const (*addr).protocol) != u32::from(IPPROTO_UDP) {
                return None;
            }
            let peer = match family {
                Family::V4 => {
                    Addr::v4_mapped(core::ptr::read_volatile(&raw const (*addr).user_ip4))
                }
                Family::V6 => {
                    let v6 = &raw const (*addr).user_ip6;
                    Addr([
                        core::ptr::read_volatile(&raw const (*v6)[0]),
                        core::ptr::read_volatile(&raw const (*v6)[1]),
                        core::ptr::read_volatile(&raw const (*v6)[2]),
                        core::ptr::read_volatile(&raw const (*v6)[3]),
                    ])
                }
            };
            let port = core::ptr::read_volatile(&raw const (*addr).user_port);
            Some(Self {
                cookie: bpf_get_socket_cookie(ctx.as_ptr()),
                addr: peer,
                // The port's two bytes in network order, in the word's low half.
                port: u16::from_be(port as u16),
            })
        }
    }

    fn event(&self, socket: &Socket, direction: u8) -> PeerEvent {
        PeerEvent {
            addr: self.addr,
            remote_port: self.port,
            local_port: socket.port,
            pid: (bpf_get_current_pid_tgid() >> 32) as u32,
            direction,
            source: SOURCE_CGROUP_UDP,
            protocol: PROTOCOL_UDP,
            cgroup: origin::task_cgroup(),
            netns: origin::task_netns(),
            ..PeerEvent::default()
        }
    }
}
