//! `netmon stats`: what the set is made of, at a glance.
use std::{collections::HashMap, hash::Hash, io::Write, path::PathBuf};

use super::{
    Detail, Filter, Inputs, Peer,
    table::{self, Align, Column, Owned},
};
use crate::{
    classify::Class,
    escape::Escaped,
    peer::{Comm, Owner, Service},
    time::UnixTime,
};

/// What `netmon stats` counts.
#[derive(Clone, Debug)]
pub struct StatsRequest {
    /// Checkpoints or address lists, merged.
    pub files: Vec<PathBuf>,
    pub filter: Filter,
    /// Rows in each top list.
    pub top: usize,
}

pub fn stats(request: &StatsRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let inputs = Inputs::load(&request.files)?;
    let peers = request.filter.select(&inputs, UnixTime::now().secs());
    let detail = inputs.detail();
    let top = request.top;
    write!(
        out,
        "{} from {} (lost events: {}",
        crate::words::count(peers.len() as u64, "peer", "peers"),
        names(&inputs),
        inputs.snapshot.lost_events
    )?;
    match inputs.snapshot.uncounted_connections {
        0 => writeln!(out, ")")?,
        uncounted => writeln!(
            out,
            "; {uncounted} connections uncounted, so peers may be missing)"
        )?,
    }
    let mut sections = vec![("BY CLASS", per_class(&peers, detail))];
    if detail == Detail::Recorded {
        let ports = count(&peers, |peer| peer.record.local_ports.iter());
        let remote = count(&peers, |peer| peer.record.remote_ports.iter());
        let processes = count(&peers, |peer| peer.record.processes.iter());
        let owners = count(&peers, |peer| peer.record.owners.iter());
        sections.extend([
            ("TOP PEERS BY CONNECTIONS", top_peers(&peers, top)),
            ("TOP LOCAL PORTS BY PEERS", top_counts("PORT", ports, top)),
            // What an egress list must allow: DNS, NTP and the like.
            ("TOP REMOTE PORTS BY PEERS", top_counts("PORT", remote, top)),
            (
                "TOP PROCESSES BY PEERS",
                top_counts("PROCESS", processes, top),
            ),
        ]);
        // Files from before owners were recorded, or proc mode's, have none.
        if !owners.is_empty() {
            sections.push(("TOP OWNERS BY PEERS", top_counts("OWNER", owners, top)));
        }
    }
    for (title, table) in sections {
        writeln!(out, "\n{title}")?;
        table::write_text(out, &table)?;
    }
    Ok(())
}

/// The hosts the checkpoints name, or the file count when none does.
fn names(inputs: &Inputs) -> String {
    let files = match inputs.sources.files.len() {
        1 => "1 file".to_owned(),
        n => format!("{n} files"),
    };
    match inputs.sources.hosts.as_slice() {
        [] => files,
        hosts => {
            let hosts: Vec<_> = hosts.iter().map(|h| Escaped::new(h).to_string()).collect();
            format!("{files}, host {}", hosts.join(", "))
        }
    }
}

fn column(header: &'static str, align: Align) -> Column {
    Column { header, align }
}

