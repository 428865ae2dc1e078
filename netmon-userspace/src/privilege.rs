//! Least privilege: once the programs are attached and the files are open,
//! netmon needs no capability at all.
//!
//! Reading maps and perf buffers goes through file descriptors it already
//! holds, the checkpoint directory belongs to the user it runs as, and
//! detaching at exit is closing descriptors. So after start-up every
//! capability is dropped from the effective, permitted, inheritable,
//! ambient and bounding sets, and `no_new_privs` is set: a compromised
//! netmon is an unprivileged process.
use std::{fs, io};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `CAP_SETPCAP` from linux/capability.h.
const CAP_SETPCAP: u32 = 8;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops every capability of the calling thread for good.
///
/// Capabilities are per thread: call this before any other thread exists
/// (netmon runs a single-threaded runtime).
pub fn drop_all() -> io::Result<()> {
    // The bounding set first: dropping from it needs CAP_SETPCAP, which is
    // about to go. Without CAP_SETPCAP (an unprivileged run) there is
    // nothing to drop from it that could ever be regained anyway.
    if effective()? & (1 << CAP_SETPCAP) != 0 {
        for cap in 0..=last_cap() {
            // SAFETY: plain prctl; EINVAL for caps this kernel lacks is fine.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        }
    }
    // SAFETY: plain prctl calls with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and two data words, as capset(2) wants for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective set of this process, from /proc/self/status.
pub fn effective() -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no CapEff line in /proc/self/status"))
}

fn last_cap() -> u64 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(63)
}
