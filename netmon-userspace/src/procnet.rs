//! The socket tables under /proc/net: proc mode's poller and the start-up
//! scan of every eBPF mode.
//!
//! A socket whose local port has a listener (TCP LISTEN, or an unconnected
//! UDP socket) is inbound; any other socket with a remote address is
//! outbound. Each poll reports only connections that were not in the
//! previous poll, so a long-lived connection is counted once.
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, Read as _},
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::peer::{Connection, Direction, Source};

/// How long a port counts as listening after its listener was last seen.
const LISTENER_MEMORY: Duration = Duration::from_secs(60);

/// TCP states as printed in the `st` column (include/net/tcp_states.h).
const TCP_TIME_WAIT: u8 = 0x06;
const TCP_CLOSE: u8 = 0x07;
const TCP_LISTEN: u8 = 0x0a;

/// Whether a connection in the table is still open. A connection in
/// TIME_WAIT ended up to a minute ago: a poller wants it (it is a peer
/// that a short connection would otherwise hide), a start-up scan does not
/// (the run before this one saw it open and close).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Open,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
}

/// The tables read, in order: (file, protocol, holds IPv6 addresses).
const TABLES: [(&str, Proto, bool); 4] = [
    ("tcp", Proto::Tcp, false),
    ("tcp6", Proto::Tcp, true),
    ("udp", Proto::Udp, false),
    ("udp6", Proto::Udp, true),
];

/// One row of a table, reduced to what matters here. `None` addresses are
/// IPv6 addresses that are not IPv4-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub local: Option<Ipv4Addr>,
    pub local_port: u16,
    pub remote: Option<Ipv4Addr>,
    pub remote_port: u16,
    /// The `st` column: a TCP state, or a UDP socket's pseudo-state.
    pub state: u8,
}

/// The rows of one table's text (`/proc/net/tcp` and friends), skipping
/// the header and any line that does not parse.
pub fn rows(table: &[u8], v6: bool) -> impl Iterator<Item = Row> + '_ {
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(move |line| parse_row(line, v6))
}

/// Polls the socket tables of one network namespace.
pub struct Scanner {
    dir: PathBuf,
    buf: Vec<u8>,
    rows: Vec<(Proto, Row)>,
    /// Ports with a listener, and when one was last seen: an accepted
    /// connection outlives a listener that closes, and is still inbound.
    listening: HashMap<(Proto, u16), Instant>,
    seen: HashSet<u128>,
    previous: HashSet<u128>,
}

impl Scanner {
    /// `dir` is usually `/proc/net` (this process's network namespace).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            buf: Vec::with_capacity(64 * 1024),
            rows: Vec::new(),
            listening: HashMap::new(),
            seen: HashSet::new(),
            previous: HashSet::new(),
        }
    }

    /// Reads every table and calls `sink` for each connection with an IPv4
    /// peer that was not there at the previous scan, saying whether it is
    /// still open.
    ///
    /// A missing table (no IPv6, no UDP) is skipped; `tcp` must exist.
    pub fn scan(&mut self, mut sink: impl FnMut(&Connection, Liveness)) -> io::Result<()> {
        self.rows.clear();
        let now = Instant::now();
        self.listening
            .retain(|_, seen| now.duration_since(*seen) < LISTENER_MEMORY);
        for (name, proto, v6) in TABLES {
            match read_into(&self.dir.join(name), &mut self.buf) {
                Ok(()) => {}
                Err(err) if err.kind() == io::ErrorKind::NotFound && name != "tcp" => continue,
                Err(err) => return Err(err),
            }
            for row in rows(&self.buf, v6) {
                let listens = match proto {
                    Proto::Tcp => row.state == TCP_LISTEN,
                    Proto::Udp => row.remote_port == 0,
                };
                if listens {
                    self.listening.insert((proto, row.local_port), now);
                } else {
                    self.rows.push((proto, row));
                }
            }
        }
        std::mem::swap(&mut self.previous, &mut self.seen);
        self.seen.clear();
        for &(proto, row) in &self.rows {
            let Some(peer) = row.remote.filter(|ip| !ip.is_unspecified()) else {
                continue;
            };
            let key = key(proto, &row, peer);
            self.seen.insert(key);
            if self.previous.contains(&key) {
                continue;
            }
            let direction = if self.listening.contains_key(&(proto, row.local_port)) {
                Direction::Inbound
            } else {
                Direction::Outbound
            };
            let liveness = match (proto, row.state) {
                (Proto::Tcp, TCP_TIME_WAIT | TCP_CLOSE) => Liveness::Closed,
                _ => Liveness::Open,
            };
            let conn = Connection {
                peer,
                remote_port: row.remote_port,
                local_port: row.local_port,
                direction,
                process: None,
                source: Source::SocketTable,
            };
            sink(&conn, liveness);
        }
        Ok(())
    }
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf).map(drop)
}

