//! The peer set and its checkpoint file.
//!
//! The set is keyed by address; each record keeps connection counts per
//! direction, when the peer was first and last seen, and small capped lists
//! of ports and process names, so one busy peer cannot grow it without
//! bound. The checkpoint is JSON, written atomically so a crash at any
//! instant leaves either the old file or the new one.
//!
//! Loading also accepts the plain JSON list of addresses that the old
//! psutil poller writes, so users can migrate their existing files.
//!
//! Its modules, one concern each:
//!
//! - `set`: the set and its records;
//! - `schema`: the checkpoint's fields, defined once;
//! - `writer`, `reader`: writing and reading netmon's own layout fast;
//! - `fallback`: serde, for any other valid file and for address lists;
//! - `target`: the written file, reached through its directory's descriptor:
//!   replacing it atomically, and cleaning up around it;
//! - `output`, `lockfile`: opening `netmon run`'s output: one writer, the
//!   file's checks, the corrupt-file policy and the initial load.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _},
    net::IpAddr,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

#[cfg(test)]
mod agreement;
mod codes;
mod compact;
mod fallback;
mod key;
mod lockfile;
mod output;
mod reader;
mod schema;
mod set;
mod target;
mod writer;

use anyhow::{Context as _, bail};

pub use compact::{CappedSet, InlineItem, LIST_CAP};
pub use fallback::parse_with_serde;
pub use key::{NetnsScope, PeerKey};
pub use lockfile::Lock;
pub use output::{OnCorrupt, Output, check_output, open_output};
pub use schema::{FORMAT_VERSION, MAX_ADDRESSES, OLDEST_VERSION, PeerRecord};
pub use set::PeerSet;
pub use target::{Target, write_atomically};
pub(crate) use writer::decimal;
pub use writer::{Chunks, to_json, write_checkpoint, write_json};

use crate::time::UnixTime;

/// Whether `err` says the disk cannot take a write now (full, over quota,
/// read-only) rather than that the output is wrong: `netmon run` waits for
/// such a disk in memory, at start-up as mid-run.
pub fn disk_unwritable(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|cause| cause.downcast_ref::<io::Error>())
        .any(is_disk_unwritable)
}

fn is_disk_unwritable(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EROFS)
    )
}

/// Everything a checkpoint file holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub host: Option<String>,
    /// The host's own IPv4 addresses when the file was written (none
    /// known for a version 1 file or an address list): what lets a set of
    /// files from many hosts be joined, a peer that is another file's own
    /// address being that host.
    pub addresses: Vec<IpAddr>,
    /// The attach mode that collected the data, when netmon wrote the file.
    pub mode: Option<String>,
    /// Events the kernel side could not deliver, over all runs on this
    /// file; their connections were still counted through the kernel's map.
    pub lost_events: u64,
    /// Connections the kernel side could neither deliver nor keep (ring
    /// buffer and dedup map both full), over all runs on this file: their
    /// peers may be missing.
    pub uncounted_connections: u64,
    pub peers: PeerSet,
}

/// Which of the two accepted formats a file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Checkpoint,
    /// The old poller's plain JSON list of address strings.
    AddressList,
}

/// Parses either format; `mtime` dates the entries of an address list,
/// which carries no times of its own.
pub fn parse(bytes: &[u8], mtime: u64) -> anyhow::Result<(Snapshot, FileFormat)> {
    let fast = reader::checkpoint(bytes, bytes.len() as u64).context("reading memory")?;
    match fast {
        Some(checkpoint) => Ok((snapshot_of(checkpoint)?, FileFormat::Checkpoint)),
        None => parse_with_serde(bytes, mtime),
    }
}

/// A checkpoint the fast reader took in.
fn snapshot_of(checkpoint: schema::Checkpoint) -> anyhow::Result<Snapshot> {
    check_version(Some(checkpoint.version))?;
    Ok(Snapshot {
        host: Some(checkpoint.host),
        addresses: checkpoint.addresses,
        mode: checkpoint.mode,
        lost_events: checkpoint.lost_events,
        uncounted_connections: checkpoint.uncounted_connections,
        peers: PeerSet::from_read(checkpoint.peers),
    })
}

