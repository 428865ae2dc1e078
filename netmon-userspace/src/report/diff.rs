//! `netmon diff`: the dry run of an allow list.
//!
//! BASE's rules are worked out as `netmon rules` builds them, from the
//! same selection flags ([`Allowed`]). Every access NEW records, in the
//! directions those rules filter, is then checked against them: what they
//! do not allow is new, and rules from BASE would block it. What they
//! allow and NEW no longer shows is listed too: the rules may be wider
//! than they need to be.
//!
//! The flags say what the rules allow, so they select from BASE only:
//! rules built with `--class private` or `--since 30d` block a public
//! peer, or one BASE last saw earlier, whatever NEW says of it.
use std::{
    collections::BTreeSet,
    io::{self, Write},
    net::IpAddr,
    path::PathBuf,
    process::ExitCode,
};

use serde::Serialize;

use super::{
    Access, Allowed, Detail, Exclusions, Format, Inputs, Peer, RuleSelection, accesses,
    host_inputs,
    table::{self, Align, Column, Owned},
};
use crate::{classify::Class, peer::Direction, store::PeerRecord, time::UnixTime};

/// What `netmon diff` compares.
#[derive(Clone, Debug)]
pub struct DiffRequest {
    /// The files the rules were built from.
    pub base: PathBuf,
    /// The files observed since.
    pub new: PathBuf,
    /// The flags the rules were built with.
    pub selection: RuleSelection,
    /// The rules are this host's, from every host's file: BASE and NEW
    /// are then directories of one checkpoint per host (see
    /// [`super::host_inputs`]).
    pub host: Option<String>,
    pub format: Format,
}

/// `netmon diff`: 1 when NEW has an access BASE's rules would block, so a
/// cron job or CI can act on it; accesses that went away alone block
/// nothing and give 0.
pub fn diff(request: &DiffRequest, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let side = |path: &PathBuf| {
        let paths = std::slice::from_ref(path);
        match &request.host {
            None => Inputs::load(paths),
            Some(host) => host_inputs(paths, host),
        }
    };
    let (base, new) = (side(&request.base)?, side(&request.new)?);
    let changes = Changes::new(&base, &new, &request.selection)?;
    changes.write(out, request.format)?;
    Ok(if changes.blocked() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Which side of a diff an access is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    /// In NEW, not allowed by BASE's rules.
    New,
    /// Allowed by BASE's rules, no longer in NEW.
    Gone,
}

impl Change {
    fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Gone => "gone",
        }
    }

    fn sign(self) -> char {
        match self {
            Self::New => '+',
            Self::Gone => '-',
        }
    }
}

/// One line of the diff.
#[derive(Debug)]
struct Row {
    change: Change,
    access: Access,
    class: Class,
    /// From the file the access is in, when it records times.
    last_seen: Option<u64>,
}

/// What changed between BASE's rules and NEW.
#[derive(Debug)]
struct Changes {
    /// New rows first, then gone; each in address order.
    rows: Vec<Row>,
}

impl Changes {
    fn new(base: &Inputs, new: &Inputs, selection: &RuleSelection) -> anyhow::Result<Self> {
        let allowed = Allowed::build(base, selection, UnixTime::now().secs())?;
        selection.check_inputs(new)?;
        let exclusions = Exclusions::of(new);
        let mut seen = BTreeSet::new();
        // The namespaces the rules are for: the host's unless --netns.
        let scope = selection.filter.netns;
        for (key, record) in new.snapshot.peers.entries() {
            let peer = Peer {
                netns: key.netns(),
                ..Peer::new(key.ip(), record)
            };
            if !scope.contains(peer.netns) || exclusions.excludes(&peer) {
                continue;
            }
            for &direction in allowed.directions() {
                seen.extend(accesses(&peer, direction, selection.ports));
            }
        }
        let blocked = seen.iter().filter(|access| !allowed.contains(access));
        let gone = allowed.iter().filter(|access| !seen.contains(access));
        let mut rows: Vec<_> = blocked
            .map(|access| Row::of(Change::New, *access, new))
            .chain(gone.map(|access| Row::of(Change::Gone, *access, base)))
            .collect();
        // Inbound first, as the input chain comes first in the rules.
        rows.sort_by_key(|row| {
            let access = row.access;
            let outbound = access.direction == Direction::Outbound;
            (row.change, access.peer, outbound, access.service)
        });
        Ok(Self { rows })
    }

    fn blocked(&self) -> usize {
        self.rows
            .iter()
            .filter(|row| row.change == Change::New)
            .count()
    }

