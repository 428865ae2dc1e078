//! The socket tables: proc mode's poller and the start-up scan of every
//! eBPF mode.
//!
//! They are read over netlink (NETLINK_SOCK_DIAG, as `ss` does) where the
//! kernel has it, else as the text under /proc/net (`text.rs`). Over
//! netlink proc mode also hears of every socket the kernel destroys, so
//! it sees connections that open and close between two polls and refused
//! attempts, which no poller can.
//!
//! A socket whose local port has a listener (TCP LISTEN, or an unconnected
//! UDP socket) on its local address or on any is inbound; any other socket
//! with a remote address is outbound (`known.rs` says for how long a listener that has gone still
//! counts). Each poll reports only connections that were not in the
//! previous poll, so a long-lived connection is counted once.
//!
//! [`ProcCollector`] (`collector.rs`) is proc mode built on them, with the
//! order its reads must keep.
mod collector;
mod diag;
mod known;
mod markers;
mod netns;
mod text;

use std::{
    collections::HashSet,
    fs::File,
    io::{self, Read as _},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use log::{debug, warn};

pub use self::{
    collector::{Arrived, ProcCollector, startup_scan},
    diag::{Destroyed, notified_sockets},
    text::rows,
};
use netmon_common::tcp_state::{CLOSE, LISTEN, TIME_WAIT};

use self::{
    known::{Listeners, Reported},
    netns::{in_netns, netns_of},
};
use crate::peer::{Connection, Direction, Origin, Protocol, Source};

/// What `--socket-tables` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TablesRequest {
    /// Netlink where the kernel has sock_diag, else the /proc/net text.
    Auto,
    /// NETLINK_SOCK_DIAG dumps (CONFIG_INET_DIAG), plus destroy
    /// notifications in proc mode.
    Netlink,
    /// The text under --proc-net.
    Procfs,
}

/// What a sighting of a connection says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// In the table and open.
    Open,
    /// Closed: in TIME_WAIT, or destroyed just now. A poller wants it (it
    /// is a peer that a short connection would otherwise hide), a start-up
    /// scan does not (the run before this one saw it open and close).
    Closed,
    /// Closed, and read only because destroy notifications were lost: it
    /// may have been counted already, so it brings its peer but no count.
    Recovered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// The tables read, in order: (protocol, holds IPv6 addresses, file).
const TABLES: [(Proto, bool, &str); 4] = [
    (Proto::Tcp, false, "tcp"),
    (Proto::Tcp, true, "tcp6"),
    (Proto::Udp, false, "udp"),
    (Proto::Udp, true, "udp6"),
];

/// One socket of a table, reduced to what matters here; IPv4-mapped
/// addresses are IPv4's. `None`: an address the table did not give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub local: Option<IpAddr>,
    pub local_port: u16,
    pub remote: Option<IpAddr>,
    pub remote_port: u16,
    /// A TCP state (`netmon_common::tcp_state`), or a UDP socket's
    /// pseudo-state.
    pub state: i32,
    /// The kernel's unique id of the socket, where the table gives it
    /// (netlink does, the text does not).
    pub cookie: Option<u64>,
    /// A TIME_WAIT socket: what the kernel keeps of a TCP connection
    /// whose socket it has destroyed, in TIME_WAIT or in FIN_WAIT2. Its
    /// cookie is the socket's only if a dump had asked for that one
    /// before. Netlink tells; the text does not.
    pub timewait: bool,
}

impl Row {
    /// The remote address, unless the socket has none (a listener, or a
    /// socket never connected: 0.0.0.0 or `::`).
    fn peer(&self) -> Option<IpAddr> {
        self.remote.filter(|ip| !ip.is_unspecified())
    }
}

/// How the tables are read.
enum Tables {
    Text {
        dir: PathBuf,
        buf: Vec<u8>,
    },
    Netlink {
        dumper: diag::Dumper,
        /// The namespace the tables are in, when it is not netmon's own.
        netns: Option<File>,
        /// Whether polls read TIME_WAIT sockets: only while nothing
        /// reports the sockets the kernel destroys.
        time_wait: bool,
    },
}

/// Polls the socket tables of one network namespace.
pub struct Scanner {
    tables: Tables,
    rows: Vec<(Proto, Row)>,
    listeners: Listeners,
    reported: Reported,
    /// Destroy notifications were lost: the next poll reads TIME_WAIT
    /// sockets too, to recover the peers of the lost ones.
    recover: bool,
    /// Times destroy notifications were lost since the last look.
    overflows: u64,
}

