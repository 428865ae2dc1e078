//! Writing a checkpoint: the header, then one line a peer, assembled by
//! hand.
//!
//! Through serde each peer paid for formatting machinery for numbers and
//! times and for escaping scans of every field name. Here a line is
//! assembled in a reused buffer from [`super::schema`]'s field list:
//! numbers by hand, times from a small cache (peers seen in the same second
//! share one), strings escaped only where they can need it (process names).
use std::{io, net::IpAddr};

use super::{CappedSet, InlineItem, PeerKey, PeerRecord, PeerSet, Snapshot, Target, schema};
use crate::{peer::Comm, time::UnixTime};

/// Writes a snapshot as a checkpoint: the header, then one peer
/// per line (readable, diffable, and quick to write).
pub fn write_json(
    out: &mut impl io::Write,
    snapshot: &Snapshot,
    host: &str,
    now: u64,
) -> io::Result<()> {
    // Lines go straight into a chunk, and a chunk straight to `out`.
    const CHUNK: usize = 1 << 20;
    let mut bytes = Vec::with_capacity(CHUNK + 4096);
    let mut chunks = Chunks::start(snapshot, host, now, &mut bytes)?;
    loop {
        let last = chunks.fill(&snapshot.peers, &mut bytes, CHUNK);
        out.write_all(&bytes)?;
        if last {
            return Ok(());
        }
        bytes.clear();
    }
}

/// A checkpoint serialized a chunk at a time, for a caller that keeps
/// collecting between chunks. Each chunk resumes after the last address
/// written, so the set may change in between: a peer added behind the
/// cursor lands in the next checkpoint, one ahead of it in this one.
pub struct Chunks {
    lines: LineWriter,
    /// The last peer written, `None` before the first.
    after: Option<PeerKey>,
    written: usize,
}

impl Chunks {
    /// Starts a checkpoint of `snapshot`, its header appended to `out`.
    pub fn start(snapshot: &Snapshot, host: &str, now: u64, out: &mut Vec<u8>) -> io::Result<Self> {
        schema::write_header(out, snapshot, host, now)?;
        Ok(Self {
            lines: LineWriter::new(),
            after: None,
            written: 0,
        })
    }

    /// Appends the next peers of `peers` to `out`, one at least, until it
    /// holds `bytes` or the set ends; true once the checkpoint is complete,
    /// its closing bytes appended.
    pub fn fill(&mut self, peers: &PeerSet, out: &mut Vec<u8>, bytes: usize) -> bool {
        let mut rest = peers.entries_after(self.after);
        loop {
            let Some((key, record)) = rest.next() else {
                out.extend_from_slice(b"\n]}\n");
                return true;
            };
            out.extend_from_slice(if self.written == 0 { b"\n" } else { b",\n" });
            self.lines.peer_into(key, record, out);
            self.after = Some(key);
            self.written += 1;
            if out.len() >= bytes {
                return false;
            }
        }
    }

    /// How many peers the chunks so far held.
    pub fn written(&self) -> usize {
        self.written
    }
}

/// A snapshot as a checkpoint, in memory.
pub fn to_json(snapshot: &Snapshot, host: &str, now: u64) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_json(&mut bytes, snapshot, host, now)?;
    Ok(bytes)
}

/// Writes a checkpoint to `target` atomically, streaming it to disk rather
/// than building it in memory first.
pub fn write_checkpoint(
    target: &Target,
    snapshot: &Snapshot,
    host: &str,
    now: u64,
) -> anyhow::Result<()> {
    target.write_atomically_with(|out| write_json(out, snapshot, host, now))
}

/// Builds one peer's JSON object at a time; the [`schema::Codec`]s write
/// their values through it. Its primitives are `#[inline]`: they are called
/// from the schema's module, once or more per field of every peer, and a
/// call each costs the writer as much as the line's own work.
pub(super) struct LineWriter {
    line: Vec<u8>,
    times: TimeCache,
}

