//! The kernel/user ABI of netmon.
//!
//! Everything that crosses the boundary between the eBPF programs and
//! userspace is defined here, as `#[repr(C)]` structs of plain integers: no
//! Rust enums, no `Option`s, nothing whose bit patterns the kernel side could
//! get wrong. Userspace turns the raw integers into its own types with
//! `TryFrom`, rejecting anything it does not understand.
#![no_std]

pub mod config;

pub use config::Config;

/// Length of a task's `comm` in the kernel (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// `PeerEvent::direction`: we opened the connection.
pub const DIRECTION_OUTBOUND: u8 = 1;
/// `PeerEvent::direction`: the peer opened the connection to us.
pub const DIRECTION_INBOUND: u8 = 2;

/// `PeerEvent::source`: kprobe on `tcp_connect`.
pub const SOURCE_KPROBE_CONNECT: u8 = 1;
/// `PeerEvent::source`: kretprobe on `inet_csk_accept`.
pub const SOURCE_KRETPROBE_ACCEPT: u8 = 2;
/// `PeerEvent::source`: tracepoint `sock/inet_sock_set_state`, plain or raw.
pub const SOURCE_TRACEPOINT: u8 = 3;
/// `PeerEvent::source`: the cgroup programs on UDP sockets (`connect4`,
/// `sendmsg4`, `recvmsg4` and their `6` twins).
pub const SOURCE_CGROUP_UDP: u8 = 4;

/// `PeerEvent::protocol`: TCP (the protocol's IP number).
pub const PROTOCOL_TCP: u8 = 6;
/// `PeerEvent::protocol`: UDP.
pub const PROTOCOL_UDP: u8 = 17;

/// One TCP connection, or one UDP datagram exchange, as seen by one of the
/// programs.
///
/// Repeats of the same connection key ([`DedupKey`]) within the dedup
/// window do not cross the ring buffer; `series` and `total` let userspace
/// count them exactly anyway (see [`DedupValue`]).
///
/// 72 bytes, no implicit padding: the fields are ordered so that none
/// needs any.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerEvent {
    /// The peer's address, see [`Addr`].
    pub addr: Addr,
    /// The peer's port, host byte order.
    pub remote_port: u16,
    /// Our port, host byte order.
    pub local_port: u16,
    /// Thread group id of the current task, or 0 where the hook does not run
    /// in the process that owns the socket (the tracepoint's inbound
    /// transition runs in softirq context).
    pub pid: u32,
    /// One of the `DIRECTION_*` constants.
    pub direction: u8,
    /// One of the `SOURCE_*` constants.
    pub source: u8,
    /// The `DEDUP` generation the connection was counted in (see
    /// [`DedupKey::generation`]).
    pub generation: u8,
    /// One of the `PROTOCOL_*` constants.
    pub protocol: u8,
    /// The inode number of the socket's network namespace (as
    /// `/proc/PID/ns/net` shows it); 0 when unknown.
    pub netns: u32,
    /// `comm` of the current task, NUL padded; all zero when `pid` is 0.
    pub comm: [u8; COMM_LEN],
    /// The dedup series this event belongs to: when its `DEDUP` entry was
    /// created (ns since boot); [`SERIES_NONE`] for a connection counted
    /// by this event alone (its key's first sighting, kept out of `DEDUP`).
    pub series: u64,
    /// Connections counted in that series so far, this one included.
    pub total: u64,
    /// The cgroup v2 ID of the task that made the connection, or of the
    /// socket where no task runs (an inbound connection completed in
    /// softirq); 0 when unknown.
    pub cgroup: u64,
}

/// A peer's address, IPv6 or IPv4 alike: the 16 bytes of an IPv6 address
/// in network byte order, as `struct in6_addr` holds them (four words, so
/// the programs move it with word loads and stores). An IPv4 peer is
/// written IPv4-mapped (`::ffff:a.b.c.d`, [`Addr::v4_mapped`]), as a
/// dual-stack socket sees it, so userspace reads every address the same
/// way and turns the mapped ones back into IPv4
/// (`Ipv6Addr::to_canonical`).
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Addr(pub [u32; 4]);

impl Addr {
    /// The first three words of an IPv4-mapped address (`::ffff:0:0/96`),
    /// as they lie in memory.
    pub const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

    /// The IPv4-mapped form of `v4`, an IPv4 address in network byte
    /// order (as `skc_daddr` holds it): constant stores and a copy.
    #[inline(always)]
    pub const fn v4_mapped(v4: u32) -> Self {
        let [a, b, c] = Self::V4_MAPPED_PREFIX;
        Self([a, b, c, v4])
    }

    /// The 16 bytes, network order.
    pub fn octets(self) -> [u8; 16] {
        let mut octets = [0; 16];
        let mut i = 0;
        while i < 4 {
            let word = self.0[i].to_ne_bytes();
            octets[4 * i] = word[0];
            octets[4 * i + 1] = word[1];
            octets[4 * i + 2] = word[2];
            octets[4 * i + 3] = word[3];
            i += 1;
        }
        octets
    }

    /// The address of `octets`, network order.
    pub fn from_octets(octets: [u8; 16]) -> Self {
        let word = |i: usize| {
            u32::from_ne_bytes([
                octets[4 * i],
                octets[4 * i + 1],
                octets[4 * i + 2],
                octets[4 * i + 3],
            ])
        };
        Self([word(0), word(1), word(2), word(3)])
    }