/// Packs a connection's identity into one integer, so the poll-to-poll set
/// holds no allocations.
fn key(proto: Proto, row: &Row, peer: Ipv4Addr) -> u128 {
    let local = row.local.map_or(0, u32::from);
    (proto as u128) << 96
        | u128::from(local) << 64
        | u128::from(row.local_port) << 48
        | u128::from(u32::from(peer)) << 16
        | u128::from(row.remote_port)
}

/// Parses one data line: `sl local rem st ...`, without allocating.
fn parse_row(line: &[u8], v6: bool) -> Option<Row> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let _slot = fields.next()?;
    let (local, local_port) = parse_endpoint(fields.next()?, v6)?;
    let (remote, remote_port) = parse_endpoint(fields.next()?, v6)?;
    let state = u8::try_from(parse_hex(fields.next()?)?).ok()?;
    Some(Row {
        local,
        local_port,
        remote,
        remote_port,
        state,
    })
}

/// `0100007F:0050`, or 32 hex digits for IPv6. The address is printed as
/// native-endian 32-bit words of the network-order bytes.
fn parse_endpoint(field: &[u8], v6: bool) -> Option<(Option<Ipv4Addr>, u16)> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    let port = u16::try_from(parse_hex(port)?).ok()?;
    let ip = if v6 {
        if addr.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (word, chunk) in addr.chunks(8).enumerate() {
            let value = u32::try_from(parse_hex(chunk)?).ok()?;
            bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_ne_bytes());
        }
        Ipv6Addr::from(bytes).to_ipv4_mapped()
    } else {
        if addr.len() != 8 {
            return None;
        }
        let value = u32::try_from(parse_hex(addr)?).ok()?;
        Some(Ipv4Addr::from(value.to_ne_bytes()))
    };
    Some((ip, port))
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        Some(acc << 4 | u64::from((d as char).to_digit(16)?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:0016 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:9C40 0300007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:9C41 0400007F:0050 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000500007F:A000 01 00000000:00000000
   1: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:A001 01 00000000:00000000
";

    fn scan_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Scanner) {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let scanner = Scanner::new(dir.path());
        (dir, scanner)
    }

    fn collect(scanner: &mut Scanner) -> Vec<(Ipv4Addr, Direction, u16, u16)> {
        let mut out = Vec::new();
        scanner
            .scan(|c, _| out.push((c.peer, c.direction, c.local_port, c.remote_port)))
            .unwrap();
        out
    }

    #[test]
    fn classifies_directions_and_skips_listeners() {
        let (_dir, mut scanner) = scan_dir(&[("tcp", TCP), ("tcp6", TCP6)]);
        let got = collect(&mut scanner);
        assert_eq!(
            got,
            [
                (Ipv4Addr::new(127, 0, 0, 2), Direction::Inbound, 22, 0xd431),
                (
                    Ipv4Addr::new(127, 0, 0, 3),
                    Direction::Outbound,
                    0x9c40,
                    443
                ),
                (Ipv4Addr::new(127, 0, 0, 4), Direction::Outbound, 0x9c41, 80),
                (
                    Ipv4Addr::new(127, 0, 0, 5),
                    Direction::Outbound,
                    8080,
                    0xa000
                ),
            ]
        );
    }

    #[test]
    fn a_connection_is_reported_once_across_polls() {
        let (_dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
        assert_eq!(collect(&mut scanner).len(), 3);
        assert!(collect(&mut scanner).is_empty());
    }

    #[test]
    fn a_connection_stays_inbound_after_its_listener_closes() {
        let (dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
        collect(&mut scanner);
        let without_listener: String = TCP
            .lines()
            .filter(|l| !l.contains(" 0A "))
            .map(|l| format!("{l}\n"))
            .collect();
        let late = without_listener.replace("0200007F:D431", "0600007F:D432");
        std::fs::write(dir.path().join("tcp"), late).unwrap();
        assert_eq!(
            collect(&mut scanner),
            [(Ipv4Addr::new(127, 0, 0, 6), Direction::Inbound, 22, 0xd432)]
        );
    }

    #[test]
    fn garbage_lines_are_skipped() {
        for line in [
            "",
            "   0:",
            "0: zz:1 00000000:0000 01",
            "0: 0100007F:10000 0100007F:0001 01",
        ] {
            assert_eq!(parse_row(line.as_bytes(), false), None, "{line}");
        }
    }

    #[test]
    fn missing_tcp_table_is_an_error() {
        let (_dir, mut scanner) = scan_dir(&[]);
        assert!(scanner.scan(|_, _| {}).is_err());
    }
}
