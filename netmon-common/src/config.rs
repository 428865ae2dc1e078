//! The programs' load-time configuration: one global, [`Config`], that
//! userspace fills in from the running kernel before loading the object.
//!
//! Offsets are in bytes. The `struct sock` offsets come from the kernel's
//! BTF when it has one, the tracepoint's from its `format` file, so one
//! object serves many kernels without CO-RE.

/// Symbol of the [`Config`] global in the eBPF object
/// (`EbpfLoader::override_global`).
pub const SYMBOL: &str = "CONFIG";

/// Repeats of a connection key within this window (ns) send no event;
/// their counts arrive with the next event or harvest.
pub const DEDUP_WINDOW_NS: u64 = 1_000_000_000;

/// Everything the programs are told at load time.
///
/// 112 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub sock: SockOffsets,
    /// All zero when the tracepoint's format could not be read: the
    /// tracepoint then cannot attach, and the raw one reads none of them.
    pub tracepoint: TracepointOffsets,
    /// Non-zero: the tracepoint reports outbound connections too. Zero when
    /// the kprobe on `tcp_connect` already does, so each connection is
    /// reported once.
    pub tracepoint_outbound: u32,
    pub _pad: u32,
    /// Repeats of a key within this many ns send no event; 0 sends every one.
    pub dedup_window_ns: u64,
    pub context: ContextOffsets,
    /// The ports the kernel picks for sockets bound to none
    /// (`net.ipv4.ip_local_port_range`), inclusive.
    pub ephemeral_low: u16,
    pub ephemeral_high: u16,
}

impl Config {
    /// What the object holds until userspace overrides it.
    pub const DEFAULT: Self = Self {
        sock: SockOffsets::DEFAULT,
        tracepoint: TracepointOffsets::UNKNOWN,
        tracepoint_outbound: 1,
        _pad: 0,
        dedup_window_ns: DEDUP_WINDOW_NS,
        context: ContextOffsets::UNKNOWN,
        ephemeral_low: EPHEMERAL_PORTS.0,
        ephemeral_high: EPHEMERAL_PORTS.1,
    };
}

/// Linux's default `net.ipv4.ip_local_port_range`.
pub const EPHEMERAL_PORTS: (u16, u16) = (32768, 60999);

/// Byte offsets of what says where a connection was made: the socket's
/// network namespace and cgroup, the current task's network namespace,
/// and the tracepoint record's socket pointer. Only from BTF: each is 0
/// where unknown, and the programs then leave that part of the event 0
/// (no member read here lies at offset 0 of its struct on any kernel).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextOffsets {
    /// `sock_common.skc_net`: a `struct net *`.
    pub sk_net: u32,
    /// `net.ns.inum`.
    pub net_inum: u32,
    /// `sock.sk_cgrp_data`: whose first word is the `struct cgroup *`
    /// (before 5.15, unless one of its two low bits is set).
    pub sk_cgroup: u32,
    /// `cgroup.kn`: a `struct kernfs_node *`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`: the cgroup ID.
    pub kn_id: u32,
    /// `task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `nsproxy.net_ns`.
    pub nsproxy_net: u32,
    /// The `skaddr` field of the `sock/inet_sock_set_state` record.
    pub tracepoint_skaddr: u32,
    /// Non-zero where `sk_cgrp_data` begins with a `struct cgroup *`
    /// member (Linux 5.15+), a pointer BTF types, which a BTF program may
    /// follow with plain loads; before, a tagged word only the helper reads.
    pub sk_cgroup_typed: u32,
}

impl ContextOffsets {
    /// Nothing known: every offset 0.
    pub const UNKNOWN: Self = Self {
        sk_net: 0,
        net_inum: 0,
        sk_cgroup: 0,
        cgroup_kn: 0,
        kn_id: 0,
        task_nsproxy: 0,
        nsproxy_net: 0,
        tracepoint_skaddr: 0,
        sk_cgroup_typed: 0,
    };
}

/// Byte offsets of the `struct sock` members the programs read.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockOffsets {
    pub family: u32,
    pub daddr: u32,
    pub dport: u32,
    pub num: u32,
    pub v6_daddr: u32,
    /// `sk_protocol`, where it is a whole `u16` (Linux 5.6+); 0 where it
    /// is a bitfield or unknown. MPTCP came with the whole field, and its
    /// sockets are the only ones besides TCP's that pass through SYN_SENT
    /// on today's kernels, so without it there is nothing to tell apart.
    pub protocol: u32,
}

impl SockOffsets {
    /// The layout `struct sock_common` has had on x86_64 since Linux 4.x;
    /// used when the kernel has no BTF to read it from.
    pub const DEFAULT: Self = Self {
        family: default_offsets::SK_FAMILY,
        daddr: default_offsets::SK_DADDR,
        dport: default_offsets::SK_DPORT,
        num: default_offsets::SK_NUM,
        v6_daddr: default_offsets::SK_V6_DADDR,
        // Outside sock_common, it moves with the kernel's configuration.
        protocol: PROTOCOL_UNKNOWN,
    };
}

/// [`SockOffsets::protocol`] when there is no whole `sk_protocol` to read
/// (offset 0 is `skc_daddr`, never `sk_protocol`).
pub const PROTOCOL_UNKNOWN: u32 = 0;

impl Default for SockOffsets {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Byte offsets of the `sock/inet_sock_set_state` fields the tracepoint
/// program reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub oldstate: u32,
    pub newstate: u32,
    pub sport: u32,
    pub dport: u32,
    pub family: u32,
    pub protocol: u32,
    pub daddr: u32,
    pub daddr_v6: u32,
}

impl TracepointOffsets {
    /// No format read: every offset zero.
    pub const UNKNOWN: Self = Self {
        oldstate: 0,
        newstate: 0,
        sport: 0,
        dport: 0,
        family: 0,
        protocol: 0,
        daddr: 0,
        daddr_v6: 0,
    };
}

/// Default `struct sock_common` offsets on x86_64, stable since Linux 4.x.
pub mod default_offsets {
    pub const SK_DADDR: u32 = 0;
    pub const SK_RCV_SADDR: u32 = 4;
    pub const SK_DPORT: u32 = 12;
    pub const SK_NUM: u32 = 14;
    pub const SK_FAMILY: u32 = 16;
    pub const SK_V6_DADDR: u32 = 56;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_has_no_padding() {
        assert_eq!(size_of::<SockOffsets>(), 24);
        assert_eq!(size_of::<TracepointOffsets>(), 32);
        assert_eq!(size_of::<ContextOffsets>(), 36);
        assert_eq!(size_of::<Config>(), 112);
    }
}
