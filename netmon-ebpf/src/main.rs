//! netmon's kernel side.
//!
//! Three thin programs, each turning one kernel event into one
//! [`PeerEvent`] in the `EVENTS` ring buffer:
//!
//! - kprobe `tcp_connect`: an outbound connection, in the connecting task;
//! - kretprobe `inet_csk_accept`: an inbound connection, in the accepting
//!   task, reading the child sock the function returns;
//! - tracepoint `sock/inet_sock_set_state`: both directions, for kernels
//!   without kprobes, and for inbound connections accepted by threads that
//!   were already blocked in `accept()` when the kretprobe attached;
//! - the same tracepoint attached raw: the same two transitions from the
//!   tracepoint's arguments, without the perf record the kernel fills in
//!   for every transition before a plain tracepoint program runs.
//!
//! Every offset reaches the programs as a load-time global, read from the
//! kernel's BTF or the tracepoint's `format` file by userspace, so one object
//! runs on many kernels without CO-RE. Decisions beyond "is this an IPv4 TCP
//! peer" are made in userspace.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

#[cfg(feature = "perf")]
use aya_ebpf::maps::PerfEventArray;
#[cfg(not(feature = "perf"))]
use aya_ebpf::maps::RingBuf;
use aya_ebpf::{
    EbpfContext, Global, TASK_COMM_LEN,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::bpf_ktime_get_ns,
    },
    macros::{kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{ProbeContext, RawTracePointContext, RetProbeContext, TracePointContext},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use netmon_common::{
    AF_INET, AF_INET6, DIRECTION_INBOUND, DIRECTION_OUTBOUND, DedupKey, DedupValue, IPPROTO_TCP,
    PeerEvent, SERIES_NONE, SOURCE_KPROBE_CONNECT, SOURCE_KRETPROBE_ACCEPT, SOURCE_TRACEPOINT,
    default_offsets, tcp_state,
};

/// Default size; userspace may resize it at load time.
#[cfg(not(feature = "perf"))]
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// One perf buffer per CPU; userspace counts what they lose.
#[cfg(feature = "perf")]
#[map]
static EVENTS: PerfEventArray<PeerEvent> = PerfEventArray::new(0);

/// Recent connection keys and their counts: repeats within the window
/// send no event (see `netmon_common::DedupValue`).
///
/// `BPF_F_NO_COMMON_LRU`: each CPU keeps its own LRU list, so inserting a
/// key (a second sighting, see `send`) takes no lock shared with the other
/// CPUs.
#[map]
static DEDUP: LruHashMap<DedupKey, DedupValue> =
    LruHashMap::with_max_entries(65536, BPF_F_NO_COMMON_LRU);

/// Fingerprints of the keys each CPU has seen lately, direct-mapped: a
/// key's first sighting is sent without a `DEDUP` entry (see `send`).
///
/// One element holding the whole table, not one element per slot (each
/// reached through a pointer array of its own), and 4-byte fingerprints
/// rather than 12-byte keys: in the all-new storm, where every run looks
/// up a slot it has not touched lately, the program's share of the CPU
/// went from about 1.4% to 0.65%.
#[cfg(not(feature = "perf"))]
#[map]
static SEEN: PerCpuArray<[u32; SEEN_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// Slots in `SEEN` (a power of two): 4 KiB a CPU, one page. A smaller
/// table stays in cache between runs: in the all-new storm the program took
/// 0.65% of the CPU with 1024 slots against 0.9% with 4096.
#[cfg(not(feature = "perf"))]
const SEEN_SLOTS: usize = 1024;

/// Events that did not fit in `EVENTS` (ring buffer transport), per CPU.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// `struct sock_common` offsets (bytes).
#[unsafe(no_mangle)]
static SK_FAMILY_OFF: Global<u32> = Global::new(default_offsets::SK_FAMILY);
#[unsafe(no_mangle)]
static SK_DADDR_OFF: Global<u32> = Global::new(default_offsets::SK_DADDR);
#[unsafe(no_mangle)]
static SK_DPORT_OFF: Global<u32> = Global::new(default_offsets::SK_DPORT);
#[unsafe(no_mangle)]
static SK_NUM_OFF: Global<u32> = Global::new(default_offsets::SK_NUM);
#[unsafe(no_mangle)]
static SK_V6_DADDR_OFF: Global<u32> = Global::new(default_offsets::SK_V6_DADDR);

// `sock/inet_sock_set_state` field offsets (bytes); userspace always sets
// them from the tracepoint's format file before loading.
#[unsafe(no_mangle)]
static TP_OLDSTATE_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_NEWSTATE_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_SPORT_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_DPORT_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_FAMILY_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_PROTOCOL_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_DADDR_OFF: Global<u32> = Global::new(0);
#[unsafe(no_mangle)]
static TP_DADDR_V6_OFF: Global<u32> = Global::new(0);
/// Repeats of a key within this many ns send no event; 0 sends every one.
#[unsafe(no_mangle)]
static DEDUP_WINDOW_NS: Global<u64> = Global::new(1_000_000_000);
/// Zero when the kprobe on `tcp_connect` reports outbound connections.
#[unsafe(no_mangle)]
static TP_OUTBOUND: Global<u32> = Global::new(1);

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;
/// `BPF_F_NO_COMMON_LRU`, a map flag of LRU hash maps.
const BPF_F_NO_COMMON_LRU: u32 = 2;

/// The first 12 bytes of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as
/// three native-endian words read straight from memory.
const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

#[kprobe]
pub fn tcp_connect(ctx: ProbeContext) -> u32 {
    try_tcp_connect(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

fn try_tcp_connect(ctx: &ProbeContext) -> Result<u32, i32> {
    let sk: *const u8 = ctx.arg(0).ok_or(0)?;
    send_sock_peer(
        ctx,
        sk,
        DIRECTION_OUTBOUND,
        SOURCE_KPROBE_CONNECT,
        current_pid(),
    )
}

#[kretprobe]
pub fn inet_csk_accept(ctx: RetProbeContext) -> u32 {
    try_inet_csk_accept(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

fn try_inet_csk_accept(ctx: &RetProbeContext) -> Result<u32, i32> {
    let sk: *const u8 = ctx.ret();
    send_sock_peer(
        ctx,
        sk,
        DIRECTION_INBOUND,
        SOURCE_KRETPROBE_ACCEPT,
        current_pid(),
    )
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    try_inet_sock_set_state(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<u32, i32> {
    // A connection passes through about eight transitions and two matter:
    // the new state alone rules out most, with one read instead of three.
    let new: i32 = read_field(ctx, &TP_NEWSTATE_OFF)?;
    if new != tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED {
        return Ok(0);
    }
    let protocol: u16 = read_field(ctx, &TP_PROTOCOL_OFF)?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let old: i32 = read_field(ctx, &TP_OLDSTATE_OFF)?;
    let direction = match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if TP_OUTBOUND.load() != 0 => DIRECTION_OUTBOUND,
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => DIRECTION_INBOUND,
        _ => return Ok(0),
    };
    let family: u16 = read_field(ctx, &TP_FAMILY_OFF)?;
    let addr = match family {
        AF_INET => read_field(ctx, &TP_DADDR_OFF)?,
        AF_INET6 => match v4_mapped(read_field(ctx, &TP_DADDR_V6_OFF)?) {
            Some(addr) => addr,
            None => return Ok(0),
        },
        _ => return Ok(0),
    };
    // The tracepoint stores ports in host byte order already.
    let local_port: u16 = read_field(ctx, &TP_SPORT_OFF)?;
    let remote_port: u16 = read_field(ctx, &TP_DPORT_OFF)?;
    let mut event = PeerEvent {
        addr,
        remote_port,
        local_port,
        direction,
        source: SOURCE_TRACEPOINT,
        ..PeerEvent::default()
    };
    // SYN_RECV -> ESTABLISHED runs in softirq, in whatever task the final
    // ACK interrupted: that task is not the one that owns the socket.
    if direction == DIRECTION_OUTBOUND {
        event.pid = current_pid();
    }
    send(ctx, event);
    Ok(0)
}

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state_raw(ctx: RawTracePointContext) -> u32 {
    try_inet_sock_set_state_raw(&ctx).unwrap_or_else(|err| read_failed(&ctx, err))
}

fn try_inet_sock_set_state_raw(ctx: &RawTracePointContext) -> Result<u32, i32> {
    // TP_PROTO(const struct sock *sk, const int oldstate, const int newstate):
    // the states are plain context loads, so the six transitions that do
    // not matter cost no helper call at all.
    let new: i32 = ctx.arg(2);
    if new != tcp_state::SYN_SENT && new != tcp_state::ESTABLISHED {
        return Ok(0);
    }
    let old: i32 = ctx.arg(1);
    // Only TCP passes through SYN_SENT or SYN_RECV (SCTP, the other caller
    // of inet_sk_set_state, never does), so no protocol check is needed.
    let (direction, pid) = match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) if TP_OUTBOUND.load() != 0 => {
            (DIRECTION_OUTBOUND, current_pid())
        }
        // In softirq, in whatever task the final ACK interrupted.
        (tcp_state::SYN_RECV, tcp_state::ESTABLISHED) => (DIRECTION_INBOUND, 0),
        _ => return Ok(0),
    };
    let sk: *const u8 = ctx.arg(0);
    send_sock_peer(ctx, sk, direction, SOURCE_TRACEPOINT, pid)
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
    let head = SockHead::read(sk)?;
    let family: u16 = head.field(sk, &SK_FAMILY_OFF)?;
    let addr = match family {
        AF_INET => head.field(sk, &SK_DADDR_OFF)?,
        AF_INET6 => match v4_mapped(read_sock(sk, &SK_V6_DADDR_OFF)?) {
            Some(addr) => addr,
            None => return Ok(0),
        },
        _ => return Ok(0),
    };
    let dport: u16 = head.field(sk, &SK_DPORT_OFF)?;
    let event = PeerEvent {
        addr,
        remote_port: u16::from_be(dport),
        local_port: head.field(sk, &SK_NUM_OFF)?,
        direction,
        source,
        pid,
        ..PeerEvent::default()
    };
    send(ctx, event);
    Ok(0)
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

fn v4_mapped(v6: [u32; 4]) -> Option<u32> {
    (v6[0] == V4_MAPPED_PREFIX[0] && v6[1] == V4_MAPPED_PREFIX[1] && v6[2] == V4_MAPPED_PREFIX[2])
        .then_some(v6[3])
}

/// The start of `struct sock_common`, from `skc_daddr` on, read with one
/// helper call: family, address and ports lie within its first 18 bytes
/// in every kernel (the layout has not changed since 2.6). Four reads
/// made a run longer than one in each of twelve pairs of storms like the
/// bench's, either build first, by 17% at the median (bpf stats on).
struct SockHead([u8; SOCK_HEAD_LEN]);

const SOCK_HEAD_LEN: usize = 24;

impl SockHead {
    fn read(sk: *const u8) -> Result<Self, i32> {
        read_sock(sk, &SK_DADDR_OFF).map(Self)
    }

    /// The field at `offset`, from the head if it lies there (the
    /// offsets are load-time constants, so the verifier sees which),
    /// else read on its own.
    fn field<T: Copy>(&self, sk: *const u8, offset: &Global<u32>) -> Result<T, i32> {
        let at = offset.load().wrapping_sub(SK_DADDR_OFF.load()) as usize;
        match self.0.get(at..at.wrapping_add(size_of::<T>())) {
            // SAFETY: `bytes` holds size_of::<T>() bytes from `at`; T is
            // a plain integer.
            Some(bytes) => Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }),
            None => read_sock(sk, offset),
        }
    }
}

fn read_sock<T>(sk: *const u8, offset: &Global<u32>) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one only
    // makes it fail.
    unsafe { bpf_probe_read_kernel(sk.wrapping_add(offset.load() as usize).cast()) }
}

fn read_field<T>(ctx: &TracePointContext, offset: &Global<u32>) -> Result<T, i32> {
    // SAFETY: as for read_sock; offsets come from the tracepoint's format.
    unsafe { ctx.read_at(offset.load() as usize) }
}

fn current_pid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

/// Counts the connection and sends the event unless its key already sent
/// one within the window. The comm is only read for events that are sent.
///
/// A key's first sighting (on this CPU) is sent as a connection of its own
/// and kept out of `DEDUP`: in a storm of new peers, inserting into the
/// LRU map was most of a program run's cost (about 1.9 of 2.7 µs on this
/// machine's VMs), and a key seen once has nothing to deduplicate. Its
/// second sighting starts a series in the map. Should the event not fit
/// in the ring buffer, the key goes into the map after all, so the next
/// harvest still finds the peer.
fn send<C: EbpfContext>(ctx: &C, mut event: PeerEvent) {
    let key = DedupKey::of(&event);
    // SEEN first: a key it has not seen is not worth a lookup in DEDUP
    // either (should it have a series there after all, its slot in SEEN
    // having been taken by another key, this connection counts alone
    // instead: counted once either way).
    let first = first_sighting(&key);
    let send = if first {
        event.series = SERIES_NONE;
        event.total = 1;
        true
    } else {
        match DEDUP.get_ptr_mut(key) {
            Some(entry) => repeat(entry, &mut event),
            None => start_series(&key, &mut event),
        }
    };
    if !send {
        return;
    }
    if event.pid != 0 {
        event.comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
    }
    if !output(ctx, &event) && first {
        start_series(&key, &mut event);
    }
}

/// Records the key in `SEEN`; true if it was not there, i.e. this is the
/// first time this CPU sees it, as far as a direct-mapped table of
/// fingerprints can tell. Either mistake is harmless: a collision makes a
/// key's series start one sighting later, and another key's matching
/// fingerprint makes this one start its series at once.
#[cfg(not(feature = "perf"))]
fn first_sighting(key: &DedupKey) -> bool {
    let Some(table) = SEEN.get_ptr_mut(0) else {
        return false;
    };
    let hash = key_hash(key);
    let print = (hash >> 32) as u32;
    // SAFETY: this CPU's table, valid for this run; programs do not
    // migrate or nest on one CPU.
    let Some(slot) = (unsafe { &mut *table }).get_mut(hash as usize & (SEEN_SLOTS - 1)) else {
        return false;
    };
    if *slot == print {
        return false;
    }
    *slot = print;
    true
}

/// Perf buffers do not say when an event is lost, so every key starts a
/// series at once and the harvest can always find it.
#[cfg(feature = "perf")]
fn first_sighting(_key: &DedupKey) -> bool {
    false
}

/// A 64-bit hash of `key`: its low bits pick the slot in `SEEN`, its high
/// 32 are the fingerprint kept there.
#[cfg(not(feature = "perf"))]
fn key_hash(key: &DedupKey) -> u64 {
    let fields = u64::from(key.addr)
        | u64::from(key.port) << 32
        | u64::from(key.direction) << 48
        | u64::from(key.source) << 56;
    let mut hash = fields.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(key.pid).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^ hash >> 32
}

/// Starts the key's series in `DEDUP`; returns whether to send an event,
/// with `series` and `total` filled in. If another CPU started the series
/// first, the connection counts in that one.
fn start_series(key: &DedupKey, event: &mut PeerEvent) -> bool {
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let fresh = DedupValue {
        series: now,
        last_sent: now,
        total: 1,
    };
    if DEDUP.insert(key, fresh, BPF_NOEXIST).is_err()
        && let Some(entry) = DEDUP.get_ptr_mut(key)
    {
        return repeat(entry, event);
    }
    event.series = now;
    event.total = 1;
    true
}

/// Adds one to the series of `entry`; returns whether to send an event,
/// with `series` and `total` filled in.
fn repeat(entry: *mut DedupValue, event: &mut PeerEvent) -> bool {
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: `entry` points into the map value, valid for this program
    // run; `total` is only ever changed atomically.
    unsafe {
        // BPF's atomic add (BPF_XADD, any kernel): the target has no
        // compare-and-swap, so core's AtomicU64 offers no fetch_add.
        atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(&raw mut (*entry).total, 1);
        if now.wrapping_sub((*entry).last_sent) < DEDUP_WINDOW_NS.load() {
            return false;
        }
        (*entry).last_sent = now;
        event.series = (*entry).series;
        event.total = core::ptr::read_volatile(&raw const (*entry).total);
    }
    true
}

/// Sends the event; false (and counted in `LOST`) if it did not fit.
#[cfg(not(feature = "perf"))]
fn output<C: EbpfContext>(_ctx: &C, event: &PeerEvent) -> bool {
    if EVENTS.output::<PeerEvent>(event, 0).is_ok() {
        return true;
    }
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot; programs do not migrate while running.
        unsafe { *lost += 1 };
    }
    false
}

/// Perf buffers count their own losses (PERF_RECORD_LOST), unseen here.
#[cfg(feature = "perf")]
fn output<C: EbpfContext>(ctx: &C, event: &PeerEvent) -> bool {
    EVENTS.output(ctx, event, 0);
    true
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
