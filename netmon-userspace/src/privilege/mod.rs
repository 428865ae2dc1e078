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

/// `CAP_SYS_ADMIN`, and `CAP_BPF` (Linux 5.8+): what the `bpf()` system
/// call asks for, when it asks.
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_BPF: u32 = 39;

/// The capability reading the map behind `map` needs, if it needs one:
/// with `kernel.unprivileged_bpf_disabled` set, kernels before 6.x refuse
/// every `bpf()` call, even on a map's descriptor the caller holds, to a
/// process without CAP_BPF (Debian 11's 5.10). Found out by trying, in a
/// thread of its own without capabilities (they are per thread), so no
/// kernel version is guessed at.
pub fn map_reads_need(map: std::os::fd::BorrowedFd<'_>) -> io::Result<Option<u32>> {
    use std::os::fd::AsRawFd as _;
    let fd = map.as_raw_fd();
    let refused = std::thread::scope(|scope| {
        scope
            .spawn(move || -> io::Result<bool> {
                set_capabilities(0)?;
                Ok(first_key(fd).raw_os_error() == Some(libc::EPERM))
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the probing thread panicked")))
    })?;
    if !refused {
        return Ok(None);
    }
    Ok(Some(if last_cap() >= u64::from(CAP_BPF) {
        CAP_BPF
    } else {
        CAP_SYS_ADMIN
    }))
}

/// `BPF_MAP_GET_NEXT_KEY` with no key: the first key, ENOENT for an empty
/// map, EPERM where the call itself is refused.
fn first_key(fd: i32) -> io::Error {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: i64 = 4;
    let mut next = [0u8; 256];
    let attr = Attr {
        map_fd: fd as u32,
        _pad: 0,
        key: 0,
        next_key: next.as_mut_ptr() as u64,
        flags: 0,
    };
    // SAFETY: bpf(2) with an attribute union prefix of the right layout
    // and a next-key buffer larger than any key of netmon's maps.
    let done = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            &raw const attr,
            size_of::<Attr>(),
        )
    };
    if done == 0 {
        io::Error::from_raw_os_error(0)
    } else {
        io::Error::last_os_error()
    }
}

/// Sets this thread's permitted and effective sets to `caps` (a mask),
/// its inheritable set to none.
fn set_capabilities(caps: u64) -> io::Result<()> {
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let word = |n: u32| CapData {
        effective: (caps >> (32 * n)) as u32,
        permitted: (caps >> (32 * n)) as u32,
        inheritable: 0,
    };
    let data = [word(0), word(1)];
    // SAFETY: header and two data words, as capset(2) wants for version 3.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Confines the calling thread for good: `no_new_privs`, writes only
/// beneath `writable` (Landlock), no capabilities in any set but `keep`
/// (a capability number) in the permitted and effective ones.
///
/// Capabilities and Landlock domains are per thread: call this before any
/// other thread exists (netmon runs a single-threaded runtime).
pub fn confine(writable: &Path, keep: Option<u32>) -> io::Result<Confined> {
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
    let kept = keep.map_or(0, |cap| 1u64 << cap);
    set_capabilities(kept)?;
    for (set, want) in [
        ("CapInh", 0),
        ("CapPrm", kept),
        ("CapEff", kept),
        ("CapAmb", 0),
    ] {
        if capability_set(set)? != want {
            return Err(io::Error::other(format!(
                "{set} is not as set after dropping"
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
