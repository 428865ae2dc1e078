//! Loading the eBPF object and attaching its programs.
//!
//! The [ladder](crate::collect::ladder) decides which attach mode runs;
//! this module knows how to load the embedded object with the right
//! load-time config and how to attach each mode's programs, and hands back
//! an [`EbpfCollector`] that owns everything that must stay alive while
//! events flow.
pub mod btf;
pub mod dedup;
pub mod events;
pub mod origin;
mod program;
pub mod tracefs;
pub mod udp;

use std::{io, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{BtfTracePoint, CgroupSockAddr, KProbe, RawTracePoint, TracePoint},
};
use netmon_common::{
    Config, PeerEvent,
    config::{self, ContextOffsets, SockOffsets},
    maps,
};
use tokio::io::{Interest, unix::AsyncFd};

pub use self::program::{Program, ProgramKind};
use self::{
    btf::OffsetsOrigin,
    events::{Events, Transport, TransportRequest},
    tracefs::StateFormat,
};
use crate::{
    mode::AttachMode,
    peer::{Connection, Source},
};

/// The eBPF objects built by `cargo xtask build`, embedded at compile time:
/// the same programs, sending through a ring buffer or through perf buffers.
/// Empty in a build without them (build.rs).
fn object(transport: Transport) -> anyhow::Result<&'static [u8]> {
    let object: &'static [u8] = match transport {
        Transport::RingBuf => {
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netmon.bpf.o"))
        }
        Transport::Perf => {
            aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netmon-perf.bpf.o"))
        }
    };
    anyhow::ensure!(
        !object.is_empty(),
        "netmon was built without its eBPF object; build with `cargo xtask build`"
    );
    Ok(object)
}

/// What the running kernel offers, looked up once per start.
pub struct KernelEnv {
    pub transport: Transport,
    pub tracefs: anyhow::Result<PathBuf>,
    pub sock_offsets: SockOffsets,
    pub offsets_origin: OffsetsOrigin,
    /// Where the programs read a connection's network namespace and cgroup.
    pub context_offsets: ContextOffsets,
    /// The ports the kernel picks for UDP sockets that ask for none.
    pub ephemeral_ports: (u16, u16),
    pub state_format: anyhow::Result<StateFormat>,
    /// Size of the ring buffer (`--ring-buffer`).
    pub ring_bytes: u32,
}

/// The ring buffer's size unless `--ring-buffer` says otherwise: room for
/// about 13 000 events, the tenth of a second a reader on two busy cores
/// may fall behind a UDP storm of new peers (docs/performance.md).
pub const RING_BYTES: u32 = 1024 * 1024;

impl KernelEnv {
    /// Mounts tracefs if needed and reads the offsets the programs need;
    /// the ring buffer will be `ring_bytes` long.
    pub fn detect(transport: TransportRequest, ring_bytes: u32) -> Self {
        let transport = transport.resolve();
        let tracefs = tracefs::ensure_mounted();
        let (sock_offsets, offsets_origin, context_offsets) =
            btf::offsets(btf::VMLINUX_BTF.as_ref());
        let state_format = match &tracefs {
            Ok(dir) => tracefs::read_state_format(dir),
            Err(err) => Err(anyhow!("{err:#}")),
        };
        match &offsets_origin {
            OffsetsOrigin::Btf => log::debug!("struct sock offsets from BTF: {sock_offsets:?}"),
            OffsetsOrigin::Default(why) => {
                log::info!("using default struct sock offsets: {why}");
            }
        }
        Self {
            transport,
            tracefs,
            sock_offsets,
            offsets_origin,
            context_offsets,
            ephemeral_ports: udp::ephemeral_ports(),
            state_format,
            ring_bytes,
        }
    }
}

