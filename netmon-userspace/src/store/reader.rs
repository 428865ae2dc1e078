//! The checkpoint's load path, by hand: the mirror of [`super::writer`].
//!
//! Through serde a peer costs the field-name matching and visitor
//! machinery of each of its fields, and the whole file must be in memory
//! first; for a large file most of the time went to faulting in and
//! copying memory. This parser streams the file through a small buffer
//! that stays in the CPU's cache, and [`super::schema`] reads a peer
//! written in netmon's own layout by comparing its field names whole.
//! [`Cursor`] holds the window and reads the pieces of JSON the schema's
//! values are made of.
//!
//! It never decides what is valid. Anything outside the plain subset
//! netmon writes (an invalid escape in a string, a field it does not know, a
//! number that is not a plain unsigned integer, a repeated field, a time
//! in another form, a value bigger than its buffer) makes it give up with
//! `None`, and the caller parses the file with serde instead: slower,
//! general, and the one that reports errors with their line and column.
//! Both paths accept the same files with the same meaning; the tests and
//! the fuzz target compare them.
use std::{
    borrow::Cow,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use super::{
    CappedSet, InlineItem, PeerKey, PeerRecord, advise_huge_pages,
    schema::{self, Checkpoint, MAX_ADDRESSES},
    set::FilePeers,
    unadvise_huge_pages,
};
use crate::time::UnixTime;

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
    let parsed = schema::read_checkpoint(&mut cursor);
    match cursor.error {
        Some(err) => Err(err),
        None => Ok(parsed),
    }
}

/// Bytes read from the file at a time.
pub(super) const CHUNK: usize = 1 << 20;
/// Bytes kept ahead of the parser: a value longer than this (nothing
/// netmon writes comes close) sends the file to serde.
const AHEAD: usize = 256 << 10;

/// A peer line of a checkpoint is about 180 bytes; sizing the list for
/// this many bytes a peer means it is rarely copied while it grows.
const BYTES_PER_PEER: u64 = 160;

/// A window on the file and the parser's place in it.
pub(super) struct Cursor<R> {
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
    pub(super) fn peek(&mut self) -> Option<u8> {
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
    pub(super) fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// `{ "key": value, ... }` where every key is one of `keys`: hands the
    /// key's index to `field`, which must read the value.
    pub(super) fn object(
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
    pub(super) fn raw_string(&mut self) -> Option<&[u8]> {
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

    /// A string, its escapes decoded: netmon writes process names (which
    /// any local user picks) with escapes, and one in a file must not
    /// send every later load down the general parser's path. An escape
    /// serde would refuse (a bad letter, a lone surrogate) gives up.
    pub(super) fn string(&mut self) -> Option<Cow<'_, str>> {
        self.eat(b'"')?;
        let rest = &self.buffer[self.at..];
        let plain = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[plain] == b'"' {
            let start = self.at;
            self.at += plain + 1;
            return std::str::from_utf8(&self.buffer[start..start + plain])
                .ok()
                .map(Cow::Borrowed);
        }
        let (text, len) = unescape(rest)?;
        self.at += len;
        Some(Cow::Owned(text))
    }

    /// `null`, or what `value` reads.
    pub(super) fn nullable<T>(
        &mut self,
        value: impl FnOnce(&mut Self) -> Option<T>,
    ) -> Option<Option<T>> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            return Some(None);
        }
        value(self).map(Some)
    }

    /// The next bytes are `literal` (no whitespace skipped): consumed.
    pub(super) fn literal(&mut self, literal: &[u8]) -> Option<()> {
        self.buffer[self.at..]
            .starts_with(literal)
            .then(|| self.at += literal.len())
    }