impl LineWriter {
    pub(super) fn new() -> Self {
        Self {
            line: Vec::new(),
            times: TimeCache::new(),
        }
    }

    /// Appends the JSON object for one peer to `out`.
    pub(super) fn peer_into(&mut self, key: PeerKey, record: &PeerRecord, out: &mut Vec<u8>) {
        std::mem::swap(&mut self.line, out);
        schema::write_peer(self, key, record);
        std::mem::swap(&mut self.line, out);
    }

    /// The JSON object for one peer, valid until the next call.
    #[cfg(test)]
    pub(super) fn peer(&mut self, key: PeerKey, record: &PeerRecord) -> &[u8] {
        self.line.clear();
        schema::write_peer(self, key, record);
        &self.line
    }

    /// Bytes that are already JSON.
    #[inline]
    pub(super) fn raw(&mut self, bytes: &[u8]) {
        self.line.extend_from_slice(bytes);
    }

    #[inline]
    pub(super) fn u64(&mut self, value: u64) {
        self.line.extend_from_slice(decimal(value, &mut [0; 20]));
    }

    /// An address as a JSON string, assembled on the stack and copied into
    /// the line once.
    #[inline]
    pub(super) fn ip(&mut self, ip: IpAddr) {
        let ip = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => {
                // Rarer, and its text (RFC 5952) is not worth doing by hand.
                use std::io::Write as _;
                let _ = write!(self.line, "\"{v6}\"");
                return;
            }
        };
        let mut text = [0u8; "\"255.255.255.255\"".len()];
        text[0] = b'"';
        let (mut len, mut digits) = (1, [0; 20]);
        for (index, octet) in ip.octets().into_iter().enumerate() {
            if index > 0 {
                text[len] = b'.';
                len += 1;
            }
            let digits = decimal(u64::from(octet), &mut digits);
            text[len..len + digits.len()].copy_from_slice(digits);
            len += digits.len();
        }
        text[len] = b'"';
        self.line.extend_from_slice(&text[..=len]);
    }

    /// A time as a JSON string, in RFC 3339.
    #[inline]
    pub(super) fn time(&mut self, secs: u64) {
        self.line.extend_from_slice(self.times.get(secs));
    }

    #[inline(always)]
    pub(super) fn list<T: InlineItem + Ord + Copy>(
        &mut self,
        list: &CappedSet<T>,
        mut item: impl FnMut(&mut Self, T),
    ) {
        self.line.push(b'[');
        for (index, value) in list.iter().enumerate() {
            if index > 0 {
                self.line.push(b',');
            }
            item(self, value);
        }
        self.line.push(b']');
    }

    /// A process name as a JSON string (lossily decoded, as `Comm`
    /// displays).
    #[inline]
    pub(super) fn comm(&mut self, comm: Comm) {
        self.text(&String::from_utf8_lossy(comm.as_bytes()));
    }

    /// Any text as a JSON string.
    pub(super) fn text(&mut self, text: &str) {
        let line = &mut self.line;
        line.push(b'"');
        for ch in text.chars() {
            match ch {
                '"' => line.extend_from_slice(b"\\\""),
                '\\' => line.extend_from_slice(b"\\\\"),
                c if u32::from(c) < 0x20 => {
                    const HEX: &[u8; 16] = b"0123456789abcdef";
                    let c = u32::from(c) as usize;
                    line.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[c >> 4], HEX[c & 0xf]]);
                }
                c => {
                    let mut utf8 = [0u8; 4];
                    line.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
                }
            }
        }
        line.push(b'"');
    }
}

/// `value` in decimal ASCII digits, written into `digits`: the number
/// formatting of the checkpoint and report hot loops, without `core::fmt`.
pub(crate) fn decimal(mut value: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    &digits[at..]
}