/// Loads the object, its [`Config`] filled in from `env`.
///
/// `tracepoint_outbound` is false when the kprobe on `tcp_connect` reports
/// outbound connections, so the tracepoint does not report them twice.
pub fn load_object(env: &KernelEnv, tracepoint_outbound: bool) -> anyhow::Result<Ebpf> {
    let format = env.state_format.as_ref().ok();
    let config = Config {
        sock: env.sock_offsets,
        // Without the format the tracepoint cannot attach; zeros keep it inert.
        tracepoint: format.map(|f| f.offsets).unwrap_or_default(),
        tracepoint_outbound: u32::from(tracepoint_outbound),
        _pad: 0,
        dedup_window_ns: config::DEDUP_WINDOW_NS,
        context: ContextOffsets {
            tracepoint_skaddr: format.map_or(0, |f| f.skaddr),
            ..env.context_offsets
        },
        ephemeral_low: env.ephemeral_ports.0,
        ephemeral_high: env.ephemeral_ports.1,
    };
    let mut loader = EbpfLoader::new();
    if env.transport == Transport::RingBuf {
        loader.map_max_entries(maps::EVENTS, env.ring_bytes);
    }
    loader
        .override_global(config::SYMBOL, &config, true)
        .load(object(env.transport)?)
        .map_err(|err| explain_permission(anyhow::Error::new(err)))
        .context("cannot load the eBPF object")
}

/// What to say when eBPF is not allowed.
const NO_PERMISSION: &str = "permission denied: eBPF needs root, or CAP_BPF and CAP_PERFMON \
     (CAP_SYS_ADMIN before Linux 5.8); --mode proc works without them";

/// Fails with `NO_PERMISSION` when this process holds neither CAP_BPF
/// nor CAP_SYS_ADMIN, before anything (mounting tracefs, loading) fails
/// with a less telling error.
pub fn require_permission() -> anyhow::Result<()> {
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let effective =
        crate::privilege::effective().context("cannot read this process's capabilities")?;
    if effective & (1 << CAP_BPF | 1 << CAP_SYS_ADMIN) == 0 {
        anyhow::bail!(NO_PERMISSION);
    }
    Ok(())
}

/// Turns EPERM/EACCES anywhere in the chain into a line that says which
/// permission is missing and what works without it.
pub fn explain_permission(err: anyhow::Error) -> anyhow::Error {
    let denied = err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EPERM || code == libc::EACCES)
    });
    if denied {
        err.context(NO_PERMISSION)
    } else {
        err
    }
}

/// Loads (verifies) one program without attaching it.
pub fn load_program(ebpf: &mut Ebpf, program: Program) -> anyhow::Result<()> {
    let (name, kind) = (program.name(), program.kind());
    let loaded = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("the eBPF object has no program {name}"))?;
    let result = match kind {
        ProgramKind::Kprobe | ProgramKind::Kretprobe => <&mut KProbe>::try_from(loaded)
            .map_err(anyhow::Error::new)?
            .load(),
        ProgramKind::Tracepoint => <&mut TracePoint>::try_from(loaded)
            .map_err(anyhow::Error::new)?
            .load(),
        ProgramKind::RawTracepoint => <&mut RawTracePoint>::try_from(loaded)
            .map_err(anyhow::Error::new)?
            .load(),
        ProgramKind::BtfTracepoint => {
            let btf = aya::Btf::from_sys_fs().context("cannot read the kernel's BTF")?;
            <&mut BtfTracePoint>::try_from(loaded)
                .map_err(anyhow::Error::new)?
                .load(tracefs::TRACEPOINT, &btf)
        }
        ProgramKind::CgroupSockAddr => <&mut CgroupSockAddr>::try_from(loaded)
            .map_err(anyhow::Error::new)?
            .load(),
    };
    result
        .map_err(|err| explain_permission(anyhow::Error::new(err)))
        .with_context(|| format!("the verifier rejected {kind} program {name}"))
}

