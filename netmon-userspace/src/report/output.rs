//! Printing peers in the four report formats.
//!
//! Text and CSV share one list of [`Field`]s and one renderer per field;
//! JSON goes through serde, with the field names CSV uses in its header.
use std::{
    fmt::Write as _,
    io::{self, Write},
    net::IpAddr,
};

use serde::{Serialize, Serializer};

use super::{
    Detail, Format, Peer,
    table::{self, Align, Column, Table},
};
use crate::{
    classify::Class,
    peer::{Comm, Owner, Service},
    store::{CappedSet, InlineItem, PeerRecord, decimal},
    time::UnixTime,
};

/// Peers ready to print.
pub struct Listing<'a> {
    rows: Vec<Peer<'a>>,
    detail: Detail,
}

impl<'a> Listing<'a> {
    /// `netmon list`'s peers.
    pub fn peers(peers: &[Peer<'a>], detail: Detail) -> Self {
        Self {
            rows: peers.to_vec(),
            detail,
        }
    }

    pub fn write(&self, out: &mut impl Write, format: Format) -> io::Result<()> {
        match format {
            Format::Text => table::write_text(out, &PeerTable::new(self, Style::Text)),
            Format::Csv => table::write_csv(out, &PeerTable::new(self, Style::Csv)),
            Format::Plain => write_plain(out, &self.rows),
            Format::Json => self.write_json_array(out),
        }
    }

    /// The peers as a JSON array, one peer per line.
    fn write_json_array(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(b"[")?;
        let mut empty = true;
        for peer in &self.rows {
            out.write_all(if empty { b"\n" } else { b",\n" })?;
            serde_json::to_writer(&mut *out, &JsonPeer::new(peer, self.detail))?;
            empty = false;
        }
        out.write_all(if empty { b"]\n" } else { b"\n]\n" })
    }
}

fn write_plain(out: &mut impl Write, rows: &[Peer<'_>]) -> io::Result<()> {
    let mut line = String::new();
    for peer in rows {
        line.clear();
        push_ip(&mut line, peer.ip);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    Ok(())
}

/// Headers for people, or the machine names JSON also uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    Text,
    Csv,
}

/// A column of the peer table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Address,
    Netns,
    Class,
    Direction,
    Outbound,
    Inbound,
    FirstSeen,
    LastSeen,
    RemotePorts,
    LocalPorts,
    Processes,
    Owners,
}

impl Field {
    /// The columns for `detail`; text leaves out first_seen to stay
    /// narrow.
    fn all(detail: Detail, style: Style) -> Vec<Self> {
        let recorded = match (detail, style) {
            (Detail::AddressesOnly, _) => &[][..],
            (Detail::Recorded, Style::Text) => &[
                Self::Direction,
                Self::Outbound,
                Self::Inbound,
                Self::LastSeen,
                Self::RemotePorts,
                Self::LocalPorts,
                Self::Processes,
                Self::Owners,
            ],
            (Detail::Recorded, Style::Csv) => &[
                Self::Direction,
                Self::Outbound,
                Self::Inbound,
                Self::FirstSeen,
                Self::LastSeen,
                Self::RemotePorts,
                Self::LocalPorts,
                Self::Processes,
                Self::Owners,
            ],
        };
        [Self::Address, Self::Class]
            .into_iter()
            .chain(recorded.iter().copied())
            .collect()
    }

    fn column(self, style: Style) -> Column {
        let (text, csv) = match self {
            Self::Address => ("ADDRESS", "ip"),
            Self::Netns => ("NETNS", "netns"),
            Self::Class => ("CLASS", "class"),
            Self::Direction => ("DIR", "direction"),
            Self::Outbound => ("OUT", "outbound"),
            Self::Inbound => ("IN", "inbound"),
            Self::FirstSeen => ("FIRST SEEN", "first_seen"),
            Self::LastSeen => ("LAST SEEN", "last_seen"),
            Self::RemotePorts => ("REMOTE PORTS", "remote_ports"),
            Self::LocalPorts => ("LOCAL PORTS", "local_ports"),
            Self::Processes => ("PROCESSES", "processes"),
            Self::Owners => ("OWNERS", "owners"),
        };
        let align = match self {
            Self::Outbound | Self::Inbound => Align::Right,
            _ => Align::Left,
        };
        Column {
            header: match style {
                Style::Text => text,
                Style::Csv => csv,
            },
            align,
        }
    }

