//! The cases the kernel matrix runs in every VM, in order.
//!
//! Shared by the guest binary (which runs them) and `cargo xtask vm-test`
//! (which knows from this table which rows a kernel owes it).

/// What the guest changes around netmon for a case, without changing the
/// kernel: the environments users run netmon in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    /// Root with every capability, the kernel as booted.
    Plain,
    /// CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN dropped from the bounding and
    /// inheritable sets (what `setpriv --inh-caps=-bpf,-perfmon,-sys_admin
    /// --bounding-set=-bpf,-perfmon,-sys_admin` does): a container or a
    /// hardened unit.
    NoEbpfCaps,
    /// An empty file over /sys/kernel/btf/vmlinux in a mount namespace of
    /// netmon's own: a kernel built without CONFIG_DEBUG_INFO_BTF.
    NoBtf,
}

/// One run of netmon over the workload.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub name: &'static str,
    /// `--mode`.
    pub mode: &'static str,
    /// More `netmon run` arguments.
    pub extra: &'static [&'static str],
    pub setting: Setting,
    /// The mode netmon must run in.
    pub expect_mode: &'static str,
    /// Lines netmon must log (the reason for its choice); the matching log
    /// lines become the row's note.
    pub expect_log: &'static [&'static str],
    /// What the workload leaves for netmon to see.
    pub workload: Workload,
}

/// How the workload's connections end, for what a mode can see of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// The eBPF modes see connections open: they close at once.
    Closed,
    /// Polls see what is in the socket table: connections stay open until
    /// netmon has stopped.
    HeldOpen,
    /// Closed before proc mode's first poll: only the kernel's
    /// notifications of destroyed sockets can show them.
    ClosedBeforePolls,
    /// MPTCP connections instead ([`crate::mptcp`]), closed at once.
    Mptcp,
    /// UDP datagrams instead ([`crate::udp`]), a service answering each.
    Udp,
    /// IPv6 TCP connections and UDP exchanges, and an IPv4-mapped
    /// connection ([`crate::ipv6`]), in a network namespace of the case's
    /// own that netmon runs in; held open for proc mode.
    Ipv6,
}

impl Case {
    /// `--mode mode` as root on the kernel as booted, which must run in
    /// `expect_mode`.
    pub const fn plain(name: &'static str, mode: &'static str, expect_mode: &'static str) -> Self {
        Self {
            name,
            mode,
            extra: &[],
            setting: Setting::Plain,
            expect_mode,
            expect_log: &[],
            workload: if matches!(expect_mode.as_bytes(), b"proc") {
                Workload::HeldOpen
            } else {
                Workload::Closed
            },
        }
    }

    /// proc mode with its first poll a minute away, over a workload that
    /// is over long before: every peer must come from notifications.
    pub const fn notified(name: &'static str) -> Self {
        Self {
            extra: &["--poll-interval", "60000"],
            expect_log: &["socket tables: netlink sock_diag, with destroy notifications"],
            workload: Workload::ClosedBeforePolls,
            ..Self::plain(name, "proc", "proc")
        }
    }

    /// `--mode mode` over MPTCP connections, which it must count as TCP's.
    pub const fn mptcp(name: &'static str, mode: &'static str) -> Self {
        Self {
            workload: Workload::Mptcp,
            ..Self::plain(name, mode, mode)
        }
    }

    /// `--mode mode` over UDP datagrams, which its cgroup programs record.
    pub const fn udp(name: &'static str, mode: &'static str) -> Self {
        Self {
            workload: Workload::Udp,
            ..Self::plain(name, mode, mode)
        }
    }

    /// `--mode mode` over the IPv6 workload, run in its namespace.
    pub const fn ipv6(name: &'static str, mode: &'static str) -> Self {
        Self {
            workload: Workload::Ipv6,
            ..Self::plain(name, mode, mode)
        }
    }

    pub const fn with_extra(self, extra: &'static [&'static str]) -> Self {
        Self { extra, ..self }
    }

    /// Lines netmon must log, in the setting it has.
    pub const fn logging(self, expect_log: &'static [&'static str]) -> Self {
        Self { expect_log, ..self }
    }

    pub const fn in_setting(self, setting: Setting, expect_log: &'static [&'static str]) -> Self {
        Self {
            setting,
            expect_log,
            ..self
        }
    }

    pub fn find(name: &str) -> Option<(usize, &'static Case)> {
        VM_CASES
            .iter()
            .enumerate()
            .find(|(_, case)| case.name == name)
    }
}

/// Every case, for kernels with kprobes and BTF (every Debian kernel the
/// matrix boots). One line adds a case to every kernel.
pub const VM_CASES: &[Case] = &[
    Case::plain("auto", "auto", "kprobe"),
    Case::plain("kprobe", "kprobe", "kprobe"),
    Case::plain("btf-tracepoint", "btf-tracepoint", "btf-tracepoint"),
    Case::plain("raw-tracepoint", "raw-tracepoint", "raw-tracepoint"),
    Case::plain("tracepoint", "tracepoint", "tracepoint"),
    // Which socket tables: netlink, or the text where the guest cannot
    // load the sock_diag modules.
    Case::plain("proc", "proc", "proc").logging(&["socket tables: "]),
    Case::notified("proc-notified"),
    Case::plain("auto-no-caps", "auto", "proc").in_setting(
        Setting::NoEbpfCaps,
        &[
            "skipped kprobe: ",
            "skipped btf-tracepoint: ",
            "skipped raw-tracepoint: ",
            "skipped tracepoint: ",
            "permission denied",
        ],
    ),
    Case::plain("kprobe-no-btf", "kprobe", "kprobe")
        .in_setting(Setting::NoBtf, &["using default struct sock offsets"]),
    // Perf buffers, as kernels before 5.8 (no ring buffer) need them.
    Case::plain("kprobe-perf", "kprobe", "kprobe").with_extra(&["--transport", "perf"]),
    // MPTCP sockets pass through the tracepoint beside their TCP subflows.
    Case::mptcp("mptcp-kprobe", "kprobe"),
    Case::mptcp("mptcp-btf-tp", "btf-tracepoint"),
    Case::mptcp("mptcp-raw-tp", "raw-tracepoint"),
    Case::mptcp("mptcp-tp", "tracepoint"),
    // UDP through the cgroup programs, beside each mode's TCP hooks.
    Case::udp("udp-kprobe", "kprobe"),
    Case::udp("udp-btf-tp", "btf-tracepoint"),
    Case::udp("udp-raw-tp", "raw-tracepoint"),
    Case::udp("udp-tp", "tracepoint"),
    // IPv6 peers between unique-local addresses, and IPv4-mapped ones.
    Case::ipv6("ipv6-kprobe", "kprobe"),
    Case::ipv6("ipv6-btf-tp", "btf-tracepoint"),
    Case::ipv6("ipv6-raw-tp", "raw-tracepoint"),
    Case::ipv6("ipv6-tp", "tracepoint"),
    Case::ipv6("ipv6-proc", "proc"),
];
