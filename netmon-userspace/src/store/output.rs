//! The file `netmon run` writes, made ready before anything is collected.
//!
//! Every check on it happens here, once, in this order: a symlink is
//! refused before anything follows it, the directory exists before the
//! lock file is made in it, and the lock is held before temp files are
//! removed (so none belongs to a live writer) and before the file is read
//! (so no other netmon rewrites it meanwhile).
use std::{
    fs::{self, DirBuilder},
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::Path,
    time::Instant,
};

use anyhow::{Context as _, bail};
use log::{info, warn};

use super::{
    FileFormat, LoadError, Snapshot, backup_corrupt, load,
    lockfile::{self, Lock},
    remove_stale_temp_files,
};

/// What to do when the output holds something unreadable as peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorrupt {
    /// Exit non-zero naming the file and the problem; leave it untouched.
    Refuse,
    /// Rename it to PATH.corrupt-TIMESTAMP, say so, and start fresh.
    Backup,
}

/// Makes `path` ready for checkpoints and reads what it holds: the lock,
/// held until it is dropped, and the peers to continue from.
///
/// A disk too full or read-only to make the lock file on leaves the lock
/// to be taken later (`None`), by the checkpoint that first can.
pub fn open_output(path: &Path, on_corrupt: OnCorrupt) -> anyhow::Result<(Option<Lock>, Snapshot)> {
    refuse_symlink(path)?;
    create_parent_dir(path)?;
    warn_if_others_can_write(path);
    let lock = match lockfile::acquire(path) {
        Err(err) if super::disk_unwritable(&err) => None,
        lock => Some(lock?),
    };
    if lock.is_some() {
        remove_stale_temp_files(path);
    }
    let snapshot = load_existing(path, on_corrupt)?;
    Ok((lock, snapshot))
}

/// A symlink at the output path is someone trying to make root write
/// elsewhere; netmon neither reads through it nor replaces it blindly.
fn refuse_symlink(path: &Path) -> anyhow::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => bail!(
            "--output {} is a symlink; refusing to follow it (remove it or point --output at a regular file)",
            path.display()
        ),
        _ => Ok(()),
    }
}

fn create_parent_dir(path: &Path) -> anyhow::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .with_context(|| format!("cannot create directory {} for --output", dir.display())),
        _ => Ok(()),
    }
}

/// Anyone who can write the directory can swap the checkpoint file.
fn warn_if_others_can_write(path: &Path) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(meta) = fs::metadata(dir)
        && meta.permissions().mode() & 0o002 != 0
    {
        warn!(
            "{} is writable by every user: anyone can replace the checkpoint; use a directory only root can write",
            dir.display()
        );
    }
}

fn load_existing(path: &Path, on_corrupt: OnCorrupt) -> anyhow::Result<Snapshot> {
    let started = Instant::now();
    let loaded = match load(path) {
        Err(LoadError::Corrupt { .. }) if on_corrupt == OnCorrupt::Backup => {
            let backup = backup_corrupt(path)?;
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
                "{}: read {} peers from an address list; the next checkpoint rewrites it in netmon's format",
                path.display(),
                snapshot.peers.len()
            );
            Ok(snapshot)
        }
        Some((snapshot, FileFormat::Checkpoint)) => {
            info!(
                "{}: continuing from {} peers (loaded in {} ms)",
                path.display(),
                snapshot.peers.len(),
                started.elapsed().as_millis()
            );
            Ok(snapshot)
        }
    }
}