    /// A plain unsigned integer: digits only, no leading zero, no sign,
    /// fraction or exponent, and within u64.
    pub(super) fn u64(&mut self) -> Option<u64> {
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

    pub(super) fn time(&mut self) -> Option<u64> {
        // The general parser tries netmon's own form first.
        self.string()?.parse().ok().map(UnixTime::secs)
    }

    /// An address of either family; an IPv4-mapped one is its IPv4
    /// address, as everywhere in netmon.
    pub(super) fn ip(&mut self) -> Option<IpAddr> {
        let text = self.raw_string()?;
        match parse_ipv4(text) {
            Some(v4) => Some(IpAddr::V4(v4)),
            None => std::str::from_utf8(text)
                .ok()?
                .parse::<Ipv6Addr>()
                .ok()
                .map(|v6| IpAddr::V6(v6).to_canonical()),
        }
    }

    /// A time in exactly the form netmon writes (`"YYYY-MM-DDTHH:MM:SSZ"`,
    /// no whitespace before it), without scanning for its end.
    pub(super) fn written_time(&mut self) -> Option<u64> {
        let quoted = self.buffer.get(self.at..self.at + 22)?;
        if quoted[0] != b'"' || quoted[21] != b'"' {
            return None;
        }
        let time = UnixTime::parse_exact(&quoted[1..21])?;
        self.at += 22;
        Some(time.secs())
    }

    pub(super) fn list<T: InlineItem + Ord + Copy>(
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

    /// A list of addresses (the header's own `addresses`), at most
    /// [`MAX_ADDRESSES`] of them.
    pub(super) fn addresses(&mut self) -> Option<Vec<IpAddr>> {
        let mut addresses = Vec::new();
        self.array(|cursor| {
            addresses.push(cursor.ip()?);
            (addresses.len() <= MAX_ADDRESSES).then_some(())
        })?;
        Some(addresses)
    }

    pub(super) fn peers(&mut self) -> Option<FilePeers> {
        // The size is what the file claims (a sparse file claims anything):
        // at most this many peers are reserved ahead of the content.
        const MAX_RESERVED: u64 = 1 << 20;
        let expected = (self.size_hint / BYTES_PER_PEER).min(MAX_RESERVED) as usize;
        let mut peers = FilePeers::default();
        if peers.records.try_reserve_exact(expected).is_ok() {
            advise_huge_pages(peers.records.spare_capacity_mut());
        }
        let _ = peers.keys.try_reserve_exact(expected);
        self.array(|cursor| {
            let (key, record) = cursor.peer()?;
            peers.keys.push(key);
            peers.records.push(record);
            Some(())
        })?;
        unadvise_huge_pages(&mut peers.records);
        Some(peers)
    }

    /// One peer: in the exact layout [`super::writer`] produces when it
    /// is in it (field names compared whole, not scanned), else read as
    /// any JSON object.
    fn peer(&mut self) -> Option<(PeerKey, PeerRecord)> {
        self.peek()?;
        self.mark = Some(self.at);
        let peer = schema::read_written_peer(self);
        let start = self.mark.take()?;
        if peer.is_some() {
            return peer;
        }
        self.at = start;
        schema::read_any_peer(self)
    }
}

/// Which fields of one object have been read: serde rejects a repeated
/// field, so the fast path must not quietly take the last one.
#[derive(Default)]
pub(super) struct Fields(u32);

impl Fields {
    /// Keys an object may have.
    pub(super) const MAX: usize = u32::BITS as usize;

    /// `key` back, or `None` if it was read before.
    pub(super) fn once(&mut self, key: usize) -> Option<usize> {
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

/// The string that `rest` (just past its opening quote) holds, with its
/// escapes decoded, and the bytes it took, closing quote included; `None`
/// for anything JSON does not allow there (a raw control character, an
/// unknown escape, a lone surrogate), which serde then reports.
fn unescape(rest: &[u8]) -> Option<(String, usize)> {
    let mut out = Vec::with_capacity(rest.len().min(64));
    let mut at = 0;
    loop {
        match *rest.get(at)? {
            b'"' => return String::from_utf8(out).ok().map(|text| (text, at + 1)),
            b'\\' => {
                let decoded = match *rest.get(at + 1)? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    b'u' => {
                        let unit = hex4(rest.get(at + 2..at + 6)?)?;
                        at += 4;
                        if (0xd800..0xdc00).contains(&unit) {
                            // A high surrogate must be followed by its low one.
                            let low = match rest.get(at + 2..at + 8)? {
                                [b'\\', b'u', hex @ ..] => hex4(hex)?,
                                _ => return None,
                            };
                            if !(0xdc00..0xe000).contains(&low) {
                                return None;
                            }
                            at += 6;
                            char::from_u32(0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00))?
                        } else {
                            char::from_u32(unit)?
                        }
                    }
                    _ => return None,
                };
                out.extend_from_slice(decoded.encode_utf8(&mut [0; 4]).as_bytes());
                at += 2;
            }
            byte if byte < 0x20 => return None,
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
}

/// Four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0, |value, &digit| {
        Some(value << 4 | char::from(digit).to_digit(16)?)
    })
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