fn check_version(version: Option<u64>) -> anyhow::Result<()> {
    match version {
        Some(v) if (u64::from(OLDEST_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => Ok(()),
        Some(v) => bail!(
            "checkpoint version {v} is not supported (this netmon reads versions \
             {OLDEST_VERSION} to {FORMAT_VERSION}; a newer netmon wrote it?)"
        ),
        None => bail!("object without a \"version\" field"),
    }
}

/// Reads a checkpoint or an old poller's address list.
///
/// `Ok(None)` when the file does not exist; any other problem is an error
/// naming the file, and the file is left as it is.
pub fn load(path: &Path) -> Result<Option<(Snapshot, FileFormat)>, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    // Without O_NONBLOCK, opening a fifo would wait for a writer; it is
    // refused as soon as it is open.
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path);
    match opened {
        Ok(file) => load_file(file, path).map(Some),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(read_error(err)),
    }
}

/// Reads an open checkpoint or address list; `path` names it in errors.
pub(super) fn load_file(mut file: File, path: &Path) -> Result<(Snapshot, FileFormat), LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let corrupt = |source| LoadError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let metadata = file.metadata().map_err(read_error)?;
    let kind = metadata.mode() & libc::S_IFMT;
    if kind != libc::S_IFREG {
        return Err(read_error(io::Error::other(format!(
            "not a regular file (a {})",
            target::mode_name(kind)
        ))));
    }
    // Most files are netmon's own: streamed through the fast reader.
    if let Some(checkpoint) = reader::checkpoint(&file, metadata.len()).map_err(read_error)? {
        let snapshot = snapshot_of(checkpoint).map_err(corrupt)?;
        return Ok((snapshot, FileFormat::Checkpoint));
    }
    io::Seek::rewind(&mut file).map_err(read_error)?;
    let bytes = read_whole(&mut file, metadata.len()).map_err(|err| {
        if err.kind() == io::ErrorKind::InvalidData {
            corrupt(err.into())
        } else {
            read_error(err)
        }
    })?;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(|| UnixTime::now().secs(), |d| d.as_secs());
    let parsed = parse_with_serde(&bytes, mtime).map_err(corrupt)?;
    // The old poller's list, or a file edited by hand: said, since the
    // general parser holds the whole file and takes a few times the memory.
    log::debug!(
        "{}: not in netmon's own layout: read with the general parser (slower, more memory)",
        path.display()
    );
    Ok(parsed)
}

/// The whole file, read into memory backed by huge pages where the kernel
/// offers them (`transparent_hugepage` set to `madvise`, as on most
/// distributions): faulting a large checkpoint in 4 KiB pages took a good
/// part of the time of loading it.
///
/// Reading stops at the first NUL byte, which no JSON text holds: a sparse
/// file claims any size, and its holes read as zeros. For the same reason
/// the size sizes the buffer only up to a bound.
///
/// (Mapping the file instead would save the copy, but a file truncated by
/// someone else while mapped kills the reader with SIGBUS.)
fn read_whole(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    const MAX_RESERVED: u64 = 256 << 20;
    let mut bytes = Vec::new();
    // One byte more than the size, so the last read sees the end of the
    // file without growing the buffer.
    let reserved = len.saturating_add(1).min(MAX_RESERVED) as usize;
    if bytes.try_reserve_exact(reserved).is_ok() {
        advise_huge_pages(bytes.spare_capacity_mut());
    }
    loop {
        let start = bytes.len();
        if io::Read::take(&mut *file, reader::CHUNK as u64).read_to_end(&mut bytes)? == 0 {
            return Ok(bytes);
        }
        if bytes[start..].contains(&0) {
            let at = start + bytes[start..].iter().position(|&b| b == 0).unwrap_or(0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a NUL byte at offset {at}, which no JSON text holds"),
            ));
        }
    }
}

