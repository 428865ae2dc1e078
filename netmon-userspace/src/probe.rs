//! `netmon probe`: what this host allows, and whether the kernel's verifier
//! accepts every program, without attaching anything.
//!
//! The verifier check covers programs that cannot attach here (kprobes on a
//! kernel without CONFIG_KPROBES), so a program the verifier would reject
//! elsewhere is caught on any machine that can load eBPF at all.
use std::path::Path;

use anyhow::bail;

use crate::{
    collect::ladder::{Env, LADDER},
    ebpf::{self, events::TransportRequest},
    procnet::{Scanner, TablesRequest},
};

pub fn probe(out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let env = Env::new(
        Path::new("/proc/net"),
        TransportRequest::Auto,
        ebpf::RING_BYTES,
    );
    let mut auto = None;
    for rung in &LADDER {
        match (rung.probe)(&env) {
            Ok(()) => {
                auto.get_or_insert(rung.mode);
                writeln!(out, "mode {:<14} available", rung.mode)?;
            }
            Err(err) => writeln!(
                out,
                "mode {:<14} unavailable: {err:#} (needs {})",
                rung.mode, rung.needs
            )?,
        }
    }
    writeln!(out, "socket tables: {}", socket_tables())?;
    let kernel = env.kernel();
    writeln!(out, "event transport: {}", kernel.transport)?;
    match &kernel.offsets_origin {
        ebpf::btf::OffsetsOrigin::Btf => writeln!(
            out,
            "struct sock offsets: from BTF {:?}",
            kernel.sock_offsets
        )?,
        ebpf::btf::OffsetsOrigin::Default(why) => {
            writeln!(out, "struct sock offsets: defaults ({why})")?
        }
    }
    writeln!(
        out,
        "namespace and owner offsets: {}",
        describe_context(&kernel.context_offsets)
    )?;
    let mut failures = 0;
    let mut udp_rejected = None;
    match ebpf::load_object(kernel, true) {
        Ok(mut object) => {
            for program in ebpf::Program::ALL {
                let (name, kind, hook) = (program.name(), program.kind(), program.hook());
                // Loading it needs the kernel's BTF, as attaching a kprobe
                // needs kprobes: without, it is not for this kernel, not
                // rejected by it.
                if let (ebpf::ProgramKind::BtfTracepoint, ebpf::btf::OffsetsOrigin::Default(why)) =
                    (kind, &kernel.offsets_origin)
                {
                    writeln!(
                        out,
                        "program {name} ({kind} {hook}): not loaded: no kernel BTF ({why})"
                    )?;
                    continue;
                }
                match ebpf::load_program(&mut object, program) {
                    Ok(()) => writeln!(out, "program {name} ({kind} {hook}): verified")?,
                    Err(err) => {
                        failures += 1;
                        if kind == ebpf::ProgramKind::CgroupSockAddr {
                            udp_rejected.get_or_insert(name);
                        }
                        writeln!(out, "program {name} ({kind} {hook}): REJECTED: {err:#}")?;
                    }
                }
            }
        }
        Err(err) => {
            failures += 1;
            writeln!(out, "eBPF object: cannot load: {err:#}")?;
        }
    }
    let udp = match (crate::owner::cgroup2_root(), udp_rejected) {
        (_, Some(name)) => format!("unavailable: the verifier rejected {name}"),
        (Ok(root), None) => format!(
            "available in every eBPF mode (cgroup programs on {})",
            root.display()
        ),
        (Err(err), None) => format!("unavailable: {err:#}"),
    };
    writeln!(out, "udp: {udp}")?;
    if let Some(mode) = auto {
        writeln!(out, "auto would try: {mode}")?;
    }
    out.flush()?;
    if failures > 0 {
        bail!("{failures} eBPF program(s) or object(s) failed to load");
    }
    Ok(())
}

/// Which of a connection's network namespace and cgroup the programs can
/// read, and so which connections get an owner and a namespace.
fn describe_context(offsets: &netmon_common::config::ContextOffsets) -> String {
    let namespace = offsets.sk_net != 0 && offsets.net_inum != 0;
    let task_namespace = offsets.task_nsproxy != 0 && offsets.nsproxy_net != 0 && namespace;
    let socket_cgroup = offsets.sk_cgroup != 0 && offsets.cgroup_kn != 0 && offsets.kn_id != 0;
    let yes_no = |known: bool| if known { "from BTF" } else { "unknown" };
    format!(
        "socket namespace {}, task namespace {}, socket cgroup {}",
        yes_no(namespace),
        yes_no(task_namespace),
        yes_no(socket_cgroup)
    )
}

/// How proc mode and the start-up scan would read the socket tables, or
/// why they would fall back to the text.
fn socket_tables() -> String {
    match Scanner::open(Path::new("/proc/net"), TablesRequest::Netlink) {
        Ok(mut scanner) => match scanner.subscribe() {
            Ok(_) => scanner.describe(),
            Err(err) => format!("{} (no notifications: {err})", scanner.describe()),
        },
        Err(err) => format!("the /proc/net text ({err:#})"),
    }
}
