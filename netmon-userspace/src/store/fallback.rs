//! The serde path: any valid JSON, and errors that say where.
//!
//! What [`super::parse`] falls back to when the fast reader gives up (a
//! hand-edited file, an escape in a string, a field it does not know), and
//! the only reader of the old psutil poller's plain list of addresses.
use std::{marker::PhantomData, net::IpAddr};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;

use super::{
    CappedSet, FileFormat, InlineItem, PeerKey, PeerRecord, PeerSet, Snapshot, check_version,
    schema::{CheckpointIn, PeerIn},
};
use crate::peer::{Comm, Owner, Service};

/// Either format, with serde. Public so the fuzz target can hold the two
/// paths to the same answers.
pub fn parse_with_serde(bytes: &[u8], mtime: u64) -> anyhow::Result<(Snapshot, FileFormat)> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => {
            let items = serde_json::from_slice(bytes).context("invalid JSON")?;
            Ok((parse_address_list(items, mtime)?, FileFormat::AddressList))
        }
        Some(b'{') => Ok((parse_checkpoint(bytes)?, FileFormat::Checkpoint)),
        _ => {
            let _: serde_json::Value = serde_json::from_slice(bytes).context("invalid JSON")?;
            bail!("expected a JSON object or array")
        }
    }
}

/// Just the version, to say so when a checkpoint of another version fails
/// to parse as this one.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u64>,
}

/// Parses a checkpoint: errors carry the line and column of the offending
/// entry.
fn parse_checkpoint(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    // Checking UTF-8 once up front is cheaper than string by string.
    let text = std::str::from_utf8(bytes).context("not UTF-8")?;
    let file: CheckpointIn = match serde_json::from_str(text) {
        Ok(file) => file,
        Err(err) => {
            if let Ok(header) = serde_json::from_str::<VersionOnly>(text) {
                check_version(header.version)?;
            }
            return Err(err).context("malformed checkpoint");
        }
    };
    check_version(Some(file.version))?;
    Ok(Snapshot {
        host: Some(file.host),
        addresses: file
            .addresses
            .into_iter()
            .map(|ip| ip.to_canonical())
            .collect(),
        mode: file.mode,
        lost_events: file.lost_events,
        uncounted_connections: file.uncounted_connections,
        peers: file.peers.0,
    })
}

/// The old poller's list: addresses only, all dated `mtime`.
fn parse_address_list(items: Vec<serde_json::Value>, mtime: u64) -> anyhow::Result<Snapshot> {
    let mut peers = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let text = item
            .as_str()
            .ok_or_else(|| anyhow!("entry {index} is not a string: {item}"))?;
        let ip: IpAddr = text
            .trim()
            .parse()
            .map_err(|_| anyhow!("entry {index} is not an IPv4 address: {text:?}"))?;
        peers.push((PeerKey::host(ip), PeerRecord::new(mtime)));
    }
    Ok(Snapshot {
        peers: PeerSet::from_records(peers),
        ..Snapshot::default()
    })
}

/// A checkpoint's peers, read straight into a set.
pub(super) struct PeersIn(PeerSet);

impl<'de> Deserialize<'de> for PeersIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(PeersIn(PeerSet::default()))
    }
}

impl<'de> serde::de::Visitor<'de> for PeersIn {
    type Value = Self;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a list of peers")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        let mut records = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(peer) = seq.next_element::<PeerIn>()? {
            records.push(peer.into_record());
        }
        Ok(PeersIn(PeerSet::from_records(records)))
    }
}

/// A JSON list of `I` read straight into a [`CappedSet`] of `T`; items
/// that convert to `None` (an empty process name) are skipped.
pub(super) struct CappedIn<I, T: InlineItem>(CappedSet<T>, PhantomData<I>);

impl<I, T: InlineItem> Default for CappedIn<I, T> {
    fn default() -> Self {
        Self(CappedSet::default(), PhantomData)
    }
}

impl<I, T: InlineItem> From<CappedIn<I, T>> for CappedSet<T> {
    fn from(list: CappedIn<I, T>) -> Self {
        list.0
    }
}

impl<'de, I, T> Deserialize<'de> for CappedIn<I, T>
where
    I: Deserialize<'de> + Into<Option<T>>,
    T: InlineItem + Ord + Copy,
{
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<I, T>(PhantomData<(I, T)>);

        impl<'de, I: Deserialize<'de> + Into<Option<T>>, T: InlineItem + Ord + Copy>
            serde::de::Visitor<'de> for Items<I, T>
        {
            type Value = CappedSet<T>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut set = CappedSet::default();
                while let Some(item) = seq.next_element::<I>()? {
                    if let Some(value) = item.into() {
                        set.insert(value);
                    }
                }
                Ok(set)
            }
        }

        let set = deserializer.deserialize_seq(Items::<I, T>(PhantomData))?;
        Ok(Self(set, PhantomData))
    }
}

/// A port as any version writes it: a bare number (1, TCP) or
/// `"PORT/PROTOCOL"` (2 and later).
pub(super) struct PortIn(Service);

impl From<PortIn> for Option<Service> {
    fn from(port: PortIn) -> Self {
        Some(port.0)
    }
}

impl<'de> Deserialize<'de> for PortIn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Port;

        impl serde::de::Visitor<'_> for Port {
            type Value = PortIn;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a port: a number, or \"PORT/tcp\" or \"PORT/udp\"")
            }

            fn visit_u64<E: serde::de::Error>(self, port: u64) -> Result<PortIn, E> {
                u16::try_from(port)
                    .map(|port| PortIn(Service::tcp(port)))
                    .map_err(|_| E::custom(format!("port {port} is out of range")))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<PortIn, E> {
                Service::parse(text.as_bytes()).map(PortIn).ok_or_else(|| {
                    E::custom(format!(
                        "port {text:?} is not PORT/tcp or PORT/udp, PORT a number up to 65535"
                    ))
                })
            }
        }

        deserializer.deserialize_any(Port)
    }
}

/// A process name as read, without allocating; `None` when empty.
pub(super) struct ProcessName(Option<Comm>);

impl From<ProcessName> for Option<Comm> {
    fn from(name: ProcessName) -> Self {
        name.0
    }
}

impl<'de> Deserialize<'de> for ProcessName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Name;

        impl serde::de::Visitor<'_> for Name {
            type Value = ProcessName;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a process name")
            }

            // Borrowed in place: no copy of the string.
            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<ProcessName, E> {
                Ok(ProcessName(Comm::from_name(name)))
            }
        }

        deserializer.deserialize_str(Name)
    }
}

/// An owner's name as read; `None` when empty.
pub(super) struct OwnerName(Option<Owner>);

impl From<OwnerName> for Option<Owner> {
    fn from(name: OwnerName) -> Self {
        name.0
    }
}

impl<'de> Deserialize<'de> for OwnerName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Ok(OwnerName(Owner::new(&name)))
    }
}
