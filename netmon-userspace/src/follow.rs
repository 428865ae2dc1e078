//! `netmon run --follow`: a line on stdout the moment a peer is first seen
//! in a direction, so an admin can watch the access map grow and a log
//! shipper can carry every host's new peers to one place (`--json`).
//!
//! Lines go through a bounded queue to a thread of their own that writes
//! them to stdout, so a reader that stops reading stalls only that thread,
//! never collection: lines that find the queue full are dropped and
//! counted. Logs go to stderr, so stdout carries only these lines.
use std::{
    io::{self, Write as _},
    net::IpAddr,
    sync::mpsc::{self, Receiver, SyncSender, TrySendError},
    thread,
    time::Duration,
};

use log::warn;

use serde::{Serialize, Serializer};

use crate::{
    classify::Class,
    peer::{Comm, Direction, Owner, Protocol},
    time::UnixTime,
};

/// How `--follow` writes its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `TIME DIRECTION IP CLASS PORT/PROTOCOL PROCESS OWNER [netns ID]`, `-` for what
    /// is unknown.
    Text,
    /// One JSON object per line.
    Json,
}

/// A peer seen in a direction for the first time.
#[derive(Debug, Serialize)]
pub struct Sighting<'a> {
    #[serde(serialize_with = "UnixTime::serialize_secs")]
    pub time: u64,
    pub host: &'a str,
    pub ip: IpAddr,
    #[serde(serialize_with = "direction")]
    pub direction: Direction,
    pub class: Class,
    /// The peer's port for an outbound connection, ours for an inbound one.
    pub port: Option<u16>,
    #[serde(serialize_with = "protocol")]
    pub protocol: Protocol,
    /// The local process, where the hook runs in it.
    pub process: Option<Comm>,
    /// The systemd unit or container, where known.
    pub owner: Option<Owner>,
    /// The network namespace, if not the host's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns: Option<u32>,
}

fn protocol<S: Serializer>(protocol: &Protocol, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(protocol.as_str())
}

fn direction<S: Serializer>(direction: &Direction, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(direction.as_str())
}

/// Lines waiting for a slow reader, at most: about half a MiB of JSON,
/// enough for a burst such as the start-up scan of a busy host.
const QUEUE_LINES: usize = 4096;

/// The address column of text lines at first: a dotted quad's widest.
/// It widens to the widest address written so far (an IPv6 one is up to
/// 39 characters), so the columns after it line up again from then on.
const IP_WIDTH: usize = 15;

/// How long the exit waits for queued lines to reach a reader: not
/// forever, since a reader that stopped reading never takes them.
const EXIT_PATIENCE: Duration = Duration::from_millis(500);

/// Writes sightings to stdout in one format, through the writer thread.
pub struct Follow {
    format: LineFormat,
    queue: Option<SyncSender<Vec<u8>>>,
    /// The queue's other end, until the writer thread takes it.
    lines: Option<Receiver<Vec<u8>>>,
    /// Told by the writer thread when it ends.
    done: Option<Receiver<()>>,
    /// Lines dropped because the queue was full: in this run, and when
    /// last said.
    dropped: u64,
    dropped_said: u64,
    /// The address column's width in text lines.
    ip_width: usize,
}

/// What became of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// The queue was full: the reader is not keeping up.
    Dropped,
    /// stdout cannot be written (the writer thread said why and ended).
    Closed,
}

impl Follow {
    /// Lines queue from now on; none is written before [`Follow::start`].
    pub fn new(format: LineFormat) -> Self {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        Self {
            format,
            queue: Some(queue),
            lines: Some(lines),
            done: None,
            dropped: 0,
            dropped_said: 0,
            ip_width: IP_WIDTH,
        }
    }

    /// Starts the writer thread. Called once netmon is confined: a thread
    /// inherits the confinement of the one that starts it, and one started
    /// earlier would keep every privilege.
    pub fn start(&mut self) -> io::Result<()> {
        let Some(lines) = self.lines.take() else {
            return Ok(());
        };
        let (finished, done) = mpsc::channel();
        thread::Builder::new()
            .name("netmon-follow".into())
            .spawn(move || {
                write_lines(&lines);
                let _ = finished.send(());
            })?;
        self.done = Some(done);
        Ok(())
    }

    /// Queues one line for stdout without ever waiting for the reader.
    pub fn write(&mut self, sighting: &Sighting<'_>) -> Sent {
        let Some(queue) = &self.queue else {
            return Sent::Closed;
        };
        let mut line = Vec::with_capacity(160);
        // Writing into memory fails only if serializing does, which it
        // cannot for these types.
        let _ = write_line(&mut line, self.format, sighting, &mut self.ip_width);
        match queue.try_send(line) {
            Ok(()) => Sent::Queued,
            Err(TrySendError::Full(_)) => {
                self.dropped += 1;
                Sent::Dropped
            }
            Err(TrySendError::Disconnected(_)) => {
                self.queue = None;
                Sent::Closed
            }
        }
    }

    /// Says how many lines were dropped since it last said, if any.
    pub fn warn_if_dropped(&mut self) {
        if self.dropped > self.dropped_said {
            warn!(
                "--follow: the reader is not keeping up; {} lines dropped since the last checkpoint ({} in this run)",
                self.dropped - self.dropped_said,
                self.dropped
            );
            self.dropped_said = self.dropped;
        }
    }
}

