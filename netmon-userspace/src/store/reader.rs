//! The checkpoint's load path, by hand: the mirror of [`super::writer`].
//!
//! Through serde a peer cost about a microsecond (the field-name matching
//! and visitor machinery for each of eight fields), and the whole file had
//! to be in memory first: loading a million-peer checkpoint (about 180 MB)
//! took well over a second, most of it faulting in and copying memory.
//! This parser streams the file through a small buffer that stays in the
//! CPU's cache, knows the checkpoint's schema, and reads a peer written in
//! netmon's own layout by comparing its field names whole.
//!
//! It never decides what is valid. Anything outside the plain subset
//! netmon writes (an escape in a string, a field it does not know, a
//! number that is not a plain unsigned integer, a repeated field, a time
//! in another form, a value bigger than its buffer) makes it give up with
//! `None`, and the caller parses the file with serde instead: slower,
//! general, and the one that reports errors with their line and column.
//! Both paths accept the same files with the same meaning; the tests and
//! the fuzz target compare them.
use std::{
    io::{self, Read as _},
    net::Ipv4Addr,
};

use super::{CappedSet, InlineItem, PeerRecord, advise_huge_pages};
use crate::{peer::Comm, time::UnixTime};

/// A checkpoint as read by the fast path.
#[derive(Debug)]
pub(super) struct Checkpoint {
    pub version: u64,
    pub host: String,
    pub mode: Option<String>,
    pub lost_events: u64,
    pub peers: Vec<(Ipv4Addr, PeerRecord)>,
}

/// Parses a whole checkpoint from `source` (`size_hint` bytes long, if
/// known): `Ok(None)` to say "ask serde", an error only when reading fails.
pub(super) fn checkpoint(source: impl io::Read, size_hint: u64) -> io::Result<Option<Checkpoint>> {
    let mut cursor = Cursor {
        source,
        // A small file (or a fuzzer's few bytes) needs no megabyte.
        buffer: Vec::with_capacity(match usize::try_from(size_hint) {
            Ok(size) if size > 0 => size.saturating_add(1).min(CHUNK + AHEAD),
            _ => CHUNK + AHEAD,
        }),
        at: 0,
        eof: false,
        error: None,
        size_hint,
        mark: None,
    };
    let parsed = cursor.checkpoint();
    match cursor.error {
        Some(err) => Err(err),
        None => Ok(parsed),
    }
}

/// Bytes read from the file at a time.
const CHUNK: usize = 1 << 20;
/// Bytes kept ahead of the parser: a value longer than this (nothing
/// netmon writes comes close) sends the file to serde.
const AHEAD: usize = 256 << 10;

/// A peer line of a checkpoint is about 180 bytes; sizing the list for
/// this many bytes a peer means it is rarely copied while it grows.
const BYTES_PER_PEER: u64 = 160;

const HEADER_KEYS: &[&[u8]] = &[
    b"version",
    b"host",
    b"updated",
    b"mode",
    b"lost_events",
    b"peers",
];
const PEER_KEYS: &[&[u8]] = &[
    b"ip",
    b"first_seen",
    b"last_seen",
    b"outbound",
    b"inbound",
    b"remote_ports",
    b"local_ports",
    b"processes",
];

struct Cursor<R> {
    source: R,
    /// The window of the file being parsed.
    buffer: Vec<u8>,
    /// Where the parser is in `buffer`.
    at: usize,
    eof: bool,
    error: Option<io::Error>,
    /// The file's size if known, to size the peer list.
    size_hint: u64,
    /// Index in `buffer` the parser may come back to: kept when the buffer
    /// moves.
    mark: Option<usize>,
}

impl<R: io::Read> Cursor<R> {
    fn checkpoint(&mut self) -> Option<Checkpoint> {
        let mut fields = Fields::default();
        let (mut version, mut host, mut mode, mut lost_events, mut peers) =
            (None, None, None, 0, None);
        self.object(HEADER_KEYS, |cursor, key| {
            match fields.once(key)? {
                0 => version = Some(cursor.u64()?),
                1 => host = Some(cursor.string()?.to_owned()),
                2 => {
                    cursor.string()?;
                }
                3 => mode = cursor.nullable(|cursor| cursor.string().map(str::to_owned))?,
                4 => lost_events = cursor.u64()?,
                _ => peers = Some(cursor.peers()?),
            }
            Some(())
        })?;
        self.end()?;
        Some(Checkpoint {
            version: version?,
            host: host?,
            mode,
            lost_events,
            peers: peers?,
        })
    }

