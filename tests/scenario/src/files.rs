//! What the tests write for netmon: a fresh output path, and the
//! timestamps of the checkpoints they make up.
use std::{
    path::PathBuf,
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
