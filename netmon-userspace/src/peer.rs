//! What one observation of a connection means, in userspace types.
//!
//! The kernel speaks in [`PeerEvent`]s of raw integers; everything past the
//! ring buffer works with a [`Connection`], whose fields cannot hold values
//! the rest of the program would have to re-check.
use std::{fmt, net::IpAddr};

use anyhow::{Context as _, bail};
use netmon_common::{
    COMM_LEN, DIRECTION_INBOUND, DIRECTION_OUTBOUND, PROTOCOL_TCP, PROTOCOL_UDP, PeerEvent,
    SOURCE_CGROUP_UDP, SOURCE_KPROBE_CONNECT, SOURCE_KRETPROBE_ACCEPT, SOURCE_TRACEPOINT,
};
use serde::{Deserialize, Serialize};

use crate::escape::Escaped;

/// Who opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// This host connected to the peer.
    Outbound,
    /// The peer connected to this host.
    Inbound,
}

impl TryFrom<u8> for Direction {
    type Error = anyhow::Error;

    fn try_from(raw: u8) -> anyhow::Result<Self> {
        match raw {
            DIRECTION_OUTBOUND => Ok(Self::Outbound),
            DIRECTION_INBOUND => Ok(Self::Inbound),
            other => bail!("unknown direction {other}"),
        }
    }
}

impl Direction {
    /// The name in logs and on the command line (`--direction in`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Outbound => "out",
            Self::Inbound => "in",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The directions a peer was seen in ([`PeerRecord::directions`]).
///
/// [`PeerRecord::directions`]: crate::store::PeerRecord::directions
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directions {
    pub outbound: bool,
    pub inbound: bool,
}

impl Directions {
    pub fn has(self, direction: Direction) -> bool {
        match direction {
            Direction::Outbound => self.outbound,
            Direction::Inbound => self.inbound,
        }
    }

    /// `None` for a peer only an address list named.
    pub fn as_str(self) -> Option<&'static str> {
        match (self.inbound, self.outbound) {
            (true, true) => Some("in+out"),
            (true, false) => Some("in"),
            (false, true) => Some("out"),
            (false, false) => None,
        }
    }
}

/// A transport protocol: what a port belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// As the checkpoint, nft, ipset and iptables all spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    /// From its spelling in [`Self::as_str`].
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"tcp" => Some(Self::Tcp),
            b"udp" => Some(Self::Udp),
            _ => None,
        }
    }
}

impl TryFrom<u8> for Protocol {
    type Error = anyhow::Error;

    fn try_from(raw: u8) -> anyhow::Result<Self> {
        match raw {
            PROTOCOL_TCP => Ok(Self::Tcp),
            PROTOCOL_UDP => Ok(Self::Udp),
            other => bail!("unknown protocol {other}"),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port of a protocol: `53/udp` and `53/tcp` are different services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Service {
    pub protocol: Protocol,
    pub port: u16,
}

impl Service {
    pub const fn tcp(port: u16) -> Self {
        Self {
            protocol: Protocol::Tcp,
            port,
        }
    }

    pub const fn udp(port: u16) -> Self {
        Self {
            protocol: Protocol::Udp,
            port,
        }
    }

    /// `53/udp`, as [`fmt::Display`] writes it; `None` for anything else.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let slash = text.iter().position(|&b| b == b'/')?;
        let (digits, protocol) = (&text[..slash], &text[slash + 1..]);
        if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(Self {
            protocol: Protocol::from_name(protocol)?,
            port: std::str::from_utf8(digits).ok()?.parse().ok()?,
        })
    }
}

/// As [`fmt::Display`] writes it, `"53/udp"`, as the checkpoint does.
impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// `5432/tcp`.
impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// Which hook saw the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    KprobeConnect,
    KretprobeAccept,
    Tracepoint,
    /// The cgroup programs on UDP sockets.
    CgroupUdp,
    /// The socket tables under /proc/net (proc mode and the start-up scan).
    SocketTable,
}

impl TryFrom<u8> for Source {
    type Error = anyhow::Error;