/// Loads `program` and hands it back as its own type, to attach.
pub(crate) fn loaded<'a, P>(ebpf: &'a mut Ebpf, program: Program) -> anyhow::Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    load_program(ebpf, program)?;
    Ok(ebpf
        .program_mut(program.name())
        .expect("loaded above")
        .try_into()?)
}

/// An attach that failed, saying which hook and which permission.
pub(crate) fn attach_failed(err: aya::programs::ProgramError, hook: String) -> anyhow::Error {
    explain_permission(anyhow::Error::new(err)).context(format!("cannot attach {hook}"))
}

/// Attaches a kprobe or kretprobe to the function it is named after.
fn attach_kprobe(ebpf: &mut Ebpf, program: Program) -> anyhow::Result<()> {
    let (kind, function) = (program.kind(), program.hook());
    loaded::<KProbe>(ebpf, program)?
        .attach(function, 0)
        .map_err(|err| attach_failed(err, format!("{kind} to {function}")))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let (category, name) = (tracefs::CATEGORY, tracefs::TRACEPOINT);
    loaded::<TracePoint>(ebpf, Program::TracepointState)?
        .attach(category, name)
        .map_err(|err| attach_failed(err, format!("tracepoint {category}/{name}")))?;
    Ok(())
}

fn attach_raw_tracepoint(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let name = tracefs::TRACEPOINT;
    loaded::<RawTracePoint>(ebpf, Program::RawTracepointState)?
        .attach(name)
        .map_err(|err| attach_failed(err, format!("raw tracepoint {name}")))?;
    Ok(())
}

fn attach_btf_tracepoint(ebpf: &mut Ebpf) -> anyhow::Result<()> {
    let name = tracefs::TRACEPOINT;
    loaded::<BtfTracePoint>(ebpf, Program::BtfTracepointState)?
        .attach()
        .map_err(|err| attach_failed(err, format!("BTF tracepoint {name}")))?;
    Ok(())
}

/// kprobe mode's tracepoint, for inbound connections: the BTF one where
/// the kernel's BTF gave the offsets (it reads the socket with loads, not
/// helper calls, and skips the perf record), else the plain one, which
/// works with default offsets too.
fn attach_inbound_tracepoint(env: &KernelEnv, ebpf: &mut Ebpf) -> anyhow::Result<()> {
    if env.offsets_origin == btf::OffsetsOrigin::Btf {
        match attach_btf_tracepoint(ebpf) {
            Ok(()) => return Ok(()),
            Err(err) => log::debug!("kprobe mode: plain tracepoint for inbound ({err:#})"),
        }
    }
    env.state_format
        .as_ref()
        .map_err(|err| anyhow!("{err:#}"))?;
    attach_tracepoint(ebpf)
}

/// The attached programs and the maps userspace reads.
///
/// Dropping it detaches everything.
pub struct EbpfCollector {
    pub mode: AttachMode,
    /// The kretprobe on accept only names the accepting process; the
    /// tracepoint counts the inbound connection (it also sees connections
    /// accepted by threads blocked in accept() before netmon attached).
    pub accept_is_attribution_only: bool,
    pub events: Events,
    /// Why UDP peers are not recorded, if they are not.
    pub udp_missing: Option<String>,
    lost: PerCpuArray<MapData, u64>,
    dedup: dedup::Dedup,
    map_reads_need: Option<u32>,
    origins: origin::Origins,
    /// Forwards the programs' log lines; must live as long as they do.
    pub logger: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
    _ebpf: Ebpf,
}

