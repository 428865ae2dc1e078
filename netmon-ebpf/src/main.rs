//! netmon's kernel side.
//!
//! Thin programs, each turning one kernel event into one
//! [`PeerEvent`](netmon_common::PeerEvent) for userspace:
//!
//! - kprobe `tcp_connect`: an outbound connection, in the connecting task;
//! - kretprobe `inet_csk_accept`: an inbound connection, in the accepting
//!   task, reading the child sock the function returns;
//! - tracepoint `sock/inet_sock_set_state`: both directions, for kernels
//!   without kprobes, and for inbound connections accepted by threads that
//!   were already blocked in `accept()` when the kretprobe attached;
//! - the same tracepoint attached raw: the same two transitions from the
//!   tracepoint's arguments, without the perf record the kernel fills in
//!   for every transition before a plain tracepoint program runs;
//! - the same tracepoint as a BTF tracepoint (Linux 5.5+): the same
//!   arguments, with a `struct sock *` whose type the verifier knows, so
//!   the socket is read with plain loads instead of helper calls;
//! - cgroup `bind4`, `connect4`, `sendmsg4` and `recvmsg4` (and their `6`
//!   twins, for IPv6 sockets) on the root cgroup v2: UDP peers, beside
//!   whichever TCP programs run ([`udp`]).
//!
//! The entry points are here; [`hooks`] reads each hook's arguments,
//! [`sock`] reads `struct sock` by either of [`mem`]'s ways of reading
//! kernel memory, [`count`] counts connections and decides
//! which cross to userspace, [`origin`] reads the network namespace and
//! cgroup a connection was made in, and [`maps`] holds the maps and the load-time
//! [`Config`](netmon_common::Config), whose offsets userspace reads from
//! the kernel's BTF or the tracepoint's `format` file, so one object runs
//! on many kernels without CO-RE. Every peer, IPv4 or IPv6, crosses
//! as 16 bytes (`netmon_common::Addr`, IPv4 mapped); decisions beyond "is
//! this a TCP or UDP peer" are made in userspace.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod count;
mod hooks;
mod maps;
mod mem;
mod origin;
mod sock;
mod udp;

use udp::Family;

use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, cgroup_sock_addr, kprobe, kretprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, ProbeContext, RawTracePointContext, RetProbeContext, SockAddrContext,
        TracePointContext,
    },
};

#[kprobe]
pub fn tcp_connect(ctx: ProbeContext) -> u32 {
    hooks::tcp_connect(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

#[kretprobe]
pub fn inet_csk_accept(ctx: RetProbeContext) -> u32 {
    hooks::inet_csk_accept(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    hooks::inet_sock_set_state(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    hooks::inet_sock_set_state_raw(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn inet_sock_set_state_btf(ctx: BtfTracePointContext) -> u32 {
    hooks::inet_sock_set_state_btf(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

/// The cgroup programs must allow every call they see (1): they watch,
/// never decide.
#[cgroup_sock_addr(bind4)]
pub fn udp_bind4(ctx: SockAddrContext) -> i32 {
    udp::bind(&ctx);
    1
}

#[cgroup_sock_addr(bind6)]
pub fn udp_bind6(ctx: SockAddrContext) -> i32 {
    udp::bind(&ctx);
    1
}

#[cgroup_sock_addr(connect4)]
pub fn udp_connect4(ctx: SockAddrContext) -> i32 {
    udp::send_to(&ctx, Family::V4);
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn udp_sendmsg4(ctx: SockAddrContext) -> i32 {
    udp::send_to(&ctx, Family::V4);
    1
}

#[cgroup_sock_addr(recvmsg4)]
pub fn udp_recvmsg4(ctx: SockAddrContext) -> i32 {
    udp::recv_from(&ctx, Family::V4);
    1
}

#[cgroup_sock_addr(connect6)]
pub fn udp_connect6(ctx: SockAddrContext) -> i32 {
    udp::send_to(&ctx, Family::V6);
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn udp_sendmsg6(ctx: SockAddrContext) -> i32 {
    udp::send_to(&ctx, Family::V6);
    1
}

#[cgroup_sock_addr(recvmsg6)]
pub fn udp_recvmsg6(ctx: SockAddrContext) -> i32 {
    udp::recv_from(&ctx, Family::V6);
    1
}

/// A kernel read failed: the offsets do not match this kernel. Rare by
/// construction, so worth a log line rather than a silent miss.
#[inline(never)]
fn read_failed<C: EbpfContext>(_ctx: &C, _err: i32) -> u32 {
    #[cfg(not(feature = "perf"))]
    aya_log_ebpf::warn!(
        _ctx,
        "netmon: reading kernel memory failed ({}): offsets wrong for this kernel?",
        _err
    );
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// "Dual MIT/GPL": the crate is MIT OR Apache-2.0, but the kernel lets
/// only GPL-compatible programs call GPL-only helpers, and these call two:
/// `bpf_probe_read_kernel` and (perf build) `bpf_perf_event_output`. The
/// kernel's `license_is_gpl_compatible` accepts this string.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
