//! Replacing a file so that a crash at any instant leaves either the old
//! file or the new one: a temp file in the same directory, fsync, rename,
//! fsync of the directory. Also the clean-up around it: temp files a
//! crashed run left, and corrupt files moved aside.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::time::UnixTime;

/// Writes `bytes` to `path` atomically, mode 0640.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_atomically_with(path, |out| out.write_all(bytes))
}

/// Writes what `write` produces to `path` atomically, mode 0640.
///
/// The temp file is created with `O_EXCL | O_NOFOLLOW` in the target's
/// directory, so a planted symlink is never followed, and renamed over the
/// target only once its contents are on disk.
pub(super) fn write_atomically_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>,
) -> anyhow::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_path(path);
    let result = (|| -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        let mut writer = BufWriter::with_capacity(1 << 16, file);
        write(&mut writer)?;
        let file = writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Removes temp files a crashed run left beside `path`. Only called with
/// the file's lock held, so no live writer owns them.
pub fn remove_stale_temp_files(path: &Path) {
    let prefix = format!(".{}.tmp-", file_name(path));
    let Ok(entries) = fs::read_dir(parent_dir(path)) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!(
                    "removed {} left by an interrupted checkpoint",
                    entry.path().display()
                ),
                Err(err) => log::warn!("cannot remove stale {}: {err}", entry.path().display()),
            }
        }
    }
}

/// Moves a corrupt file aside as `PATH.corrupt-YYYYMMDDTHHMMSSZ`.
pub fn backup_corrupt(path: &Path) -> anyhow::Result<PathBuf> {
    let stamp: String = UnixTime::now()
        .to_string()
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let mut backup = path.as_os_str().to_owned();
    backup.push(format!(".corrupt-{stamp}"));
    let backup = PathBuf::from(backup);
    fs::rename(path, &backup).with_context(|| {
        format!(
            "cannot move corrupt {} to {}",
            path.display(),
            backup.display()
        )
    })?;
    Ok(backup)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(path: &Path) -> std::borrow::Cow<'_, str> {
    path.file_name()
        .map_or_else(|| "peers.json".into(), |n| n.to_string_lossy())
}

/// `.<name>.tmp-<pid>` beside `path`.
fn temp_path(path: &Path) -> PathBuf {
    parent_dir(path).join(format!(".{}.tmp-{}", file_name(path), std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn stale_temps_go_and_corrupt_files_move_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        fs::write(&path, b"junk").unwrap();
        fs::write(dir.path().join(".peers.json.tmp-1"), b"").unwrap();
        fs::write(dir.path().join(".other.json.tmp-1"), b"").unwrap();
        remove_stale_temp_files(&path);
        let backup = backup_corrupt(&path).unwrap();
        let name = backup.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("peers.json.corrupt-"), "{name}");
        assert_eq!(name.len(), "peers.json.corrupt-20260101T000000Z".len());
        let mut left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        left.sort();
        assert_eq!(left, [".other.json.tmp-1", name]);
        assert_eq!(fs::read(&backup).unwrap(), b"junk");
    }
}
