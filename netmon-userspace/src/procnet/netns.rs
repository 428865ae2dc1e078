//! Reading another network namespace's socket tables (`--proc-net
//! /proc/PID/net`): sockets made in it, whatever thread reads them.
use std::{
    fs::File,
    io,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::Path,
};

use anyhow::Context as _;

use super::diag;

/// The network namespace whose sockets `dir` shows, when it is not
/// netmon's own. `dir` must be a `/proc/PID/net` (`/proc/net` is one).
pub(super) fn netns_of(dir: &Path) -> anyhow::Result<Option<File>> {
    let real = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    let ns = match real.parent() {
        Some(pid_dir) if real.file_name().is_some_and(|name| name == "net") => {
            pid_dir.join("ns/net")
        }
        _ => anyhow::bail!("{} is not a /proc/PID/net directory", dir.display()),
    };
    let theirs = ns
        .metadata()
        .with_context(|| format!("{} is not a /proc/PID/net directory", dir.display()))?;
    let ours = Path::new("/proc/thread-self/ns/net")
        .metadata()
        .context("cannot read /proc/thread-self/ns/net")?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Ok(None);
    }
    File::open(&ns)
        .map(Some)
        .with_context(|| format!("cannot open {}", ns.display()))
}

/// Runs `open` in `netns` (when given): a socket stays in the namespace it
/// was made in, whatever the thread does afterwards.
pub(super) fn in_netns<T>(
    netns: Option<&File>,
    open: impl FnOnce() -> io::Result<T>,
) -> io::Result<T> {
    let Some(netns) = netns else {
        return open();
    };
    let ours = File::open("/proc/thread-self/ns/net")?;
    setns(netns)?;
    let opened = open();
    setns(&ours)?;
    opened
}

fn setns(netns: &File) -> io::Result<()> {
    // SAFETY: setns(2) on an open namespace file; it changes only this
    // thread's network namespace.
    diag::zero_or_errno(unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) })
}
