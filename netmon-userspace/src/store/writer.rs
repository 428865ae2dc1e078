//! The checkpoint's hot loop: one JSON line per peer, written by hand.
//!
//! With serde each peer cost about a microsecond (formatting machinery for
//! numbers and times, escaping scans of every field name), which made a
//! million-peer checkpoint take over a second. Here a line is assembled in
//! a reused buffer: numbers by hand, times from a small cache (peers seen
//! in the same second share one), strings escaped only where they can need
//! it (process names).
use std::net::Ipv4Addr;

use super::{CappedSet, InlineItem, PeerRecord};
use crate::{peer::Comm, time::UnixTime};

/// Builds one peer's JSON object at a time.
pub(super) struct LineWriter {
    line: Vec<u8>,
    times: TimeCache,
}

impl LineWriter {
    pub(super) fn new() -> Self {
        Self {
            line: Vec::with_capacity(256),
            times: TimeCache::new(),
        }
    }

    /// The JSON object for one peer, valid until the next call.
    pub(super) fn peer(&mut self, ip: Ipv4Addr, record: &PeerRecord) -> &[u8] {
        let line = &mut self.line;
        line.clear();
        line.extend_from_slice(b"{\"ip\":\"");
        push_ip(line, ip);
        line.extend_from_slice(b"\",\"first_seen\":\"");
        line.extend_from_slice(self.times.get(record.first_seen));
        line.extend_from_slice(b"\",\"last_seen\":\"");
        line.extend_from_slice(self.times.get(record.last_seen));
        line.extend_from_slice(b"\",\"outbound\":");
        push_u64(line, record.outbound);
        line.extend_from_slice(b",\"inbound\":");
        push_u64(line, record.inbound);
        line.extend_from_slice(b",\"remote_ports\":");
        push_list(line, &record.remote_ports, |line, port| {
            push_u64(line, u64::from(port))
        });
        line.extend_from_slice(b",\"local_ports\":");
        push_list(line, &record.local_ports, |line, port| {
            push_u64(line, u64::from(port))
        });
        line.extend_from_slice(b",\"processes\":");
        push_list(line, &record.processes, push_comm);
        line.push(b'}');
        line
    }
}

fn push_list<T: InlineItem + Ord + Copy>(
    line: &mut Vec<u8>,
    list: &CappedSet<T>,
    push: fn(&mut Vec<u8>, T),
) {
    line.push(b'[');
    for (index, item) in list.iter().enumerate() {
        if index > 0 {
            line.push(b',');
        }
        push(line, *item);
    }
    line.push(b']');
}

fn push_u64(line: &mut Vec<u8>, value: u64) {
    line.extend_from_slice(decimal(value, &mut [0; 20]));
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

fn push_ip(line: &mut Vec<u8>, ip: Ipv4Addr) {
    for (index, octet) in ip.octets().into_iter().enumerate() {
        if index > 0 {
            line.push(b'.');
        }
        push_u64(line, u64::from(octet));
    }
}

/// A process name as a JSON string (lossily decoded, as `Comm` displays).
fn push_comm(line: &mut Vec<u8>, comm: Comm) {
    line.push(b'"');
    for ch in String::from_utf8_lossy(comm.as_bytes()).chars() {
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

/// RFC 3339 texts of recent seconds, direct-mapped: most peers of a
/// checkpoint were first and last seen in a few thousand distinct seconds.
struct TimeCache {
    slots: Box<[(u64, [u8; 20])]>,
}

impl TimeCache {
    const SLOTS: usize = 1024;

    fn new() -> Self {
        Self {
            slots: vec![(u64::MAX, [0; 20]); Self::SLOTS].into_boxed_slice(),
        }
    }

    fn get(&mut self, secs: u64) -> &[u8; 20] {
        let slot = &mut self.slots[(secs % Self::SLOTS as u64) as usize];
        if slot.0 != secs {
            let text = UnixTime::from_secs(secs).to_string();
            slot.1.copy_from_slice(&text.as_bytes()[..20]);
            slot.0 = secs;
        }
        &slot.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_the_json_serde_would_write() {
        let record = PeerRecord {
            first_seen: 1_700_000_000,
            last_seen: 1_700_000_061,
            outbound: 18_446_744_073_709_551_615,
            inbound: 0,
            remote_ports: [443, 80].into_iter().collect(),
            local_ports: CappedSet::default(),
            processes: ["cu\"rl\\", "a\u{1}b", "é"]
                .into_iter()
                .filter_map(Comm::from_name)
                .collect(),
        };
        let mut writer = LineWriter::new();
        let line = writer.peer(Ipv4Addr::new(10, 0, 255, 1), &record).to_vec();
        let value: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "ip": "10.0.255.1",
                "first_seen": "2023-11-14T22:13:20Z",
                "last_seen": "2023-11-14T22:14:21Z",
                "outbound": 18_446_744_073_709_551_615u64,
                "inbound": 0,
                "remote_ports": [80, 443],
                "local_ports": [],
                "processes": ["a\u{1}b", "cu\"rl\\", "é"],
            })
        );
    }
}
