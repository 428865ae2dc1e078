//! UDP peers: the cgroup programs on the root of the cgroup v2 hierarchy,
//! attached beside whichever TCP programs a mode runs.
use std::fs::File;

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr},
};

use super::{Program, attach_failed, loaded};

/// The cgroup programs: binds first, so that a socket bound while they
/// attach is known as a service's by its first datagram.
const PROGRAMS: [Program; 8] = [
    Program::UdpBind,
    Program::UdpBind6,
    Program::UdpRecvmsg,
    Program::UdpSendmsg,
    Program::UdpConnect,
    Program::UdpRecvmsg6,
    Program::UdpSendmsg6,
    Program::UdpConnect6,
];

/// Attaches the UDP programs to the root of `cgroup_root`'s hierarchy, so
/// they run for every socket on the host; all of them or none.
pub fn attach(ebpf: &mut Ebpf, cgroup_root: &std::path::Path) -> anyhow::Result<()> {
    let dir = File::open(cgroup_root)
        .with_context(|| format!("cannot open the cgroup v2 root {}", cgroup_root.display()))?;
    for (at, program) in PROGRAMS.into_iter().enumerate() {
        let attached = loaded::<CgroupSockAddr>(ebpf, program).and_then(|loaded| {
            // As a bpf link (5.7+), beside any other program on the root
            // (a CNI's, say): links always share the cgroup, and the
            // kernel refuses the multi flag on them.
            loaded
                .attach(&dir, CgroupAttachMode::Single)
                .map(drop)
                .map_err(|err| {
                    attach_failed(
                        err,
                        format!(
                            "cgroup program {} to {}",
                            program.hook(),
                            cgroup_root.display()
                        ),
                    )
                })
        });
        if let Err(err) = attached {
            for earlier in &PROGRAMS[..at] {
                if let Some(Ok(loaded)) = ebpf
                    .program_mut(earlier.name())
                    .map(<&mut CgroupSockAddr>::try_from)
                {
                    let _ = loaded.unload();
                }
            }
            return Err(err);
        }
    }
    Ok(())
}

/// `net.ipv4.ip_local_port_range` of netmon's namespace: the ports the
/// kernel picks for a socket that asked for none, or Linux's default.
pub fn ephemeral_ports() -> (u16, u16) {
    const RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";
    let read = std::fs::read_to_string(RANGE).ok().and_then(|text| {
        let mut ports = text.split_whitespace().map(str::parse::<u16>);
        Some((ports.next()?.ok()?, ports.next()?.ok()?))
    });
    read.filter(|(low, high)| low <= high)
        .unwrap_or(netmon_common::config::EPHEMERAL_PORTS)
}
