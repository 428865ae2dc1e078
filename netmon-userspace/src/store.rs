//! The peer set and its checkpoint file.
//!
//! The set is keyed by address; each record keeps connection counts per
//! direction, when the peer was first and last seen, and small capped lists
//! of ports and process names, so one busy peer cannot grow it without
//! bound. The checkpoint is JSON, written atomically (temp file in the same
//! directory, fsync, rename, fsync of the directory) so a crash at any
//! instant leaves either the old file or the new one.
//!
//! Loading also accepts the plain JSON list of addresses that the old
//! psutil poller writes, so users can migrate their existing files.
use std::{
    collections::{BTreeMap, btree_map::Entry},
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::UNIX_EPOCH,
};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use smallvec::SmallVec;

mod reader;
mod writer;

pub(crate) use writer::decimal;

use crate::{
    peer::{Comm, Connection, Direction},
    time::UnixTime,
};

/// The checkpoint format this build writes.
pub const FORMAT_VERSION: u32 = 1;

/// Entries kept in each per-peer list (ports, processes).
pub const LIST_CAP: usize = 64;

/// A small set that stops growing at [`LIST_CAP`] entries, kept sorted.
///
/// Most peers have one or two ports and one process: those stay inline in
/// the record, so a million peers cost a million records and not three
/// million heap allocations on top (the difference between about 110 and
/// 180 MiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CappedSet<T: InlineItem>(SmallVec<T::Inline>);

/// How many items of a kind a [`CappedSet`] keeps inline: as many as fit in
/// the 16 bytes a heap pointer and length take anyway.
pub trait InlineItem: Sized {
    type Inline: smallvec::Array<Item = Self>;
}

impl InlineItem for u16 {
    type Inline = [u16; 8];
}

impl InlineItem for Comm {
    type Inline = [Comm; 1];
}

impl<T: InlineItem> Default for CappedSet<T> {
    fn default() -> Self {
        Self(SmallVec::new())
    }
}

impl<T: InlineItem + Ord + Copy> CappedSet<T> {
    /// Adds `value` unless present or full; allocation happens only when a
    /// new value is kept.
    pub fn insert(&mut self, value: T) {
        if let Err(at) = self.0.binary_search(&value)
            && self.0.len() < LIST_CAP
        {
            self.0.insert(at, value);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: InlineItem + Ord + Copy> FromIterator<T> for CappedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = Self::default();
        for value in iter {
            set.insert(value);
        }
        set
    }
}

/// What is known about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRecord {
    /// Seconds since the Unix epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    /// Connections this host opened to the peer.
    pub outbound: u64,
    /// Connections the peer opened to this host.
    pub inbound: u64,
    /// Ports of the peer that we connected to.
    pub remote_ports: CappedSet<u16>,
    /// Our ports that the peer connected to.
    pub local_ports: CappedSet<u16>,
    /// Local processes seen on the connections.
    pub processes: CappedSet<Comm>,
}

impl PeerRecord {
    fn new(now: u64) -> Self {
        Self {
            first_seen: now,
            last_seen: now,
            outbound: 0,
            inbound: 0,
            remote_ports: CappedSet::default(),
            local_ports: CappedSet::default(),
            processes: CappedSet::default(),
        }
    }

    /// Adds an observation of `connections` connections.
    fn add(&mut self, conn: &Connection, connections: u64, now: u64) {
        self.last_seen = self.last_seen.max(now);
        match conn.direction {
            // Port 0 means unknown: a child socket reset before accept()
            // returned it has already given its port back.
            Direction::Outbound => {
                self.outbound = self.outbound.saturating_add(connections);
                if conn.remote_port != 0 {
                    self.remote_ports.insert(conn.remote_port);
                }
            }
            Direction::Inbound => {
                self.inbound = self.inbound.saturating_add(connections);
                if conn.local_port != 0 {
                    self.local_ports.insert(conn.local_port);
                }
            }
        }
        if let Some(process) = conn.process {
            self.processes.insert(process);
        }
    }

    /// Folds in another record of the same peer: counts summed (saturating:
    /// a hostile file must not overflow them), first seen the earliest,
    /// last seen the latest, lists unioned within their cap.
    fn merge(&mut self, other: &Self) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.outbound = self.outbound.saturating_add(other.outbound);
        self.inbound = self.inbound.saturating_add(other.inbound);
        other
            .remote_ports
            .iter()
            .for_each(|p| self.remote_ports.insert(*p));
        other
            .local_ports
            .iter()
            .for_each(|p| self.local_ports.insert(*p));
        other
            .processes
            .iter()
            .for_each(|p| self.processes.insert(*p));
    }
}

