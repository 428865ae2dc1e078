//! Reading a connection's peer out of `struct sock`, at the offsets of
//! [`Config::sock`](netmon_common::Config::sock).
use aya_ebpf::helpers::bpf_probe_read_kernel;
use netmon_common::{AF_INET, AF_INET6, PROTOCOL_TCP, PeerEvent};

use crate::{maps::config, origin};

/// The IPv4 peer of TCP socket `sk` (non-null) as an event stamped with
/// `pid` (0: none, the hook runs in softirq), its network namespace and
/// cgroup; `None` for any other family, or an IPv6 peer that is not
/// v4-mapped.
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
        AF_INET => head.field(sk, config(|c| &c.sock.daddr))?,
        AF_INET6 => match v4_mapped(read_sock(sk, config(|c| &c.sock.v6_daddr))?) {
            Some(addr) => addr,
            None => return Ok(None),
        },
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

/// The IPv4 address in an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`).
pub fn v4_mapped(v6: [u32; 4]) -> Option<u32> {
    (v6[0] == V4_MAPPED_PREFIX[0] && v6[1] == V4_MAPPED_PREFIX[1] && v6[2] == V4_MAPPED_PREFIX[2])
        .then_some(v6[3])
}

/// The first 12 bytes of an IPv4-mapped IPv6 address (`::ffff:0:0/96`), as
/// three native-endian words read straight from memory.
const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, u32::from_ne_bytes([0, 0, 0xff, 0xff])];

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