impl Drop for Follow {
    /// Gives the queued lines a moment to reach the reader, then lets the
    /// process exit whether or not they did.
    fn drop(&mut self) {
        self.queue = None;
        if let Some(done) = &self.done {
            let _ = done.recv_timeout(EXIT_PATIENCE);
        }
    }
}

/// The writer thread: each line as it comes, flushed whenever the queue is
/// empty, so a line is seen at once even through a pipe.
fn write_lines(lines: &Receiver<Vec<u8>>) {
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut next = lines.recv().ok();
    while let Some(line) = next {
        let mut written = out.write_all(&line);
        next = lines.try_recv().ok();
        if next.is_none() {
            written = written.and_then(|()| out.flush());
            next = written.is_ok().then(|| lines.recv().ok()).flatten();
        }
        if let Err(err) = written {
            warn!("--follow: cannot write to stdout ({err}); no more lines");
            return;
        }
    }
}

/// One line; `ip_width`, the text's address column, widens to fit.
fn write_line(
    out: &mut impl io::Write,
    format: LineFormat,
    s: &Sighting<'_>,
    ip_width: &mut usize,
) -> io::Result<()> {
    match format {
        LineFormat::Json => {
            serde_json::to_writer(&mut *out, s)?;
            out.write_all(b"\n")
        }
        LineFormat::Text => {
            let port = s
                .port
                .map_or_else(|| "-".to_owned(), |port| format!("{port}/{}", s.protocol));
            let process = s
                .process
                .map_or_else(|| "-".to_owned(), |p| p.escaped().to_string());
            let owner = s
                .owner
                .map_or_else(|| "-".to_owned(), |o| o.escaped().to_string());
            let netns = s.netns.map(|id| format!(" netns {id}")).unwrap_or_default();
            let ip = s.ip.to_string();
            *ip_width = (*ip_width).max(ip.len());
            writeln!(
                out,
                "{} {:<3} {ip:<ip_width$} {:<13} {:>9} {process} {owner}{netns}",
                UnixTime::from_secs(s.time),
                s.direction.as_str(),
                s.class.as_str(),
                port,
                ip_width = *ip_width,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn line(format: LineFormat, process: Option<Comm>) -> String {
        lines(format, process, &[Ipv4Addr::new(10, 0, 0, 7).into()])
    }

    /// The lines of one peer per address, in order, as one run writes
    /// them.
    fn lines(format: LineFormat, process: Option<Comm>, ips: &[IpAddr]) -> String {
        let mut width = IP_WIDTH;
        let mut out = Vec::new();
        for &ip in ips {
            write_line(&mut out, format, &sighting(ip, process), &mut width).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    fn sighting(ip: IpAddr, process: Option<Comm>) -> Sighting<'static> {
        Sighting {
            time: 1_795_881_633,
            host: "web-1",
            ip,
            direction: Direction::Outbound,
            class: Class::Private,
            port: Some(5432),
            protocol: Protocol::Tcp,
            process,
            owner: Owner::new("api.service"),
            netns: None,
        }
    }

    /// An IPv6 address wider than a dotted quad widens the column for
    /// the lines after it: their classes and ports line up again.
    #[test]
    fn text_lines_widen_for_an_ipv6_address() {
        let ips: Vec<IpAddr> = [
            "10.0.0.7",
            "fd12:3456:789a:1::370:7334",
            "10.0.0.8",
            "fd00::1",
        ]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
        assert_eq!(
            lines(LineFormat::Text, None, &ips),
            "2026-11-28T16:00:33Z out 10.0.0.7        private        5432/tcp - api.service\n\
             2026-11-28T16:00:33Z out fd12:3456:789a:1::370:7334 private        5432/tcp - api.service\n\
             2026-11-28T16:00:33Z out 10.0.0.8                   private        5432/tcp - api.service\n\
             2026-11-28T16:00:33Z out fd00::1                    private        5432/tcp - api.service\n"
        );
    }

    #[test]
    fn json_lines_carry_every_field() {
        assert_eq!(
            line(LineFormat::Json, Comm::from_name("api-server")),
            r#"{"time":"2026-11-28T16:00:33Z","host":"web-1","ip":"10.0.0.7","direction":"out","class":"private","port":5432,"protocol":"tcp","process":"api-server","owner":"api.service"}"#.to_owned() + "\n"
        );
        assert!(line(LineFormat::Json, None).contains(r#""process":null"#));
    }

    #[test]
    fn text_lines_mark_the_unknown() {
        assert_eq!(
            line(LineFormat::Text, None),
            "2026-11-28T16:00:33Z out 10.0.0.7        private        5432/tcp - api.service\n"
        );
    }

    /// Any process can name itself: a name must not forge a line, nor
    /// reach the terminal as an escape sequence.
    #[test]
    fn text_lines_escape_control_characters_in_process_names() {
        let text = line(LineFormat::Text, Comm::from_name("a\n1.2.3.4 out"));
        assert_eq!(
            text,
            "2026-11-28T16:00:33Z out 10.0.0.7        private        5432/tcp a\\n1.2.3.4 out api.service\n"
        );
        let text = line(LineFormat::Text, Comm::from_name("\u{1b}[2J"));
        assert!(text.ends_with(" \\u{1b}[2J api.service\n"), "{text:?}");
    }
}
