//! A network namespace of a test's own, made and entered without
//! `ip netns`: the kernel matrix's guest has only busybox's `ip`, which
//! cannot name namespaces, and `ip netns exec` mounts a sysfs of the
//! namespace's own over /sys, which hides a cgroup2 mounted beneath it
//! (this host's, at /sys/fs/cgroup/unified) from netmon's UDP programs.
//!
//! The namespace lives while its [`OwnNetns`] holds it open or a process
//! is in it; nothing needs deleting afterwards. Its loopback is its only
//! interface, so none of its traffic can leave it.
use std::{
    fs::{self, File},
    io,
    os::{
        fd::{AsRawFd as _, RawFd},
        unix::{fs::MetadataExt as _, process::CommandExt as _},
    },
    process::Command,
    thread,
};

use crate::net::Net;

/// Where /proc/sys says whether a socket may bind an address no interface
/// has, for the namespace of the thread that opens it.
const NONLOCAL_BIND: &str = "/proc/sys/net/ipv6/ip_nonlocal_bind";

/// A network namespace, held open by a descriptor.
pub struct OwnNetns {
    file: File,
    inode: u64,
}

impl OwnNetns {
    /// A new namespace with its loopback up and `net`'s unique-local /64
    /// routed to it, whose sockets may bind any address of that /64: a
    /// route of type `local` makes the whole prefix local, as 127/8 is,
    /// but IPv6 lets a socket bind only addresses an interface has, unless
    /// `ip_nonlocal_bind` is set.
    pub fn with_ula(net: Net) -> io::Result<Self> {
        let netns = Self::new()?;
        netns.ip(&["link", "set", "lo", "up"])?;
        netns.ip(&["-6", "route", "add", "local", &net.prefix6(), "dev", "lo"])?;
        netns.run_in(|| fs::write(NONLOCAL_BIND, "1"))?;
        Ok(netns)
    }

    /// A new, empty namespace (its loopback down).
    pub fn new() -> io::Result<Self> {
        thread::spawn(|| {
            // SAFETY: unshare(2) with a constant flag; only this thread
            // moves, and it ends here.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            let file = File::open("/proc/thread-self/ns/net")?;
            let inode = file.metadata()?.ino();
            Ok(Self { file, inode })
        })
        .join()
        .expect("the thread making a network namespace panicked")
    }

    /// Its inode, as `lsns -t net` and `netmon list --netns` name it.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// Runs `work` on a thread inside the namespace: sockets it makes
    /// belong to the namespace, wherever they are used afterwards.
    pub fn run_in<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        let fd = self.file.as_raw_fd();
        thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(fd).expect("setns into the test's network namespace");
                    work()
                })
                .join()
                .expect("a thread in the test's network namespace panicked")
        })
    }

    /// Makes `command` run inside the namespace (its mount namespace, and
    /// so its view of /sys, the caller's).
    pub fn confine(&self, command: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: only setns(2) between fork and exec; the descriptor is
        // the parent's, inherited by the fork and valid until exec.
        unsafe {
            command.pre_exec(move || enter(fd));
        }
    }

    /// `ip ARGS` inside the namespace, which must succeed.
    fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut command = Command::new("ip");
        command.args(args);
        self.confine(&mut command);
        let output = command.output()?;
        if output.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}

fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor of a network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
