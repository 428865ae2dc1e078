//! Many hosts' files: each one host's view, and one host's view of the
//! whole fleet, which `netmon rules --host` and `netmon diff --host` build
//! that host's rules from, and `netmon graph` joins.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    path::PathBuf,
};

use anyhow::bail;
use log::warn;

use super::{Inputs, Sources};
use crate::{
    classify::Class,
    escape::Escaped,
    store::{self, FileFormat, PeerKey, PeerRecord, Snapshot},
};

/// One host's file.
pub struct View {
    pub host: String,
    pub snapshot: Snapshot,
}

/// Reads every file as one host's view; address lists, which name no host
/// and no direction, are left out with a warning.
pub fn load_views(paths: &[PathBuf]) -> anyhow::Result<Vec<View>> {
    let mut views = Vec::new();
    let mut named: HashMap<String, PathBuf> = HashMap::new();
    for path in &super::expand(paths)? {
        let Some((snapshot, format)) = store::load(path)? else {
            bail!("{}: no such file", path.display());
        };
        if format == FileFormat::AddressList {
            warn!(
                "{} is an address list: it names no host and no direction, so it is left out of the map",
                path.display()
            );
            continue;
        }
        let host = snapshot.host.clone().unwrap_or_default();
        let shown = Escaped::new(host.as_str());
        if snapshot.addresses.is_empty() {
            warn!(
                "{} (host {shown}) records no addresses of its own (a version 1 file?): \
                 other hosts' connections to it cannot be matched to it",
                path.display()
            );
        }
        if let Some(first) = named.insert(host.clone(), path.clone()) {
            warn!(
                "{} and {} both name host {shown}: they are taken as one host, so connections \
                 both files recorded count twice (cloned machines with one host name, or two \
                 copies of one file?)",
                first.display(),
                path.display()
            );
        }
        views.push(View { host, snapshot });
    }
    settle_claims(&mut views);
    Ok(views)
}

/// Most own addresses of another host whose connections `host_view` turns
/// around, allowing each of them: a file claiming more allows nothing
/// through that path (its host's connections still count where the other
/// side recorded them).
const MAX_TURNED_ADDRESSES: usize = 64;

/// Whether `addr` can be one host's own: a unicast address (no
/// loopback, 0.0.0.0/8, ::, multicast or broadcast address is, nor an
/// IPv6 link-local one, which every link has alike).
pub fn can_be_own(addr: IpAddr) -> bool {
    let class = Class::of(addr);
    let link_local = addr.is_ipv6() && class == Class::LinkLocal;
    !link_local && !class.names_no_host()
}

/// Keeps to each file the own addresses it can have: unicast ones (no
/// loopback, 0.0.0.0/8, ::, multicast or broadcast address is a host's,
/// nor an IPv6 link-local one, which every link has alike), and none
/// another host claims too. A file is only its host's word: one
/// claiming another's address would take over its edges and its rules,
/// so a contested address belongs to nobody, and the warning names both.
fn settle_claims(views: &mut [View]) {
    let mut claims: HashMap<IpAddr, BTreeSet<String>> = HashMap::new();
    for view in views.iter_mut() {
        let (kept, ignored): (Vec<IpAddr>, Vec<IpAddr>) = view
            .snapshot
            .addresses
            .iter()
            .partition(|addr| can_be_own(**addr));
        if !ignored.is_empty() {
            let ignored: Vec<String> = ignored.iter().map(IpAddr::to_string).collect();
            warn!(
                "host {} claims {} as its own: ignored (no loopback, unspecified, multicast, \
                 broadcast or IPv6 link-local address names one host)",
                Escaped::new(view.host.as_str()),
                ignored.join(", ")
            );
        }
        view.snapshot.addresses = kept;
        for addr in &view.snapshot.addresses {
            claims.entry(*addr).or_default().insert(view.host.clone());
        }
    }
    let contested: BTreeSet<IpAddr> = claims
        .iter()
        .filter(|(_, hosts)| hosts.len() > 1)
        .map(|(addr, _)| *addr)
        .collect();
    for addr in &contested {
        let hosts: Vec<String> = claims[addr]
            .iter()
            .map(|host| Escaped::new(host.as_str()).to_string())
            .collect();
        warn!(
            "{addr} is claimed as their own by hosts {}: it is taken as nobody's",
            hosts.join(", ")
        );
    }
    for view in views.iter_mut() {
        view.snapshot
            .addresses
            .retain(|addr| !contested.contains(addr));
    }
}

/// The host `--host` names: by its name, or by one of its own addresses
/// (either family; an IPv4-mapped one as the IPv4 it maps).
pub fn host_named<'a>(views: &'a [View], wanted: &str) -> anyhow::Result<&'a str> {
    let address = wanted.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    let found = views.iter().find(|view| view.host == wanted).or_else(|| {
        let ip = address?;
        views
            .iter()
            .find(|view| view.snapshot.addresses.contains(&ip))
    });
    match found {
        Some(view) => Ok(view.host.as_str()),
        None => {
            let known: Vec<String> = views
                .iter()
                .map(|view| Escaped::new(view.host.as_str()).to_string())
                .collect();
            let what = if address.is_some() {
                "no host has that address among its own"
            } else {
                "no such host"
            };
            bail!(
                "--host {}: {what} in the files (they name {})",
                Escaped::new(wanted),
                known.join(", ")
            )
        }
    }
}

