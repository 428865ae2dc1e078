//! The checkpoint format, defined once.
//!
//! A checkpoint is one JSON object: a header, then `peers`, one object a
//! line, in address order:
//!
//! ```text
//! {"version":2,"host":"web-1","addresses":["10.0.0.1"],"updated":"2026-11-28T16:00:33Z","mode":"tracepoint","lost_events":0,"uncounted_connections":0,"peers":[
//! {"ip":"10.0.0.7","first_seen":"2026-11-28T15:58:02Z","last_seen":"2026-11-28T16:00:33Z","outbound":3,"inbound":0,"remote_ports":["5432/tcp"],"local_ports":[],"processes":["api-server"]}
//! ]}
//! ```
//!
//! A peer's fields are the list in `peer_fields!`'s one invocation
//! below: each field's Rust type, the [`Codec`] of its JSON value, whether
//! a file may leave it out, and how two records of one peer combine. The
//! [`PeerRecord`] struct, its merge, the fast writer's line, both layouts
//! of the fast reader and the serde fallback's struct are all expanded
//! from that list, so they cannot disagree, and a new field is one entry
//! in it (plus, if the collector fills it in, a line in `PeerRecord::add`).
//!
//! The header is small and written by hand; its three readings (written,
//! read fast, read by serde) are kept together here.
use std::{borrow::Cow, io, net::IpAddr};

use serde::Deserialize;
use smallvec::SmallVec;

use super::{
    CappedSet, PeerKey, Snapshot,
    fallback::{CappedIn, OwnerName, PeersIn, PortIn, ProcessName},
    reader::{Cursor, Fields},
    set::FilePeers,
    writer::LineWriter,
};
use crate::{
    peer::{Comm, Owner, Service},
    time::UnixTime,
};

/// The checkpoint format this build writes.
///
/// 2 added the host's own `addresses` to the header, and wrote ports as
/// `"PORT/PROTOCOL"` strings (1 wrote bare numbers, all TCP). 3 records
/// UDP ports (`"53/udp"`), each peer's `owners`, and peers of other
/// network namespaces (a `netns` after the address; none for the host's).
/// 4 records IPv6 peers and addresses (`"fd00::1"`, as RFC 5952 writes
/// them; IPv4-mapped ones are written as IPv4), which no older reader
/// knows. Versions 1 to 3 still load.
pub const FORMAT_VERSION: u32 = 4;

/// The oldest checkpoint format this build reads.
pub const OLDEST_VERSION: u32 = 1;

/// Most own addresses the fast reader takes from a header (more go to
/// serde), and the collector records.
pub const MAX_ADDRESSES: usize = 4096;

/// How one kind of field's value is written and read, on each path.
pub(super) trait Codec {
    /// The value as the record holds it.
    type Value;
    /// What the serde fallback reads the value as.
    type Serde: for<'de> Deserialize<'de> + Into<Self::Value>;

    /// Appends the value's JSON to the line being written.
    fn write(value: &Self::Value, line: &mut LineWriter);

    /// Reads the value in any form the fast reader takes: `None` gives the
    /// file to serde.
    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<Self::Value>;

    /// Reads the value in exactly the form [`Self::write`] writes, where
    /// that can be read faster than [`Self::read`] reads any form.
    fn read_written<R: io::Read>(cursor: &mut Cursor<R>) -> Option<Self::Value> {
        Self::read(cursor)
    }
}

/// Seconds since the epoch as an RFC 3339 string.
pub(super) struct Time;

impl Codec for Time {
    type Value = u64;
    type Serde = UnixTime;

    #[inline]
    fn write(value: &u64, line: &mut LineWriter) {
        line.time(*value);
    }

    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<u64> {
        cursor.time()
    }

    fn read_written<R: io::Read>(cursor: &mut Cursor<R>) -> Option<u64> {
        cursor.written_time()
    }
}

/// A plain unsigned integer.
pub(super) struct Count;

impl Codec for Count {
    type Value = u64;
    type Serde = u64;