    fn try_from(raw: u8) -> anyhow::Result<Self> {
        match raw {
            SOURCE_KPROBE_CONNECT => Ok(Self::KprobeConnect),
            SOURCE_KRETPROBE_ACCEPT => Ok(Self::KretprobeAccept),
            SOURCE_TRACEPOINT => Ok(Self::Tracepoint),
            SOURCE_CGROUP_UDP => Ok(Self::CgroupUdp),
            other => bail!("unknown event source {other}"),
        }
    }
}

/// A process name as the kernel keeps it (`comm`): at most 15 bytes.
///
/// Stored inline so recording an event never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comm([u8; COMM_LEN]);

impl Comm {
    /// `None` for an all-zero (unknown) name.
    pub fn from_raw(raw: [u8; COMM_LEN]) -> Option<Self> {
        (raw[0] != 0).then_some(Self(raw))
    }

    /// Truncates to what the kernel would keep; `None` for an empty name.
    pub fn from_name(name: &str) -> Option<Self> {
        let mut raw = [0; COMM_LEN];
        let mut len = name.len().min(COMM_LEN - 1);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        raw[..len].copy_from_slice(&name.as_bytes()[..len]);
        Self::from_raw(raw)
    }

    /// All 16 bytes, NUL-padded.
    pub(crate) const fn raw(self) -> [u8; COMM_LEN] {
        self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        &self.0[..len]
    }

    /// The name to print: a process can put anything in it.
    pub fn escaped(&self) -> Escaped<'_> {
        Escaped::new(String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// As its (lossily decoded) name, like [`fmt::Display`].
impl Serialize for Comm {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

/// Who on this host made a connection: a systemd unit (`nginx.service`),
/// a container (`container:3f4e5a6b7c8d`) or a pod
/// (`pod:default/web-0/3f4e5a6b7c8d`).
///
/// Interned, so a record keeps four bytes per owner and recording an
/// event never allocates for a name seen before. The table holds at most
/// [`MAX_OWNERS`] names for the life of the process; past that, a new
/// name is recorded as no owner (and said once).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(u32);

/// Distinct owner names a process keeps.
pub const MAX_OWNERS: usize = 65_536;

/// Longest owner name kept, in bytes; longer ones are cut on a character
/// boundary.
pub const OWNER_LEN: usize = 256;

impl Owner {
    /// The owner named `name`; `None` for an empty name or a full table.
    pub fn new(name: &str) -> Option<Self> {
        let mut len = name.len().min(OWNER_LEN);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let name = &name[..len];
        if name.is_empty() {
            return None;
        }
        owners::intern(name)
    }

    pub fn name(self) -> std::sync::Arc<str> {
        owners::name(self.0)
    }

    /// Its number in the table, under [`MAX_OWNERS`]: what a record keeps.
    pub(crate) const fn id(self) -> u32 {
        self.0
    }

    /// The owner numbered `id` by [`Self::id`].
    pub(crate) const fn from_id(id: u32) -> Self {
        Self(id)
    }

    /// The name to print: a cgroup path can hold anything.
    pub fn escaped(self) -> Escaped<'static> {
        Escaped::new(std::borrow::Cow::Owned(self.name().to_string()))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Debug for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.name())
    }
}

impl Serialize for Owner {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

/// The process's table of owner names.
mod owners {
    use std::{
        collections::HashMap,
        sync::{Arc, RwLock},
    };

    use super::{MAX_OWNERS, Owner};

    #[derive(Default)]
    struct Table {
        names: Vec<Arc<str>>,
        ids: HashMap<Arc<str>, u32>,
        full_said: bool,
    }

    static TABLE: RwLock<Option<Table>> = RwLock::new(None);

    pub(super) fn intern(name: &str) -> Option<Owner> {
        if let Some(id) = TABLE
            .read()
            .ok()?
            .as_ref()
            .and_then(|table| table.ids.get(name).copied())
        {
            return Some(Owner(id));
        }
        let mut guard = TABLE.write().ok()?;
        let table = guard.get_or_insert_with(Table::default);
        if let Some(&id) = table.ids.get(name) {
            return Some(Owner(id));
        }
        if table.names.len() >= MAX_OWNERS {
            if !table.full_said {
                table.full_said = true;
                log::warn!(
                    "more than {MAX_OWNERS} distinct owners: new ones are recorded without an owner"
                );
            }
            return None;
        }
        let id = table.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        table.names.push(Arc::clone(&name));
        table.ids.insert(name, id);
        Some(Owner(id))
    }

