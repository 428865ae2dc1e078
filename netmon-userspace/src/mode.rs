//! The ways netmon can watch connections, and what `--mode` asks for.
//!
//! Kept apart from the [ladder](crate::collect::ladder) that picks one: the
//! eBPF side, the metrics and the ladder all name modes, and none of them
//! should have to see the others to do it.
use std::fmt;

/// How netmon watches connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// kprobe on tcp_connect, kretprobe on inet_csk_accept.
    Kprobe,
    /// The sock/inet_sock_set_state tracepoint as a BTF tracepoint.
    BtfTracepoint,
    /// The sock/inet_sock_set_state tracepoint, attached raw.
    RawTracepoint,
    /// The sock/inet_sock_set_state tracepoint.
    Tracepoint,
    /// Polling the socket tables under /proc/net.
    Proc,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kprobe => "kprobe",
            Self::BtfTracepoint => "btf-tracepoint",
            Self::RawTracepoint => "raw-tracepoint",
            Self::Tracepoint => "tracepoint",
            Self::Proc => "proc",
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, not write_str: `netmon probe` aligns the modes in a column.
        f.pad(self.as_str())
    }
}

/// What `--mode` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeRequest {
    /// The best mode this host allows: kprobe, then btf-tracepoint, then
    /// raw-tracepoint, then tracepoint, then proc.
    Auto,
    Kprobe,
    BtfTracepoint,
    RawTracepoint,
    Tracepoint,
    Proc,
}

impl ModeRequest {
    pub(crate) fn allows(self, mode: AttachMode) -> bool {
        matches!(
            (self, mode),
            (Self::Auto, _)
                | (Self::Kprobe, AttachMode::Kprobe)
                | (Self::BtfTracepoint, AttachMode::BtfTracepoint)
                | (Self::RawTracepoint, AttachMode::RawTracepoint)
                | (Self::Tracepoint, AttachMode::Tracepoint)
                | (Self::Proc, AttachMode::Proc)
        )
    }
}