    #[inline]
    fn write(value: &u64, line: &mut LineWriter) {
        line.u64(*value);
    }

    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<u64> {
        cursor.u64()
    }
}

/// A list of ports, written `"PORT/PROTOCOL"` (`"53/udp"`); a bare
/// number (version 1) is a TCP port.
pub(super) struct Ports;

impl Codec for Ports {
    type Value = CappedSet<Service>;
    type Serde = CappedIn<PortIn, Service>;

    #[inline]
    fn write(value: &CappedSet<Service>, line: &mut LineWriter) {
        line.list(value, |line, service| {
            line.raw(b"\"");
            line.u64(u64::from(service.port));
            line.raw(b"/");
            line.raw(service.protocol.as_str().as_bytes());
            line.raw(b"\"");
        });
    }

    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<CappedSet<Service>> {
        cursor.list(|cursor| {
            if cursor.peek()? == b'"' {
                // Not checked to be UTF-8 first: a port is ASCII or nothing.
                Service::parse(cursor.raw_string()?).map(Some)
            } else {
                u16::try_from(cursor.u64()?)
                    .ok()
                    .map(Service::tcp)
                    .map(Some)
            }
        })
    }
}

/// A list of owners (systemd units, containers); an empty name is none.
pub(super) struct Owners;

impl Codec for Owners {
    type Value = CappedSet<Owner>;
    type Serde = CappedIn<OwnerName, Owner>;

    #[inline]
    /// Sorted by name, as the other lists are by value: the set keeps them
    /// in the order they were first named.
    fn write(value: &CappedSet<Owner>, line: &mut LineWriter) {
        let mut names: SmallVec<[std::sync::Arc<str>; 2]> =
            value.iter().map(|owner| owner.name()).collect();
        names.sort_unstable();
        line.raw(b"[");
        for (index, name) in names.iter().enumerate() {
            if index > 0 {
                line.raw(b",");
            }
            line.text(name);
        }
        line.raw(b"]");
    }

    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<CappedSet<Owner>> {
        cursor.list(|cursor| cursor.string().map(|name| Owner::new(&name)))
    }
}

/// A list of process names; an empty name is no process.
pub(super) struct Processes;

impl Codec for Processes {
    type Value = CappedSet<Comm>;
    type Serde = CappedIn<ProcessName, Comm>;

    #[inline]
    fn write(value: &CappedSet<Comm>, line: &mut LineWriter) {
        line.list(value, LineWriter::comm);
    }

    fn read<R: io::Read>(cursor: &mut Cursor<R>) -> Option<CappedSet<Comm>> {
        cursor.list(|cursor| cursor.string().map(|name| Comm::from_name(&name)))
    }
}

/// How a field of two records of one peer combine.
mod fold {
    use super::CappedSet;
    use crate::store::InlineItem;

    pub fn earliest(kept: &mut u64, other: &u64) {
        *kept = (*kept).min(*other);
    }

    pub fn latest(kept: &mut u64, other: &u64) {
        *kept = (*kept).max(*other);
    }

    /// Saturating: a hostile file must not overflow a count.
    pub fn sum(kept: &mut u64, other: &u64) {
        *kept = kept.saturating_add(*other);
    }

    /// Within the set's cap.
    pub fn union<T: InlineItem + Ord + Copy>(kept: &mut CappedSet<T>, other: &CappedSet<T>) {
        other.iter().for_each(|item| kept.insert(item));
    }
}

