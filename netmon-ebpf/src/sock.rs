//! Reading a connection's peer out of `struct sock`, at the offsets of
//! [`Config::sock`](netmon_common::Config::sock), by either of the two
//! ways a program may read kernel memory ([`Memory`]).
use netmon_common::{AF_INET, AF_INET6, Addr, PROTOCOL_TCP, PeerEvent};

use crate::{maps::config, mem::Memory, origin};

/// The peer of TCP socket `sk` (non-null) as an event stamped with `pid`
/// (0: none, the hook runs in softirq), its network namespace and cgroup;
/// `None` for a family other than IPv4 and IPv6.
///
/// An IPv4 socket's peer is 4 bytes within the head, mapped with constant
/// stores, so IPv6 adds no read to the IPv4 path.
#[inline(always)]
pub fn peer_event<M: Memory>(
    sk: *const u8,
    direction: u8,
    source: u8,
    pid: u32,
) -> Result<Option<PeerEvent>, i32> {
    let head = M::head(sk)?;
    let addr = match head.family {
        AF_INET => Addr::v4_mapped(head.daddr),
        // An IPv4 peer of a dual-stack socket is mapped here already.
        AF_INET6 => Addr(M::read(sk, config(|c| &c.sock.v6_daddr))?),
        _ => return Ok(None),
    };
    Ok(Some(PeerEvent {
        addr,
        remote_port: u16::from_be(head.dport),
        local_port: head.num,
        direction,
        source,
        pid,
        protocol: PROTOCOL_TCP,
        cgroup: origin::cgroup_of::<M>(sk, pid),
        netns: origin::sock_netns::<M>(sk),
        ..PeerEvent::default()
    }))
}