/// `host`'s view of the fleet the files make up, as the inputs of its
/// rules; `host` by its name or one of its own addresses.
pub fn host_inputs(paths: &[PathBuf], host: &str) -> anyhow::Result<Inputs> {
    let files = super::expand(paths)?;
    let views = load_views(&files)?;
    let host = host_named(&views, host)?;
    let snapshot = host_view(&views, host)?;
    let sources = Sources {
        files: files
            .iter()
            .map(|path| (path.clone(), FileFormat::Checkpoint))
            .collect(),
        hosts: vec![host.to_owned()],
        modes: Vec::new(),
    };
    Ok(Inputs { snapshot, sources })
}

/// `host`'s own file, plus every connection another file recorded with
/// one of `host`'s addresses, turned around: web1's outbound connection
/// to db1:5432 is db1's inbound connection from web1 on 5432, even if db1
/// was not collecting then.
///
/// The other side's file does not say which of its addresses it used, so
/// such a connection stands for each of that host's own addresses; where
/// `host` recorded the connection itself, its own record names the one.
pub fn host_view(views: &[View], host: &str) -> anyhow::Result<Snapshot> {
    let mine: Vec<&View> = views.iter().filter(|view| view.host == host).collect();
    if mine.is_empty() {
        let known: Vec<&str> = views.iter().map(|view| view.host.as_str()).collect();
        bail!(
            "--host {host}: no file of that host (the files name {})",
            known.join(", ")
        );
    }
    let own: BTreeSet<IpAddr> = mine
        .iter()
        .flat_map(|view| view.snapshot.addresses.iter().copied())
        .collect();
    if own.is_empty() {
        bail!(
            "--host {host}: its file records no address that is its own alone (written by netmon \
             before format 2, or each one claimed by another file too: see the warnings above): \
             other hosts' connections to it cannot be told apart"
        );
    }
    let mut snapshot = Snapshot {
        host: Some(host.to_owned()),
        addresses: own.iter().copied().collect(),
        ..Snapshot::default()
    };
    for view in &mine {
        for (ip, record) in view.snapshot.peers.iter() {
            snapshot
                .peers
                .merge_record(PeerKey::host(ip), record.clone());
        }
    }
    for view in views.iter().filter(|view| view.host != host) {
        if view.snapshot.addresses.len() > MAX_TURNED_ADDRESSES {
            warn!(
                "host {} claims {} addresses of its own, more than {MAX_TURNED_ADDRESSES}: \
                 the connections to {} only its file recorded are not allowed from each of them",
                Escaped::new(view.host.as_str()),
                view.snapshot.addresses.len(),
                Escaped::new(host)
            );
            continue;
        }
        for (ip, record) in view.snapshot.peers.iter() {
            if !own.contains(&ip) {
                continue;
            }
            let turned = turned_around(record);
            for &address in &view.snapshot.addresses {
                snapshot
                    .peers
                    .merge_record(PeerKey::host(address), turned.clone());
            }
        }
    }
    Ok(snapshot)
}

