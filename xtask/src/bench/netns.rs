//! A network namespace per storm.
//!
//! A storm leaves tens of thousands of TIME_WAIT sockets behind for 60 s.
//! In the host's namespace they would sit in the socket tables that the
//! next rows' proc-mode netmon and psutil poller walk, and slow them; in a
//! namespace of its own they go when it is deleted. A fresh namespace has
//! only `lo`, so no storm can send a packet outside 127.0.0.0/8 either.
use std::{
    fs::{self, File},
    io,
    net::Ipv6Addr,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::Command,
};

use anyhow::Context as _;

use crate::cmd::run_status;

/// Names start with this, then the bench's pid.
const PREFIX: &str = "netmon-bench-";
/// Where `ip netns` keeps its names.
const NAMED: &str = "/run/netns";

/// Deletes the namespaces of benches that are no longer running (one
/// interrupted with Ctrl-C runs no destructors).
pub fn remove_stale() {
    let Ok(entries) = fs::read_dir(NAMED) else {
        return;
    };
    for name in entries.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next());
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            delete(&name);
        }
    }
}

/// A named namespace (`ip netns`), deleted on drop.
pub struct Netns {
    name: String,
    file: File,
}

impl Netns {
    /// Creates the namespace and brings its loopback up.
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let name = format!("{PREFIX}{}-{label}", std::process::id());
        run_status(Command::new("ip").args(["netns", "add", &name]))?;
        let file = match File::open(Path::new(NAMED).join(&name)) {
            Ok(file) => file,
            Err(err) => {
                delete(&name);
                return Err(err).with_context(|| format!("cannot open network namespace {name}"));
            }
        };
        // From here on, drop deletes it whatever fails next.
        let netns = Self { file, name };
        run_status(Command::new("ip").args(["-n", &netns.name, "link", "set", "lo", "up"]))?;
        Ok(netns)
    }

    /// What moves the thread that calls it into the namespace (a stream of
    /// connections made by a thread of the bench's own).
    pub fn joiner(&self) -> anyhow::Result<impl FnOnce() -> io::Result<()> + Send + 'static> {
        let file = self
            .file
            .try_clone()
            .context("cannot duplicate a namespace's descriptor")?;
        Ok(move || {
            // SAFETY: setns(2) of this thread on a descriptor it owns.
            if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
    }

    /// Makes every address of `prefix`/64 local to the namespace (a route
    /// to `lo`, where no address need be added) and lets any socket bind
    /// one (`ip_nonlocal_bind`, which a route alone does not allow for
    /// IPv6), so a storm has as many IPv6 peers as it wants. Only ever in a
    /// namespace of the bench's own: never in the host's.
    pub fn route_local_v6(&self, prefix: Ipv6Addr) -> anyhow::Result<()> {
        let prefix = format!("{prefix}/64");
        run_status(
            Command::new("ip")
                .args(["-n", &self.name, "-6", "route", "add", "local"])
                .args([&prefix, "dev", "lo"]),
        )?;
        run_status(Command::new("ip").args([
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-qw",
            "net.ipv6.ip_nonlocal_bind=1",
        ]))
    }

    /// Makes `command` run inside the namespace.
    pub fn enter(&self, command: &mut Command) {
        let fd = self.file.as_raw_fd();
        // SAFETY: setns(2) on a descriptor the parent keeps open; nothing
        // between fork and exec allocates or locks.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

fn delete(name: &str) {
    if let Err(err) = run_status(Command::new("ip").args(["netns", "del", name])) {
        eprintln!("xtask: {err:#}");
    }
}
