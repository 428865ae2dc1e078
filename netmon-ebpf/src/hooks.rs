//! What each hook's arguments say: which transitions are connections, in
//! which direction, and where their peer is to be read.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_pid_tgid,
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext,
        TracePointContext,
    },
};
use netmon_common::{
    AF_INET, AF_INET6, Addr, DIRECTION_INBOUND, DIRECTION_OUTBOUND, IPPROTO_TCP, PROTOCOL_TCP,
    PeerEvent, SOURCE_KPROBE_CONNECT, SOURCE_KRETPROBE_ACCEPT, SOURCE_TRACEPOINT,
    config::PROTOCOL_UNKNOWN, tcp_state,
};

use crate::{
    count::send,
    maps::config,
    mem::{Memory, Probed, Typed},
    origin, sock,
};

/// kprobe `tcp_connect(struct sock *sk)`.
pub fn tcp_connect(ctx: &ProbeContext) -> Result<u32, i32> {
    let sk: *const u8 = ctx.arg(0).ok_or(0)?;
    send_sock_peer(
        ctx,
        sk,
        DIRECTION_OUTBOUND,
        SOURCE_KPROBE_CONNECT,
        current_pid(),
    )
}

/// kretprobe `inet_csk_accept`, which returns the child sock.
pub fn inet_csk_accept(ctx: &RetProbeContext) -> Result<u32, i32> {
    let sk: *const u8 = ctx.ret();
    send_sock_peer(
        ctx,
        sk,
        DIRECTION_INBOUND,
        SOURCE_KRETPROBE_ACCEPT,
        current_pid(),
    )
}

/// tracepoint `sock/inet_sock_set_state`, read from its perf record.
pub fn inet_sock_set_state(ctx: &TracePointContext) -> Result<u32, i32> {
    // A connection passes through about eight transitions and two matter:
    // the new state alone rules out most, with one read instead of three.
    let new: i32 = read_field(ctx, config(|c| &c.tracepoint.newstate))?;
    if new != tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED {
        return Ok(0);
    }
    let protocol: u16 = read_field(ctx, config(|c| &c.tracepoint.protocol))?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let old: i32 = read_field(ctx, config(|c| &c.tracepoint.oldstate))?;
    let direction = match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if config(|c| &c.tracepoint_outbound) != 0 => {
            DIRECTION_OUTBOUND
        }
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => DIRECTION_INBOUND,
        _ => return Ok(0),
    };
    let family: u16 = read_field(ctx, config(|c| &c.tracepoint.family))?;
    let addr = match family {
        AF_INET => Addr::v4_mapped(read_field(ctx, config(|c| &c.tracepoint.daddr))?),
        AF_INET6 => Addr(read_field(ctx, config(|c| &c.tracepoint.daddr_v6))?),
        _ => return Ok(0),
    };
    // The tracepoint stores ports in host byte order already.
    let local_port: u16 = read_field(ctx, config(|c| &c.tracepoint.sport))?;
    let remote_port: u16 = read_field(ctx, config(|c| &c.tracepoint.dport))?;
    // SYN_RECV -> ESTABLISHED runs in softirq, in whatever task the final
    // ACK interrupted: that task is not the one that owns the socket.
    let pid = if direction == DIRECTION_OUTBOUND {
        current_pid()
    } else {
        0
    };
    let skaddr_at = config(|c| &c.context.tracepoint_skaddr);
    let sk: *const u8 = if skaddr_at == 0 {
        core::ptr::null()
    } else {
        read_field::<u64>(ctx, skaddr_at).unwrap_or(0) as *const u8
    };
    let event = PeerEvent {
        addr,
        remote_port,
        local_port,
        pid,
        direction,
        source: SOURCE_TRACEPOINT,
        protocol: PROTOCOL_TCP,
        cgroup: origin::cgroup_of::<Probed>(sk, pid),
        netns: origin::sock_netns::<Probed>(sk),
        ..PeerEvent::default()
    };
    send(ctx, event);
    Ok(0)
}

/// The same tracepoint attached raw, read from its arguments.
pub fn inet_sock_set_state_raw(ctx: &RawTracePointContext) -> Result<u32, i32> {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)
    set_state::<Probed, _>(ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

/// The same tracepoint as a BTF tracepoint: the same arguments, and a
/// `struct sock *` the verifier knows the type of, read with plain loads.
pub fn inet_sock_set_state_btf(ctx: &BtfTracePointContext) -> Result<u32, i32> {
    set_state::<Typed, _>(ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2))
}

/// A transition of `sk` from `old` to `new`, from the tracepoint's
/// arguments: the states are plain context loads, so the six transitions
/// that do not matter cost no read of the socket at all.
#[inline(always)]
fn set_state<M: Memory, C: EbpfContext>(
    ctx: &C,
    sk: *const u8,
    old: i32,
    new: i32,
) -> Result<u32, i32> {
    if new != tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED {
        return Ok(0);
    }
    let (direction, pid) = match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if config(|c| &c.tracepoint_outbound) != 0 => {
            (DIRECTION_OUTBOUND, current_pid())
        }
        // In softirq, in whatever task the final ACK interrupted.
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => (DIRECTION_INBOUND, 0),
        _ => return Ok(0),
    };
    if sk.is_null() {
        return Ok(0);
    }
    // An MPTCP socket goes CLOSE -> SYN_SENT itself, before it has a peer,
    // beside its TCP subflow that makes the connection (DCCP, before 6.16,
    // used the same state numbers): only TCP's sockets are connections.
    let protocol_at = config(|c| &c.sock.protocol);
    if protocol_at != PROTOCOL_UNKNOWN && M::read::<u16>(sk, protocol_at)? != IPPROTO_TCP {
        return Ok(0);
    }
    if let Some(event) = sock::peer_event::<M>(sk, direction, SOURCE_TRACEPOINT, pid)? {
        send(ctx, event);
    }
    Ok(0)
}

/// Reads the peer of `sk` and sends it, stamped with `pid` (0: none).
fn send_sock_peer<C: EbpfContext>(
    ctx: &C,
    sk: *const u8,
    direction: u8,
    source: u8,
    pid: u32,
) -> Result<u32, i32> {
    if sk.is_null() {
        return Ok(0);
    }
    if let Some(event) = sock::peer_event::<Probed>(sk, direction, source, pid)? {
        send(ctx, event);
    }
    Ok(0)
}

fn read_field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; offsets come
    // from the tracepoint's format.
    unsafe { ctx.read_at(offset as usize) }
}

fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}
