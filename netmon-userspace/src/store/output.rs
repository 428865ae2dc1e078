//! The file `netmon run` writes: checked before attaching, locked and
//! loaded after, while the first connections are already collected.
//!
//! Every check on it happens here, once, in this order: a symlink is
//! refused before anything follows it, the directory exists before the
//! lock file is made in it, and the lock is held before temp files are
//! removed (so none belongs to a live writer) and before the file is read
//! (so no other netmon rewrites it meanwhile).
use std::{
    path::Path,
    time::{Duration, Instant},
};

use log::{info, warn};

use super::{
    FileFormat, LoadError, Snapshot, Target, load_file,
    lockfile::{self, Lock},
};

/// What to do when the output holds something unreadable as peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorrupt {
    /// Exit non-zero naming the file and the problem; leave it untouched.
    Refuse,
    /// Rename it to PATH.corrupt-TIMESTAMP, say so, and start fresh.
    Backup,
}

/// The output `netmon run` writes, held for the whole run.
#[derive(Debug)]
pub struct Output {
    pub target: Target,
    /// One writer per file. `None` until a disk that was full or read-only
    /// at start-up lets it be taken; no checkpoint is written without it.
    lock: Option<Lock>,
}

impl Output {
    /// Takes the lock if it is not held yet; checkpoints call it first.
    pub fn lock(&mut self) -> anyhow::Result<()> {
        if self.lock.is_none() {
            self.lock = Some(lockfile::acquire(&self.target)?);
        }
        Ok(())
    }

    /// Whether the lock is held.
    pub fn locked(&self) -> bool {
        self.lock.is_some()
    }
}

/// The checks on `path` that cost nothing, made before attaching so that a
/// wrong `--output` stops netmon at once: its directory (created if
/// missing) and what is at the path, refused if not a regular file.
pub fn check_output(path: &Path) -> anyhow::Result<Target> {
    let target = Target::open(path, true)?;
    target.refuse_unsafe()?;
    Ok(target)
}

/// Makes `target` ready for checkpoints and reads what it holds: the
/// target with its lock, held until it is dropped, and the peers to
/// continue from. A lock held by another netmon is waited for up to
/// `patience`.
///
/// A disk too full or read-only to make the lock file on leaves the lock
/// to be taken later, by the checkpoint that first can.
pub fn open_output(
    target: Target,
    on_corrupt: OnCorrupt,
    patience: Duration,
) -> anyhow::Result<(Output, Snapshot)> {
    let lock = match lockfile::acquire_waiting(&target, patience) {
        Err(err) if super::disk_unwritable(&err) => None,
        lock => Some(lock?),
    };
    if lock.is_some() {
        target.remove_stale_temp_files();
    }
    let snapshot = load_existing(&target, on_corrupt)?;
    Ok((Output { target, lock }, snapshot))
}

fn load_existing(target: &Target, on_corrupt: OnCorrupt) -> anyhow::Result<Snapshot> {
    let path = target.path();
    let started = Instant::now();
    let file = target.open_existing().map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    let loaded = match file.map(|file| load_file(file, path)).transpose() {
        Err(LoadError::Corrupt { .. }) if on_corrupt == OnCorrupt::Backup => {
            let backup = target.backup_corrupt()?;
            warn!(
                "{}: corrupt; moved it to {} and starting fresh",
                path.display(),
                backup.display()
            );
            return Ok(Snapshot::default());
        }
        other => other?,
    };
    match loaded {
        None => Ok(Snapshot::default()),
        Some((snapshot, FileFormat::AddressList)) => {
            info!(
                "{}: read {} from an address list; the next checkpoint rewrites it in netmon's format",
                path.display(),
                crate::words::count(snapshot.peers.len() as u64, "peer", "peers")
            );
            Ok(snapshot)
        }
        Some((snapshot, FileFormat::Checkpoint)) => {
            info!(
                "{}: continuing from {} (loaded in {} ms)",
                path.display(),
                crate::words::count(snapshot.peers.len() as u64, "peer", "peers"),
                started.elapsed().as_millis()
            );
            Ok(snapshot)
        }
    }
}
