//! The report commands: they read peer files and never need root.
//!
//! Every report starts the same way: [`Inputs::load`] reads and merges
//! the files, and a [`Filter`] picks the peers, in numeric order, each
//! with its [`Class`]. `netmon rules` starts the same way too.
mod diff;
mod merge;
mod output;
mod stats;
mod table;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use anyhow::anyhow;
use clap::ValueEnum;
use log::warn;

use self::output::Listing;
pub use self::{diff::DiffSets, merge::merge, stats::stats};
use crate::{
    classify::Class,
    cli::{FilterArgs, ListArgs},
    peer::Direction,
    store::{self, FileFormat, PeerRecord, Snapshot},
    time::UnixTime,
};

/// How a report prints peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// An aligned table for people.
    Text,
    /// One object per peer, with its class and recorded fields.
    Json,
    /// A header row, then one row per peer.
    Csv,
    /// One address per line, for other tools.
    Plain,
}

/// Whether the peers carry what netmon records, or only addresses.
///
/// An old poller's address list has no counts, ports or times; reports
/// leave those columns out rather than print made-up values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    AddressesOnly,
    Recorded,
}

/// Where a report's peers came from.
#[derive(Debug, Default)]
pub struct Sources {
    /// Every file read, with its format, in the order given.
    pub files: Vec<(PathBuf, FileFormat)>,
    /// The distinct hosts the checkpoints name, sorted.
    pub hosts: Vec<String>,
    /// The distinct attach modes the checkpoints name, sorted.
    pub modes: Vec<String>,
}

impl Sources {
    /// Reads every file into one snapshot; a missing or malformed file is
    /// an error naming it.
    pub fn read(paths: &[PathBuf]) -> anyhow::Result<(Snapshot, Self)> {
        let mut merged = Snapshot::default();
        let mut sources = Self::default();
        for path in paths {
            let (snapshot, format) = load_one(path)?;
            sources.files.push((path.clone(), format));
            sources.hosts.extend(snapshot.host);
            sources.modes.extend(snapshot.mode);
            merged.lost_events += snapshot.lost_events;
            merged.peers.merge(snapshot.peers);
        }
        sources.hosts.sort_unstable();
        sources.hosts.dedup();
        sources.modes.sort_unstable();
        sources.modes.dedup();
        Ok((merged, sources))
    }

    pub fn detail(&self) -> Detail {
        let recorded = self
            .files
            .iter()
            .any(|(_, format)| *format == FileFormat::Checkpoint);
        if recorded {
            Detail::Recorded
        } else {
            Detail::AddressesOnly
        }
    }

    /// The address lists among the inputs, which know no directions.
    fn address_lists(&self) -> impl Iterator<Item = &Path> {
        self.files
            .iter()
            .filter(|(_, format)| *format == FileFormat::AddressList)
            .map(|(path, _)| path.as_path())
    }
}

/// The peers of one or more files, merged.
#[derive(Debug, Default)]
pub struct Inputs {
    pub snapshot: Snapshot,
    pub sources: Sources,
}

impl Inputs {
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let (snapshot, sources) = Sources::read(paths)?;
        Ok(Self { snapshot, sources })
    }

    pub fn detail(&self) -> Detail {
        self.sources.detail()
    }
}

fn load_one(path: &Path) -> anyhow::Result<(Snapshot, FileFormat)> {
    store::load(path)?.ok_or_else(|| anyhow!("{}: no such file", path.display()))
}

/// The directions a peer was seen in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Directions {
    pub outbound: bool,
    pub inbound: bool,
}

impl Directions {
    /// Connections count, and so do ports: a record merged from files
    /// might carry a port whose connection was counted elsewhere.
    pub fn of(record: &PeerRecord) -> Self {
        Self {
            outbound: record.outbound > 0 || !record.remote_ports.is_empty(),
            inbound: record.inbound > 0 || !record.local_ports.is_empty(),
        }
    }

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

/// A set of classes, as one bit per [`Class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClassSet(u16);

impl ClassSet {
    const ALL: Self = Self(u16::MAX);

    fn bit(class: Class) -> u16 {
        1 << class as u16
    }

    fn contains(self, class: Class) -> bool {
        self.0 & Self::bit(class) != 0
    }
}

impl FromIterator<Class> for ClassSet {
    fn from_iter<I: IntoIterator<Item = Class>>(classes: I) -> Self {
        Self(
            classes
                .into_iter()
                .map(Self::bit)
                .fold(0, |set, bit| set | bit),
        )
    }
}

/// One selected peer.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub ip: Ipv4Addr,
    pub class: Class,
    pub record: &'a PeerRecord,
}

impl<'a> Peer<'a> {
    pub fn new(ip: Ipv4Addr, record: &'a PeerRecord) -> Self {
        Self {
            ip,
            class: Class::of(ip),
            record,
        }
    }
}

/// Which peers a report keeps: the command-line filters, resolved.
#[derive(Clone, Copy, Debug)]
pub struct Filter {
    classes: ClassSet,
    direction: Option<Direction>,
    /// Unix seconds; peers last seen before are left out.
    seen_since: Option<u64>,
}

impl Filter {
    /// `now` anchors `--since`.
    pub fn new(args: &FilterArgs, now: u64) -> Self {
        Self {
            classes: if args.classes.is_empty() {
                ClassSet::ALL
            } else {
                args.classes.iter().copied().collect()
            },
            direction: args.direction,
            seen_since: args.since.map(|since| now.saturating_sub(since.as_secs())),
        }
    }

    pub fn matches(&self, peer: &Peer<'_>) -> bool {
        self.classes.contains(peer.class)
            && self
                .direction
                .is_none_or(|direction| Directions::of(peer.record).has(direction))
            && self
                .seen_since
                .is_none_or(|since| peer.record.last_seen >= since)
    }

