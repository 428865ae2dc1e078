//! Least privilege: once the programs are attached and the files are open,
//! netmon needs no capability at all, and writes only its own directory.
//!
//! Reading maps and perf buffers goes through file descriptors it already
//! holds, and detaching at exit is closing descriptors. So after start-up
//! [`confine`] sets `no_new_privs`, confines writes to the output directory
//! with Landlock where the kernel has it, and empties every capability set:
//! bounding (which takes CAP_SETPCAP, so it goes first), ambient,
//! inheritable, permitted and effective.
use std::{fs, io, path::Path};

mod landlock;

pub use landlock::{Unconfined, also_forbidden as landlock_also};

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two words.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

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

/// What [`confine`] achieved beyond the capability sets it always empties.
pub struct Confined {
    /// The Landlock ABI writes are confined with, or why they are not.
    pub landlock: Result<u32, Unconfined>,
    /// The bounding set was emptied; it cannot be without CAP_SETPCAP
    /// (then `no_new_privs` keeps execve from gaining anything from it).
    pub bounding_emptied: bool,
}

/// Confines the calling thread for good: `no_new_privs`, writes only
/// beneath `writable` (Landlock), no capabilities in any set.
///
/// Capabilities and Landlock domains are per thread: call this before any
/// other thread exists (netmon runs a single-threaded runtime).
pub fn confine(writable: &Path) -> io::Result<Confined> {
    // A thread started earlier would keep everything dropped here.
    let threads = fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "{threads} threads: only the calling one would be confined"
        )));
    }
    // First and unconditionally: Landlock needs it, and nothing may skip it.
    // SAFETY: plain prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let landlock = landlock::restrict(writable);
    empty_bounding_set();
    let bounding_emptied = capability_set("CapBnd")? == 0;
    // SAFETY: plain prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and two data words, as capset(2) wants for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let sets = ["CapInh", "CapPrm", "CapEff", "CapAmb"];
    for set in sets {
        if capability_set(set)? != 0 {
            return Err(io::Error::other(format!(
                "{set} is not empty after dropping"
            )));
        }
    }
    Ok(Confined {
        landlock,
        bounding_emptied,
    })
}

/// Drops every capability from the bounding set, if the process may (it
/// takes CAP_SETPCAP).
fn empty_bounding_set() {
    for cap in 0..=last_cap() {
        // SAFETY: plain prctl; EINVAL for caps this kernel lacks is fine.
        let dropped = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if dropped != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
            return;
        }
    }
}

/// The effective set of this process, from /proc/self/status.
pub fn effective() -> io::Result<u64> {
    capability_set("CapEff")
}

/// One capability set (`CapEff`, `CapBnd`, …) from /proc/self/status.
fn capability_set(name: &str) -> io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| io::Error::other(format!("no {name} line in /proc/self/status")))
}

fn last_cap() -> u64 {
    fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(63)
}