    fn write(self, peer: &Peer<'_>, out: &mut String) {
        let record = peer.record;
        match self {
            Self::Address => push_ip(out, peer.ip),
            Self::Netns => {
                if let Some(netns) = peer.netns {
                    push_number(out, u64::from(netns.0));
                }
            }
            Self::Class => out.push_str(peer.class.as_str()),
            Self::Direction => out.push_str(record.directions().as_str().unwrap_or("")),
            Self::Outbound => push_number(out, record.outbound),
            Self::Inbound => push_number(out, record.inbound),
            Self::FirstSeen => push_time(out, record.first_seen),
            Self::LastSeen => push_time(out, record.last_seen),
            Self::RemotePorts => push_list(out, &record.remote_ports, push_port),
            Self::LocalPorts => push_list(out, &record.local_ports, push_port),
            Self::Processes => push_list(out, &record.processes, push_comm),
            Self::Owners => push_list(out, &record.owners, push_owner),
        }
    }
}

// The pushes below skip `core::fmt` for the cells every row has: a
// million rows make it worth it.

fn push_number(out: &mut String, n: u64) {
    // ASCII digits only.
    out.push_str(std::str::from_utf8(decimal(n, &mut [0; 20])).unwrap_or_default());
}

fn push_port(out: &mut String, service: Service) {
    push_number(out, u64::from(service.port));
    out.push('/');
    out.push_str(service.protocol.as_str());
}

fn push_owner(out: &mut String, owner: Owner) {
    let _ = write!(out, "{}", owner.escaped());
}

fn push_ip(out: &mut String, ip: IpAddr) {
    let ip = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{v6}");
            return;
        }
    };
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            out.push('.');
        }
        push_number(out, u64::from(octet));
    }
}

fn push_time(out: &mut String, secs: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", UnixTime::from_secs(secs));
}

fn push_list<T: InlineItem + Ord + Copy>(
    out: &mut String,
    list: &CappedSet<T>,
    push: fn(&mut String, T),
) {
    for (index, item) in list.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        push(out, item);
    }
}

/// A process name, escaped: a name must not be able to forge a line.
fn push_comm(out: &mut String, comm: Comm) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{}", comm.escaped());
}

struct PeerTable<'a> {
    rows: &'a [Peer<'a>],
    fields: Vec<Field>,
    columns: Vec<Column>,
}

impl<'a> PeerTable<'a> {
    fn new(listing: &'a Listing<'a>, style: Style) -> Self {
        let mut fields = Field::all(listing.detail, style);
        // Other namespaces' peers only with --netns: say whose they are.
        if listing.rows.iter().any(|peer| peer.netns.is_some()) {
            fields.insert(1, Field::Netns);
        }
        // A column of dashes is noise to people; CSV keeps its columns.
        if style == Style::Text
            && listing
                .rows
                .iter()
                .all(|peer| peer.record.owners.is_empty())
        {
            fields.retain(|field| *field != Field::Owners);
        }
        let columns = fields.iter().map(|field| field.column(style)).collect();
        Self {
            rows: &listing.rows,
            fields,
            columns,
        }
    }
}

impl Table for PeerTable<'_> {
    fn columns(&self) -> &[Column] {
        &self.columns
    }

    fn rows(&self) -> usize {
        self.rows.len()
    }

    fn cell(&self, row: usize, column: usize, out: &mut String) {
        self.fields[column].write(&self.rows[row], out);
    }
}

#[derive(Serialize)]
struct JsonPeer<'a> {
    ip: IpAddr,
    /// As in the checkpoint: only for another namespace than the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    netns: Option<u32>,
    class: Class,
    #[serde(flatten)]
    recorded: Option<JsonRecord<'a>>,
}

impl<'a> JsonPeer<'a> {
    fn new(peer: &Peer<'a>, detail: Detail) -> Self {
        Self {
            ip: peer.ip,
            netns: peer.netns.map(|id| id.0),
            class: peer.class,
            recorded: (detail == Detail::Recorded).then(|| JsonRecord::new(peer.record)),
        }
    }
}

/// What netmon recorded about a peer, named as in the checkpoint.
#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    first_seen: UnixTime,
    last_seen: UnixTime,
    outbound: u64,
    inbound: u64,
    #[serde(serialize_with = "sequence")]
    remote_ports: &'a CappedSet<Service>,
    #[serde(serialize_with = "sequence")]
    local_ports: &'a CappedSet<Service>,
    #[serde(serialize_with = "sequence")]
    processes: &'a CappedSet<Comm>,
    #[serde(serialize_with = "sequence")]
    owners: &'a CappedSet<Owner>,
}

impl<'a> JsonRecord<'a> {
    fn new(record: &'a PeerRecord) -> Self {
        Self {
            direction: record.directions().as_str(),
            first_seen: UnixTime::from_secs(record.first_seen),
            last_seen: UnixTime::from_secs(record.last_seen),
            outbound: record.outbound,
            inbound: record.inbound,
            remote_ports: &record.remote_ports,
            local_ports: &record.local_ports,
            processes: &record.processes,
            owners: &record.owners,
        }
    }
}

fn sequence<S: Serializer, T: Serialize + InlineItem + Ord + Copy>(
    list: &&CappedSet<T>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(list.iter())
}