/// Asks for huge pages under the 2 MiB-aligned part of `buffer`; a hint
/// the kernel may ignore, so failures are too.
pub(super) fn advise_huge_pages<T>(buffer: &mut [T]) {
    const HUGE: usize = 2 << 20;
    let start = buffer.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(buffer);
    let aligned = start.next_multiple_of(HUGE);
    if end.saturating_sub(aligned) >= HUGE {
        let len = (end - aligned) / HUGE * HUGE;
        // SAFETY: the range lies within `buffer`, which this process owns;
        // MADV_HUGEPAGE changes how it is backed, never its contents.
        unsafe { libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    }
}

/// Takes back [`advise_huge_pages`] over every page of `vector`'s
/// allocation, once it is filled. A vector that grows later must not fault
/// its new pages in an advised range (with THP defrag at `madvise`, a fault
/// there may compact memory on the spot, and a collector stalled there
/// loses events), nor be copied whole on growth because the advice left its
/// mapping in three pieces (mremap moves only one): growing the 1M-peer
/// set's records did both, a stall of about half a second.
pub(super) fn unadvise_huge_pages<T>(vector: &mut Vec<T>) {
    const PAGE: usize = 4096;
    let start = vector.as_mut_ptr() as usize;
    let end = start + vector.capacity() * std::mem::size_of::<T>();
    let (start, end) = (start / PAGE * PAGE, end.next_multiple_of(PAGE));
    if end > start {
        // SAFETY: the pages hold `vector`'s allocation (and, where it is
        // not mapped on its own, neighbours on the heap, never huge
        // pages anyway); MADV_NOHUGEPAGE changes how they are backed,
        // never their contents.
        unsafe {
            libc::madvise(
                start as *mut libc::c_void,
                end - start,
                libc::MADV_NOHUGEPAGE,
            )
        };
    }
}

/// Why a file could not be loaded. Kept apart because a corrupt file may
/// be moved aside (`--on-corrupt backup`) while an unreadable one may not.
#[derive(Debug)]
pub enum LoadError {
    /// The file exists but cannot be read (permissions, I/O).
    Read { path: PathBuf, source: io::Error },
    /// The file is in neither format.
    Corrupt {
        path: PathBuf,
        source: anyhow::Error,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Corrupt { path, source } => write!(
                f,
                "{}: not a netmon checkpoint nor a JSON list of IP addresses: {source:#}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::{set::tests::conn, *};
    use crate::peer::{Direction, NetnsId, Owner, Protocol, Service};

    #[test]
    fn checkpoint_round_trips_sorted_numerically() {
        let mut snapshot = Snapshot {
            mode: Some("tracepoint".into()),
            lost_events: 3,
            uncounted_connections: 4,
            ..Snapshot::default()
        };
        for peer in [[10, 0, 0, 10], [9, 0, 0, 1], [10, 0, 0, 9]] {
            snapshot
                .peers
                .record(&conn(peer, Direction::Outbound, "x"), 1, 1_700_000_000);
        }
        let bytes = to_json(&snapshot, "host1", 1_700_000_001).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let order: Vec<_> = ["9.0.0.1", "10.0.0.9", "10.0.0.10"]
            .iter()
            .map(|ip| text.find(ip).unwrap())
            .collect();
        assert!(order.is_sorted(), "{text}");
        let (back, format) = parse(&bytes, 0).unwrap();
        assert_eq!(format, FileFormat::Checkpoint);
        assert_eq!(back.lost_events, 3);
        assert_eq!(back.uncounted_connections, 4);
        assert_eq!(back.mode.as_deref(), Some("tracepoint"));
        assert!(back.peers.iter().eq(snapshot.peers.iter()));
    }

    #[test]
    fn unsorted_and_repeated_peers_merge() {
        let peer = |ip: &str, outbound: u64, seen: &str| {
            serde_json::json!({"ip": ip, "first_seen": seen, "last_seen": seen,
                               "outbound": outbound, "inbound": 0, "remote_ports": [outbound]})
        };
        let file = serde_json::json!({"version": 1, "host": "h", "updated": "x", "peers": [
            peer("10.0.0.9", 1, "2024-01-02T00:00:00Z"),
            peer("10.0.0.1", 2, "2024-01-01T00:00:00Z"),
            peer("10.0.0.9", 3, "2024-01-01T00:00:00Z"),
        ]});
        let (snapshot, _) = parse(&serde_json::to_vec(&file).unwrap(), 0).unwrap();
        let peers: Vec<_> = snapshot.peers.iter().collect();
        assert_eq!(peers.len(), 2);
        let (ip, merged) = peers[1];
        assert_eq!(ip, Ipv4Addr::new(10, 0, 0, 9));
        assert_eq!(merged.outbound, 4);
        assert_eq!(
            merged.remote_ports.iter().collect::<Vec<_>>(),
            [Service::tcp(1), Service::tcp(3)]
        );
        assert_eq!(merged.last_seen - merged.first_seen, 86_400);
    }

    #[test]
    fn old_poller_list_loads() {
        let (snapshot, format) = parse(br#"["10.0.0.1", "192.168.1.2", "10.0.0.1"]"#, 42).unwrap();
        assert_eq!(format, FileFormat::AddressList);
        assert_eq!(snapshot.peers.len(), 2);
        assert_eq!(
            snapshot
                .peers
                .get(Ipv4Addr::new(10, 0, 0, 1).into())
                .unwrap()
                .first_seen,
            42
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        for bad in [
            &b"{"[..],
            b"42",
            br#"["10.0.0.300"]"#,
            br#"[1]"#,
            br#"{"peers": []}"#,
            br#"{"version": 9}"#,
        ] {
            assert!(parse(bad, 0).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    /// The bytes netmon writes, exactly: other tools diff and grep them.
    #[test]
    fn a_checkpoint_is_written_byte_for_byte() {
        let mut snapshot = Snapshot {
            mode: Some("tracepoint".into()),
            lost_events: 7,
            addresses: vec![
                Ipv4Addr::new(10, 0, 0, 1).into(),
                Ipv4Addr::new(192, 168, 1, 5).into(),
                "fd00::5".parse().unwrap(),
            ],
            ..Snapshot::default()
        };
        snapshot.peers.record(
            &conn([10, 0, 0, 7], Direction::Outbound, "api\"1"),
            3,
            1_795_881_482,
        );
        snapshot.peers.record(
            &conn([10, 0, 0, 7], Direction::Inbound, "sshd"),
            1,
            1_795_881_633,
        );
        snapshot
            .peers
            .record(&conn([9, 1, 2, 3], Direction::Inbound, ""), 2, 0);
        // IPv6 after IPv4, as RFC 5952 writes it.
        let mut v6 = conn([0; 4], Direction::Outbound, "curl");
        v6.peer = "2001:DB8:0:0::1".parse().unwrap();
        snapshot.peers.record(&v6, 1, 0);
        // A resolver in a container's own network namespace: after the
        // host's peers, with its namespace.
        let mut dns = conn([10, 0, 0, 53], Direction::Outbound, "unbound");
        dns.protocol = Protocol::Udp;
        dns.remote_port = 53;
        dns.owner = Owner::new("container:3f4e5a6b7c8d");
        dns.netns = Some(NetnsId(4_026_532_999));
        snapshot.peers.record(&dns, 2, 0);
        let bytes = to_json(&snapshot, "web-\"1\"", 1_795_881_640).unwrap();
        let expected = concat!(
            r#"{"version":4,"host":"web-\"1\"","addresses":["10.0.0.1","192.168.1.5","fd00::5"],"updated":"2026-11-28T16:00:40Z","mode":"tracepoint","lost_events":7,"uncounted_connections":0,"peers":["#,
            "\n",
            r#"{"ip":"9.1.2.3","first_seen":"1970-01-01T00:00:00Z","last_seen":"1970-01-01T00:00:00Z","outbound":0,"inbound":2,"remote_ports":[],"local_ports":["22/tcp"],"processes":[],"owners":[]}"#,
            ",\n",
            r#"{"ip":"10.0.0.7","first_seen":"2026-11-28T15:58:02Z","last_seen":"2026-11-28T16:00:33Z","outbound":3,"inbound":1,"remote_ports":["443/tcp"],"local_ports":["22/tcp"],"processes":["api\"1","sshd"],"owners":[]}"#,
            ",\n",
            r#"{"ip":"2001:db8::1","first_seen":"1970-01-01T00:00:00Z","last_seen":"1970-01-01T00:00:00Z","outbound":1,"inbound":0,"remote_ports":["443/tcp"],"local_ports":[],"processes":["curl"],"owners":[]}"#,
            ",\n",
            r#"{"ip":"10.0.0.53","netns":4026532999,"first_seen":"1970-01-01T00:00:00Z","last_seen":"1970-01-01T00:00:00Z","outbound":2,"inbound":0,"remote_ports":["53/udp"],"local_ports":[],"processes":["unbound"],"owners":["container:3f4e5a6b7c8d"]}"#,
            "\n]}\n",
        );
        assert_eq!(std::str::from_utf8(&bytes).unwrap(), expected);
        // Both readers give back what was written, namespace and all.
        let (fast, _) = parse(&bytes, 0).unwrap();
        let (serde, _) = fallback::parse_with_serde(&bytes, 0).unwrap();
        for read in [&fast, &serde] {
            let written: Vec<_> = snapshot.peers.entries_after(None).collect();
            let got: Vec<_> = read.peers.entries_after(None).collect();
            assert_eq!(got, written);
        }
        snapshot.mode = None;
        snapshot.addresses.clear();
        snapshot.peers = PeerSet::default();
        let bytes = to_json(&snapshot, "h", 0).unwrap();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"version\":4,\"host\":\"h\",\"addresses\":[],\"updated\":\"1970-01-01T00:00:00Z\",\"lost_events\":7,\"uncounted_connections\":0,\"peers\":[\n]}\n"
        );
    }
}