    pub(super) fn name(id: u32) -> Arc<str> {
        TABLE
            .read()
            .ok()
            .and_then(|table| table.as_ref()?.names.get(id as usize).cloned())
            .unwrap_or_else(|| Arc::from("?"))
    }
}

/// One TCP connection, or UDP exchange, with a peer of either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    /// IPv4-mapped addresses are IPv4's: a dual-stack socket's IPv4 peer.
    pub peer: IpAddr,
    pub remote_port: u16,
    pub local_port: u16,
    pub protocol: Protocol,
    pub direction: Direction,
    /// The process on this host, where the hook runs in it.
    pub process: Option<Comm>,
    pub source: Source,
    /// Where it was made, as the kernel said; the collector resolves it
    /// into [`Self::netns`] and [`Self::owner`].
    pub origin: Origin,
    /// The network namespace, if not the host's (the one netmon watches
    /// from): its inode number.
    pub netns: Option<NetnsId>,
    /// The systemd unit or container that made it, where known.
    pub owner: Option<Owner>,
}

/// The kernel's word on where a connection was made; 0 is unknown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub pid: u32,
    pub cgroup: u64,
    pub netns: u32,
}

/// A network namespace other than the host's, by its inode number (as
/// `ls -l /proc/PID/ns/net` and `lsns` show it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetnsId(pub u32);

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<&PeerEvent> for Connection {
    type Error = anyhow::Error;

    fn try_from(event: &PeerEvent) -> anyhow::Result<Self> {
        Ok(Self {
            // 16 bytes whatever the family; a mapped IPv4 address is IPv4.
            peer: event.addr.ip(),
            remote_port: event.remote_port,
            local_port: event.local_port,
            protocol: Protocol::try_from(event.protocol).context("bad event from kernel")?,
            direction: Direction::try_from(event.direction).context("bad event from kernel")?,
            process: Comm::from_raw(event.comm),
            source: Source::try_from(event.source).context("bad event from kernel")?,
            origin: Origin {
                pid: event.pid,
                cgroup: event.cgroup,
                netns: event.netns,
            },
            netns: None,
            owner: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netmon_common::Addr;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn event_converts_with_network_order_address() {
        let mut comm = [0; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        let event = PeerEvent {
            addr: Addr::v4_mapped(u32::from_ne_bytes([10, 1, 2, 3])),
            remote_port: 443,
            local_port: 40000,
            pid: 7,
            direction: DIRECTION_OUTBOUND,
            source: SOURCE_TRACEPOINT,
            protocol: PROTOCOL_TCP,
            comm,
            ..PeerEvent::default()
        };
        let conn = Connection::try_from(&event).unwrap();
        assert_eq!(conn.peer, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(conn.direction, Direction::Outbound);
        assert_eq!(conn.process.unwrap().to_string(), "curl");
    }

    #[test]
    fn ipv6_peers_stay_ipv6_and_mapped_ones_become_ipv4() {
        let peer = |octets: [u8; 16]| {
            let event = PeerEvent {
                addr: Addr::from_octets(octets),
                direction: DIRECTION_OUTBOUND,
                source: SOURCE_TRACEPOINT,
                protocol: PROTOCOL_TCP,
                ..PeerEvent::default()
            };
            Connection::try_from(&event).unwrap().peer
        };
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x20);
        assert_eq!(peer(v6.octets()), IpAddr::V6(v6));
        // As a dual-stack socket's skc_v6_daddr holds an IPv4 peer.
        let mapped = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped();
        assert_eq!(peer(mapped.octets()), Ipv4Addr::new(192, 0, 2, 7));
    }

    #[test]
    fn unknown_direction_is_rejected() {
        let event = PeerEvent {
            direction: 9,
            source: SOURCE_TRACEPOINT,
            protocol: PROTOCOL_TCP,
            ..PeerEvent::default()
        };
        assert!(Connection::try_from(&event).is_err());
    }

    #[test]
    fn services_parse_as_they_print() {
        for service in [Service::tcp(5432), Service::udp(53), Service::udp(0)] {
            assert_eq!(
                Service::parse(service.to_string().as_bytes()),
                Some(service)
            );
        }
        for bad in [
            "53",
            "53/sctp",
            "/udp",
            "123456/tcp",
            "53/udp/",
            "5a/tcp",
            "53/UDP",
        ] {
            assert_eq!(Service::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn comm_truncates_on_char_boundary() {
        let comm = Comm::from_name("ééééééééé").unwrap();
        assert_eq!(comm.as_bytes().len(), 14);
        assert!(Comm::from_name("").is_none());
    }

    #[test]
    fn directions_name() {
        let names: Vec<_> = [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .map(|(outbound, inbound)| Directions { outbound, inbound }.as_str())
            .collect();
        assert_eq!(names, [None, Some("out"), Some("in"), Some("in+out")]);
    }
}
