//! The attach ladder: which way of watching connections this host allows.
//!
//! The ladder is data: a table of rungs, best first, each naming what it
//! needs and how to check for it. `auto` climbs down until a rung attaches
//! and reports why every rung above it was skipped; a forced mode tries its
//! one rung and fails with the reason.
use std::path::Path;

use anyhow::{anyhow, bail};

use crate::{
    ebpf::{self, EbpfCollector, KernelEnv, btf::OffsetsOrigin, events::TransportRequest},
    mode::{AttachMode, ModeRequest},
};

/// What the rung that attached yields: running eBPF programs, or proc
/// mode, whose socket tables are opened after the ladder (see
/// [`Collector::start`](super::Collector::start)).
pub enum Attached {
    Ebpf(Box<EbpfCollector>),
    Proc,
}

impl Attached {
    pub fn mode(&self) -> AttachMode {
        match self {
            Self::Ebpf(ebpf) => ebpf.mode,
            Self::Proc => AttachMode::Proc,
        }
    }
}

/// One way of watching connections.
pub struct Rung {
    pub mode: AttachMode,
    /// What the host must offer, in words for the log.
    pub needs: &'static str,
    /// A cheap check that explains a missing feature better than an attach
    /// error would.
    pub probe: fn(&Env) -> anyhow::Result<()>,
    attach: fn(&Env) -> anyhow::Result<Attached>,
}

/// What the rungs look at. Detecting the kernel (mounting tracefs, reading
/// BTF) only happens when an eBPF rung is tried.
pub struct Env<'a> {
    proc_net: &'a Path,
    transport: TransportRequest,
    ring_bytes: u32,
    kernel: std::cell::OnceCell<KernelEnv>,
}

impl<'a> Env<'a> {
    pub fn new(proc_net: &'a Path, transport: TransportRequest, ring_bytes: u32) -> Self {
        Self {
            proc_net,
            transport,
            ring_bytes,
            kernel: std::cell::OnceCell::new(),
        }
    }

    pub fn kernel(&self) -> &KernelEnv {
        self.kernel
            .get_or_init(|| KernelEnv::detect(self.transport, self.ring_bytes))
    }
}

pub const LADDER: [Rung; 5] = [
    Rung {
        mode: AttachMode::Kprobe,
        needs: "kprobes and permission to load eBPF",
        probe: probe_kprobe,
        attach: |env| {
            EbpfCollector::attach_kprobes(env.kernel()).map(|c| Attached::Ebpf(Box::new(c)))
        },
    },
    Rung {
        mode: AttachMode::BtfTracepoint,
        needs: "BTF tracepoints (Linux 5.5+), the kernel's BTF and permission to load eBPF",
        probe: probe_btf_tracepoint,
        attach: |env| {
            EbpfCollector::attach_btf_tracepoint(env.kernel()).map(|c| Attached::Ebpf(Box::new(c)))
        },
    },
    Rung {
        mode: AttachMode::RawTracepoint,
        needs: "raw tracepoints (Linux 4.17+), struct sock offsets from BTF and permission to load eBPF",
        probe: probe_raw_tracepoint,
        attach: |env| {
            EbpfCollector::attach_raw_tracepoint(env.kernel()).map(|c| Attached::Ebpf(Box::new(c)))
        },
    },
    Rung {
        mode: AttachMode::Tracepoint,
        needs: "tracefs with sock/inet_sock_set_state (Linux 4.16+) and permission to load eBPF",
        probe: probe_tracepoint,
        attach: |env| {
            EbpfCollector::attach_tracepoint(env.kernel()).map(|c| Attached::Ebpf(Box::new(c)))
        },
    },
    Rung {
        mode: AttachMode::Proc,
        needs: "readable socket tables under /proc/net",
        probe: |env| {
            let tcp = env.proc_net.join("tcp");
            std::fs::File::open(&tcp)
                .map(drop)
                .map_err(|err| anyhow!("cannot read {}: {err}", tcp.display()))
        },
        attach: |_| Ok(Attached::Proc),
    },
];

const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

fn probe_kprobe(env: &Env) -> anyhow::Result<()> {
    ebpf::require_permission()?;
    let tracefs_events = env
        .kernel()
        .tracefs
        .as_ref()
        .ok()
        .map(|dir| dir.join("kprobe_events"));
    if Path::new(KPROBE_PMU).exists() || tracefs_events.is_some_and(|p| p.exists()) {
        return Ok(());
    }
    bail!(
        "kernel has no kprobe support (CONFIG_KPROBES): no {KPROBE_PMU} and no kprobe_events in tracefs"
    )
}

/// The raw tracepoint reads `struct sock` itself, so unlike the kprobes
/// (whose layout defaults suit most kernels) it waits for BTF: with the
/// tracepoint one rung down, a guessed layout is never worth the risk.
fn probe_raw_tracepoint(env: &Env) -> anyhow::Result<()> {
    ebpf::require_permission()?;
    match &env.kernel().offsets_origin {
        OffsetsOrigin::Btf => Ok(()),
        OffsetsOrigin::Default(why) => bail!("no struct sock offsets from BTF: {why}"),
    }
}

/// The BTF tracepoint needs what the raw one does, and the verifier
/// checks its reads against the kernel's BTF, so a kernel it does not
/// suit refuses to load it and auto goes on to the raw tracepoint.
fn probe_btf_tracepoint(env: &Env) -> anyhow::Result<()> {
    probe_raw_tracepoint(env)?;
    if !Path::new(ebpf::btf::VMLINUX_BTF).exists() {
        bail!("no kernel BTF at {}", ebpf::btf::VMLINUX_BTF);
    }
    Ok(())
}

fn probe_tracepoint(env: &Env) -> anyhow::Result<()> {
    ebpf::require_permission()?;
    let kernel = env.kernel();
    kernel.tracefs.as_ref().map_err(|err| anyhow!("{err:#}"))?;
    kernel
        .state_format
        .as_ref()
        .map_err(|err| anyhow!("{err:#}"))?;
    Ok(())
}

/// A rung that was not used, and why.
pub struct Skipped {
    pub mode: AttachMode,
    pub reason: anyhow::Error,
}

/// Walks the ladder for `request`: what the first rung that attaches
/// yields, and every skipped rung above it with its reason.
pub fn climb(request: ModeRequest, env: &Env) -> anyhow::Result<(Attached, Vec<Skipped>)> {
    let mut skipped = Vec::new();
    for rung in LADDER.iter().filter(|rung| request.allows(rung.mode)) {
        match (rung.probe)(env).and_then(|()| (rung.attach)(env)) {
            Ok(attached) => return Ok((attached, skipped)),
            Err(reason) => skipped.push(Skipped {
                mode: rung.mode,
                reason,
            }),
        }
    }
    let reasons: Vec<String> = skipped
        .iter()
        .map(|s| format!("{}: {:#}", s.mode, s.reason))
        .collect();
    match request {
        ModeRequest::Auto => Err(anyhow!(
            "no attach mode works on this host: {}",
            reasons.join("; ")
        )),
        _ => Err(anyhow!(
            "--mode {}: cannot attach: {:#}",
            skipped[0].mode,
            skipped[0].reason
        )),
    }
}
