//! Reading a connection's peer out of `struct sock`, at the offsets of
//! [`Config::sock`](netmon_common::Config::sock).
use aya_ebpf::helpers::bpf_probe_read_kernel;
use netmon_common::{AF_INET, AF_INET6, Addr, PROTOCOL_TCP, PeerEvent};

use crate::{maps::config, origin};

/// The peer of TCP socket `sk` (non-null) as an event stamped with `pid`
/// (0: none, the hook runs in softirq), its network namespace and cgroup;
/// `None` for a family other than IPv4 and IPv6.
///
/// An IPv4 socket's peer is 4 bytes within the head, mapped with constant
/// stores, so IPv6 adds no read to the IPv4 path.
#[inline(always)]
pub fn peer_event(
    sk: *const u8,
    direction: u8,
    source: u8,
    pid: u32,
) -> Result<Option<PeerEvent>, i32> {
    let head = SockHead::read(sk)?;
    let family: u16 = head.field(sk, config(|c| &c.sock.family))?;
    let addr = match family {
        AF_INET => Addr::v4_mapped(head.field(sk, config(|c| &c.sock.daddr))?),
        // An IPv4 peer of a dual-stack socket is mapped here already.
        AF_INET6 => Addr(read_sock(sk, config(|c| &c.sock.v6_daddr))?),
        _ => return Ok(None),
    };
    let dport: u16 = head.field(sk, config(|c| &c.sock.dport))?;
    Ok(Some(PeerEvent {
        addr,
        remote_port: u16::from_be(dport),
        local_port: head.field(sk, config(|c| &c.sock.num))?,
        direction,
        source,
        pid,
        protocol: PROTOCOL_TCP,
        cgroup: origin::cgroup_of(sk, pid),
        netns: origin::sock_netns(sk),
        ..PeerEvent::default()
    }))
}

/// The start of `struct sock_common`, from `skc_daddr` on, read with one
/// helper call: family, address and ports lie within its first 18 bytes
/// in every kernel (the layout has not changed since 2.6), and one read
/// makes a run measurably shorter than four.
struct SockHead([u8; SOCK_HEAD_LEN]);

const SOCK_HEAD_LEN: usize = 24;

impl SockHead {
    fn read(sk: *const u8) -> Result<Self, i32> {
        read_sock(sk, config(|c| &c.sock.daddr)).map(Self)
    }

    /// The field at `offset`, from the head if it lies there (the
    /// offsets are load-time constants, so the verifier sees which),
    /// else read on its own.
    fn field<T: Copy>(&self, sk: *const u8, offset: u32) -> Result<T, i32> {
        let at = offset.wrapping_sub(config(|c| &c.sock.daddr)) as usize;
        match self.0.get(at..at.wrapping_add(size_of::<T>())) {
            // SAFETY: `bytes` holds size_of::<T>() bytes from `at`; T is
            // a plain integer.
            Some(bytes) => Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) }),
            None => read_sock(sk, offset),
        }
    }
}

/// The `T` at `offset` in `sk`.
pub fn read_sock<T>(sk: *const u8, offset: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address; a bad one only
    // makes it fail.
    unsafe { bpf_probe_read_kernel(sk.wrapping_add(offset as usize).cast()) }
}
