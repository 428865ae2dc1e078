//! The socket tables as text under /proc/net: what every kernel has, and
//! what a directory of another namespace's tables (`--proc-net`) offers.
//! Parsed in place, a line at a time, without allocating.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Row;

/// The rows of one table's text (`/proc/net/tcp` and friends), skipping
/// the header and any line that does not parse.
pub fn rows(table: &[u8], v6: bool) -> impl Iterator<Item = Row> + '_ {
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .filter_map(move |line| parse_row(line, v6))
}

/// Parses one data line: `sl local rem st ...`, without allocating.
pub(super) fn parse_row(line: &[u8], v6: bool) -> Option<Row> {
    let mut fields = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let _slot = fields.next()?;
    let (local, local_port) = parse_endpoint(fields.next()?, v6)?;
    let (remote, remote_port) = parse_endpoint(fields.next()?, v6)?;
    let state = i32::from(u8::try_from(parse_hex(fields.next()?)?).ok()?);
    Some(Row {
        local,
        local_port,
        remote,
        remote_port,
        state,
        cookie: None,
        timewait: false,
    })
}

/// `0100007F:0050`, or 32 hex digits for IPv6. The address is printed as
/// native-endian 32-bit words of the network-order bytes.
fn parse_endpoint(field: &[u8], v6: bool) -> Option<(Option<IpAddr>, u16)> {
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
        IpAddr::V6(Ipv6Addr::from(bytes)).to_canonical()
    } else {
        if addr.len() != 8 {
            return None;
        }
        let value = u32::try_from(parse_hex(addr)?).ok()?;
        IpAddr::V4(Ipv4Addr::from(value.to_ne_bytes()))
    };
    Some((Some(ip), port))
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        Some(acc << 4 | u64::from((d as char).to_digit(16)?))
    })
}
