//! The report commands: they read peer files and never need root.
//!
//! Every report starts the same way: [`Inputs::load`] reads and merges
//! the files, and a [`Filter`] picks the peers, in numeric order, each
//! with its [`Class`](crate::classify::Class). `netmon rules` starts the
//! same way too.
mod allow;
mod diff;
mod filter;
mod fleet;
mod merge;
mod output;
mod stats;
pub(crate) mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow};

use self::output::Listing;
pub use self::{
    allow::{Access, Allowed, Exclusions, Ports, Protocol, RuleSelection, Service, accesses},
    diff::{DiffRequest, diff},
    filter::{Filter, OwnerPattern, Peer},
    fleet::{View, host_inputs, host_named, host_view, load_views},
    merge::{MergeRequest, merge},
    stats::{StatsRequest, stats},
};
use crate::{
    store::{self, FileFormat, Snapshot},
    time::UnixTime,
};

/// How a report prints peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
        for path in &expand(paths)? {
            let (snapshot, format) = load_one(path)?;
            sources.files.push((path.clone(), format));
            sources.hosts.extend(snapshot.host);
            sources.modes.extend(snapshot.mode);
            merged.addresses.extend(snapshot.addresses);
            merged.lost_events = merged.lost_events.saturating_add(snapshot.lost_events);
            merged.uncounted_connections = merged
                .uncounted_connections
                .saturating_add(snapshot.uncounted_connections);
            merged.peers.merge(snapshot.peers);
        }
        merged.addresses.sort_unstable();
        merged.addresses.dedup();
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

/// The files `paths` name: a directory stands for the checkpoints in it
/// (its `*.json` files, in name order), as gathered from a fleet, one per
/// host; anything else for itself.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries =
            std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", path.display()))?;
            let name = entry.path();
            if name.extension().is_some_and(|ext| ext == "json") && !name.is_dir() {
                found.push(name);
            }
        }
        anyhow::ensure!(
            !found.is_empty(),
            "{}: a directory with no .json file",
            path.display()
        );
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

fn load_one(path: &Path) -> anyhow::Result<(Snapshot, FileFormat)> {
    store::load(path)?.ok_or_else(|| anyhow!("{}: no such file", path.display()))
}

/// What `netmon list` prints.
#[derive(Clone, Debug)]
pub struct ListRequest {
    /// Checkpoints or address lists, merged.
    pub files: Vec<PathBuf>,
    pub filter: Filter,
    pub format: Format,
}

/// `netmon list`.
pub fn list(request: &ListRequest, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let inputs = Inputs::load(&request.files)?;
    let peers = request.filter.select(&inputs, UnixTime::now().secs());
    if peers.is_empty()
        && let Some(hint) = request.filter.elsewhere(&inputs)
    {
        log::warn!("{hint}");
    }
    Listing::peers(&peers, inputs.detail()).write(out, request.format)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::parse;
    use crate::{classify::Class, peer::Direction};

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

    /// A checkpoint with one peer per `(ip, remote_ports, local_ports)`,
    /// last seen at 1000.
    pub(crate) fn checkpoint_with_ports(peers: &[(&str, &[u16], &[u16])]) -> Vec<u8> {
        let peers: Vec<_> = peers
            .iter()
            .map(|(ip, remote, local)| {
                serde_json::json!({
                    "ip": ip,
                    "first_seen": UnixTime::from_secs(500).to_string(),
                    "last_seen": UnixTime::from_secs(1_000).to_string(),
                    "outbound": remote.len(),
                    "inbound": local.len(),
                    "remote_ports": remote,
                    "local_ports": local,
                    "processes": [],
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "version": 1, "host": "h1", "updated": UnixTime::from_secs(0).to_string(), "peers": peers,
        }))
        .unwrap()
    }

    pub(crate) fn inputs(bytes: &[u8]) -> Inputs {
        let (snapshot, format) = parse(bytes, 1_000).unwrap();
        let sources = Sources {
            files: vec![("test.json".into(), format)],
            ..Sources::default()
        };
        Inputs { snapshot, sources }
    }

    fn selected(inputs: &Inputs, filter: &Filter, now: u64) -> Vec<String> {
        filter
            .select(inputs, now)
            .iter()
            .map(|peer| peer.ip.to_string())
            .collect()
    }

    #[test]
    fn selection_is_numeric_not_textual() {
        let inputs = inputs(br#"["10.0.0.10", "9.1.1.1", "10.0.0.9", "100.0.0.1", "10.0.0.9"]"#);
        assert_eq!(
            selected(&inputs, &Filter::default(), 0),
            ["9.1.1.1", "10.0.0.9", "10.0.0.10", "100.0.0.1"]
        );
        assert_eq!(inputs.detail(), Detail::AddressesOnly);
    }

    #[test]
    fn class_filter_is_a_union() {
        let inputs = inputs(br#"["8.8.8.8", "10.1.1.1", "100.64.0.1", "192.0.2.1"]"#);
        let args = Filter {
            classes: vec![Class::Shared, Class::Public],
            ..Filter::default()
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
        let only = |direction| Filter {
            direction: Some(direction),
            ..Filter::default()
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
        let args = Filter {
            direction: Some(Direction::Outbound),
            ..Filter::default()
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
        let args = Filter {
            since: Some(Duration::from_secs(7 * day)),
            ..Filter::default()
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
        let args = Filter {
            classes: vec![Class::Private],
            direction: Some(Direction::Inbound),
            since: Some(Duration::from_secs(10)),
            ..Filter::default()
        };
        assert_eq!(selected(&inputs, &args, 55), ["10.0.0.2"]);
    }

    #[test]
    fn filter_prints_as_the_flags_that_select_the_same_peers() {
        let filter = Filter {
            classes: vec![Class::Private, Class::Shared],
            family: Some(crate::classify::Family::V6),
            direction: Some(Direction::Inbound),
            since: Some(Duration::from_secs(7 * 86_400)),
            netns: crate::store::NetnsScope::All,
            owners: vec![OwnerPattern::new("*.service")],
        };
        assert_eq!(
            filter.to_string(),
            "--class private --class shared --family 6 --direction in --since 7days --netns all --owner '*.service'"
        );
        assert_eq!(Filter::default().to_string(), "");
    }
}
