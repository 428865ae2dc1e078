//! What one observation of a connection means, in userspace types.
//!
//! The kernel speaks in [`PeerEvent`]s of raw integers; everything past the
//! ring buffer works with a [`Connection`], whose fields cannot hold values
//! the rest of the program would have to re-check.
use std::{fmt, net::Ipv4Addr};

use anyhow::{Context as _, bail};
use netmon_common::{
    COMM_LEN, DIRECTION_INBOUND, DIRECTION_OUTBOUND, PeerEvent, SOURCE_KPROBE_CONNECT,
    SOURCE_KRETPROBE_ACCEPT, SOURCE_TRACEPOINT,
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

/// Which hook saw the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    KprobeConnect,
    KretprobeAccept,
    Tracepoint,
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

/// One TCP (or, from the socket tables, UDP) connection with an IPv4 peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub peer: Ipv4Addr,
    pub remote_port: u16,
    pub local_port: u16,
    pub direction: Direction,
    /// The process on this host, where the hook runs in it.
    pub process: Option<Comm>,
    pub source: Source,
}

impl TryFrom<&PeerEvent> for Connection {
    type Error = anyhow::Error;

    fn try_from(event: &PeerEvent) -> anyhow::Result<Self> {
        Ok(Self {
            // `addr` holds the address's bytes in network order.
            peer: Ipv4Addr::from(event.addr.to_ne_bytes()),
            remote_port: event.remote_port,
            local_port: event.local_port,
            direction: Direction::try_from(event.direction).context("bad event from kernel")?,
            process: Comm::from_raw(event.comm),
            source: Source::try_from(event.source).context("bad event from kernel")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_converts_with_network_order_address() {
        let mut comm = [0; COMM_LEN];
        comm[..4].copy_from_slice(b"curl");
        let event = PeerEvent {
            addr: u32::from_ne_bytes([10, 1, 2, 3]),
            remote_port: 443,
            local_port: 40000,
            pid: 7,
            direction: DIRECTION_OUTBOUND,
            source: SOURCE_TRACEPOINT,
            comm,
            ..PeerEvent::default()
        };
        let conn = Connection::try_from(&event).unwrap();
        assert_eq!(conn.peer, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(conn.direction, Direction::Outbound);
        assert_eq!(conn.process.unwrap().to_string(), "curl");
    }

    #[test]
    fn unknown_direction_is_rejected() {
        let event = PeerEvent {
            direction: 9,
            source: SOURCE_TRACEPOINT,
            ..PeerEvent::default()
        };
        assert!(Connection::try_from(&event).is_err());
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
