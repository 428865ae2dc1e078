//! One writer per checkpoint file.
//!
//! Two collectors writing the same file would each overwrite the other's
//! peers at every checkpoint. An advisory `flock` on a sibling lock file
//! (`.peers.json.lock`) keeps them apart; the holder's pid is written into
//! it so the second one can say who is in the way. The lock goes away with
//! the process, however it ends, so a crash never leaves a stale lock.
use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Held for as long as netmon writes the file.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// The lock file of a checkpoint path.
pub fn lock_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map_or_else(|| "peers.json".into(), |n| n.to_string_lossy());
    output.with_file_name(format!(".{name}.lock"))
}

/// Takes the lock for `output`, or fails naming the pid that holds it.
pub fn acquire(output: &Path) -> anyhow::Result<Lock> {
    let path = lock_path(output);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .with_context(|| format!("cannot open lock file {}", path.display()))?;
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("pid {holder}")
            };
            bail!(
                "{} is already being written by another netmon ({who} holds {})",
                output.display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", path.display()));
    }
    let pid = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    match pid {
        // The pid only names the holder to a second netmon: a disk too
        // full for it must not cost the lock itself.
        Err(err) if !super::is_disk_unwritable(&err) => {
            Err(err).with_context(|| format!("cannot write {}", path.display()))
        }
        _ => Ok(Lock { _file: file }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_path_is_a_hidden_sibling() {
        assert_eq!(
            lock_path(Path::new("/var/lib/netmon/peers.json")),
            Path::new("/var/lib/netmon/.peers.json.lock")
        );
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("peers.json");
        let held = acquire(&output).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts just as another process would.
        let err = acquire(&output).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        acquire(&output).unwrap();
    }
}
