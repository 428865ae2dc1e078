//! Puts netmon in a case's [`Setting`] between fork and exec, so only the
//! netmon of that case sees it and nothing needs undoing afterwards. Used
//! by the VMs' cases and by the host's integration tests alike.
use std::{io, os::unix::process::CommandExt as _, process::Command};

use crate::case::Setting;

pub fn apply(setting: Setting, command: &mut Command) {
    // SAFETY (both hooks): only raw syscalls on static data between fork
    // and exec; no allocation, no locks.
    match setting {
        Setting::Plain => {}
        Setting::NoEbpfCaps => unsafe {
            command.pre_exec(drop_ebpf_capabilities);
        },
        Setting::NoBtf => unsafe {
            command.pre_exec(hide_btf);
        },
    }
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const EBPF_CAPABILITIES: [u32; 3] = [CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN];
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Root's exec grants it the bounding set plus the inheritable set, so a
/// capability is gone for netmon once it is out of both.
fn drop_ebpf_capabilities() -> io::Result<()> {
    for cap in EBPF_CAPABILITIES {
        // SAFETY: prctl with integer arguments.
        let ret = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        match check(ret.into()) {
            // A kernel older than the capability (CAP_BPF and CAP_PERFMON
            // came in 5.8) cannot grant it anyway.
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {}
            other => other?,
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: version 3 takes two CapData; both pointers are valid.
    check(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    for cap in EBPF_CAPABILITIES {
        let (word, bit) = ((cap / 32) as usize, 1u32 << (cap % 32));
        data[word].effective &= !bit;
        data[word].permitted &= !bit;
        data[word].inheritable &= !bit;
    }
    // SAFETY: as for capget.
    check(unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) })
}

/// An empty file over the kernel's BTF, in a mount namespace of netmon's
/// own.
fn hide_btf() -> io::Result<()> {
    // SAFETY: unshare and mount with static NUL-terminated strings.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS).into())?;
        let private = libc::MS_REC | libc::MS_PRIVATE;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            )
            .into(),
        )?;
        check(
            libc::mount(
                c"/dev/null".as_ptr(),
                c"/sys/kernel/btf/vmlinux".as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
            .into(),
        )
    }
}