/// The deduplicated set of peers.
///
/// An ordered index of small positions over a vector of records: the
/// index gives checkpoints and reports numeric address order, and with
/// only 4-byte positions in it its nodes stay small and dense in cache,
/// while the ~100-byte records are appended to one vector. A file's
/// records, read into one vector, stay in it instead of being moved into
/// tree nodes (1M peers: load 888 -> 768 ms, peak RSS 229 -> 142 MiB;
/// steady RSS 122 -> 135 MiB for the address and position kept beside
/// each record).
///
/// The vector does not ask for huge pages as it grows, as the reader's
/// does: with THP defrag at `madvise`, a fault in an advised range may
/// compact memory on the spot, and the first bench run with that advice
/// lost 25 events to a stall (the only loss in any run of the bench).
#[derive(Debug, Default)]
pub struct PeerSet {
    /// Address to position in `records`. Positions are `u32`: four billion
    /// records would take over 400 GB, far past any memory.
    index: BTreeMap<Ipv4Addr, u32>,
    /// In arrival order (in address order, as read from a file).
    records: Vec<(Ipv4Addr, PeerRecord)>,
}

impl PeerSet {
    /// The tests' shorthand for [`Self::record_within`] without a limit:
    /// true when the peer is new.
    #[cfg(test)]
    pub fn record(&mut self, conn: &Connection, connections: u64, now: u64) -> bool {
        self.record_within(conn, connections, now, usize::MAX, |_| ())
            .is_some_and(|(before, _)| before.is_none())
    }

    /// Folds one observation of `connections` connections in (0 when it
    /// only adds what it knows, such as the accepting process of a
    /// connection another hook counted), in one lookup: a new peer is
    /// refused (`None`) once the set holds `limit`. Gives what
    /// `before` makes of the record as it was (`None` for a new peer) and
    /// the record as it is now.
    pub fn record_within<T>(
        &mut self,
        conn: &Connection,
        connections: u64,
        now: u64,
        limit: usize,
        before: impl FnOnce(&PeerRecord) -> T,
    ) -> Option<(Option<T>, &PeerRecord)> {
        let full = self.records.len() >= limit;
        let (was, at) = match self.index.entry(conn.peer) {
            Entry::Occupied(slot) => {
                let at = *slot.get() as usize;
                (Some(before(&self.records[at].1)), at)
            }
            Entry::Vacant(_) if full => return None,
            Entry::Vacant(slot) => {
                let at = self.records.len();
                slot.insert(at as u32);
                self.records.push((conn.peer, PeerRecord::new(now)));
                (None, at)
            }
        };
        let record = &mut self.records[at].1;
        record.add(conn, connections, now);
        Some((was, record))
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, addr: Ipv4Addr) -> Option<&PeerRecord> {
        let at = *self.index.get(&addr)?;
        Some(&self.records[at as usize].1)
    }

    /// Peers in numeric address order.
    pub fn iter(&self) -> impl Iterator<Item = (Ipv4Addr, &PeerRecord)> {
        self.index
            .iter()
            .map(|(addr, &at)| (*addr, &self.records[at as usize].1))
    }

    /// Folds a whole set in, as [`Self::merge_record`] does each record.
    pub fn merge(&mut self, other: PeerSet) {
        if self.is_empty() {
            // Reading one file: take its set rather than re-insert it.
            *self = other;
        } else {
            for (addr, record) in other.records {
                self.merge_record(addr, record);
            }
        }
    }

    /// Adds a whole record (from a file), merging with what is there.
    pub fn merge_record(&mut self, addr: Ipv4Addr, other: PeerRecord) {
        match self.index.entry(addr) {
            Entry::Vacant(slot) => {
                slot.insert(self.records.len() as u32);
                self.records.push((addr, other));
            }
            Entry::Occupied(slot) => self.records[*slot.get() as usize].1.merge(&other),
        }
    }

