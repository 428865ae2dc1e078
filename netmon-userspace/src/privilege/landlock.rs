//! Landlock (Linux 5.13+): after start-up netmon may create, write, rename
//! and remove files only beneath its output directory, may execute nothing,
//! and, where the kernel's Landlock is new enough, may open no TCP
//! connection or listener and signal no process outside itself.
//!
//! Raw system calls: the ABI is a handful of integers and two structs.
use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    os::unix::fs::OpenOptionsExt as _,
    path::Path,
};

const SYS_CREATE_RULESET: libc::c_long = 444;
const SYS_ADD_RULE: libc::c_long = 445;
const SYS_RESTRICT_SELF: libc::c_long = 446;
const CREATE_RULESET_VERSION: u32 = 1;
const RULE_PATH_BENEATH: u32 = 1;

const FS_EXECUTE: u64 = 1 << 0;
const FS_WRITE_FILE: u64 = 1 << 1;
const FS_REMOVE_DIR: u64 = 1 << 4;
const FS_REMOVE_FILE: u64 = 1 << 5;
/// MAKE_CHAR, MAKE_DIR, MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM.
const FS_MAKE_ANY: u64 = 0b111_1111 << 6;
/// ABI 2.
const FS_REFER: u64 = 1 << 13;
/// ABI 3.
const FS_TRUNCATE: u64 = 1 << 14;
/// ABI 4: BIND_TCP and CONNECT_TCP.
const NET_TCP: u64 = 0b11;
/// ABI 6: ABSTRACT_UNIX_SOCKET and SIGNAL.
const SCOPE_ALL: u64 = 0b11;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// What else the domain of Landlock ABI `abi` forbids, for the log.
pub fn also_forbidden(abi: u32) -> &'static str {
    match abi {
        ..4 => "no exec",
        4..6 => "no exec, no new TCP connection or listener",
        _ => "no exec, no new TCP connection or listener, no signal to other processes",
    }
}

/// Why the process could not be confined.
pub enum Unconfined {
    /// This kernel has no Landlock, it is disabled, or a seccomp filter
    /// denies its system calls.
    Unsupported(io::Error),
    /// Landlock is there but refused the ruleset.
    Failed(io::Error),
}

/// Confines this thread (and what it later creates) as the module says;
/// returns the Landlock ABI version used. `no_new_privs` must be set.
pub fn restrict(writable: &Path) -> Result<u32, Unconfined> {
    // SAFETY: the version query takes no attribute.
    let abi = unsafe {
        libc::syscall(
            SYS_CREATE_RULESET,
            std::ptr::null::<RulesetAttr>(),
            0,
            CREATE_RULESET_VERSION,
        )
    };
    let abi =
        u32::try_from(abi).map_err(|_| Unconfined::Unsupported(io::Error::last_os_error()))?;
    let mut fs = FS_EXECUTE | FS_WRITE_FILE | FS_REMOVE_DIR | FS_REMOVE_FILE | FS_MAKE_ANY;
    if abi >= 2 {
        fs |= FS_REFER;
    }
    if abi >= 3 {
        fs |= FS_TRUNCATE;
    }
    let attr = RulesetAttr {
        handled_access_fs: fs,
        handled_access_net: if abi >= 4 { NET_TCP } else { 0 },
        scoped: if abi >= 6 { SCOPE_ALL } else { 0 },
    };
    // Older kernels reject fields they do not know, so pass only theirs.
    let size = match abi {
        ..4 => 8,
        4..6 => 16,
        _ => size_of::<RulesetAttr>(),
    };
    let ruleset = owned(unsafe {
        // SAFETY: `attr` outlives the call and `size` does not exceed it.
        libc::syscall(SYS_CREATE_RULESET, &attr, size, 0)
    })
    .map_err(Unconfined::Failed)?;
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
        .open(writable)
        .map_err(Unconfined::Failed)?;
    let rule = PathBeneathAttr {
        allowed_access: fs & !FS_EXECUTE,
        parent_fd: dir.as_raw_fd(),
    };
    // SAFETY: both descriptors are open and `rule` outlives the call.
    let added = unsafe {
        libc::syscall(
            SYS_ADD_RULE,
            ruleset.as_raw_fd(),
            RULE_PATH_BENEATH,
            &rule,
            0,
        )
    };
    check(added).map_err(Unconfined::Failed)?;
    // SAFETY: an open ruleset descriptor, no flags.
    check(unsafe { libc::syscall(SYS_RESTRICT_SELF, ruleset.as_raw_fd(), 0) })
        .map_err(Unconfined::Failed)?;
    Ok(abi)
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn owned(ret: libc::c_long) -> io::Result<OwnedFd> {
    check(ret)?;
    let fd = i32::try_from(ret).map_err(io::Error::other)?;
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
