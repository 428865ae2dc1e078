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
};

use crate::{
    count::send,
    maps::{Flow, UDP_FLOWS},
    origin,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// `cgroup/connect4` and `cgroup/sendmsg4`: a datagram to `call`'s
/// address, now (sendmsg) or on every later send (connect).
pub fn send_to(ctx: &SockAddrContext) {
    exchange(ctx, DIRECTION_OUTBOUND);
}

/// `cgroup/recvmsg4`: a datagram from `call`'s address.
pub fn recv_from(ctx: &SockAddrContext) {
    exchange(ctx, DIRECTION_INBOUND);
}

/// A datagram in `direction`: the peer's if its flow goes that way, or is
/// new (it then opens the flow); a reply otherwise.
fn exchange(ctx: &SockAddrContext, direction: u8) {
    let Some(call) = Call::udp(ctx) else {
        return;
    };
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
}

impl Call {
    /// The call on `ctx`, if its socket is UDP.
    fn udp(ctx: &SockAddrContext) -> Option<Self> {
        // SAFETY: the context the kernel passed; each field is read whole,
        // as the verifier requires of context accesses.
        unsafe {
            let addr = ctx.sock_addr;
            if core::ptr::read_volatile(&raw const (*addr).protocol) != u32::from(IPPROTO_UDP) {
                return None;
            }
            let sk = core::ptr::read_volatile(&raw const (*addr).__bindgen_anon_1.sk);
            let local_port = if sk.is_null() {
                0
            } else {
                core::ptr::read_volatile(&raw const (*sk).src_port) as u16
            };
            let port = core::ptr::read_volatile(&raw const (*addr).user_port);
            Some(Self {
                cookie: bpf_get_socket_cookie(ctx.as_ptr()),
                addr: core::ptr::read_volatile(&raw const (*addr).user_ip4),
                // The port's two bytes in network order, in the word's low half.
                port: u16::from_be(port as u16),
                local_port,
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