/// Peers per class, and how many of them were seen in each direction.
fn per_class(peers: &[Peer<'_>], detail: Detail) -> Owned {
    let mut counts: HashMap<Class, [usize; 3]> = HashMap::new();
    for peer in peers {
        let directions = peer.record.directions();
        let [all, inbound, outbound] = counts.entry(peer.class).or_default();
        *all += 1;
        *inbound += usize::from(directions.inbound);
        *outbound += usize::from(directions.outbound);
    }
    let total = counts.values().fold([0; 3], |sum, n| {
        [sum[0] + n[0], sum[1] + n[1], sum[2] + n[2]]
    });
    let rows = Class::ALL
        .into_iter()
        .filter_map(|class| Some((class.as_str(), *counts.get(&class)?)))
        .chain([("total", total)]);
    let columns = match detail {
        Detail::Recorded => 4,
        Detail::AddressesOnly => 2,
    };
    Owned {
        columns: [
            column("CLASS", Align::Left),
            column("PEERS", Align::Right),
            column("IN", Align::Right),
            column("OUT", Align::Right),
        ][..columns]
            .to_vec(),
        cells: rows
            .map(|(name, n)| {
                let numbers = n.iter().map(usize::to_string);
                std::iter::once(name.to_owned())
                    .chain(numbers)
                    .take(columns)
                    .collect()
            })
            .collect(),
    }
}

fn top_peers(peers: &[Peer<'_>], top: usize) -> Owned {
    let mut ranked: Vec<_> = peers
        .iter()
        .map(|peer| {
            let record = &peer.record;
            (record.outbound.saturating_add(record.inbound), peer)
        })
        .collect();
    // Most connections first; ties in address order (the sort is stable).
    ranked.sort_by_key(|&(connections, _)| std::cmp::Reverse(connections));
    Owned {
        columns: vec![
            column("ADDRESS", Align::Left),
            column("CLASS", Align::Left),
            column("DIR", Align::Left),
            column("CONNECTIONS", Align::Right),
        ],
        cells: ranked
            .into_iter()
            .take(top)
            .map(|(connections, peer)| {
                vec![
                    peer.ip.to_string(),
                    peer.class.to_string(),
                    peer.record.directions().as_str().unwrap_or("").to_owned(),
                    connections.to_string(),
                ]
            })
            .collect(),
    }
}

/// How many peers each key (a port, a process) appears with.
fn count<'a, K, I>(peers: &[Peer<'a>], keys: impl Fn(&Peer<'a>) -> I) -> HashMap<K, usize>
where
    K: Eq + Hash,
    I: Iterator<Item = K>,
{
    let mut counts = HashMap::new();
    for key in peers.iter().flat_map(keys) {
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The `top` most common keys, most peers first, ties in key order.
fn top_counts<K: Ord + Label>(
    header: &'static str,
    counts: HashMap<K, usize>,
    top: usize,
) -> Owned {
    let mut ranked: Vec<_> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    Owned {
        columns: vec![column(header, Align::Left), column("PEERS", Align::Right)],
        cells: ranked
            .into_iter()
            .take(top)
            .map(|(key, peers)| vec![key.label(), peers.to_string()])
            .collect(),
    }
}

/// A key's text in a top list.
trait Label {
    fn label(&self) -> String;
}

impl Label for u16 {
    fn label(&self) -> String {
        self.to_string()
    }
}

impl Label for Service {
    fn label(&self) -> String {
        self.to_string()
    }
}

impl Label for Owner {
    fn label(&self) -> String {
        self.escaped().to_string()
    }
}

impl Label for Comm {
    fn label(&self) -> String {
        self.escaped().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::checkpoint;

    /// `netmon stats --top 2` of a file holding `bytes`.
    fn stats_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        std::fs::write(&path, bytes).unwrap();
        let request = StatsRequest {
            files: vec![path],
            filter: Filter::default(),
            top: 2,
        };
        let mut out = Vec::new();
        stats(&request, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn counts_and_tops() {
        let text = stats_of(&checkpoint(&[
            ("10.0.0.1", 5, 0, 100),
            ("10.0.0.2", 0, 9, 100),
            ("8.8.8.8", 1, 1, 100),
        ]));
        for line in [
            "3 peers from 1 file, host h1 (lost events: 0)",
            "private      2   1    1",
            "public       1   1    1",
            "total        3   2    2",
            "10.0.0.2  private  in             9",
            "10.0.0.1  private  out            5",
            "22/tcp      2",
            "curl         3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("8.8.8.8"), "top 2 only:\n{text}");
    }

    /// Whoever writes a checkpoint picks its host and process names:
    /// printed raw, they would forge lines or rewrite the terminal.
    #[test]
    fn hosts_and_processes_are_printed_escaped() {
        let mut file: serde_json::Value =
            serde_json::from_slice(&checkpoint(&[("10.0.0.1", 1, 0, 100)])).unwrap();
        file["host"] = "h\n1 peers from 9 files\u{1b}[2J".into();
        file["peers"][0]["processes"] = serde_json::json!(["a\n1.2.3.4"]);
        let text = stats_of(&serde_json::to_vec(&file).unwrap());
        assert!(!text.contains('\u{1b}'), "{text:?}");
        let first = text.lines().next().unwrap();
        assert_eq!(
            first,
            "1 peer from 1 file, host h\\n1 peers from 9 files\\u{1b}[2J (lost events: 0)"
        );
        assert!(text.lines().any(|l| l == "a\\n1.2.3.4      1"), "{text}");
    }
}