impl Scanner {
    /// Reads the text tables in `dir`, usually `/proc/net` (this process's
    /// network namespace).
    pub fn text(dir: impl Into<PathBuf>) -> Self {
        Self::with(Tables::Text {
            dir: dir.into(),
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    /// Reads the tables that `dir` shows (`/proc/net`, `/proc/PID/net`)
    /// as `request` says; auto says why it falls back to the text.
    pub fn open(dir: &Path, request: TablesRequest) -> anyhow::Result<Self> {
        match request {
            TablesRequest::Procfs => Ok(Self::text(dir)),
            TablesRequest::Netlink => Self::netlink(dir).with_context(|| {
                format!(
                    "--socket-tables netlink: cannot read the sockets of {} over NETLINK_SOCK_DIAG (CONFIG_INET_DIAG)",
                    dir.display()
                )
            }),
            TablesRequest::Auto => Self::netlink(dir).or_else(|err| {
                // A warning, not a note: the text has no destroy
                // notifications, so proc mode misses what opens and closes
                // between polls (a unit without AF_NETLINK does this).
                warn!(
                    "socket tables: netlink unavailable ({err:#}); falling back to the text of {}, \
                     which has no destroy notifications",
                    dir.display()
                );
                Ok(Self::text(dir))
            }),
        }
    }

    fn netlink(dir: &Path) -> anyhow::Result<Self> {
        let netns = netns_of(dir)?;
        let mut dumper = in_netns(netns.as_ref(), diag::Dumper::open)
            .context("cannot open a NETLINK_SOCK_DIAG socket")?;
        dumper
            .dump(Proto::Tcp, false, 1 << LISTEN, |_| {})
            .context("the kernel answers no TCP dump")?;
        Ok(Self::with(Tables::Netlink {
            dumper,
            netns,
            time_wait: true,
        }))
    }

    fn with(tables: Tables) -> Self {
        Self {
            tables,
            rows: Vec::new(),
            listeners: Listeners::default(),
            reported: Reported::default(),
            recover: false,
            overflows: 0,
        }
    }

    /// How the tables are read, for the log.
    pub fn describe(&self) -> String {
        match &self.tables {
            Tables::Text { dir, .. } => format!("the text of {}", dir.display()),
            Tables::Netlink {
                time_wait: false, ..
            } => "netlink sock_diag, with destroy notifications".into(),
            Tables::Netlink { .. } => "netlink sock_diag".into(),
        }
    }

    /// Subscribes to the sockets the kernel destroys in the tables'
    /// namespace; from then on polls leave TIME_WAIT sockets out (those in
    /// FIN_WAIT2 too), since each stands for a socket announced as it was
    /// destroyed. Feed what the result reads to [`Scanner::destroyed`],
    /// and at the end to [`Scanner::settle`].
    pub fn subscribe(&mut self) -> io::Result<Destroyed> {
        let Tables::Netlink {
            netns, time_wait, ..
        } = &mut self.tables
        else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the /proc/net text has no notifications",
            ));
        };
        let destroyed = in_netns(netns.as_ref(), Destroyed::subscribe)?;
        *time_wait = false;
        Ok(destroyed)
    }

    /// Whether the kernel announces the sockets it destroys (polls then
    /// leave TIME_WAIT sockets out).
    fn announced(&self) -> bool {
        matches!(
            self.tables,
            Tables::Netlink {
                time_wait: false,
                ..
            }
        )
    }

    /// How many times destroy notifications were lost since the last call.
    pub fn take_overflows(&mut self) -> u64 {
        std::mem::take(&mut self.overflows)
    }

    /// Reads every table and calls `sink` for each connection with an IPv4
    /// peer that was not there at the previous scan, saying whether it is
    /// still open.
    ///
    /// A missing table (no IPv6, no UDP) is skipped; TCP over IPv4 must be
    /// there.
    pub fn scan(&mut self, mut sink: impl FnMut(&Connection, Liveness)) -> io::Result<()> {
        self.rows.clear();
        self.listeners.next_poll();
        let recover = std::mem::take(&mut self.recover);
        self.read_tables(recover)?;
        self.reported.next_poll();
        let announced = self.announced();
        let rows = std::mem::take(&mut self.rows);
        let mut refreshed = false;
        for &(proto, row) in &rows {
            let Some(peer) = row.peer() else {
                continue;
            };
            let key = key(proto, &row, peer);
            // Read only to recover what lost notifications said: its socket
            // was announced, or its announcement lost.
            let new = if announced && row.timewait {
                !self.reported.knows(key)
            } else {
                self.reported.saw(key)
            };
            if !new {
                continue;
            }
            // Tables list listeners first: one opened (and connected to)
            // while a table was read past them is missing. Look again,
            // once a poll, before calling a new connection outbound.
            if !refreshed && !self.listeners.has(proto, row.local, row.local_port) {
                refreshed = true;
                if let Err(err) = self.refresh_listeners() {
                    debug!("cannot reread the listeners: {err}");
                }
            }
            let conn = connection(&self.listeners, proto, &row, peer);
            sink(&conn, liveness(proto, &row, recover));
        }
        self.rows = rows;
        self.reported.end_poll(announced, Instant::now());
        Ok(())
    }