impl EbpfCollector {
    /// kprobe mode: kprobe `tcp_connect`, kretprobe `inet_csk_accept`, and
    /// the tracepoint for inbound connections where it exists.
    pub fn attach_kprobes(env: &KernelEnv) -> anyhow::Result<Self> {
        let mut ebpf = load_object(env, false)?;
        let udp_missing = Self::attach_udp(&mut ebpf);
        attach_kprobe(&mut ebpf, Program::KprobeConnect)?;
        attach_kprobe(&mut ebpf, Program::KretprobeAccept)?;
        let inbound_tracepoint = attach_inbound_tracepoint(env, &mut ebpf);
        if let Err(err) = &inbound_tracepoint {
            log::warn!(
                "kprobe mode without the inbound tracepoint ({err:#}): connections accepted by threads \
                 already blocked in accept() before netmon started are missed"
            );
        }
        Self::new(
            ebpf,
            env.transport,
            AttachMode::Kprobe,
            inbound_tracepoint.is_ok(),
            udp_missing,
        )
    }

    /// The UDP programs, beside any mode's TCP ones: a host where they
    /// cannot attach still gets its TCP peers, and is told what it misses.
    /// Attached before the TCP programs, so that verifying them does not
    /// stand between a TCP program's first event and the ring buffer's
    /// reader.
    fn attach_udp(ebpf: &mut Ebpf) -> Option<String> {
        let attached = crate::owner::cgroup2_root().and_then(|root| {
            udp::attach(ebpf, &root)?;
            log::info!("UDP: cgroup programs on {}", root.display());
            Ok(())
        });
        let err = attached.err()?;
        let why = format!("{err:#}");
        log::warn!("UDP peers are not recorded: {why}");
        Some(why)
    }

    /// tracepoint mode: `sock/inet_sock_set_state` for both directions.
    pub fn attach_tracepoint(env: &KernelEnv) -> anyhow::Result<Self> {
        Self::attach_state(env, AttachMode::Tracepoint, attach_tracepoint)
    }

    /// raw-tracepoint mode: the same tracepoint and transitions, read from
    /// its arguments and `struct sock` instead of a perf record.
    pub fn attach_raw_tracepoint(env: &KernelEnv) -> anyhow::Result<Self> {
        Self::attach_state(env, AttachMode::RawTracepoint, attach_raw_tracepoint)
    }

    /// btf-tracepoint mode: the same again, the socket read with plain
    /// loads the verifier types from the kernel's BTF.
    pub fn attach_btf_tracepoint(env: &KernelEnv) -> anyhow::Result<Self> {
        Self::attach_state(env, AttachMode::BtfTracepoint, attach_btf_tracepoint)
    }

    /// A tracepoint mode: the state tracepoint, attached by `attach`, sees
    /// both directions.
    fn attach_state(
        env: &KernelEnv,
        mode: AttachMode,
        attach: fn(&mut Ebpf) -> anyhow::Result<()>,
    ) -> anyhow::Result<Self> {
        let mut ebpf = load_object(env, true)?;
        let udp_missing = Self::attach_udp(&mut ebpf);
        attach(&mut ebpf)?;
        Self::new(ebpf, env.transport, mode, false, udp_missing)
    }