/// Recent seconds as JSON strings of RFC 3339, direct-mapped: most peers
/// of a checkpoint were first and last seen in a few thousand distinct
/// seconds.
struct TimeCache {
    slots: Box<[(u64, [u8; 22])]>,
}

impl TimeCache {
    const SLOTS: usize = 1024;

    fn new() -> Self {
        Self {
            slots: vec![(u64::MAX, [0; 22]); Self::SLOTS].into_boxed_slice(),
        }
    }

    /// `"YYYY-MM-DDTHH:MM:SSZ"`, quotes included.
    fn get(&mut self, secs: u64) -> &[u8; 22] {
        let slot = &mut self.slots[(secs % Self::SLOTS as u64) as usize];
        if slot.0 != secs {
            let text = UnixTime::from_secs(secs).to_string();
            slot.1[0] = b'"';
            slot.1[1..21].copy_from_slice(&text.as_bytes()[..20]);
            slot.1[21] = b'"';
            slot.0 = secs;
        }
        &slot.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        peer::{Direction, Service},
        store::set::tests::conn,
    };
    use std::net::Ipv4Addr;

    /// Chunks of any size make the bytes the writer makes at once, and a
    /// peer added between chunks is in them only if it comes after the
    /// last address written.
    #[test]
    fn chunks_are_the_checkpoint_and_resume_by_address() {
        let mut snapshot = Snapshot::default();
        for last in 1..=50 {
            snapshot
                .peers
                .record(&conn([10, 0, 1, last], Direction::Outbound, "x"), 1, 0);
        }
        let whole = to_json(&snapshot, "h", 0).unwrap();
        for bytes in [1, 300, 4096] {
            let mut out = Vec::new();
            let mut chunks = Chunks::start(&snapshot, "h", 0, &mut out).unwrap();
            loop {
                let limit = out.len() + bytes;
                if chunks.fill(&snapshot.peers, &mut out, limit) {
                    break;
                }
            }
            assert_eq!(out, whole, "chunks of {bytes} bytes");
            assert_eq!(chunks.written(), 50);
        }
        let mut out = Vec::new();
        let mut chunks = Chunks::start(&snapshot, "h", 0, &mut out).unwrap();
        assert!(!chunks.fill(&snapshot.peers, &mut out, 1));
        for peer in [[10, 0, 0, 1], [10, 0, 2, 1]] {
            snapshot
                .peers
                .record(&conn(peer, Direction::Inbound, "y"), 1, 0);
        }
        while !chunks.fill(&snapshot.peers, &mut out, usize::MAX) {}
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\"10.0.0.1\""), "{text}");
        assert!(text.contains("\"10.0.2.1\""), "{text}");
        assert_eq!(chunks.written(), 51);
        let (back, _) = crate::store::parse(text.as_bytes(), 0).unwrap();
        assert_eq!(back.peers.len(), 51);
    }

    #[test]
    fn a_line_is_the_json_serde_would_write() {
        let record = PeerRecord {
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_061,
            outbound: 18_446_744_073_709_551_615,
            inbound: 0,
            remote_ports: [443, 80].into_iter().map(Service::tcp).collect(),
            processes: ["cu\"rl\\", "a\u{1}b", "é"]
                .into_iter()
                .filter_map(Comm::from_name)
                .collect(),
            ..PeerRecord::default()
        };
        let mut writer = LineWriter::new();
        let key = PeerKey::host(Ipv4Addr::new(10, 0, 255, 1).into());
        let line = writer.peer(key, &record).to_vec();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "ip": "10.0.255.1",
                "first_seen": "2023-11-14T22:13:20Z",
                "last_seen": "2023-11-14T22:14:21Z",
                "outbound": 18_446_744_073_709_551_615u64,
                "inbound": 0,
                "remote_ports": ["80/tcp", "443/tcp"],
                "local_ports": [],
                "processes": ["a\u{1}b", "cu\"rl\\", "é"],
                "owners": [],
            })
        );
    }
}
