//! What the tests write for netmon: a fresh output path, large
//! checkpoints, and the timestamps of the checkpoints they make up.
use std::{
    fs,
    io::{self, BufWriter, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tempfile::TempDir;

/// peers.json in a fresh temporary directory, under a `data` directory
/// that does not exist yet: netmon creates the directory of its output.
/// The file goes when the [`TempDir`] is dropped.
pub fn temp_output() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("peers.json");
    (dir, path)
}

/// Now, in Unix seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `secs` (Unix seconds) as a checkpoint writes times:
/// `2026-11-29T16:00:34Z`. humantime's, not netmon's own: the tests
/// check netmon's reading against another implementation.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Writes a checkpoint of `peers` made-up peers to `path` (its directory
/// created), in the format of docs/design.md, one peer a line as netmon
/// writes them. The peers are spread over 10.0.0.0/8, in ascending order,
/// with the mix of directions, ports and processes of a busy server.
/// Version 3 (IPv4 only, as these peers are), which builds from before
/// IPv6 read too, so `cargo xtask bench --netmon` can compare them.
pub fn write_big_checkpoint(path: &Path, peers: u32) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut out = BufWriter::new(fs::File::create(path)?);
    write!(
        out,
        r#"{{"version":3,"host":"bench","addresses":["192.0.2.1"],"updated":"2026-01-02T00:00:00Z","mode":"tracepoint","lost_events":0,"uncounted_connections":0,"peers":["#
    )?;
    for i in 0..peers {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 1)) + i * 7);
        let (outbound, inbound, remote, local, processes) = match i % 4 {
            0 => (0, 1 + i % 5, "", r#""22/tcp""#, ""),
            1 => (1 + i % 9, 0, r#""443/tcp""#, "", r#""curl""#),
            2 => (
                1 + i % 13,
                0,
                r#""443/tcp","8443/tcp""#,
                "",
                r#""api-server""#,
            ),
            _ => (1 + i % 3, 0, r#""5432/tcp""#, "", r#""api-server","psql""#),
        };
        let comma = if i == 0 { "\n" } else { ",\n" };
        write!(
            out,
            r#"{comma}{{"ip":"{ip}","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","outbound":{outbound},"inbound":{inbound},"remote_ports":[{remote}],"local_ports":[{local}],"processes":[{processes}]}}"#
        )?;
    }
    writeln!(out, "\n]}}")?;
    out.flush()
}
