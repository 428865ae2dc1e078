//! UDP peers: the cgroup programs on the root of the cgroup v2 hierarchy,
//! attached beside whichever TCP programs a mode runs.
use std::{fs::File, path::PathBuf};

use anyhow::Context as _;
use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr},
};

use super::{Program, attach_failed, loaded};

/// The cgroup programs, in the order they attach: roles first, so a
/// socket's first datagram meets a socket whose binding was seen.
const PROGRAMS: [Program; 4] = [
    Program::UdpBind,
    Program::UdpRecvmsg,
    Program::UdpSendmsg,
    Program::UdpConnect,
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

/// Where the cgroup v2 hierarchy is mounted, from `/proc/self/mountinfo`:
/// `/sys/fs/cgroup` on a pure v2 host, `/sys/fs/cgroup/unified` on a
/// hybrid one.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    const MOUNTINFO: &str = "/proc/self/mountinfo";
    let text =
        std::fs::read_to_string(MOUNTINFO).with_context(|| format!("cannot read {MOUNTINFO}"))?;
    mount_of(&text, "cgroup2").with_context(|| format!("no cgroup2 file system in {MOUNTINFO}"))
}

/// The mount point of the first file system of type `fstype`.
fn mount_of(mountinfo: &str, fstype: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        (fs.split(' ').next()? == fstype).then(|| {
            let point = mount.split(' ').nth(4)?;
            // Spaces and such are octal escapes (`\040`).
            Some(PathBuf::from(unescape(point)))
        })?
    })
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'\\'
            && let Some(code) = bytes
                .get(at + 1..at + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            at += 4;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,cpu
";
        assert_eq!(
            mount_of(text, "cgroup2"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            mount_of(text, "cgroup"),
            Some(PathBuf::from("/sys/fs/cgroup/my dir"))
        );
        assert_eq!(mount_of(text, "bpf"), None);
    }
}