/// Expands a peer's field list into everything that reads, writes or
/// holds a peer; see the module's documentation. Each entry is
///
/// `name: RustType as Codec [or default], merged by fold_function;`
///
/// where `or default` lets a file leave the field out (it then reads as
/// the type's default), and the fold function is one of [`fold`]'s.
macro_rules! peer_fields {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident: $ty:ty as $codec:ident $(or $default:ident)?, merged by $fold:ident;
    )*) => {
        /// What is known about one peer.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct PeerRecord {
            $($(#[doc = $doc])* pub $name: $ty,)*
        }

        impl PeerRecord {
            /// Folds in another record of the same peer, each field as the
            /// schema says.
            pub(super) fn merge(&mut self, other: &Self) {
                $(fold::$fold(&mut self.$name, &other.$name);)*
            }
        }

        /// The keys of a peer object: the address and its network
        /// namespace, then the fields.
        const PEER_KEYS: &[&[u8]] = &[b"ip", b"netns", $(stringify!($name).as_bytes()),*];
        const _: () = assert!(PEER_KEYS.len() <= Fields::MAX);

        /// A peer as netmon writes it: its fields in order, no whitespace;
        /// `netns` only for a namespace other than the host's.
        pub(super) fn write_peer(line: &mut LineWriter, key: PeerKey, record: &PeerRecord) {
            line.raw(b"{\"ip\":");
            line.ip(key.ip());
            if key.netns != 0 {
                line.raw(b",\"netns\":");
                line.u64(u64::from(key.netns));
            }
            $(
                line.raw(concat!(",\"", stringify!($name), "\":").as_bytes());
                <$codec as Codec>::write(&record.$name, line);
            )*
            line.raw(b"}");
        }

        /// A peer in exactly the layout [`write_peer`] writes, field
        /// names compared whole; `None` if it is in any other.
        pub(super) fn read_written_peer<R: io::Read>(
            cursor: &mut Cursor<R>,
        ) -> Option<(PeerKey, PeerRecord)> {
            cursor.literal(b"{\"ip\":")?;
            let ip = cursor.ip()?;
            let netns = match cursor.literal(b",\"netns\":") {
                Some(()) => u32::try_from(cursor.u64()?).ok()?,
                None => 0,
            };
            $(
                cursor.literal(concat!(",\"", stringify!($name), "\":").as_bytes())?;
                let $name = <$codec as Codec>::read_written(cursor)?;
            )*
            cursor.literal(b"}")?;
            Some((PeerKey::new(netns, ip), PeerRecord { $($name),* }))
        }

        /// A peer as any JSON object of its fields, in any order, the ones
        /// a file may leave out left out; `None` for a field twice, or one
        /// the schema does not know.
        pub(super) fn read_any_peer<R: io::Read>(
            cursor: &mut Cursor<R>,
        ) -> Option<(PeerKey, PeerRecord)> {
            let mut fields = Fields::default();
            let mut ip = None;
            let mut netns = 0;
            $(let mut $name = None;)*
            cursor.object(PEER_KEYS, |cursor, key| {
                let key = fields.once(key)?;
                if key == 0 {
                    ip = Some(cursor.ip()?);
                    return Some(());
                }
                if key == 1 {
                    netns = u32::try_from(cursor.u64()?).ok()?;
                    return Some(());
                }
                let mut index = 1;
                $(
                    index += 1;
                    if key == index {
                        $name = Some(<$codec as Codec>::read(cursor)?);
                        return Some(());
                    }
                )*
                None
            })?;
            $($(let $name = $name.or_else(|| Some(<$ty as Default>::$default()));)?)*
            Some((PeerKey::new(netns, ip?), PeerRecord { $($name: $name?),* }))
        }

        /// One peer as serde reads it: each field parsed straight into the
        /// record's type, so a peer allocates nothing but the lists it
        /// keeps. Errors carry the line and column of the offending value.
        #[derive(Deserialize)]
        pub(super) struct PeerIn {
            ip: IpAddr,
            #[serde(default)]
            netns: u32,
            $($(#[serde($default)])? $name: <$codec as Codec>::Serde,)*
        }

        impl PeerIn {
            pub(super) fn into_record(self) -> (PeerKey, PeerRecord) {
                let key = PeerKey::new(self.netns, self.ip);
                (key, PeerRecord { $($name: self.$name.into()),* })
            }
        }
    };
}

peer_fields! {
    /// When the peer was first seen, in seconds since the Unix epoch.
    first_seen: u64 as Time, merged by earliest;
    /// When the peer was last seen, in seconds since the Unix epoch.
    last_seen: u64 as Time, merged by latest;
    /// Connections this host opened to the peer.
    outbound: u64 as Count, merged by sum;
    /// Connections the peer opened to this host.
    inbound: u64 as Count, merged by sum;
    /// Ports of the peer that we connected to.
    remote_ports: CappedSet<Service> as Ports or default, merged by union;
    /// Our ports that the peer connected to.
    local_ports: CappedSet<Service> as Ports or default, merged by union;
    /// Local processes seen on the connections.
    processes: CappedSet<Comm> as Processes or default, merged by union;
    /// The systemd units and containers that made the connections.
    owners: CappedSet<Owner> as Owners or default, merged by union;
}

/// The header's keys, in the order netmon writes them.
const HEADER_KEYS: &[&[u8]] = &[
    b"version",
    b"host",
    b"addresses",
    b"updated",
    b"mode",
    b"lost_events",
    b"uncounted_connections",
    b"peers",
];

/// Writes the header, up to the opening of the peer list.
pub(super) fn write_header(
    out: &mut impl io::Write,
    snapshot: &Snapshot,
    host: &str,
    now: u64,
) -> io::Result<()> {
    out.write_all(b"{\"version\":")?;
    serde_json::to_writer(&mut *out, &FORMAT_VERSION)?;
    out.write_all(b",\"host\":")?;
    serde_json::to_writer(&mut *out, host)?;
    out.write_all(b",\"addresses\":")?;
    serde_json::to_writer(&mut *out, &snapshot.addresses)?;
    out.write_all(b",\"updated\":")?;
    serde_json::to_writer(&mut *out, &UnixTime::from_secs(now))?;
    if let Some(mode) = &snapshot.mode {
        out.write_all(b",\"mode\":")?;
        serde_json::to_writer(&mut *out, mode)?;
    }
    out.write_all(b",\"lost_events\":")?;
    serde_json::to_writer(&mut *out, &snapshot.lost_events)?;
    out.write_all(b",\"uncounted_connections\":")?;
    serde_json::to_writer(&mut *out, &snapshot.uncounted_connections)?;
    out.write_all(b",\"peers\":[")
}

/// A checkpoint as the fast reader reads it.
#[derive(Debug)]
pub(super) struct Checkpoint {
    pub version: u64,
    pub host: String,
    pub addresses: Vec<IpAddr>,
    pub mode: Option<String>,
    pub lost_events: u64,
    pub uncounted_connections: u64,
    pub peers: FilePeers,
}

/// The whole file, header and peers, on the fast path. `updated` must be
/// a plain string and is not kept.
pub(super) fn read_checkpoint<R: io::Read>(cursor: &mut Cursor<R>) -> Option<Checkpoint> {
    let mut fields = Fields::default();
    let (mut version, mut host, mut mode, mut peers) = (None, None, None, None);
    let mut addresses = Vec::new();
    let (mut lost_events, mut uncounted_connections) = (0, 0);
    cursor.object(HEADER_KEYS, |cursor, key| {
        match fields.once(key)? {
            0 => version = Some(cursor.u64()?),
            1 => host = Some(cursor.string()?.into_owned()),
            2 => addresses = cursor.addresses()?,
            3 => {
                cursor.string()?;
            }
            4 => mode = cursor.nullable(|cursor| cursor.string().map(Cow::into_owned))?,
            5 => lost_events = cursor.u64()?,
            6 => uncounted_connections = cursor.u64()?,
            _ => peers = Some(cursor.peers()?),
        }
        Some(())
    })?;
    cursor.end()?;
    Some(Checkpoint {
        version: version?,
        host: host?,
        addresses,
        mode,
        lost_events,
        uncounted_connections,
        peers: peers?,
    })
}

/// A checkpoint as serde reads it: the peers go into a set as they are
/// parsed, so a million-peer file never exists as a list too. `updated`
/// is not kept, and may hold anything.
#[derive(Deserialize)]
pub(super) struct CheckpointIn {
    pub version: u64,
    pub host: String,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub lost_events: u64,
    #[serde(default)]
    pub uncounted_connections: u64,
    pub peers: PeersIn,
}