    /// A set of records in any order, repeated addresses merged as
    /// [`Self::merge_record`] merges them.
    ///
    /// Sorting first builds the index in one pass: inserting a million
    /// addresses in random order (an old poller's list) costs seconds.
    fn from_records(mut records: Vec<(Ipv4Addr, PeerRecord)>) -> Self {
        // netmon writes its peers in order, and the stable sort takes a
        // sorted run in one pass.
        records.sort_by_key(|(addr, _)| *addr);
        records.dedup_by(|(addr, record), (kept_addr, kept)| {
            let repeat = addr == kept_addr;
            if repeat {
                kept.merge(record);
            }
            repeat
        });
        // Sorted keys build the tree in one pass; the records stay where
        // the reader put them.
        let index = records
            .iter()
            .enumerate()
            .map(|(at, (addr, _))| (*addr, at as u32))
            .collect();
        Self { index, records }
    }
}

/// Everything a checkpoint file holds.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub host: Option<String>,
    /// The attach mode that collected the data, when netmon wrote the file.
    pub mode: Option<String>,
    /// Events the kernel side could not deliver, over all runs on this file.
    pub lost_events: u64,
    pub peers: PeerSet,
}

/// Which of the two accepted formats a file was in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Checkpoint,
    /// The old poller's plain JSON list of address strings.
    AddressList,
}

/// A version 1 checkpoint as read: the peers go into a [`PeerSet`] as
/// they are parsed, so a million-peer file never exists as a list too.
#[derive(Deserialize)]
struct FileV1In {
    version: u64,
    host: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    lost_events: u64,
    peers: PeersIn,
}

struct PeersIn(PeerSet);

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

/// Just the version, to say so when a checkpoint of another version fails
/// to parse as this one.
#[derive(Deserialize)]
struct VersionOnly {
    version: Option<u64>,
}

fn check_version(version: Option<u64>) -> anyhow::Result<()> {
    match version {
        Some(v) if v == u64::from(FORMAT_VERSION) => Ok(()),
        Some(v) => bail!(
            "checkpoint version {v} is not supported (this netmon reads version {FORMAT_VERSION})"
        ),
        None => bail!("object without a \"version\" field"),
    }
}

/// One peer as read: each field parsed straight into the record's type,
/// so reading a peer allocates nothing but the lists it keeps. Errors
/// carry the line and column of the offending value.
#[derive(Deserialize)]
struct PeerIn {
    ip: Ipv4Addr,
    first_seen: UnixTime,
    last_seen: UnixTime,
    outbound: u64,
    inbound: u64,
    #[serde(default, deserialize_with = "capped::<_, u16, _>")]
    remote_ports: CappedSet<u16>,
    #[serde(default, deserialize_with = "capped::<_, u16, _>")]
    local_ports: CappedSet<u16>,
    #[serde(default, deserialize_with = "capped::<_, ProcessName, _>")]
    processes: CappedSet<Comm>,
}

impl PeerIn {
    fn into_record(self) -> (Ipv4Addr, PeerRecord) {
        let record = PeerRecord {
            first_seen: self.first_seen.secs(),
            last_seen: self.last_seen.secs(),
            outbound: self.outbound,
            inbound: self.inbound,
            remote_ports: self.remote_ports,
            local_ports: self.local_ports,
            processes: self.processes,
        };
        (self.ip, record)
    }
}

/// A value parsed from a JSON string in place, without copying it out.
fn from_str_with<'de, D, T>(
    deserializer: D,
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Parse<T> {
        expecting: &'static str,
        parse: fn(&str) -> Result<T, String>,
    }

    impl<T> serde::de::Visitor<'_> for Parse<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text).map_err(E::custom)
        }
    }

    deserializer.deserialize_str(Parse { expecting, parse })
}

/// A JSON list read straight into a [`CappedSet`]; items that convert to
/// `None` (an empty process name) are skipped.
fn capped<'de, D, I, T>(deserializer: D) -> Result<CappedSet<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    I: Deserialize<'de> + Into<Option<T>>,
    T: InlineItem + Ord + Copy,
{
    struct Items<I, T>(std::marker::PhantomData<(I, T)>);

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

    deserializer.deserialize_seq(Items::<I, T>(std::marker::PhantomData))
}

/// A process name as read, without allocating; `None` when empty.
struct ProcessName(Option<Comm>);

impl From<ProcessName> for Option<Comm> {
    fn from(name: ProcessName) -> Self {
        name.0
    }
}