    fn new(
        mut ebpf: Ebpf,
        transport: Transport,
        mode: AttachMode,
        accept_is_attribution_only: bool,
        udp_missing: Option<String>,
    ) -> anyhow::Result<Self> {
        let events = Events::open(&mut ebpf, transport)?;
        let lost = ebpf
            .take_map(maps::LOST)
            .ok_or_else(|| anyhow!("the eBPF object has no map {}", maps::LOST))?;
        let lost = PerCpuArray::try_from(lost)?;
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            // SAFETY: the logger owns its map fd for as long as it lives,
            // and the AsyncFd owns the logger.
            Ok(logger) => Some(
                unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
                    .map_err(io::Error::from)
                    .context("cannot poll the eBPF log buffer")?,
            ),
            Err(err) => {
                log::debug!("eBPF log forwarding unavailable: {err}");
                None
            }
        };
        let dedup = dedup::Dedup::open(&mut ebpf)?;
        let map_reads_need = crate::privilege::map_reads_need(dedup.probe_fd())
            .context("cannot find out whether reading the eBPF maps needs a capability")?;
        Ok(Self {
            mode,
            accept_is_attribution_only,
            events,
            udp_missing,
            lost,
            dedup,
            map_reads_need,
            origins: origin::Origins::default(),
            logger,
            _ebpf: ebpf,
        })
    }

    /// Hands every waiting event to `sink` with the number of connections
    /// it stands for; returns how many records were not events.
    pub fn drain(&mut self, mut sink: impl FnMut(&Connection, u64)) -> usize {
        let Self {
            events,
            dedup,
            accept_is_attribution_only,
            origins,
            ..
        } = self;
        let accounts = dedup.accounts();
        events.drain(|event| {
            let connections = accounts.on_event(event);
            deliver(
                event,
                connections,
                *accept_is_attribution_only,
                origins,
                &mut sink,
            );
        })
    }

    /// Finds connections the dedup map counted that no event reported yet
    /// (repeats inside the window, events lost to a full buffer), and hands
    /// `sink` the events that arrive meanwhile: reading the map takes two
    /// system calls an entry, long enough for a storm to fill the ring
    /// buffer, so it is drained every `HARVEST_BATCH` entries.
    pub fn harvest(&mut self, mut sink: impl FnMut(&Connection, u64)) -> anyhow::Result<()> {
        let Self {
            events,
            dedup,
            accept_is_attribution_only,
            origins,
            ..
        } = self;
        let attribution_only = *accept_is_attribution_only;
        // Events drained meanwhile, and what the map adds, in that order.
        let mut arrived = Vec::new();
        let mut malformed = 0;
        let mut found = Vec::new();
        dedup.harvest(
            |accounts| {
                malformed += events.drain(|event| {
                    arrived.push((*event, accounts.on_event(event)));
                });
            },
            |event, connections| found.push((*event, connections)),
        )?;
        if malformed > 0 {
            log::warn!("{malformed} records were not events: eBPF object and binary mismatch?");
        }
        for (event, connections) in arrived.iter().chain(&found) {
            deliver(event, *connections, attribution_only, origins, &mut sink);
        }
        Ok(())
    }

    /// The capability reading the maps still needs once netmon drops the
    /// rest, on kernels that ask for one (see
    /// [`crate::privilege::map_reads_need`]); found out at load time, long
    /// before confinement, whose single-thread check the probing thread
    /// must not meet.
    pub fn map_reads_need(&self) -> Option<u32> {
        self.map_reads_need
    }

    /// Records peers as seen from the namespace whose tables `proc_net`
    /// shows (see [`origin::Origins::watch_from`]).
    pub fn watch_from(&mut self, proc_net: &std::path::Path) {
        self.origins.watch_from(proc_net);
    }

    /// Connections the programs could neither send nor keep for a harvest.
    pub fn uncounted(&self) -> anyhow::Result<u64> {
        self.dedup.uncounted()
    }

    /// Events the programs could not deliver since they were loaded.
    pub fn lost_events(&self) -> anyhow::Result<u64> {
        let per_cpu = self
            .lost
            .get(&0, 0)
            .context("cannot read the lost-event counters")?;
        let lost = per_cpu
            .iter()
            .fold(0, |sum, &n| u64::saturating_add(sum, n));
        Ok(lost.saturating_add(self.events.transport_lost()))
    }
}

/// Converts and counts one event. The kretprobe on accept only names the
/// accepting process where the tracepoint counts inbound connections.
fn deliver(
    event: &PeerEvent,
    connections: u64,
    accept_is_attribution_only: bool,
    origins: &mut origin::Origins,
    sink: &mut impl FnMut(&Connection, u64),
) {
    let mut conn = match Connection::try_from(event) {
        Ok(conn) => conn,
        Err(err) => return log::warn!("{err:#}"),
    };
    origins.resolve(&mut conn);
    if accept_is_attribution_only && conn.source == Source::KretprobeAccept {
        sink(&conn, 0)
    } else {
        sink(&conn, connections)
    }
}