/// The other side's record of the same connections.
fn turned_around(record: &PeerRecord) -> PeerRecord {
    PeerRecord {
        outbound: record.inbound,
        inbound: record.outbound,
        remote_ports: record.local_ports.clone(),
        local_ports: record.remote_ports.clone(),
        // Processes are the other host's, not this one's.
        processes: Default::default(),
        ..record.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parse;
    use std::net::Ipv4Addr;

    fn view(host: &str, addresses: &str, peers: &str) -> View {
        let text = format!(
            r#"{{"version":4,"host":"{host}","addresses":[{addresses}],"updated":"2026-01-02T00:00:00Z","peers":[{peers}]}}"#
        );
        let (snapshot, _) = parse(text.as_bytes(), 0).unwrap();
        View {
            host: host.to_owned(),
            snapshot,
        }
    }

    fn peer(ip: &str, outbound: u64, inbound: u64, remote: &str, local: &str) -> String {
        format!(
            r#"{{"ip":"{ip}","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","outbound":{outbound},"inbound":{inbound},"remote_ports":[{remote}],"local_ports":[{local}],"processes":["p"]}}"#
        )
    }

    #[test]
    fn a_connection_only_the_client_recorded_is_the_servers_too() {
        let views = [
            // db1 saw web1 connect, and connected to web2's 8080 itself.
            view(
                "db1",
                r#""10.0.0.2""#,
                &peer("10.0.0.1", 0, 1, "", r#""5432/tcp""#),
            ),
            // web2 (two addresses) connected to db1 while db1 was not
            // collecting, and saw db1 connect to its 8080.
            view(
                "web2",
                r#""10.0.0.3","10.0.0.4""#,
                &peer("10.0.0.2", 2, 1, r#""5432/tcp""#, r#""8080/tcp""#),
            ),
        ];
        let db1 = host_view(&views, "db1").unwrap();
        let peers: Vec<_> = db1
            .peers
            .iter()
            .map(|(ip, r)| {
                let ports = |set: &crate::store::CappedSet<crate::peer::Service>| {
                    set.iter().map(|s| s.port).collect::<Vec<_>>()
                };
                (
                    ip.to_string(),
                    r.outbound,
                    r.inbound,
                    ports(&r.remote_ports),
                    ports(&r.local_ports),
                )
            })
            .collect();
        assert_eq!(
            peers,
            [
                ("10.0.0.1".to_owned(), 0, 1, vec![], vec![5432]),
                ("10.0.0.3".to_owned(), 1, 2, vec![8080], vec![5432]),
                ("10.0.0.4".to_owned(), 1, 2, vec![8080], vec![5432]),
            ]
        );
        assert!(
            db1.peers
                .iter()
                .all(|(ip, r)| ip.to_string() == "10.0.0.1" || r.processes.is_empty())
        );
        assert_eq!(db1.addresses, [Ipv4Addr::new(10, 0, 0, 2)]);
        // --host takes one of the host's addresses for its name, in any
        // notation, and says when no host has it.
        for named in ["db1", "10.0.0.2", "::ffff:10.0.0.2"] {
            assert_eq!(host_named(&views, named).unwrap(), "db1");
        }
        let nobody = host_named(&views, "10.9.9.9").unwrap_err().to_string();
        assert!(nobody.contains("no host has that address"), "{nobody}");
    }

    #[test]
    fn an_unknown_host_or_one_without_addresses_is_refused() {
        let views = [view("old", "", "")];
        let unknown = host_view(&views, "db1").unwrap_err().to_string();
        assert!(
            unknown.contains("no file of that host") && unknown.contains("old"),
            "{unknown}"
        );
        let old = host_view(&views, "old").unwrap_err().to_string();
        assert!(old.contains("records no address that is its own"), "{old}");
    }

    #[test]
    fn claims_that_are_no_hosts_or_contested_belong_to_nobody() {
        let mut views = vec![
            view("db1", r#""10.0.0.2","127.0.0.1","0.0.0.0""#, ""),
            view("web1", r#""10.0.0.1""#, ""),
            // Claims web1's address, and connected to db1:3306.
            view(
                "evil",
                r#""10.0.0.1","10.0.0.9""#,
                &peer("10.0.0.2", 1, 0, r#""3306/tcp""#, ""),
            ),
        ];
        settle_claims(&mut views);
        let own = |host: &str| {
            views
                .iter()
                .find(|view| view.host == host)
                .unwrap()
                .snapshot
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(own("db1"), ["10.0.0.2"]);
        assert!(own("web1").is_empty());
        assert_eq!(own("evil"), ["10.0.0.9"]);
        // evil's connection allows only the address nobody else claims.
        let db1 = host_view(&views, "db1").unwrap();
        let peers: Vec<String> = db1.peers.iter().map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(peers, ["10.0.0.9"]);
    }

    #[test]
    fn ipv6_link_local_and_unspecified_are_no_hosts_and_ula_turns_around() {
        let mut views = vec![
            // Every host's link has fe80::1 alike: it names none of them.
            view("db1", r#""10.0.0.2","fd00::2","fe80::1","::""#, ""),
            view(
                "web1",
                r#""10.0.0.1","fd00::1","fe80::1""#,
                &peer("fd00::2", 1, 0, r#""5432/tcp""#, ""),
            ),
        ];
        settle_claims(&mut views);
        let db1 = host_view(&views, "db1").unwrap();
        let own: Vec<String> = db1.addresses.iter().map(ToString::to_string).collect();
        assert_eq!(own, ["10.0.0.2", "fd00::2"]);
        // web1's IPv6 connection to db1 is db1's inbound from both of
        // web1's addresses.
        let peers: Vec<(String, u64)> = db1
            .peers
            .iter()
            .map(|(ip, r)| (ip.to_string(), r.inbound))
            .collect();
        assert_eq!(
            peers,
            [("10.0.0.1".to_owned(), 1), ("fd00::1".to_owned(), 1)]
        );
    }

    #[test]
    fn a_host_claiming_too_many_addresses_allows_nothing_through_others() {
        let many: Vec<String> = (0..=MAX_TURNED_ADDRESSES)
            .map(|i| format!(r#""10.9.{}.{}""#, i / 250, i % 250 + 1))
            .collect();
        let views = [
            view("db1", r#""10.0.0.2""#, ""),
            view(
                "evil",
                &many.join(","),
                &peer("10.0.0.2", 1, 0, r#""22/tcp""#, ""),
            ),
        ];
        assert!(host_view(&views, "db1").unwrap().peers.is_empty());
    }
}
