//! Markers: sockets of netmon's own, closed at the end, one on each CPU,
//! to know when the kernel has sent the destroy notifications of every
//! socket destroyed before.
//!
//! The kernel announces a destroyed socket from a queue of the CPU that
//! destroyed it, in order, some time after the socket has left the tables
//! (milliseconds, more on a busy machine). Once a marker's notification
//! has come, so have those of the sockets its CPU destroyed before it.
use std::{
    collections::HashSet,
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use super::diag::{socket, zero_or_errno};

/// One marker for each CPU netmon may run on; none where the kernel cannot
/// name a socket's cookie.
#[derive(Default)]
pub struct Markers(Vec<Marker>);

/// A socket to be closed on `cpu`, and its cookie.
struct Marker {
    cpu: usize,
    socket: OwnedFd,
    cookie: u64,
}

impl Markers {
    /// A marker for each CPU this thread may run on, made in its network
    /// namespace (at start: by the end netmon may no longer enter another
    /// namespace): a TCP socket that never connects (no peer, no port,
    /// nothing a poll reports), and its cookie (`SO_COOKIE`, Linux 4.12+).
    pub fn new() -> io::Result<Self> {
        let cpus = affinity()?;
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: cpu is below CPU_SETSIZE.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &cpus) })
            .map(|cpu| {
                let socket = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
                let cookie = cookie(&socket)?;
                Ok(Marker {
                    cpu,
                    socket,
                    cookie,
                })
            })
            .collect::<io::Result<_>>()
            .map(Self)
    }

    /// Closes each marker on its CPU, and returns their cookies: the
    /// notifications to wait for.
    pub fn close(self) -> HashSet<u64> {
        let ours = affinity();
        let cookies = self
            .0
            .into_iter()
            .map(|marker| {
                // One not pinned (its CPU went offline) is still waited for.
                if ours.is_ok() {
                    let mut one = empty_cpu_set();
                    // SAFETY: cpu is below CPU_SETSIZE: it came from a set.
                    unsafe { libc::CPU_SET(marker.cpu, &mut one) };
                    let _ = set_affinity(&one);
                }
                drop(marker.socket);
                marker.cookie
            })
            .collect();
        if let Ok(ours) = ours {
            let _ = set_affinity(&ours);
        }
        cookies
    }
}

fn cookie(socket: &OwnedFd) -> io::Result<u64> {
    let mut cookie = 0u64;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: cookie and len are valid for writes of len bytes.
    zero_or_errno(unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    })?;
    Ok(cookie)
}

fn empty_cpu_set() -> libc::cpu_set_t {
    // SAFETY: an all-zero cpu_set_t is the empty set.
    unsafe { std::mem::zeroed() }
}

/// The CPUs this thread may run on.
fn affinity() -> io::Result<libc::cpu_set_t> {
    let mut set = empty_cpu_set();
    // SAFETY: set is a cpu_set_t of the size given; 0 is this thread.
    zero_or_errno(unsafe { libc::sched_getaffinity(0, size_of_val(&set), &mut set) })?;
    Ok(set)
}

fn set_affinity(set: &libc::cpu_set_t) -> io::Result<()> {
    // SAFETY: set is a cpu_set_t of the size given; 0 is this thread.
    zero_or_errno(unsafe { libc::sched_setaffinity(0, size_of_val(set), set) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn there_is_a_marker_for_each_cpu_this_thread_may_run_on() {
        let before = affinity().unwrap();
        // SAFETY: a plain cpu_set_t.
        let cpus = usize::try_from(unsafe { libc::CPU_COUNT(&before) }).unwrap();
        let markers = Markers::new().unwrap();
        assert_eq!(markers.0.len(), cpus);
        let cookies = markers.close();
        assert_eq!(cookies.len(), cpus, "cookies are unique");
        // SAFETY: both are plain cpu_set_t values.
        assert!(unsafe { libc::CPU_EQUAL(&before, &affinity().unwrap()) });
    }
}
