//! The programs in the object: their names, kinds and hooks, as the
//! attach code and `netmon probe` name them.
use std::fmt;

use super::tracefs;

/// The programs in the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// kprobe on `tcp_connect`: outbound connections.
    KprobeConnect,
    /// kretprobe on `inet_csk_accept`: inbound connections, by acceptor.
    KretprobeAccept,
    /// tracepoint `sock/inet_sock_set_state`: both directions.
    TracepointState,
    /// The same tracepoint attached raw.
    RawTracepointState,
    /// The same tracepoint as a BTF tracepoint.
    BtfTracepointState,
    /// cgroup `bind4` (and `bind6`): UDP sockets bound to a port of their
    /// own, services'.
    UdpBind,
    UdpBind6,
    /// cgroup `connect4`: connected UDP sockets' peers.
    UdpConnect,
    /// cgroup `sendmsg4`: datagrams sent to an address.
    UdpSendmsg,
    /// cgroup `recvmsg4`: datagrams received with their source.
    UdpRecvmsg,
    /// The three on IPv6 sockets: their IPv4 peers (dual-stack sockets).
    UdpConnect6,
    UdpSendmsg6,
    UdpRecvmsg6,
}

impl Program {
    pub const ALL: [Self; 13] = [
        Self::KprobeConnect,
        Self::KretprobeAccept,
        Self::TracepointState,
        Self::RawTracepointState,
        Self::BtfTracepointState,
        Self::UdpBind,
        Self::UdpBind6,
        Self::UdpConnect,
        Self::UdpSendmsg,
        Self::UdpRecvmsg,
        Self::UdpConnect6,
        Self::UdpSendmsg6,
        Self::UdpRecvmsg6,
    ];

    /// Its name in the object (the function's in netmon-ebpf).
    pub fn name(self) -> &'static str {
        match self {
            Self::KprobeConnect => "tcp_connect",
            Self::KretprobeAccept => "inet_csk_accept",
            Self::TracepointState => "inet_sock_set_state",
            Self::RawTracepointState => "inet_sock_set_state_raw",
            Self::BtfTracepointState => "inet_sock_set_state_btf",
            Self::UdpBind => "udp_bind4",
            Self::UdpBind6 => "udp_bind6",
            Self::UdpConnect => "udp_connect4",
            Self::UdpSendmsg => "udp_sendmsg4",
            Self::UdpRecvmsg => "udp_recvmsg4",
            Self::UdpConnect6 => "udp_connect6",
            Self::UdpSendmsg6 => "udp_sendmsg6",
            Self::UdpRecvmsg6 => "udp_recvmsg6",
        }
    }

    pub fn kind(self) -> ProgramKind {
        match self {
            Self::KprobeConnect => ProgramKind::Kprobe,
            Self::KretprobeAccept => ProgramKind::Kretprobe,
            Self::TracepointState => ProgramKind::Tracepoint,
            Self::RawTracepointState => ProgramKind::RawTracepoint,
            Self::BtfTracepointState => ProgramKind::BtfTracepoint,
            Self::UdpBind
            | Self::UdpBind6
            | Self::UdpConnect
            | Self::UdpSendmsg
            | Self::UdpRecvmsg
            | Self::UdpConnect6
            | Self::UdpSendmsg6
            | Self::UdpRecvmsg6 => ProgramKind::CgroupSockAddr,
        }
    }

    /// The kernel hook it attaches to, as messages name it.
    pub fn hook(self) -> &'static str {
        match self {
            Self::KprobeConnect => "tcp_connect",
            Self::KretprobeAccept => "inet_csk_accept",
            Self::TracepointState => "sock/inet_sock_set_state",
            Self::RawTracepointState | Self::BtfTracepointState => tracefs::TRACEPOINT,
            Self::UdpBind => "bind4",
            Self::UdpBind6 => "bind6",
            Self::UdpConnect => "connect4",
            Self::UdpSendmsg => "sendmsg4",
            Self::UdpRecvmsg => "recvmsg4",
            Self::UdpConnect6 => "connect6",
            Self::UdpSendmsg6 => "sendmsg6",
            Self::UdpRecvmsg6 => "recvmsg6",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramKind {
    Kprobe,
    Kretprobe,
    Tracepoint,
    RawTracepoint,
    BtfTracepoint,
    CgroupSockAddr,
}

impl fmt::Display for ProgramKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kprobe => "kprobe",
            Self::Kretprobe => "kretprobe",
            Self::Tracepoint => "tracepoint",
            Self::RawTracepoint => "raw tracepoint",
            Self::BtfTracepoint => "BTF tracepoint",
            Self::CgroupSockAddr => "cgroup sock_addr",
        })
    }
}