impl<'de> Deserialize<'de> for ProcessName {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_str_with(deserializer, "a process name", |name| {
            Ok(Self(Comm::from_name(name)))
        })
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
    let corrupt = |source| LoadError::Corrupt {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    let metadata = file.metadata().map_err(read_error)?;
    // Most files are netmon's own: streamed through the fast reader.
    if let Some(checkpoint) = reader::checkpoint(&file, metadata.len()).map_err(read_error)? {
        let snapshot = snapshot_of(checkpoint).map_err(corrupt)?;
        return Ok(Some((snapshot, FileFormat::Checkpoint)));
    }
    io::Seek::rewind(&mut file).map_err(read_error)?;
    let bytes = read_whole(&mut file, metadata.len()).map_err(read_error)?;
    let mtime = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or_else(|| UnixTime::now().secs(), |d| d.as_secs());
    parse_with_serde(&bytes, mtime).map(Some).map_err(corrupt)
}

/// The whole file, read into memory backed by huge pages where the kernel
/// offers them (`transparent_hugepage` set to `madvise`, as on most
/// distributions): a million-peer checkpoint is about 190 MB, and faulting
/// it in 4 KiB pages was a fifth of the time of loading it.
///
/// (Mapping the file instead would save the copy, but a file truncated by
/// someone else while mapped kills the reader with SIGBUS.)
fn read_whole(file: &mut File, len: u64) -> io::Result<Vec<u8>> {
    // One byte more than the size, so read_to_end sees the end of the file
    // without growing the buffer.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    advise_huge_pages(bytes.spare_capacity_mut());
    io::Read::read_to_end(file, &mut bytes)?;
    Ok(bytes)
}

/// Asks for huge pages under the 2 MiB-aligned part of `buffer`; a hint
/// the kernel may ignore, so failures are too.
fn advise_huge_pages<T>(buffer: &mut [T]) {
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
                "{}: not a netmon checkpoint nor a JSON list of IPv4 addresses: {source:#}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// Moves a corrupt file aside as `PATH.corrupt-YYYYMMDDTHHMMSSZ`.
pub fn backup_corrupt(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp: String = UnixTime::now()
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut backup = path.as_os_str().to_owned();
    backup.push(format!(".corrupt-{stamp}"));
    let backup = PathBuf::from(backup);
    fs::rename(path, &backup).with_context(|| {
        format!(
            "cannot move corrupt {} to {}",
            path.display(),
            backup.display()
        )
    })?;
    Ok(backup)
}

/// Removes temp files a crashed run left beside `path`. Only called with
/// the file's lock held, so no live writer owns them.
pub fn remove_stale_temp_files(path: &Path) {
    let prefix = format!(".{}.tmp-", file_name(path));
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!(
                    "removed {} left by an interrupted checkpoint",
                    entry.path().display()
                ),
                Err(err) => log::warn!("cannot remove stale {}: {err}", entry.path().display()),
            }
        }
    }
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
fn snapshot_of(checkpoint: reader::Checkpoint) -> anyhow::Result<Snapshot> {
    check_version(Some(checkpoint.version))?;
    Ok(Snapshot {
        host: Some(checkpoint.host),
        mode: checkpoint.mode,
        lost_events: checkpoint.lost_events,
        peers: PeerSet::from_records(checkpoint.peers),
    })
}

/// Either format, with serde: any JSON, and errors that say where. What
/// [`parse`] falls back to; public so the fuzz target can hold the two
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

/// Parses a checkpoint with serde: errors carry the line and column of
/// the offending entry.
fn parse_checkpoint(bytes: &[u8]) -> anyhow::Result<Snapshot> {
    // Checking UTF-8 once up front is cheaper than string by string.
    let text = std::str::from_utf8(bytes).context("not UTF-8")?;
    let file: FileV1In = match serde_json::from_str(text) {
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
        mode: file.mode,
        lost_events: file.lost_events,
        peers: file.peers.0,
    })
}

fn parse_address_list(items: Vec<serde_json::Value>, mtime: u64) -> anyhow::Result<Snapshot> {
    let mut peers = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let text = item
            .as_str()
            .ok_or_else(|| anyhow!("entry {index} is not a string: {item}"))?;
        let ip: Ipv4Addr = text
            .trim()
            .parse()
            .map_err(|_| anyhow!("entry {index} is not an IPv4 address: {text:?}"))?;
        peers.push((ip, PeerRecord::new(mtime)));
    }
    Ok(Snapshot {
        peers: PeerSet::from_records(peers),
        ..Snapshot::default()
    })
}