    fn write(&self, out: &mut impl Write, format: Format) -> io::Result<()> {
        match format {
            Format::Text => {
                table::write_text(out, &self.text_table())?;
                let blocked = self.blocked();
                writeln!(
                    out,
                    "{blocked} new: not allowed by BASE's rules, which would block them; {} gone: allowed, not seen in NEW",
                    self.rows.len() - blocked
                )
            }
            Format::Csv => table::write_csv(out, &self.csv_table()),
            Format::Plain => {
                for row in &self.rows {
                    let service = row
                        .access
                        .service
                        .map_or_else(|| "any".to_owned(), |s| s.to_string());
                    let (sign, direction) = (row.change.sign(), row.access.direction);
                    writeln!(out, "{sign}{direction} {} {service}", row.access.peer)?;
                }
                Ok(())
            }
            Format::Json => {
                let side = |change| -> Vec<_> {
                    self.rows
                        .iter()
                        .filter(|row| row.change == change)
                        .map(JsonRow::from)
                        .collect()
                };
                let json = JsonDiff {
                    new: side(Change::New),
                    gone: side(Change::Gone),
                };
                serde_json::to_writer_pretty(&mut *out, &json)?;
                writeln!(out)
            }
        }
    }

    /// For people: the access in rule terms, in one column.
    fn text_table(&self) -> Owned {
        let cells = self.rows.iter().map(|row| {
            vec![
                row.change.as_str().to_owned(),
                row.access.direction.to_string(),
                row.access.to_string(),
                row.class.to_string(),
                row.last_seen_text(),
            ]
        });
        owned(
            &["CHANGE", "DIR", "ACCESS", "CLASS", "LAST SEEN"],
            cells.collect(),
        )
    }

    /// For spreadsheets: each part of the access in a column of its own,
    /// named as in JSON; protocol and port are empty for any port.
    fn csv_table(&self) -> Owned {
        let cells = self.rows.iter().map(|row| {
            let service = row.access.service;
            vec![
                row.change.as_str().to_owned(),
                row.access.direction.to_string(),
                row.access.peer.to_string(),
                row.class.to_string(),
                service.map_or_else(String::new, |s| s.protocol.as_str().to_owned()),
                service.map_or_else(String::new, |s| s.port.to_string()),
                row.last_seen_text(),
            ]
        });
        owned(
            &[
                "change",
                "direction",
                "ip",
                "class",
                "protocol",
                "port",
                "last_seen",
            ],
            cells.collect(),
        )
    }
}

