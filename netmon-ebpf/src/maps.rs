//! What userspace sees of the object by name: the maps and the load-time
//! [`Config`].
#[cfg(feature = "perf")]
use aya_ebpf::maps::PerfEventArray;
#[cfg(not(feature = "perf"))]
use aya_ebpf::maps::RingBuf;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
#[cfg(feature = "perf")]
use netmon_common::PeerEvent;
use netmon_common::{Addr, Config, DedupKey, DedupValue};

/// Default size; userspace may resize it at load time.
#[cfg(not(feature = "perf"))]
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1024 * 1024, 0);

/// One perf buffer per CPU; userspace counts what they lose.
#[cfg(feature = "perf")]
#[map]
pub static EVENTS: PerfEventArray<PeerEvent> = PerfEventArray::new(0);

/// Connection keys and their counts: repeats within the window send no
/// event (see `netmon_common::DedupValue`), and a connection whose event
/// did not fit in `EVENTS` is kept here for the next harvest.
///
/// A plain hash map, not an LRU one: an LRU evicts entries, and their
/// counts and kept connections with them. Userspace empties it instead,
/// one generation at a time (see `netmon_common::DedupKey::generation`).
/// When it is full, a connection is sent as one of its own.
#[map]
pub static DEDUP: HashMap<DedupKey, DedupValue> = HashMap::with_max_entries(65536, 0);

/// The generation of `DEDUP` programs count in; set by userspace.
#[map]
pub static GENERATION: Array<u32> = Array::with_max_entries(1, 0);

/// Connections that fit neither in `EVENTS` nor in `DEDUP`, per CPU.
#[map]
pub static UNCOUNTED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Fingerprints of the keys each CPU has seen lately, direct-mapped: a
/// key's first sighting is sent without a `DEDUP` entry (see
/// `count::send`).
///
/// One element holding the whole table, not one element per slot (each
/// reached through a pointer array of its own), and 4-byte fingerprints
/// rather than 40-byte keys: a run that looks up a slot it has not touched
/// lately, as in a storm of new peers, touches fewer cache lines.
#[cfg(not(feature = "perf"))]
#[map]
pub static SEEN: PerCpuArray<[u32; SEEN_SLOTS]> = PerCpuArray::with_max_entries(1, 0);

/// Slots in `SEEN` (a power of two): 4 KiB a CPU, one page, small enough
/// to stay in cache between runs.
#[cfg(not(feature = "perf"))]
pub const SEEN_SLOTS: usize = 1024;

/// A UDP flow: a socket and a peer's address and port (`UDP_FLOWS`' key).
/// 32 bytes, its padding always zero.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Flow {
    pub cookie: u64,
    pub addr: Addr,
    pub port: u16,
    pub _pad: [u8; 6],
}

/// What is known of a UDP socket (`netmon_common::udp_socket` bits), by
/// cookie. An LRU: a socket forgotten is only one whose next new inbound
/// peer is not questioned.
#[map]
pub static UDP_SOCKETS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(65536, 0);

/// What is known of a UDP flow.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FlowState {
    /// The direction of the datagram that opened it.
    pub direction: u8,
    pub _pad: [u8; 7],
    /// When it last sent an event, ns since boot.
    pub touched: u64,
}

/// UDP flows (a socket and a peer): the direction of the datagram that
/// opened each. An LRU: a flow evicted, idle the longest, opens again
/// with its next datagram.
#[map]
pub static UDP_FLOWS: LruHashMap<Flow, FlowState> = LruHashMap::with_max_entries(65536, 0);

/// Events that did not fit in `EVENTS` (ring buffer transport), per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Set whole by userspace at load time (`netmon_common::config::SYMBOL`).
/// Read only through [`config`].
#[unsafe(no_mangle)]
static CONFIG: Config = Config::DEFAULT;

/// One field of [`CONFIG`], e.g. `config(|c| &c.sock.daddr)`.
///
/// A volatile load, so the compiler cannot fold it to the default. It is
/// one instruction from the object's frozen read-only map, whose contents
/// the verifier knows: it sees the offsets as constants and prunes the
/// branches they rule out (see `sock::SockHead::field`). Copying the whole
/// struct out instead would spill most of it to the stack, where older
/// verifiers forget 32-bit constants.
#[inline(always)]
pub fn config<T: Copy>(field: impl FnOnce(&Config) -> &T) -> T {
    // SAFETY: a field of a static: aligned, initialised, never written
    // while the program runs.
    unsafe { core::ptr::read_volatile(field(&CONFIG)) }
}
