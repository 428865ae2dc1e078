//! UDP peers, from cgroup programs attached to the root of the cgroup v2
//! hierarchy: they run in the calling task for every socket on the host,
//! see the address of each call, and need no kprobes.
//!
//! A datagram exchange has no handshake to say who started it, so the
//! first datagram does, as conntrack has it: on each socket, the first
//! datagram to or from a peer's address and port opens a flow in its
//! direction (`UDP_FLOWS`). Datagrams in the flow's direction count as the
//! peer's (a client's queries, outbound; a service's clients, inbound);
//! those the other way are replies. Repeats count in the kernel like TCP's
//! connections, so a resolver answering thousands of queries a second
//! sends an event per client and window.
use aya_ebpf::{
    EbpfContext,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netmon_common::{
    DIRECTION_INBOUND, DIRECTION_OUTBOUND, IPPROTO_UDP, PROTOCOL_UDP, PeerEvent, SOURCE_CGROUP_UDP,
    tcp_state::ESTABLISHED,
};

use crate::{
    count::send,
    maps::{Flow, UDP_FLOWS},
    origin, sock,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// `cgroup/connect4` and `cgroup/sendmsg4` (and their `6` twins, for
/// IPv4 peers of dual-stack sockets): a datagram to the call's address,
/// now (sendmsg) or on every later send (connect).
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
    /// An IPv6 socket's: only an IPv4-mapped address (`::ffff:a.b.c.d`),
    /// an IPv4 peer of a dual-stack socket, is netmon's.
    V6,
}

/// A datagram in `direction`: the peer's if its flow goes that way, or is
/// new (it then opens the flow); a reply otherwise.
fn exchange(ctx: &SockAddrContext, call: Option<Call>, direction: u8) {
    let Some(call) = call else {
        return;
    };
    // A connected socket is a client of the peer it connected to, whose
    // connect() counted it: what it receives are replies, however long
    // before netmon it connected.
    if direction == DIRECTION_INBOUND && call.connected {
        return;
    }
    let flow = Flow {
        cookie: call.cookie,
        addr: call.addr,
        port: call.port,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    match unsafe { UDP_FLOWS.get(flow).copied() } {
        Some(opened) if opened != direction => {}
        opened => {
            if opened.is_none() {
                let _ = UDP_FLOWS.insert(flow, direction, BPF_NOEXIST);
            }
            send(ctx, call.event(direction));
        }
    }
}

/// What one call on a UDP socket says.
struct Call {
    cookie: u64,
    /// The address of the call (the destination of a send, the source of
    /// a received datagram), network byte order.
    addr: u32,
    /// Its port, host byte order.
    port: u16,
    /// The socket's own port, host byte order (0 before it has one).
    local_port: u16,
    /// Whether the socket is connected to a peer.
    connected: bool,
}

impl Call {
    /// The call on `ctx`, if its socket is UDP and its address IPv4.
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
                Family::V4 => core::ptr::read_volatile(&raw const (*addr).user_ip4),
                Family::V6 => {
                    let v6 = &raw const (*addr).user_ip6;
                    sock::v4_mapped([
                        core::ptr::read_volatile(&raw const (*v6)[0]),
                        core::ptr::read_volatile(&raw const (*v6)[1]),
                        core::ptr::read_volatile(&raw const (*v6)[2]),
                        core::ptr::read_volatile(&raw const (*v6)[3]),
                    ])?
                }
            };
            let sk = core::ptr::read_volatile(&raw const (*addr).__bindgen_anon_1.sk);
            let (local_port, connected) = if sk.is_null() {
                (0, false)
            } else {
                (
                    core::ptr::read_volatile(&raw const (*sk).src_port) as u16,
                    // UDP reuses TCP's state numbers: connected is ESTABLISHED.
                    core::ptr::read_volatile(&raw const (*sk).state) == ESTABLISHED as u32,
                )
            };
            let port = core::ptr::read_volatile(&raw const (*addr).user_port);
            Some(Self {
                cookie: bpf_get_socket_cookie(ctx.as_ptr()),
                addr: peer,
                // The port's two bytes in network order, in the word's low half.
                port: u16::from_be(port as u16),
                local_port,
                connected,
            })
        }
    }

    fn event(&self, direction: u8) -> PeerEvent {
        PeerEvent {
            addr: self.addr,
            remote_port: self.port,
            local_port: self.local_port,
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
