//! `netmon run --follow`: a line on stdout the moment a peer is first seen
//! in a direction, so an admin can watch the access map grow and a log
//! shipper can carry every host's new peers to one place (`--json`).
//!
//! Lines are written as they happen, straight to stdout: a reader that
//! stops reading stalls collection until the kernel's buffer overflows,
//! which shows in `lost_events`. Logs go to stderr, so stdout carries only
//! these lines.
use std::{
    io::{self, Write as _},
    net::Ipv4Addr,
};

use serde::{Serialize, Serializer};

use crate::{classify::Class, peer::Comm, peer::Direction, time::UnixTime};

/// How `--follow` writes its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// `TIME DIRECTION IP CLASS PORT PROCESS`, `-` for what is unknown.
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
    pub ip: Ipv4Addr,
    #[serde(serialize_with = "direction")]
    pub direction: Direction,
    pub class: Class,
    /// The peer's port for an outbound connection, ours for an inbound one.
    pub port: Option<u16>,
    /// The local process, where the hook runs in it.
    pub process: Option<Comm>,
}

fn direction<S: Serializer>(direction: &Direction, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(direction.as_str())
}

/// Writes sightings to stdout in one format.
pub struct Follow {
    format: LineFormat,
}

impl Follow {
    pub fn new(format: LineFormat) -> Self {
        Self { format }
    }

    /// Writes one line and flushes it, so that it is seen at once even
    /// through a pipe.
    pub fn write(&self, sighting: &Sighting<'_>) -> io::Result<()> {
        let mut out = io::stdout().lock();
        write_line(&mut out, self.format, sighting)?;
        out.flush()
    }
}

fn write_line(out: &mut impl io::Write, format: LineFormat, s: &Sighting<'_>) -> io::Result<()> {
    match format {
        LineFormat::Json => {
            serde_json::to_writer(&mut *out, s)?;
            out.write_all(b"\n")
        }
        LineFormat::Text => {
            let port = s
                .port
                .map_or_else(|| "-".to_owned(), |port| port.to_string());
            let process = s
                .process
                .map_or_else(|| "-".to_owned(), |p| p.escaped().to_string());
            writeln!(
                out,
                "{} {:<3} {:<15} {:<13} {:>5} {process}",
                UnixTime::from_secs(s.time),
                s.direction.as_str(),
                s.ip.to_string(),
                s.class.as_str(),
                port
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(format: LineFormat, process: Option<Comm>) -> String {
        let sighting = Sighting {
            time: 1_795_881_633,
            host: "web-1",
            ip: Ipv4Addr::new(10, 0, 0, 7),
            direction: Direction::Outbound,
            class: Class::Private,
            port: Some(5432),
            process,
        };
        let mut out = Vec::new();
        write_line(&mut out, format, &sighting).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_lines_carry_every_field() {
        assert_eq!(
            line(LineFormat::Json, Comm::from_name("api-server")),
            r#"{"time":"2026-11-28T16:00:33Z","host":"web-1","ip":"10.0.0.7","direction":"out","class":"private","port":5432,"process":"api-server"}"#.to_owned() + "\n"
        );
        assert!(line(LineFormat::Json, None).contains(r#""process":null"#));
    }

    #[test]
    fn text_lines_mark_the_unknown() {
        assert_eq!(
            line(LineFormat::Text, None),
            "2026-11-28T16:00:33Z out 10.0.0.7        private        5432 -\n"
        );
    }

    /// Any process can name itself: a name must not forge a line, nor
    /// reach the terminal as an escape sequence.
    #[test]
    fn text_lines_escape_control_characters_in_process_names() {
        let text = line(LineFormat::Text, Comm::from_name("a\n1.2.3.4 out"));
        assert_eq!(
            text,
            "2026-11-28T16:00:33Z out 10.0.0.7        private        5432 a\\n1.2.3.4 out\n"
        );
        let text = line(LineFormat::Text, Comm::from_name("\u{1b}[2J"));
        assert!(text.ends_with(" \\u{1b}[2J\n"), "{text:?}");
    }
}
