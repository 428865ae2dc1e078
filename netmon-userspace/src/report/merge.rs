//! `netmon merge`: several files (from several hosts, or old poller
//! lists) into one checkpoint.
use std::{io::Write as _, path::PathBuf};

use log::info;

use super::Sources;
use crate::{
    store::{self, Snapshot, Target},
    time::UnixTime,
};

/// What `netmon merge` combines, and where to.
#[derive(Clone, Debug)]
pub struct MergeRequest {
    pub files: Vec<PathBuf>,
    /// Written atomically; it may be one of `files`.
    pub output: PathBuf,
}

/// Reads every input before writing anything, so an unreadable one leaves
/// OUT as it was; the write itself is atomic like a checkpoint's.
///
/// OUT's lock is held throughout: a collector writing OUT would drop the
/// merged peers at its next checkpoint, so a merge onto its file fails.
pub fn merge(request: &MergeRequest) -> anyhow::Result<()> {
    let target = Target::open(&request.output, false)?;
    target.refuse_unsafe()?;
    let _lock = target.lock()?;
    let (merged, sources) = Sources::read(&request.files)?;
    let snapshot = Snapshot {
        // One mode names how all the data was collected; several do not.
        mode: match sources.modes.as_slice() {
            [mode] => Some(mode.clone()),
            _ => None,
        },
        ..merged
    };
    let bytes = store::to_json(
        &snapshot,
        &merged_host(&sources.hosts),
        UnixTime::now().secs(),
    )?;
    target.write_atomically_with(|out| out.write_all(&bytes))?;
    info!(
        "{}: {} from {}",
        request.output.display(),
        crate::words::count(snapshot.peers.len() as u64, "peer", "peers"),
        crate::words::count(request.files.len() as u64, "file", "files")
    );
    Ok(())
}

/// The hosts the data came from, comma-separated; address lists name none.
fn merged_host(hosts: &[String]) -> String {
    if hosts.is_empty() {
        "unknown".to_owned()
    } else {
        hosts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use std::{net::Ipv4Addr, path::Path};

    use super::*;
    use crate::{
        peer::{Comm, Service},
        store::{FileFormat, PeerKey, PeerRecord},
    };

    fn record(seen: (u64, u64), counts: (u64, u64), ports: &[u16], process: &str) -> PeerRecord {
        let mut record = PeerRecord {
            first_seen: seen.0,
            last_seen: seen.1,
            outbound: counts.0,
            inbound: counts.1,
            remote_ports: ports.iter().copied().map(Service::tcp).collect(),
            processes: Comm::from_name(process).into_iter().collect(),
            ..PeerRecord::default()
        };
        record.local_ports.insert(Service::tcp(22));
        record
    }

    fn write(dir: &Path, name: &str, host: &str, peers: &[(Ipv4Addr, PeerRecord)]) -> PathBuf {
        let mut snapshot = Snapshot {
            mode: Some("kprobe".into()),
            lost_events: 2,
            ..Snapshot::default()
        };
        for (ip, record) in peers {
            snapshot
                .peers
                .merge_record(PeerKey::host((*ip).into()), record.clone());
        }
        let path = dir.join(name);
        store::write_atomically(&path, &store::to_json(&snapshot, host, 0).unwrap()).unwrap();
        path
    }

    /// Merges `files` and reads the result back.
    fn merged(dir: &Path, files: Vec<PathBuf>) -> Snapshot {
        let output = dir.join("merged.json");
        merge(&MergeRequest {
            files,
            output: output.clone(),
        })
        .unwrap();
        let (merged, format) = store::load(&output).unwrap().unwrap();
        assert_eq!(format, FileFormat::Checkpoint);
        merged
    }

    #[test]
    fn merges_counts_times_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let shared = Ipv4Addr::new(10, 0, 0, 1);
        let only_a = Ipv4Addr::new(10, 0, 0, 2);
        let a = write(
            dir.path(),
            "a.json",
            "web1",
            &[
                (shared, record((100, 200), (1, 2), &[443], "curl")),
                (only_a, record((5, 6), (7, 0), &[80], "wget")),
            ],
        );
        let b = write(
            dir.path(),
            "b.json",
            "web2",
            &[(shared, record((50, 150), (10, 20), &[8443, 443], "sshd"))],
        );
        let merged = merged(dir.path(), vec![a, b]);
        assert_eq!(merged.host.as_deref(), Some("web1,web2"));
        assert_eq!(merged.mode.as_deref(), Some("kprobe"));
        assert_eq!(merged.lost_events, 4);
        let got = merged.peers.get(shared.into()).unwrap();
        assert_eq!((got.first_seen, got.last_seen), (50, 200));
        assert_eq!((got.outbound, got.inbound), (11, 22));
        assert_eq!(
            got.remote_ports.iter().collect::<Vec<_>>(),
            [Service::tcp(443), Service::tcp(8443)]
        );
        let names: Vec<_> = got.processes.iter().map(|comm| comm.to_string()).collect();
        assert_eq!(names, ["curl", "sshd"]);
        // A peer only one input has comes through untouched.
        assert_eq!(
            merged.peers.get(only_a.into()),
            Some(&record((5, 6), (7, 0), &[80], "wget"))
        );
    }

    #[test]
    fn lists_stay_within_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        let low: Vec<u16> = (0..store::LIST_CAP as u16).collect();
        let high: Vec<u16> = (1000..1000 + store::LIST_CAP as u16).collect();
        let a = write(
            dir.path(),
            "a.json",
            "h",
            &[(ip, record((1, 1), (1, 0), &low, "a"))],
        );
        let b = write(
            dir.path(),
            "b.json",
            "h",
            &[(ip, record((1, 1), (1, 0), &high, "a"))],
        );
        let merged = merged(dir.path(), vec![a, b]);
        assert_eq!(
            merged
                .peers
                .get(ip.into())
                .unwrap()
                .remote_ports
                .iter()
                .count(),
            store::LIST_CAP
        );
        assert_eq!(merged.host.as_deref(), Some("h"));
    }

    #[test]
    fn an_unreadable_input_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let good = write(dir.path(), "good.json", "h", &[]);
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"["10.0.0.1", "not-an-ip"]"#).unwrap();
        let output = dir.path().join("out.json");
        std::fs::write(&output, "old").unwrap();
        let err = merge(&MergeRequest {
            files: vec![good, bad, dir.path().join("missing.json")],
            output: output.clone(),
        })
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(
            message.contains("bad.json") && message.contains("entry 1"),
            "{message}"
        );
        assert_eq!(std::fs::read_to_string(&output).unwrap(), "old");
    }

    #[test]
    fn address_lists_name_no_host() {
        assert_eq!(merged_host(&[]), "unknown");
    }
}
