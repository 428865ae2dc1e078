//! Counting connections in the kernel, and deciding which of them cross
//! to userspace as events.
//!
//! Every connection adds one to the series of its key ([`DedupKey`]) in
//! `DEDUP`; an event goes out only for the first connection of a key in
//! each dedup window, carrying the series' running total, so userspace
//! counts every connection while the ring buffer carries one event per
//! key and window (see `netmon_common::DedupValue`). In the ring buffer
//! build a key's first sighting on a CPU skips the map altogether (`SEEN`).
use aya_ebpf::{
    EbpfContext, TASK_COMM_LEN,
    helpers::{bpf_get_current_comm, generated::bpf_ktime_get_ns},
};
use core::intrinsics::{AtomicOrdering, atomic_xadd};
use netmon_common::{DedupKey, DedupValue, PeerEvent, SERIES_NONE};

use crate::maps::{DEDUP, EVENTS, GENERATION, UNCOUNTED, config};
#[cfg(not(feature = "perf"))]
use crate::maps::{LOST, SEEN, SEEN_SLOTS};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Counts the connection and sends the event unless its key already sent
/// one within the window. The comm is only read for events that are sent
/// and for series that start.
///
/// A key's first sighting (on this CPU) is sent as a connection of its own
/// and kept out of `DEDUP`: in a storm of new peers, inserting into the
/// map was most of a program run's cost, and a key seen once has nothing
/// to deduplicate. Its second sighting starts a series in the map. Should
/// an event not fit in the ring buffer, its connection is in the map all
/// the same, so the next harvest still finds the peer; should the map be
/// full too, the connection is counted in `UNCOUNTED`, never dropped
/// silently.
pub fn send<C: EbpfContext>(ctx: &C, mut event: PeerEvent) {
    event.generation = generation();
    let key = DedupKey::of(&event);
    // SEEN first: a key it has not seen is not worth a lookup in DEDUP
    // either (should it have a series there after all, its slot in SEEN
    // having been taken by another key, this connection counts alone
    // instead: counted once either way).
    if first_sighting(&key) {
        event.series = SERIES_NONE;
        event.total = 1;
        read_comm(&mut event);
        if !output(ctx, &event) && keep(&key, &mut event).is_none() {
            uncounted();
        }
        return;
    }
    let send = match DEDUP.get_ptr_mut(key) {
        Some(entry) => repeat(entry, &mut event),
        None => {
            read_comm(&mut event);
            match keep(&key, &mut event) {
                Some(send) => send,
                None => {
                    // The map is full: the connection counts alone.
                    event.series = SERIES_NONE;
                    event.total = 1;
                    if !output(ctx, &event) {
                        uncounted();
                    }
                    return;
                }
            }
        }
    };
    if send {
        read_comm(&mut event);
        // Should it not fit, its count is in the map for the harvest.
        output(ctx, &event);
    }
}

/// Sends the event as news of no connection (`total` 0): a UDP flow
/// counted when it opened is still in use, and its peer's last sighting
/// moves. Lost if it does not fit, which loses no count.
pub fn touch<C: EbpfContext>(ctx: &C, mut event: PeerEvent) {
    event.generation = generation();
    event.series = SERIES_NONE;
    event.total = 0;
    read_comm(&mut event);
    output(ctx, &event);
}

/// Fills in the event's comm, once, when it has a process.
#[inline(always)]
fn read_comm(event: &mut PeerEvent) {
    if event.pid != 0 && event.comm[0] == 0 {
        event.comm = bpf_get_current_comm().unwrap_or([0; TASK_COMM_LEN]);
    }
}

/// The generation of `DEDUP` to count in.
#[inline(always)]
fn generation() -> u8 {
    GENERATION.get(0).map_or(0, |generation| *generation as u8)
}

/// Counts a connection that reached userspace in no other way.
fn uncounted() {
    if let Some(uncounted) = UNCOUNTED.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot; programs do not migrate while running.
        unsafe { *uncounted += 1 };
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
/// 32 are the fingerprint kept there. All 16 bytes of the address count:
/// IPv6 peers may differ only in their first 8 (`::1` in many /64s).
#[cfg(not(feature = "perf"))]
fn key_hash(key: &DedupKey) -> u64 {
    let [a, b, c, d] = key.addr.0;
    let fields = u64::from(d)
        | u64::from(key.port) << 32
        | u64::from(key.direction) << 48
        | u64::from(key.source ^ key.protocol) << 56;
    let prefix = (u64::from(a) | u64::from(b) << 32) ^ u64::from(c).rotate_left(17);
    let mut hash = fields.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(key.pid ^ key.netns).wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ key.cgroup.wrapping_mul(0x1656_67b1_9e37_79f9)
        ^ prefix.wrapping_mul(0x27d4_eb2f_1656_67c5);
    hash ^= hash >> 29;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^ hash >> 32
}

/// Keeps the connection in `DEDUP`: starts the key's series, or, if
/// another CPU started it first, counts in that one. Returns whether to
/// send an event (with `series` and `total` filled in), or `None` if the
/// map is full and the connection is not kept.
fn keep(key: &DedupKey, event: &mut PeerEvent) -> Option<bool> {
    // SAFETY: a helper call without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let fresh = DedupValue {
        series: now,
        last_sent: now,
        total: 1,
        comm: event.comm,
    };
    if DEDUP.insert(key, fresh, BPF_NOEXIST).is_ok() {
        event.series = now;
        event.total = 1;
        return Some(true);
    }
    let entry = DEDUP.get_ptr_mut(key)?;
    Some(repeat(entry, event))
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
        if now.wrapping_sub((*entry).last_sent) < config(|c| &c.dedup_window_ns) {
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