    /// Keeps at least [`AHEAD`] bytes ahead of the parser, unless the file
    /// ends sooner. Moves the unread rest to the front first, so the buffer
    /// stays small and hot in the cache.
    fn fill(&mut self) {
        if self.eof || self.buffer.len() - self.at >= AHEAD {
            return;
        }
        let done = self.mark.unwrap_or(self.at);
        self.buffer.drain(..done);
        self.at -= done;
        if let Some(mark) = &mut self.mark {
            *mark = 0;
        }
        while !self.eof && self.buffer.len() < AHEAD {
            match (&mut self.source)
                .take(CHUNK as u64)
                .read_to_end(&mut self.buffer)
            {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                // read_to_end has already retried EINTR.
                Err(err) => {
                    self.error = Some(err);
                    self.eof = true;
                }
            }
        }
    }

    /// Skips JSON whitespace, then returns the next byte.
    fn peek(&mut self) -> Option<u8> {
        self.fill();
        while let Some(&byte) = self.buffer.get(self.at) {
            if !matches!(byte, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(byte);
            }
            self.at += 1;
        }
        None
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.at += 1)
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// `{ "key": value, ... }` where every key is one of `keys`: hands the
    /// key's index to `field`, which must read the value.
    fn object(
        &mut self,
        keys: &[&[u8]],
        mut field: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.raw_string()?;
            let key = keys.iter().position(|known| *known == key)?;
            self.eat(b':')?;
            field(self, key)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// `[ item, ... ]`, calling `item` to read each one.
    fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            item(self)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// After an item of an object or array: `,` (true, another follows)
    /// or `close` (false, the end), consumed.
    fn more(&mut self, close: u8) -> Option<bool> {
        let byte = self.peek()?;
        self.at += 1;
        match byte {
            b',' => Some(true),
            _ if byte == close => Some(false),
            _ => None,
        }
    }

    /// The bytes between the quotes of a string without escapes or
    /// control characters (not yet checked to be UTF-8).
    fn raw_string(&mut self) -> Option<&[u8]> {
        self.eat(b'"')?;
        let rest = &self.buffer[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at += len + 1;
        Some(&self.buffer[self.at - len - 1..self.at - 1])
    }

    fn string(&mut self) -> Option<&str> {
        std::str::from_utf8(self.raw_string()?).ok()
    }

    /// `null`, or what `value` reads.
    fn nullable<T>(&mut self, value: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        value(self).map(Some)
    }

    /// The next bytes are `literal` (no whitespace skipped): consumed.
    fn literal(&mut self, literal: &[u8]) -> Option<()> {
        self.buffer[self.at..]
            .starts_with(literal)
            .then(|| self.at += literal.len())
    }

    /// A plain unsigned integer: digits only, no leading zero, no sign,
    /// fraction or exponent, and within u64.
    fn u64(&mut self) -> Option<u64> {
        self.peek()?;
        let rest = &self.buffer[self.at..];
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        if len == 0 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let value = rest[..len].iter().try_fold(0u64, |value, digit| {
            value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })?;
        self.at += len;
        Some(value)
    }

    fn time(&mut self) -> Option<u64> {
        // The general parser tries netmon's own form first.
        self.string()?.parse().ok().map(UnixTime::secs)
    }

    fn ip(&mut self) -> Option<Ipv4Addr> {
        parse_ipv4(self.raw_string()?)
    }

    /// A time in exactly the form netmon writes (`"YYYY-MM-DDTHH:MM:SSZ"`,
    /// no whitespace before it), without scanning for its end.
    fn written_time(&mut self) -> Option<u64> {
        let quoted = self.buffer.get(self.at..self.at + 22)?;
        if quoted[0] != b'"' || quoted[21] != b'"' {
            return None;
        }
        let time = UnixTime::parse_exact(&quoted[1..21])?;
        self.at += 22;
        Some(time.secs())
    }

    fn list<T: InlineItem + Ord + Copy>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Option<Option<T>>,
    ) -> Option<CappedSet<T>> {
        let mut set = CappedSet::default();
        self.array(|cursor| {
            if let Some(value) = item(cursor)? {
                set.insert(value);
            }
            Some(())
        })?;
        Some(set)
    }

    fn port(&mut self) -> Option<Option<u16>> {
        u16::try_from(self.u64()?).ok().map(Some)
    }

    fn process(&mut self) -> Option<Option<Comm>> {
        self.string().map(Comm::from_name)
    }

    fn peers(&mut self) -> Option<Vec<(Ipv4Addr, PeerRecord)>> {
        let expected = usize::try_from(self.size_hint / BYTES_PER_PEER).unwrap_or(0);
        let mut peers = Vec::with_capacity(expected);
        advise_huge_pages(peers.spare_capacity_mut());
        self.array(|cursor| {
            peers.push(cursor.peer()?);
            Some(())
        })?;
        Some(peers)
    }

    /// One peer: in the exact layout [`super::writer`] produces when it
    /// is in it (field names compared whole, not scanned), else read as
    /// any JSON object.
    fn peer(&mut self) -> Option<(Ipv4Addr, PeerRecord)> {
        self.peek()?;
        self.mark = Some(self.at);
        let peer = self.written_peer();
        let start = self.mark.take()?;
        if peer.is_some() {
            return peer;
        }
        self.at = start;
        self.any_peer()
    }

    /// A peer exactly as netmon writes it: fields in order, no whitespace.
    fn written_peer(&mut self) -> Option<(Ipv4Addr, PeerRecord)> {
        self.literal(b"{\"ip\":")?;
        let ip = self.ip()?;
        self.literal(b",\"first_seen\":")?;
        let first_seen = self.written_time()?;
        self.literal(b",\"last_seen\":")?;
        let last_seen = self.written_time()?;
        self.literal(b",\"outbound\":")?;
        let outbound = self.u64()?;
        self.literal(b",\"inbound\":")?;
        let inbound = self.u64()?;
        self.literal(b",\"remote_ports\":")?;
        let remote_ports = self.list(Self::port)?;
        self.literal(b",\"local_ports\":")?;
        let local_ports = self.list(Self::port)?;
        self.literal(b",\"processes\":")?;
        let processes = self.list(Self::process)?;
        self.literal(b"}")?;
        let record = PeerRecord {
            first_seen,
            last_seen,
            outbound,
            inbound,
            remote_ports,
            local_ports,
            processes,
        };
        Some((ip, record))
    }

    fn any_peer(&mut self) -> Option<(Ipv4Addr, PeerRecord)> {
        let mut fields = Fields::default();
        let (mut ip, mut first_seen, mut last_seen, mut outbound, mut inbound) =
            (None, None, None, None, None);
        let mut record = PeerRecord::new(0);
        self.object(PEER_KEYS, |cursor, key| {
            match fields.once(key)? {
                0 => ip = Some(cursor.ip()?),
                1 => first_seen = Some(cursor.time()?),
                2 => last_seen = Some(cursor.time()?),
                3 => outbound = Some(cursor.u64()?),
                4 => inbound = Some(cursor.u64()?),
                5 => record.remote_ports = cursor.list(Self::port)?,
                6 => record.local_ports = cursor.list(Self::port)?,
                _ => record.processes = cursor.list(Self::process)?,
            }
            Some(())
        })?;
        record.first_seen = first_seen?;
        record.last_seen = last_seen?;
        record.outbound = outbound?;
        record.inbound = inbound?;
        Some((ip?, record))
    }
}

/// Which fields of one object have been read: serde rejects a repeated
/// field, so the fast path must not quietly take the last one.
#[derive(Default)]
struct Fields(u16);

impl Fields {
    /// `key` back, or `None` if it was read before.
    fn once(&mut self, key: usize) -> Option<usize> {
        let mask = 1 << key;
        if self.0 & mask != 0 {
            return None;
        }
        self.0 |= mask;
        Some(key)
    }
}

/// A dotted-quad IPv4 address, as `Ipv4Addr`'s `FromStr` reads it (four
/// decimal octets, no leading zeros, no sign), straight from the bytes.
fn parse_ipv4(text: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || (part.len() > 1 && part[0] == b'0') {
            return None;
        }
        let value = part.iter().try_fold(0u16, |value, &digit| {
            digit
                .is_ascii_digit()
                .then(|| value * 10 + u16::from(digit - b'0'))
        })?;
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn addresses_parse_as_the_standard_library_parses_them(
            text in "[0-9.+-]{0,20}|([0-9]{1,4}\\.){3}[0-9]{1,4}"
        ) {
            prop_assert_eq!(parse_ipv4(text.as_bytes()), text.parse::<Ipv4Addr>().ok());
        }
    }