    /// The address as userspace holds it: an IPv4-mapped one as IPv4.
    pub fn ip(self) -> core::net::IpAddr {
        core::net::Ipv6Addr::from(self.octets()).to_canonical()
    }
}

/// [`PeerEvent::series`] of an event that is in no series: it stands for
/// `total` connections of its own, whatever came before or after.
pub const SERIES_NONE: u64 = 0;

/// What makes connections repeats of each other for in-kernel dedup.
///
/// 40 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DedupKey {
    /// As [`PeerEvent::addr`].
    pub addr: Addr,
    /// The peer's port for outbound connections, ours for inbound ones.
    pub port: u16,
    pub direction: u8,
    pub source: u8,
    pub pid: u32,
    /// Which of the two generations of `DEDUP` the key counts in: the
    /// programs count in the one `GENERATION` names, and userspace empties
    /// the other, which no program has written for a whole harvest (see
    /// the userspace `ebpf::dedup`). Entries are never evicted, so none
    /// takes counts with it.
    pub generation: u8,
    pub protocol: u8,
    pub _pad: u16,
    pub netns: u32,
    pub cgroup: u64,
}

impl DedupKey {
    /// The key `event`'s connection is counted under. Both sides build it
    /// here, so userspace accounts under exactly the kernel's keys.
    #[inline(always)]
    pub fn of(event: &PeerEvent) -> Self {
        Self {
            addr: event.addr,
            port: if event.direction == DIRECTION_OUTBOUND {
                event.remote_port
            } else {
                event.local_port
            },
            direction: event.direction,
            source: event.source,
            pid: event.pid,
            generation: event.generation,
            protocol: event.protocol,
            _pad: 0,
            netns: event.netns,
            cgroup: event.cgroup,
        }
    }
}

/// A `DEDUP` entry: a series of connections with one key.
///
/// `total` only ever grows (atomically, from every CPU), so userspace can
/// count exactly by remembering, per key and series, the last total it
/// accounted for: every event and every harvest of the map adds the
/// difference. Nothing is ever reset, so there is no race to lose counts
/// in. When userspace empties a generation, the key's next connection
/// starts a new series in the other one.
///
/// 40 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DedupValue {
    /// When the entry was created, ns since boot: names the series.
    pub series: u64,
    /// When an event was last sent for this key.
    pub last_sent: u64,
    /// Connections in this series.
    pub total: u64,
    /// `comm` of the task that started the series (as
    /// [`PeerEvent::comm`]), so a harvest that finds a connection whose
    /// event was lost still names its process.
    pub comm: [u8; COMM_LEN],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY (these three): plain integers and arrays of integers, no padding
    // (the sizes are tested below), any bit pattern is a valid value.
    unsafe impl aya::Pod for super::PeerEvent {}
    unsafe impl aya::Pod for super::DedupKey {}
    unsafe impl aya::Pod for super::DedupValue {}
    // SAFETY: u32s and a u64 at offset 64, then u32s, u16s and a u32 to
    // 112, so no padding either.
    unsafe impl aya::Pod for super::Config {}
}

/// Map names, so both sides spell them the same way.
pub mod maps {
    /// `RingBuf` of [`super::PeerEvent`].
    pub const EVENTS: &str = "EVENTS";
    /// `PerCpuArray<u64>` with one slot: events that did not fit in `EVENTS`.
    pub const LOST: &str = "LOST";
    /// `HashMap<DedupKey, DedupValue>`: connection keys and their counts.
    pub const DEDUP: &str = "DEDUP";
    /// `Array<u32>` with one slot: the generation programs count in.
    pub const GENERATION: &str = "GENERATION";
    /// `PerCpuArray<u64>` with one slot: connections that fit neither in
    /// `EVENTS` nor in `DEDUP`, so no count of them reached userspace.
    pub const UNCOUNTED: &str = "UNCOUNTED";
}

/// What the UDP programs know of a socket (`UDP_SOCKETS`), by bit.
pub mod udp_socket {
    /// It was bound to a port of its own choosing: a service's.
    pub const BOUND: u8 = 1;
    /// It opened an exchange by sending: a client's, or a service's that
    /// also asks.
    pub const SENT: u8 = 2;
}

/// Socket-state numbers of `include/net/tcp_states.h`.
pub mod tcp_state {
    pub const ESTABLISHED: i32 = 1;
    pub const SYN_SENT: i32 = 2;
    pub const SYN_RECV: i32 = 3;
    pub const TIME_WAIT: i32 = 6;
    pub const CLOSE: i32 = 7;
    pub const LISTEN: i32 = 10;
    /// A request socket, a handshake in progress, as sock_diag dumps it.
    pub const NEW_SYN_RECV: i32 = 12;
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u16 = 6;
pub const IPPROTO_UDP: u16 = 17;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abi_types_have_no_padding() {
        assert_eq!(core::mem::size_of::<PeerEvent>(), 72);
        assert_eq!(core::mem::size_of::<DedupKey>(), 40);
        assert_eq!(core::mem::size_of::<DedupValue>(), 40);
    }

    #[test]
    fn addresses_are_network_order_and_mapped_ipv4_is_ipv4() {
        use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
        let v4 = Addr::v4_mapped(u32::from_ne_bytes([10, 1, 2, 3]));
        assert_eq!(v4.ip(), IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)));
        assert_eq!(
            Ipv6Addr::from(v4.octets()),
            Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped()
        );
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x1234, 0x5678);
        let addr = Addr::from_octets(v6.octets());
        assert_eq!(addr.octets(), v6.octets());
        assert_eq!(addr.ip(), IpAddr::V6(v6));
    }
}
