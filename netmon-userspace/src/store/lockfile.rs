//! One writer per checkpoint file.
//!
//! Two collectors writing the same file would each overwrite the other's
//! peers at every checkpoint. An advisory `flock` on a sibling lock file
//! (`.peers.json.lock`) keeps them apart; the holder's pid is written into
//! it so the second one can say who is in the way. The lock goes away with
//! the process, however it ends, so a crash never leaves a stale lock.
use std::{
    fs::File,
    io::{self, Seek as _, Write as _},
    os::fd::AsRawFd as _,
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use log::info;

use super::Target;

/// Between attempts to take a held lock: short beside a final checkpoint.
const LOCK_RETRY: Duration = Duration::from_millis(10);

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

impl Target {
    /// Takes the file's lock, as `netmon run` does for its whole run, or
    /// fails naming the pid that holds it.
    pub fn lock(&self) -> anyhow::Result<Lock> {
        acquire(self)
    }
}

/// Takes the lock for `target`, or fails naming the pid that holds it.
pub fn acquire(target: &Target) -> anyhow::Result<Lock> {
    acquire_waiting(target, Duration::ZERO)
}

/// Takes the lock for `target`, waiting up to `patience` for its holder
/// to let go (a netmon being restarted holds it while it writes its final
/// checkpoint), and saying once whom it waits for; then fails naming it.
pub fn acquire_waiting(target: &Target, patience: Duration) -> anyhow::Result<Lock> {
    let output = target.path();
    let path = lock_path(output);
    let mut file = target.open_lock_file()?;
    let started = Instant::now();
    let mut said = false;
    // SAFETY: flock on an fd we own.
    while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(err).with_context(|| format!("cannot lock {}", path.display()));
        }
        let who = || {
            holder(&file).map_or_else(|| "another process".to_owned(), |pid| format!("pid {pid}"))
        };
        if started.elapsed() >= patience {
            let waited = if patience.is_zero() {
                String::new()
            } else {
                format!(" after waiting {}", humantime::format_duration(patience))
            };
            bail!(
                "{} is already being written by another netmon ({} holds {}){waited}",
                output.display(),
                who(),
                path.display()
            );
        }
        if !said {
            info!(
                "{} is held by {}, a netmon that may be ending: waiting up to {} for it to let go",
                path.display(),
                who(),
                humantime::format_duration(patience)
            );
            said = true;
        }
        std::thread::sleep(LOCK_RETRY);
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

/// The pid in a held lock file. Anyone who can write the directory can
/// fill the file: only a few bytes are read, and only a number is said.
fn holder(file: &File) -> Option<u32> {
    let mut bytes = [0; 16];
    let len = file.read_at(&mut bytes, 0).ok()?;
    std::str::from_utf8(&bytes[..len]).ok()?.trim().parse().ok()
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
        let target = Target::open(&output, false).unwrap();
        let held = acquire(&target).unwrap();
        // flock locks belong to the open file description: a second open in
        // the same process conflicts just as another process would.
        let err = acquire(&target).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        acquire(&target).unwrap();
    }

    /// A restarted netmon's successor waits for the lock, and takes it
    /// once it is let go; one never let go is refused, naming the holder.
    #[test]
    fn a_held_lock_is_waited_for_then_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = Target::open(&dir.path().join("peers.json"), false).unwrap();
        let held = acquire(&target).unwrap();
        let err = acquire_waiting(&target, Duration::from_millis(50))
            .unwrap_err()
            .to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(
            err.contains(&pid) && err.contains("after waiting 50ms"),
            "{err}"
        );
        let letting_go = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
        });
        acquire_waiting(&target, Duration::from_secs(30)).unwrap();
        letting_go.join().unwrap();
    }

    /// A planted lock file is neither read whole nor printed.
    #[test]
    fn a_huge_or_hostile_lock_file_is_not_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("peers.json");
        let lock = lock_path(&output);
        let mut content = b"\x1b[2J12".to_vec();
        content.resize(64 << 20, b'9');
        std::fs::write(&lock, &content).unwrap();
        let held = std::fs::File::open(&lock).unwrap();
        // SAFETY: flock on an fd we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
        let target = Target::open(&output, false).unwrap();
        let err = acquire(&target).unwrap_err().to_string();
        assert!(err.contains("(another process holds"), "{err}");
        assert!(!err.contains('\x1b') && err.len() < 300, "{err}");
    }
}
