//! The guest's whole userspace: busybox, a static netmon, the static
//! scenario binary and an init script, as one uncompressed `newc` cpio
//! archive (every kernel the matrix boots unpacks it without modules).
use std::{fs, io::Write as _, path::Path};

use anyhow::Context as _;
use netmon_scenario::case::VM_CASES;

use super::kernels::DIAG_MODULES;

/// Debian's statically linked busybox (package busybox-static).
pub const BUSYBOX: &str = "/bin/busybox";

/// The serial port the guest prints its result lines on; the console
/// (ttyS0) gets everything else, so kernel messages cannot break a line.
const RESULTS_PORT: &str = "/dev/ttyS1";

/// Printed by init once every case has run.
pub const DONE: &str = "netmon-vm: done";

/// Mounts what netmon expects, runs every case once, powers off.
fn init_script() -> String {
    let cases: Vec<&str> = VM_CASES.iter().map(|case| case.name).collect();
    format!(
        r#"#!/bin/busybox sh
# Written by cargo xtask vm-test.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
# The root of cgroup v2, where netmon attaches its UDP programs.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs tmpfs /tmp
ip link set lo up
echo "netmon-vm: booted $(uname -r)"
# The sock_diag modules this kernel's package has, if any (see
# kernels::DIAG_MODULES).
for module in {modules}; do
    [ -f /lib/modules/$module.ko ] && insmod /lib/modules/$module.ko
done
for case in {cases}; do
    echo "netmon-vm: case $case"
    /bin/netmon-scenario /bin/netmon "$case" {RESULTS_PORT}
done
echo "{DONE}"
poweroff -f
"#,
        cases = cases.join(" "),
        modules = DIAG_MODULES.join(" "),
    )
}

/// Writes the archive to `out` from the static binaries in `bin_dir`.
pub fn write(out: &Path, bin_dir: &Path) -> anyhow::Result<()> {
    let mut cpio = Cpio::default();
    for dir in ["bin", "dev", "proc", "sys", "tmp", "run"] {
        cpio.entry(dir, Kind::Dir, &[]);
    }
    // init's stdin/stdout before devtmpfs is mounted.
    cpio.entry("dev/console", Kind::CharDevice(5, 1), &[]);
    cpio.entry("init", Kind::Executable, init_script().as_bytes());
    let busybox = fs::read(BUSYBOX).with_context(|| format!("{BUSYBOX} (busybox-static)"))?;
    cpio.entry("bin/busybox", Kind::Executable, &busybox);
    for name in ["netmon", "netmon-scenario"] {
        let path = bin_dir.join(name);
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        cpio.entry(&format!("bin/{name}"), Kind::Executable, &bytes);
    }
    fs::write(out, cpio.finish()).with_context(|| format!("writing {}", out.display()))
}

/// `base` followed by a second archive of `modules` under /lib/modules:
/// the kernel unpacks concatenated archives one after the other, so each
/// kernel gets its own modules over the shared userspace.
pub fn with_modules(base: &Path, modules: &[std::path::PathBuf], out: &Path) -> anyhow::Result<()> {
    let mut bytes = fs::read(base).with_context(|| format!("reading {}", base.display()))?;
    let mut cpio = Cpio::default();
    for dir in ["lib", "lib/modules"] {
        cpio.entry(dir, Kind::Dir, &[]);
    }
    for module in modules {
        let data = fs::read(module).with_context(|| format!("reading {}", module.display()))?;
        let name = module
            .file_name()
            .context("a module file name")?
            .to_string_lossy();
        cpio.entry(&format!("lib/modules/{name}"), Kind::File, &data);
    }
    bytes.extend(cpio.finish());
    fs::write(out, bytes).with_context(|| format!("writing {}", out.display()))
}

enum Kind {
    Dir,
    File,
    Executable,
    CharDevice(u32, u32),
}

/// A `newc` ("070701") archive: ASCII-hex headers, name and data each
/// padded to four bytes, ended by a `TRAILER!!!` entry.
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    inode: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, kind: Kind, data: &[u8]) {
        let (mode, (major, minor)) = match kind {
            Kind::Dir => (0o040_755, (0, 0)),
            Kind::File => (0o100_644, (0, 0)),
            Kind::Executable => (0o100_755, (0, 0)),
            Kind::CharDevice(major, minor) => (0o020_600, (major, minor)),
        };
        self.inode += 1;
        let name_size = name.len() + 1;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            1, // nlink
            0, // mtime
            u32::try_from(data.len()).expect("files under 4 GiB"),
            0, // devmajor
            0, // devminor
            major,
            minor,
            u32::try_from(name_size).expect("short names"),
            0, // check
        ];
        write!(self.bytes, "070701").unwrap();
        for field in fields {
            write!(self.bytes, "{field:08x}").unwrap();
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.inode = 0;
        self.entry("TRAILER!!!", Kind::Executable, &[]);
        self.bytes
    }
}
