//! Where a connection was made: the network namespace and cgroup of its
//! socket or task, at the offsets of
//! [`Config::context`](netmon_common::Config::context).
//!
//! Each read is best effort: an offset the kernel's BTF did not give, or a
//! read that fails, leaves the answer 0 (unknown), never the event unsent.
use aya_ebpf::helpers::generated::{bpf_get_current_cgroup_id, bpf_get_current_task};

use crate::{
    maps::config,
    mem::{Memory, Probed},
};

/// The inode number of the network namespace `sk` belongs to, read as
/// `M` reads (`sk_net` is a typed pointer on every kernel).
#[inline(always)]
pub fn sock_netns<M: Memory>(sk: *const u8) -> u32 {
    let (net_at, inum_at) = (
        config(|c| &c.context.sk_net),
        config(|c| &c.context.net_inum),
    );
    if net_at == 0 || inum_at == 0 {
        return 0;
    }
    if sk.is_null() {
        return 0;
    }
    let net: u64 = M::read(sk, net_at).unwrap_or(0);
    if net == 0 {
        return 0;
    }
    M::read(net as *const u8, inum_at).unwrap_or(0)
}

/// The ID of the cgroup `sk` was created in: for connections completed in
/// softirq, where the current task is whoever was interrupted. Read as `M`
/// reads where the kernel's BTF types the pointer (5.15+); before, the
/// word is a tagged union, read with the helper (the verifier knows the
/// flag as a constant and never sees the typed path there).
#[inline(always)]
pub fn sock_cgroup<M: Memory>(sk: *const u8) -> u64 {
    let (data_at, kn_at, id_at) = (
        config(|c| &c.context.sk_cgroup),
        config(|c| &c.context.cgroup_kn),
        config(|c| &c.context.kn_id),
    );
    if data_at == 0 || kn_at == 0 || id_at == 0 {
        return 0;
    }
    if M::TYPED && config(|c| &c.context.sk_cgroup_typed) != 0 {
        if sk.is_null() {
            return 0;
        }
        let cgroup: u64 = M::read(sk, data_at).unwrap_or(0);
        if cgroup == 0 {
            return 0;
        }
        let kn: u64 = M::read(cgroup as *const u8, kn_at).unwrap_or(0);
        if kn == 0 {
            return 0;
        }
        return M::read(kn as *const u8, id_at).unwrap_or(0);
    }
    let cgroup: u64 = read(sk, data_at).unwrap_or(0);
    // Before 5.15 the word is a tagged union: a low bit set means it holds
    // net_cls/net_prio data, not a cgroup (the socket is then in the root).
    if cgroup == 0 || cgroup & 3 != 0 {
        return 0;
    }
    let kn: u64 = read(cgroup as *const u8, kn_at).unwrap_or(0);
    read(kn as *const u8, id_at).unwrap_or(0)
}

/// The cgroup of a connection on `sk`: the task's where one runs in the
/// process (`pid` non-zero), else the socket's.
#[inline(always)]
pub fn cgroup_of<M: Memory>(sk: *const u8, pid: u32) -> u64 {
    if pid != 0 {
        task_cgroup()
    } else {
        sock_cgroup::<M>(sk)
    }
}

/// The inode number of the current task's network namespace: where the
/// programs see the call's address but not its socket's insides.
#[inline(always)]
pub fn task_netns() -> u32 {
    let (nsproxy_at, net_at, inum_at) = (
        config(|c| &c.context.task_nsproxy),
        config(|c| &c.context.nsproxy_net),
        config(|c| &c.context.net_inum),
    );
    if nsproxy_at == 0 || net_at == 0 || inum_at == 0 {
        return 0;
    }
    // SAFETY: a helper call without arguments.
    let task = unsafe { bpf_get_current_task() };
    let nsproxy: u64 = read(task as *const u8, nsproxy_at).unwrap_or(0);
    let net: u64 = read(nsproxy as *const u8, net_at).unwrap_or(0);
    read(net as *const u8, inum_at).unwrap_or(0)
}

/// The current task's cgroup v2 ID.
#[inline(always)]
pub fn task_cgroup() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_get_current_cgroup_id() }
}

/// The `T` at `offset` in the kernel object at `base`; a null base fails.
#[inline(always)]
fn read<T: Copy>(base: *const u8, offset: u32) -> Result<T, i32> {
    if base.is_null() {
        return Err(0);
    }
    Probed::read(base, offset)
}