    /// The peers of `inputs` that match, in numeric order.
    ///
    /// Warns when a direction filter meets an address list, whose peers
    /// it can only leave out.
    pub fn select<'a>(&self, inputs: &'a Inputs) -> Vec<Peer<'a>> {
        if let Some(direction) = self.direction {
            for path in inputs.sources.address_lists() {
                warn!(
                    "{} is an address list, which records no directions: --direction {direction} leaves out the peers only it names",
                    path.display()
                );
            }
        }
        inputs
            .snapshot
            .peers
            .iter()
            .map(|(ip, record)| Peer::new(ip, record))
            .filter(|peer| self.matches(peer))
            .collect()
    }
}

/// `netmon list`.
pub fn list(args: &ListArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let inputs = Inputs::load(&args.inputs.files)?;
    let filter = Filter::new(&args.filter, UnixTime::now().secs());
    let peers = filter.select(&inputs);
    Listing::peers(&peers, inputs.detail()).write(out, args.format)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::parse;

    /// A checkpoint with one peer per `(ip, outbound, inbound, last_seen)`.
    pub(super) fn checkpoint(peers: &[(&str, u64, u64, u64)]) -> Vec<u8> {
        let peers: Vec<_> = peers
            .iter()
            .map(|(ip, outbound, inbound, last_seen)| {
                serde_json::json!({
                    "ip": ip,
                    "first_seen": UnixTime::from_secs(last_seen / 2).to_string(),
                    "last_seen": UnixTime::from_secs(*last_seen).to_string(),
                    "outbound": outbound,
                    "inbound": inbound,
                    "remote_ports": if *outbound > 0 { vec![443] } else { vec![] },
                    "local_ports": if *inbound > 0 { vec![22] } else { vec![] },
                    "processes": ["curl"],
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "version": 1, "host": "h1", "updated": UnixTime::from_secs(0).to_string(), "peers": peers,
        }))
        .unwrap()
    }

    pub(super) fn inputs(bytes: &[u8]) -> Inputs {
        let (snapshot, format) = parse(bytes, 1_000).unwrap();
        let sources = Sources {
            files: vec![("test.json".into(), format)],
            ..Sources::default()
        };
        Inputs { snapshot, sources }
    }

    fn selected(inputs: &Inputs, args: &FilterArgs, now: u64) -> Vec<String> {
        Filter::new(args, now)
            .select(inputs)
            .iter()
            .map(|peer| peer.ip.to_string())
            .collect()
    }

    #[test]
    fn selection_is_numeric_not_textual() {
        let inputs = inputs(br#"["10.0.0.10", "9.1.1.1", "10.0.0.9", "100.0.0.1", "10.0.0.9"]"#);
        assert_eq!(
            selected(&inputs, &FilterArgs::default(), 0),
            ["9.1.1.1", "10.0.0.9", "10.0.0.10", "100.0.0.1"]
        );
        assert_eq!(inputs.detail(), Detail::AddressesOnly);
    }

    #[test]
    fn class_filter_is_a_union() {
        let inputs = inputs(br#"["8.8.8.8", "10.1.1.1", "100.64.0.1", "192.0.2.1"]"#);
        let args = FilterArgs {
            classes: vec![Class::Shared, Class::Public],
            ..FilterArgs::default()
        };
        assert_eq!(selected(&inputs, &args, 0), ["8.8.8.8", "100.64.0.1"]);
    }

    #[test]
    fn direction_filter_keeps_peers_seen_that_way() {
        let inputs = inputs(&checkpoint(&[
            ("1.1.1.1", 3, 0, 100),
            ("2.2.2.2", 0, 1, 100),
            ("3.3.3.3", 1, 1, 100),
        ]));
        assert_eq!(inputs.detail(), Detail::Recorded);
        let only = |direction| FilterArgs {
            direction: Some(direction),
            ..FilterArgs::default()
        };
        assert_eq!(
            selected(&inputs, &only(Direction::Outbound), 0),
            ["1.1.1.1", "3.3.3.3"]
        );
        assert_eq!(
            selected(&inputs, &only(Direction::Inbound), 0),
            ["2.2.2.2", "3.3.3.3"]
        );
    }

    #[test]
    fn direction_filter_leaves_out_address_list_peers() {
        let inputs = inputs(br#"["1.1.1.1"]"#);
        let args = FilterArgs {
            direction: Some(Direction::Outbound),
            ..FilterArgs::default()
        };
        assert!(selected(&inputs, &args, 0).is_empty());
    }

    #[test]
    fn since_keeps_peers_last_seen_in_the_window() {
        let day = 86_400;
        let now = 100 * day;
        let inputs = inputs(&checkpoint(&[
            ("1.1.1.1", 1, 0, now - 8 * day),
            ("2.2.2.2", 1, 0, now - 7 * day),
            ("3.3.3.3", 1, 0, now),
        ]));
        let args = FilterArgs {
            since: Some(Duration::from_secs(7 * day)),
            ..FilterArgs::default()
        };
        assert_eq!(selected(&inputs, &args, now), ["2.2.2.2", "3.3.3.3"]);
    }

    #[test]
    fn filters_combine() {
        let inputs = inputs(&checkpoint(&[
            ("10.0.0.1", 1, 0, 50),
            ("10.0.0.2", 0, 1, 50),
            ("8.8.8.8", 0, 1, 50),
            ("10.0.0.3", 0, 1, 5),
        ]));
        let args = FilterArgs {
            classes: vec![Class::Private],
            direction: Some(Direction::Inbound),
            since: Some(Duration::from_secs(10)),
        };
        assert_eq!(selected(&inputs, &args, 55), ["10.0.0.2"]);
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