    #[test]
    fn edge_addresses() {
        for text in [
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "",
        ] {
            assert_eq!(
                parse_ipv4(text.as_bytes()),
                text.parse::<Ipv4Addr>().ok(),
                "{text}"
            );
        }
    }
}

#[cfg(test)]
mod agreement {
    //! The fast reader against serde, on files in netmon's layout and on
    //! every way a valid file can leave it.
    use super::super::{Snapshot, parse, parse_with_serde, to_json};

    fn json(snapshot: &Snapshot) -> Vec<u8> {
        to_json(snapshot, "h", 1_700_000_000).unwrap()
    }

    /// `bytes` parse the same on both paths (both fail, or both give the
    /// same set), and the fast reader took them in if `fast` says so.
    fn agree(bytes: &[u8], fast: Option<bool>) {
        let took = super::checkpoint(bytes, bytes.len() as u64)
            .unwrap()
            .is_some();
        if let Some(fast) = fast {
            assert_eq!(
                took,
                fast,
                "fast path on {}",
                String::from_utf8_lossy(bytes)
            );
        }
        match (parse(bytes, 0), parse_with_serde(bytes, 0)) {
            (Ok((a, _)), Ok((b, _))) => assert_eq!(json(&a), json(&b)),
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "paths disagree on {}: {:?} vs {:?}",
                String::from_utf8_lossy(bytes),
                a.map(|_| ()),
                b.map(|_| ())
            ),
        }
    }

    const PEER: &str = r#"{"ip":"10.0.0.1","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","outbound":3,"inbound":0,"remote_ports":[443,80],"local_ports":[],"processes":["curl"]}"#;

    fn file(peers: &str) -> String {
        format!(
            r#"{{"version":1,"host":"h","updated":"2026-01-02T00:00:00Z","mode":"tracepoint","lost_events":2,"peers":[{peers}]}}"#
        )
    }

    #[test]
    fn netmon_layout_takes_the_fast_path() {
        agree(file(PEER).as_bytes(), Some(true));
        agree(file("").as_bytes(), Some(true));
        let two = format!("\n{PEER},\n{}\n", PEER.replace("10.0.0.1", "10.0.0.2"));
        agree(file(&two).as_bytes(), Some(true));
    }

    #[test]
    fn other_valid_forms_agree() {
        let pretty = serde_json::to_string_pretty(
            &serde_json::from_str::<serde_json::Value>(&file(PEER)).unwrap(),
        )
        .unwrap();
        agree(pretty.as_bytes(), Some(true));
        // Fields in another order, lists left out, a null mode.
        let reordered = r#"{"ip":"10.0.0.1","outbound":3,"inbound":0,"last_seen":"2026-01-02T01:00:00Z","first_seen":"2026-01-01T00:00:00Z"}"#;
        agree(file(reordered).as_bytes(), Some(true));
        agree(
            file(PEER).replace("\"tracepoint\"", "null").as_bytes(),
            Some(true),
        );
        // Times in other forms go through the general time parser.
        agree(
            file(&PEER.replace("01T00:00:00Z", "01 00:00:00Z")).as_bytes(),
            None,
        );
        agree(
            file(&PEER.replace("01T00:00:00Z", "01T01:00:00+01:00")).as_bytes(),
            None,
        );
        // Left to serde: an escape, an unknown field, a repeated field.
        agree(
            file(&PEER.replace("curl", "cu\\u0072l")).as_bytes(),
            Some(false),
        );
        agree(
            file(&PEER.replace("\"inbound\"", "\"x\":1,\"inbound\"")).as_bytes(),
            Some(false),
        );
        agree(
            file(&PEER.replace("\"inbound\":0", "\"inbound\":0,\"inbound\":1")).as_bytes(),
            Some(false),
        );
        agree(
            file(PEER)
                .replace("\"version\":1", "\"version\":1.0")
                .as_bytes(),
            Some(false),
        );
    }

    #[test]
    fn invalid_files_fail_on_both_paths() {
        for bad in [
            file(PEER).replace("\"version\":1", "\"version\":2"),
            file(&PEER.replace("10.0.0.1", "10.0.0.256")),
            file(&PEER.replace("10.0.0.1", "010.0.0.1")),
            file(&PEER.replace("443", "65536")),
            file(&PEER.replace(":3,", ":-3,")),
            file(&PEER.replace(":3,", ":03,")),
            file(&PEER.replace("2026-01-01T00", "2026-13-01T00")),
            file(PEER).replace("\"host\":\"h\",", ""),
            format!("{} x", file(PEER)),
            file(PEER)[..100].to_owned(),
            "{}".to_owned(),
        ] {
            agree(bad.as_bytes(), None);
            assert!(parse(bad.as_bytes(), 0).is_err(), "{bad}");
        }
        agree(&[b'{', 0xff, b'}'], Some(false));
    }

    /// A reader that hands out a few bytes per call.
    struct Trickle<'a>(&'a [u8]);

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len()).min(997);
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn peers_across_buffer_refills_are_read_whole() {
        // Several megabytes, every third peer in a layout the fast path has
        // to rewind from, so rewinds land on refills too.
        let peers: Vec<String> = (0..40_000u32)
            .map(|i| {
                let peer = PEER.replace("10.0.0.1", &std::net::Ipv4Addr::from(i).to_string());
                if i % 3 == 0 {
                    peer.replace(',', ", ")
                } else {
                    peer
                }
            })
            .collect();
        let text = file(&peers.join(",\n"));
        assert!(text.len() > 3 * super::CHUNK);
        let fast = super::checkpoint(Trickle(text.as_bytes()), 0)
            .unwrap()
            .unwrap();
        assert_eq!(fast.peers.len(), 40_000);
        agree(text.as_bytes(), Some(true));
    }
}