fn owned(headers: &[&'static str], cells: Vec<Vec<String>>) -> Owned {
    let columns = headers
        .iter()
        .map(|&header| Column {
            header,
            align: Align::Left,
        })
        .collect();
    Owned { columns, cells }
}

impl Row {
    fn last_seen_text(&self) -> String {
        self.last_seen
            .map(|secs| UnixTime::from_secs(secs).to_string())
            .unwrap_or_default()
    }

    fn of(change: Change, access: Access, inputs: &Inputs) -> Self {
        let record = inputs.snapshot.peers.get(access.peer);
        Self {
            change,
            access,
            class: Class::of(access.peer),
            last_seen: record
                .filter(|_| inputs.detail() == Detail::Recorded)
                .map(|record: &PeerRecord| record.last_seen),
        }
    }
}

/// The diff as JSON: new first, as in the other formats.
#[derive(Serialize)]
struct JsonDiff {
    new: Vec<JsonRow>,
    gone: Vec<JsonRow>,
}

/// A row as JSON: the access's parts, each in a field of its own.
#[derive(Serialize)]
struct JsonRow {
    direction: &'static str,
    ip: IpAddr,
    class: Class,
    /// `null` for rules by address alone.
    protocol: Option<&'static str>,
    port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen: Option<UnixTime>,
}

impl From<&Row> for JsonRow {
    fn from(row: &Row) -> Self {
        let service = row.access.service;
        Self {
            direction: row.access.direction.as_str(),
            ip: row.access.peer,
            class: row.class,
            protocol: service.map(|s| s.protocol.as_str()),
            port: service.map(|s| s.port),
            last_seen: row.last_seen.map(UnixTime::from_secs),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::{
        Filter, Ports,
        tests::{checkpoint, checkpoint_with_ports, inputs},
    };

    fn changes(base: &[u8], new: &[u8], selection: &RuleSelection) -> (String, usize) {
        let changes = Changes::new(&inputs(base), &inputs(new), selection).unwrap();
        let mut out = Vec::new();
        changes.write(&mut out, Format::Plain).unwrap();
        (String::from_utf8(out).unwrap(), changes.blocked())
    }

    fn any_port() -> RuleSelection {
        RuleSelection {
            ports: Ports::Any,
            ..RuleSelection::default()
        }
    }

    fn direction(direction: Direction) -> RuleSelection {
        RuleSelection {
            filter: Filter {
                direction: Some(direction),
                ..Filter::default()
            },
            ..RuleSelection::default()
        }
    }

    #[test]
    fn new_and_gone_addresses_with_any_port() {
        let (plain, blocked) = changes(
            br#"["10.0.0.1", "10.0.0.2", "10.0.0.10"]"#,
            br#"["10.0.0.20", "10.0.0.1", "10.0.0.9"]"#,
            &RuleSelection {
                filter: Filter::default(),
                ..any_port()
            },
        );
        assert_eq!(
            plain,
            "+in 10.0.0.9 any\n+out 10.0.0.9 any\n+in 10.0.0.20 any\n+out 10.0.0.20 any\n\
             -in 10.0.0.2 any\n-out 10.0.0.2 any\n-in 10.0.0.10 any\n-out 10.0.0.10 any\n"
        );
        assert_eq!(blocked, 4);
        let (plain, blocked) = changes(
            br#"["10.0.0.1", "10.0.0.2"]"#,
            br#"["10.0.0.1"]"#,
            &any_port(),
        );
        assert_eq!(plain, "-in 10.0.0.2 any\n-out 10.0.0.2 any\n");
        assert_eq!(blocked, 0);
    }

    /// The same peer on a port BASE never saw is new: port rules block it.
    #[test]
    fn a_known_peer_on_a_new_port_is_new() {
        let base = checkpoint_with_ports(&[("10.0.0.5", &[], &[5432])]);
        let new = checkpoint_with_ports(&[("10.0.0.5", &[], &[5432, 22])]);
        let (plain, blocked) = changes(&base, &new, &RuleSelection::default());
        assert_eq!(plain, "+in 10.0.0.5 22/tcp\n");
        assert_eq!(blocked, 1);
        let (plain, blocked) = changes(&base, &new, &any_port());
        assert_eq!((plain.as_str(), blocked), ("", 0));
    }

    /// Rules built with `--direction in` hold nothing of a peer BASE saw
    /// only outbound: NEW's inbound use of it is blocked, and reported.
    #[test]
    fn outbound_only_in_base_is_new_inbound() {
        let base = checkpoint_with_ports(&[("10.0.0.5", &[443], &[])]);
        let new = checkpoint_with_ports(&[("10.0.0.5", &[443], &[443])]);
        let (plain, blocked) = changes(&base, &new, &direction(Direction::Inbound));
        assert_eq!(plain, "+in 10.0.0.5 443/tcp\n");
        assert_eq!(blocked, 1);
        // Whole-address sets saw nothing new here; nor do outbound rules.
        let (plain, blocked) = changes(&base, &new, &direction(Direction::Outbound));
        assert_eq!((plain.as_str(), blocked), ("", 0));
    }

    /// `--since` leaves old peers out of the rules, so NEW's sighting of
    /// one is blocked; `--class` likewise.
    #[test]
    fn since_and_class_select_from_base() {
        let now = UnixTime::now().secs();
        let day = 86_400;
        let base = checkpoint(&[("10.0.0.1", 0, 1, now - 40 * day), ("8.8.8.8", 0, 1, now)]);
        let since = RuleSelection {
            filter: Filter {
                since: Some(Duration::from_secs(30 * day)),
                ..Filter::default()
            },
            ..RuleSelection::default()
        };
        assert_eq!(changes(&base, &base, &since).0, "+in 10.0.0.1 22/tcp\n");
        let private = RuleSelection {
            filter: Filter {
                classes: vec![Class::Private],
                ..Filter::default()
            },
            ..RuleSelection::default()
        };
        assert_eq!(changes(&base, &base, &private).0, "+in 8.8.8.8 22/tcp\n");
    }

    #[test]
    fn loopback_is_never_reported() {
        let base = checkpoint_with_ports(&[("10.0.0.1", &[80], &[])]);
        let new = checkpoint_with_ports(&[("10.0.0.1", &[80], &[]), ("127.0.0.1", &[80], &[80])]);
        assert_eq!(changes(&base, &new, &RuleSelection::default()).1, 0);
    }

    #[test]
    fn json_names_the_parts_of_each_access() {
        let base = checkpoint(&[("10.0.0.1", 1, 0, 100)]);
        let new = checkpoint(&[("8.8.8.8", 0, 2, 100)]);
        let changes =
            Changes::new(&inputs(&base), &inputs(&new), &RuleSelection::default()).unwrap();
        let mut out = Vec::new();
        changes.write(&mut out, Format::Json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let new = &value["new"][0];
        assert_eq!(
            (&new["ip"], &new["class"], &new["direction"]),
            (&"8.8.8.8".into(), &"public".into(), &"in".into())
        );
        assert_eq!(
            (&new["protocol"], &new["port"]),
            (&"tcp".into(), &22.into())
        );
        let gone = &value["gone"][0];
        assert_eq!(
            (&gone["direction"], &gone["port"]),
            (&"out".into(), &443.into())
        );
        assert_eq!(gone["last_seen"], UnixTime::from_secs(100).to_string());
    }

    #[test]
    fn text_says_it_in_rule_terms() {
        let base = checkpoint_with_ports(&[("10.0.0.1", &[80], &[])]);
        let new = checkpoint_with_ports(&[("10.0.0.5", &[], &[5432])]);
        let changes =
            Changes::new(&inputs(&base), &inputs(&new), &RuleSelection::default()).unwrap();
        let mut out = Vec::new();
        changes.write(&mut out, Format::Text).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("new     in   10.0.0.5 -> :5432/tcp  private"),
            "{text}"
        );
        assert!(text.contains("gone    out  -> 10.0.0.1:80/tcp"), "{text}");
        assert!(text.ends_with("1 new: not allowed by BASE's rules, which would block them; 1 gone: allowed, not seen in NEW\n"), "{text}");
    }
}