/// Writes a snapshot as a version 1 checkpoint: the header, then one peer
/// per line (readable, diffable, and a million peers in well under a
/// second).
pub fn write_json(
    out: &mut impl io::Write,
    snapshot: &Snapshot,
    host: &str,
    now: u64,
) -> io::Result<()> {
    out.write_all(b"{\"version\":")?;
    serde_json::to_writer(&mut *out, &FORMAT_VERSION)?;
    out.write_all(b",\"host\":")?;
    serde_json::to_writer(&mut *out, host)?;
    out.write_all(b",\"updated\":")?;
    serde_json::to_writer(&mut *out, &UnixTime::from_secs(now))?;
    if let Some(mode) = &snapshot.mode {
        out.write_all(b",\"mode\":")?;
        serde_json::to_writer(&mut *out, mode)?;
    }
    out.write_all(b",\"lost_events\":")?;
    serde_json::to_writer(&mut *out, &snapshot.lost_events)?;
    out.write_all(b",\"peers\":[")?;
    let mut lines = writer::LineWriter::new();
    for (index, (ip, record)) in snapshot.peers.iter().enumerate() {
        out.write_all(if index == 0 { b"\n" } else { b",\n" })?;
        out.write_all(lines.peer(ip, record))?;
    }
    out.write_all(b"\n]}\n")
}

/// A snapshot as a version 1 checkpoint, in memory.
pub fn to_json(snapshot: &Snapshot, host: &str, now: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_json(&mut bytes, snapshot, host, now)?;
    Ok(bytes)
}

/// Writes a checkpoint to `path` atomically, streaming it to disk rather
/// than building it in memory first.
pub fn write_checkpoint(
    path: &Path,
    snapshot: &Snapshot,
    host: &str,
    now: u64,
) -> anyhow::Result<()> {
    write_atomically_with(path, |out| write_json(out, snapshot, host, now))
}

/// Writes `bytes` to `path` atomically, mode 0640.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// Writes what `write` produces to `path` atomically, mode 0640.
///
/// The temp file is created with `O_EXCL | O_NOFOLLOW` in the target's
/// directory, so a planted symlink is never followed, and renamed over the
/// target only once its contents are on disk.
fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut writer = BufWriter::with_capacity(1 << 16, file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write checkpoint {}", path.display()))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .map_or_else(|| "peers.json".into(), |n| n.to_string_lossy())
}

/// `.<name>.tmp-<pid>` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    parent_dir(path).join(format!(".{}.tmp-{}", file_name(path), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Source;

    fn conn(peer: [u8; 4], direction: Direction, process: &str) -> Connection {
        Connection {
            peer: Ipv4Addr::from(peer),
            remote_port: 443,
            local_port: 22,
            direction,
            process: Comm::from_name(process),
            source: Source::Tracepoint,
        }
    }

    #[test]
    fn record_counts_and_dedupes() {
        let mut set = PeerSet::default();
        assert!(set.record(&conn([10, 0, 0, 1], Direction::Outbound, "curl"), 1, 100));
        assert!(!set.record(&conn([10, 0, 0, 1], Direction::Outbound, "curl"), 1, 105));
        assert!(!set.record(&conn([10, 0, 0, 1], Direction::Inbound, "sshd"), 0, 106));
        let record = set.get(Ipv4Addr::new(10, 0, 0, 1)).unwrap();
        assert_eq!((record.outbound, record.inbound), (2, 0));
        assert_eq!((record.first_seen, record.last_seen), (100, 106));
        assert_eq!(record.processes.iter().count(), 2);
        assert_eq!(record.local_ports.iter().collect::<Vec<_>>(), [&22]);
    }

    #[test]
    fn port_zero_is_not_a_port() {
        let mut set = PeerSet::default();
        let mut reset = conn([10, 0, 0, 2], Direction::Inbound, "sshd");
        reset.local_port = 0;
        set.record(&reset, 1, 100);
        let record = set.get(Ipv4Addr::new(10, 0, 0, 2)).unwrap();
        assert_eq!(record.inbound, 1);
        assert!(record.local_ports.is_empty());
    }

    #[test]
    fn lists_are_capped() {
        let ports: CappedSet<u16> = (0..1000).collect();
        assert_eq!(ports.iter().count(), LIST_CAP);
    }

    #[test]
    fn checkpoint_round_trips_sorted_numerically() {
        let mut snapshot = Snapshot {
            mode: Some("tracepoint".into()),
            lost_events: 3,
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
        assert_eq!(merged.remote_ports.iter().collect::<Vec<_>>(), [&1, &3]);
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
                .get(Ipv4Addr::new(10, 0, 0, 1))
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

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }
}
