//! The loopback addresses each test owns.
//!
//! A test that makes connections on the host's loopback takes its
//! addresses from a [`Block`] of its own: 127.B.0.0/16, B being the
//! block's number. The blocks are the variants of one enum, so no two
//! tests can share one, and a peer in a checkpoint names the test that
//! made it. That matters because connections outlive their test: proc
//! mode reads TIME_WAIT sockets and the start-up scan reads open ones, so
//! a test on another's addresses could pass on the other's leftovers.
//!
//! A block has IPv6 addresses too, in a unique-local /64 of its own
//! (fd6e:6d00:0:B::/64), which exist only where a test routes them: in a
//! network namespace of its making ([`crate::netns`]).
//!
//! 127.0.0.0/16 (127.0.0.1) is no test's; `cargo xtask bench` runs its
//! storms in network namespaces of their own and needs no block.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpListener};

/// The /16 of 127/8 one test owns. Grouped by test file; a test that
/// needs two disjoint sets of addresses owns two blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Block {
    // tests/collector.rs
    AutoMode = 1,
    TracepointMode,
    RawTracepointMode,
    KprobeMode,
    NoBtf,
    ProcMode,
    ProcNotified,
    ProcText,
    BeforeRestart,
    AfterRestart,
    StartupScan,
    AcceptBlocked,
    // tests/dedup.rs
    DedupCounts,
    LostEvents,
    DedupStopped,
    DedupFull,
    LostProcess,
    // tests/live.rs
    Metrics,
    MetricsDropped,
    Follow,
    MetricsFlood,
    FollowStalled,
    // tests/container.rs
    OwnNetns,
    ProcNet,
    // tests/reliability.rs
    KillNine,
    FullDisk,
    FullDiskAtStart,
    ReadOnlyAtStart,
    Capabilities,
    Sighup,
    MaxPeers,
    // tests/checkpoints.rs
    CheckpointStorm,
    // tests/proc_mode.rs
    ProcListenerGone,
    ProcLateFin,
    ProcHeldAfterReset,
    // tests/mptcp.rs
    MptcpTracepoint,
    MptcpRawTracepoint,
    MptcpKprobe,
    // tests/collector.rs, added later
    Handover,
    // tests/udp_flows.rs
    UdpDualStack,
    UdpServiceFirst,
    UdpConnectedBefore,
    UdpPeek,
    UdpLongExchange,
    UdpOtherAddress,
    // tests/proc_mode.rs, added later
    ProcUdp,
    // tests/udp.rs
    UdpSocat,
    UdpOwnNetns,
    // tests/udp_matrix.rs
    UdpTracepoint,
    UdpRawTracepoint,
    UdpKprobe,
    // tests/ipv6.rs: the IPv4-mapped peers, and the block's unique-local
    // /64 (see [`Net::addr6`]) for the IPv6 ones
    Ipv6Tracepoint,
    Ipv6RawTracepoint,
    Ipv6Kprobe,
    Ipv6Proc,
    // the BTF tracepoint's rows in tests/collector.rs, mptcp.rs,
    // udp_matrix.rs and ipv6.rs
    BtfTracepointMode,
    MptcpBtfTracepoint,
    UdpBtfTracepoint,
    Ipv6BtfTracepoint,
    // tests/tcp_owners.rs
    TcpOwnersBtf,
    TcpOwnersRaw,
    TcpOwnersTracepoint,
    /// The kernel matrix's cases, one /16 each from this one up, in
    /// [`crate::case::VM_CASES`] order: a VM runs them one after another.
    VmCases,
}

impl Block {
    pub const fn net(self) -> Net {
        Net(self as u8)
    }

    /// 127.B.`c`.`d`.
    pub const fn addr(self, c: u8, d: u8) -> Ipv4Addr {
        self.net().addr(c, d)
    }
}

/// Which of a [`Net`]'s addresses a workload uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// 127.N.c.d, on every loopback.
    V4,
    /// fd6e:6d00:0:N::c:d, where [`Net::prefix6`] is routed to loopback.
    V6,
}

/// 127.N.0.0/16: a [`Block`], or one case's share of [`Block::VmCases`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net(u8);

impl Net {
    /// The addresses of the case at `index` of the kernel matrix.
    pub fn vm_case(index: usize) -> Self {
        let octet = usize::from(Block::VmCases as u8) + index;
        Self(u8::try_from(octet).expect("127/8 has a /16 for every case"))
    }

    /// 127.N.`c`.`d`.
    pub const fn addr(self, c: u8, d: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.0, c, d)
    }

    /// Whether `ip` is in 127.N.0.0/16.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        ip.octets()[..2] == [127, self.0]
    }

    /// fd6e:6d00:0:N::`c`:`d`, in [`Net::prefix6`].
    pub const fn addr6(self, c: u8, d: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfd6e, 0x6d00, 0, self.0 as u16, 0, 0, c as u16, d as u16)
    }

    /// The unique-local /64 of this net, for `ip -6 route add local`.
    pub fn prefix6(self) -> String {
        format!("{}/64", self.addr6(0, 0))
    }

    /// 127.N.`c`.`d` or fd6e:6d00:0:N::`c`:`d`.
    pub const fn ip(self, family: Family, c: u8, d: u8) -> IpAddr {
        match family {
            Family::V4 => IpAddr::V4(self.addr(c, d)),
            Family::V6 => IpAddr::V6(self.addr6(c, d)),
        }
    }

    /// Whether `ip` is in 127.N.0.0/16 or in [`Net::prefix6`].
    pub fn holds(self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.contains(ip),
            IpAddr::V6(ip) => ip.segments()[..4] == [0xfd6e, 0x6d00, 0, u16::from(self.0)],
        }
    }
}

impl From<Block> for Net {
    fn from(block: Block) -> Self {
        block.net()
    }
}

/// A port nothing listens on, on any address.
pub fn closed_port() -> u16 {
    let probe = TcpListener::bind("0.0.0.0:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// 127.0.0.1 and a port nothing listens on, for `--metrics`.
pub fn metrics_addr() -> String {
    format!("127.0.0.1:{}", closed_port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::VM_CASES;

    #[test]
    fn a_net_holds_its_own_addresses_of_both_families_only() {
        let net = Block::Ipv6Proc.net();
        assert_eq!(net.prefix6(), format!("fd6e:6d00:0:{:x}::/64", net.0));
        for family in [Family::V4, Family::V6] {
            assert!(net.holds(net.ip(family, 20, 3)));
            assert!(!Block::Ipv6Kprobe.net().holds(net.ip(family, 20, 3)));
        }
        assert!(!net.holds("::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn every_case_of_the_matrix_has_a_net() {
        for index in 0..VM_CASES.len() {
            Net::vm_case(index);
        }
    }
}