    /// Calls `sink` for each connection in `destroyed`'s notifications that
    /// no poll saw.
    pub fn destroyed(
        &mut self,
        destroyed: &mut Destroyed,
        mut sink: impl FnMut(&Connection, Liveness),
    ) -> io::Result<()> {
        self.read_destroyed(destroyed, &mut HashSet::new(), &mut sink)
    }

    /// At the end, after the last poll: closes `destroyed`'s markers and
    /// reads notifications as [`Scanner::destroyed`] does until every
    /// marker's has come, or `patience` has passed. The kernel announces
    /// sockets some time after they leave the tables; once the markers'
    /// notifications have come, so have those of every socket destroyed
    /// before them. Returns whether they all came.
    pub fn settle(
        &mut self,
        destroyed: &mut Destroyed,
        patience: Duration,
        mut sink: impl FnMut(&Connection, Liveness),
    ) -> io::Result<bool> {
        let mut markers = destroyed.close_markers();
        let deadline = Instant::now() + patience;
        loop {
            self.read_destroyed(destroyed, &mut markers, &mut sink)?;
            if markers.is_empty() {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            destroyed.wait(left)?;
        }
    }

    /// Reads the notifications waiting, leaves out (and crosses off)
    /// `markers`, and announces the rest.
    fn read_destroyed(
        &mut self,
        destroyed: &mut Destroyed,
        markers: &mut HashSet<u64>,
        sink: &mut impl FnMut(&Connection, Liveness),
    ) -> io::Result<()> {
        let mut rows = std::mem::take(&mut self.rows);
        rows.clear();
        let drained = destroyed.drain(|proto, row| {
            if !row.cookie.is_some_and(|cookie| markers.remove(&cookie)) {
                rows.push((proto, row));
            }
        });
        let result = drained.and_then(|overflowed| {
            if overflowed {
                self.overflows += 1;
                self.recover = true;
            }
            self.announce(&rows, sink)
        });
        self.rows = rows;
        result
    }

    /// Reports the destroyed sockets in `rows` that no poll saw.
    fn announce(
        &mut self,
        rows: &[(Proto, Row)],
        sink: &mut impl FnMut(&Connection, Liveness),
    ) -> io::Result<()> {
        for (proto, row) in rows {
            // A listener closing (or a socket that never connected): its
            // connections, destroyed before or after it, are inbound.
            if row.remote.is_some_and(|ip| ip.is_unspecified()) && row.local_port != 0 {
                self.listeners.saw(*proto, row.local, row.local_port);
            }
        }
        let mut refreshed = false;
        for &(proto, row) in rows {
            let peer = row.peer();
            // Asked even without a peer: a socket that lost it (a UDP
            // socket disconnected) may still wait for its announcement.
            let key = key(
                proto,
                &row,
                peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            );
            if self.reported.destroyed(key) {
                continue;
            }
            let Some(peer) = peer else {
                continue;
            };
            // A listener opened since the last poll: look (once per batch,
            // it is cheap) before calling its connection outbound.
            if !refreshed && !self.listeners.has(proto, row.local, row.local_port) {
                refreshed = true;
                self.refresh_listeners()?;
            }
            let conn = connection(&self.listeners, proto, &row, peer);
            sink(&conn, Liveness::Closed);
        }
        Ok(())
    }

    /// Rereads the listeners: over netlink, a dump of listening sockets
    /// alone (tens of microseconds); as text, TCP's tables again whole.
    fn refresh_listeners(&mut self) -> io::Result<()> {
        let listeners = &mut self.listeners;
        match &mut self.tables {
            Tables::Netlink { dumper, .. } => {
                for (proto, v6, _) in TABLES {
                    let states = match proto {
                        Proto::Tcp => 1 << LISTEN,
                        Proto::Udp => 1 << CLOSE,
                    };
                    tolerate_missing(dumper.dump(proto, v6, states, |row| {
                        if listens(proto, &row) {
                            listeners.saw(proto, row.local, row.local_port);
                        }
                    }))?;
                }
            }
            Tables::Text { dir, buf } => {
                for (proto, v6, name) in TABLES {
                    if proto != Proto::Tcp {
                        continue;
                    }
                    tolerate_missing(read_into(&dir.join(name), buf))?;
                    text::rows(buf, v6)
                        .filter(|row| listens(proto, row))
                        .for_each(|row| listeners.saw(proto, row.local, row.local_port));
                }
            }
        }
        Ok(())
    }

    /// Fills `rows` with the sockets that are not listeners, and notes the
    /// listeners.
    fn read_tables(&mut self, time_wait_too: bool) -> io::Result<()> {
        let (rows, listeners) = (&mut self.rows, &mut self.listeners);
        let mut take = |proto, row: Row| {
            if listens(proto, &row) {
                listeners.saw(proto, row.local, row.local_port);
            } else {
                rows.push((proto, row));
            }
        };
        match &mut self.tables {
            Tables::Text { dir, buf } => {
                for (proto, v6, name) in TABLES {
                    match read_into(&dir.join(name), buf) {
                        Ok(()) => text::rows(buf, v6).for_each(|row| take(proto, row)),
                        Err(err) if err.kind() == io::ErrorKind::NotFound && name != "tcp" => {}
                        Err(err) => return Err(err),
                    }
                }
            }
            Tables::Netlink {
                dumper, time_wait, ..
            } => {
                let time_wait = *time_wait || time_wait_too;
                let states = diag::poll_states(time_wait);
                // The state a TIME_WAIT socket is dumped in is the one it
                // stands in, FIN_WAIT2 included: left out here.
                let mut take = |proto, row: Row| {
                    if time_wait || !row.timewait {
                        take(proto, row);
                    }
                };
                for (proto, v6, _) in TABLES {
                    let dumped = dumper.dump(proto, v6, states, |row| take(proto, row));
                    if (proto, v6) == (Proto::Tcp, false) {
                        dumped?;
                    } else {
                        tolerate_missing(dumped)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// What a poll's sighting of `row` says of its connection: a TIME_WAIT
/// socket (whatever state it stands in) is a connection closed, one read
/// to recover lost notifications brings no count.
fn liveness(proto: Proto, row: &Row, recover: bool) -> Liveness {
    let time_wait = row.timewait || (proto, row.state) == (Proto::Tcp, TIME_WAIT);
    if time_wait && recover {
        Liveness::Recovered
    } else if time_wait || (proto, row.state) == (Proto::Tcp, CLOSE) {
        Liveness::Closed
    } else {
        Liveness::Open
    }
}

/// A socket that waits for connections rather than being one.
fn listens(proto: Proto, row: &Row) -> bool {
    match proto {
        Proto::Tcp => row.state == LISTEN,
        Proto::Udp => row.remote_port == 0,
    }
}

fn connection(listeners: &Listeners, proto: Proto, row: &Row, peer: IpAddr) -> Connection {
    let direction = if listeners.has(proto, row.local, row.local_port) {
        Direction::Inbound
    } else {
        Direction::Outbound
    };
    Connection {
        peer,
        remote_port: row.remote_port,
        local_port: row.local_port,
        protocol: match proto {
            Proto::Tcp => Protocol::Tcp,
            Proto::Udp => Protocol::Udp,
        },
        direction,
        process: None,
        source: Source::SocketTable,
        origin: Origin::default(),
        netns: None,
        owner: None,
    }
}

/// A table the kernel does not have (no IPv6, no UDP diag) is empty.
fn tolerate_missing(dumped: io::Result<()>) -> io::Result<()> {
    match dumped {
        Err(err)
            if matches!(
                err.raw_os_error(),
                Some(libc::ENOENT | libc::EAFNOSUPPORT | libc::EOPNOTSUPP)
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf).map(drop)
}

/// Packs a connection's identity into one integer, so the poll-to-poll set
/// holds no allocations: the kernel's cookie where there is one (it
/// survives the socket's last state changes, which can clear its local
/// address and remote port), else the addresses and ports: IPv4's
/// exactly, IPv6's (only the text tables lack cookies) as a 64-bit hash.
fn key(proto: Proto, row: &Row, peer: IpAddr) -> u128 {
    if let Some(cookie) = row.cookie {
        return 1 << 127 | u128::from(cookie);
    }
    let (local, peer) = match (row.local, peer) {
        (Some(IpAddr::V4(local)), IpAddr::V4(peer)) => (u32::from(local), peer),
        (None, IpAddr::V4(peer)) => (0, peer),
        _ => {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (
                proto as u8,
                row.local,
                row.local_port,
                peer,
                row.remote_port,
            )
                .hash(&mut hasher);
            return 1 << 126 | u128::from(hasher.finish());
        }
    };
    (proto as u128) << 96
        | u128::from(local) << 64
        | u128::from(row.local_port) << 48
        | u128::from(u32::from(peer)) << 16
        | u128::from(row.remote_port)
}

#[cfg(test)]
mod tests;
