//! One host's view of the whole fleet: what `netmon rules --host` builds
//! that host's rules from.
use std::{collections::BTreeSet, net::Ipv4Addr};

use anyhow::bail;

use super::View;
use crate::store::{PeerRecord, Snapshot};

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
        bail!("--host {host}: no file of that host (the files name {})", known.join(", "));
    }
    let own: BTreeSet<Ipv4Addr> = mine
        .iter()
        .flat_map(|view| view.snapshot.addresses.iter().copied())
        .collect();
    if own.is_empty() {
        bail!(
            "--host {host}: its file records no addresses of its own (written by netmon before \
             format 2): other hosts' connections to it cannot be told apart"
        );
    }
    let mut snapshot = Snapshot {
        host: Some(host.to_owned()),
        addresses: own.iter().copied().collect(),
        ..Snapshot::default()
    };
    for view in &mine {
        for (ip, record) in view.snapshot.peers.iter() {
            snapshot.peers.merge_record(ip, record.clone());
        }
    }
    for view in views.iter().filter(|view| view.host != host) {
        for (ip, record) in view.snapshot.peers.iter() {
            if !own.contains(&ip) {
                continue;
            }
            let turned = turned_around(record);
            for &address in &view.snapshot.addresses {
                snapshot.peers.merge_record(address, turned.clone());
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
