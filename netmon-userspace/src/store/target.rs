//! The file netmon writes, reached only through its directory's descriptor.
//!
//! The directory is opened once. Every later open, rename and unlink is
//! relative to that descriptor and never follows a symlink, so whoever can
//! write the directory (or its parents) cannot redirect netmon elsewhere
//! after it started, and nothing it opens can block it: `O_NONBLOCK` makes
//! a fifo open at once, and the type is checked on the open descriptor.
use std::{
    ffi::{CStr, CString, OsStr},
    fs::{self, DirBuilder, File},
    io::{self, BufWriter, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::{
            ffi::OsStrExt as _,
            fs::{DirBuilderExt as _, MetadataExt as _},
        },
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use log::warn;

use crate::time::UnixTime;

/// A file being written that the kernel starts writing back every
/// [`Writeback::EVERY`] bytes, so that the fsync at the end waits for the
/// last of them only, not for the whole file (a 1M-peer checkpoint is
/// about 200 MB: its fsync alone took 130 ms on the development machine).
pub struct Writeback {
    file: File,
    written: u64,
    started: u64,
}

impl Writeback {
    const EVERY: u64 = 8 << 20;

    fn new(file: File) -> Self {
        Self {
            file,
            written: 0,
            started: 0,
        }
    }
}

impl io::Write for Writeback {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.written += written as u64;
        if self.written - self.started >= Self::EVERY {
            // SAFETY: a range of a descriptor we own; only starts the
            // write-back of its dirty pages. Failure is left to the fsync.
            unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    self.started as libc::off64_t,
                    (self.written - self.started) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.started = self.written;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `bytes` to `path` atomically, mode 0640.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    Target::open(path, false)?.write_atomically_with(|out| out.write_all(bytes))
}

/// A file in a directory held open: `--output` of `run` and `merge`.
#[derive(Debug)]
pub struct Target {
    dir: OwnedFd,
    name: CString,
    path: PathBuf,
}

/// Temp names are drawn at random; this many collisions in a row means
/// something fills the directory on purpose.
const TEMP_ATTEMPTS: usize = 16;

impl Target {
    /// Opens the directory of `path`, creating it (mode 0750) if
    /// `create_dir`.
    pub fn open(path: &Path, create_dir: bool) -> anyhow::Result<Self> {
        let Some(name) = path.file_name() else {
            bail!("--output {} names no file", path.display());
        };
        let dir_path = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if create_dir {
            DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir_path)
                .with_context(|| {
                    format!(
                        "cannot create directory {} for --output",
                        dir_path.display()
                    )
                })?;
        }
        say_if_symlink(dir_path);
        let dir = open_raw(
            None,
            &c_path(dir_path.as_os_str())?,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
        .with_context(|| format!("cannot open directory {} of --output", dir_path.display()))?;
        let target = Self {
            dir,
            name: c_path(name)?,
            path: path.to_owned(),
        };
        target.warn_if_others_can_write(dir_path);
        Ok(target)
    }

    /// The same target through a second descriptor of its directory, for
    /// the thread that writes checkpoints.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            dir: self.dir.try_clone()?,
            name: self.name.clone(),
            path: self.path.clone(),
        })
    }

    /// The path as given, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Refuses an output that exists and is not a regular file. A symlink
    /// is someone trying to make root write elsewhere; a device, fifo or
    /// directory is not netmon's to replace or move aside.
    pub fn refuse_unsafe(&self) -> anyhow::Result<()> {
        match self.entry_kind()? {
            Some(libc::S_IFLNK) => bail!(
                "--output {} is a symlink; refusing to follow it (remove it or point --output at a regular file)",
                self.path.display()
            ),
            Some(kind) if kind != libc::S_IFREG => bail!(
                "--output {} is a {}, not a regular file; refusing to replace it",
                self.path.display(),
                mode_name(kind)
            ),
            _ => Ok(()),
        }
    }

    /// The type bits of what is at the target now, `None` if nothing.
    fn entry_kind(&self) -> anyhow::Result<Option<libc::mode_t>> {
        // SAFETY: an all-zero stat is valid; fstatat fills it, relative to
        // a directory descriptor we own, with a NUL-terminated name.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        let ret = unsafe {
            libc::fstatat(
                self.dir.as_raw_fd(),
                self.name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        match cvt(ret) {
            Ok(_) => Ok(Some(stat.st_mode & libc::S_IFMT)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("cannot stat {}", self.path.display())),
        }
    }

    /// The file for reading, `None` if it does not exist; an error if it is
    /// a symlink or not a regular file.
    pub(super) fn open_existing(&self) -> io::Result<Option<File>> {
        match self.open_at(&self.name, libc::O_RDONLY, 0) {
            Ok(file) => Ok(Some(file)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The lock file beside the target, created if missing.
    pub(super) fn open_lock_file(&self) -> anyhow::Result<File> {
        let name = self.sibling(".", ".lock")?;
        self.open_at(&name, libc::O_RDWR | libc::O_CREAT, 0o640)
            .with_context(|| {
                format!(
                    "cannot open lock file {}",
                    self.display_sibling(&name).display()
                )
            })
    }

    /// Writes what `write` produces in place of the target, atomically,
    /// mode 0640: a temp file of an unpredictable name made with `O_EXCL`,
    /// fsync, rename, fsync of the directory.
    pub fn write_atomically_with(
        &self,
        write: impl FnOnce(&mut BufWriter<Writeback>) -> io::Result<()>,
    ) -> anyhow::Result<()> {
        let (file, tmp) = self
            .create_temp()
            .with_context(|| format!("cannot write checkpoint {}", self.path.display()))?;
        let result = (|| -> io::Result<()> {
            let mut writer = BufWriter::with_capacity(1 << 16, Writeback::new(file));
            write(&mut writer)?;
            let file = writer
                .into_inner()
                .map_err(io::IntoInnerError::into_error)?
                .file;
            file.sync_all()?;
            // Planted since start-up: a symlink is replaced, never
            // followed, but a device node or fifo stays.
            match self.entry_kind().map_err(io::Error::other)? {
                Some(kind) if kind != libc::S_IFREG && kind != libc::S_IFLNK => {
                    return Err(io::Error::other(format!(
                        "it is now a {}, not a regular file; refusing to replace it",
                        mode_name(kind)
                    )));
                }
                _ => {}
            }
            self.rename(&tmp, &self.name)?;
            // SAFETY: fsync of a descriptor we own.
            cvt(unsafe { libc::fsync(self.dir.as_raw_fd()) }).map(drop)
        })();
        if result.is_err() {
            self.unlink(&tmp);
        }
        result.with_context(|| format!("cannot write checkpoint {}", self.path.display()))
    }

    fn create_temp(&self) -> io::Result<(File, CString)> {
        for _ in 0..TEMP_ATTEMPTS {
            let tmp = self
                .sibling(".", &format!(".tmp-{:016x}", random_u64()))
                .map_err(io::Error::other)?;
            match self.open_at(&tmp, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o640) {
                Ok(file) => return Ok((file, tmp)),
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{TEMP_ATTEMPTS} random temp names in a row were taken"),
        ))
    }

    /// Removes temp files a crashed run left beside the target. Only called
    /// with the lock held, so no live writer owns them.
    pub fn remove_stale_temp_files(&self) {
        let mut prefix = b".".to_vec();
        prefix.extend_from_slice(self.name.as_bytes());
        prefix.extend_from_slice(b".tmp-");
        // The listing of the directory we hold, wherever it now is.
        let listing = format!("/proc/self/fd/{}", self.dir.as_raw_fd());
        let Ok(entries) = fs::read_dir(listing) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(&prefix) {
                continue;
            }
            let Ok(c_name) = CString::new(name.as_bytes()) else {
                continue;
            };
            let shown = self.display_sibling(&c_name);
            let shown = shown.display();
            // SAFETY: unlinkat relative to a directory descriptor we own,
            // with a NUL-terminated name.
            match cvt(unsafe { libc::unlinkat(self.dir.as_raw_fd(), c_name.as_ptr(), 0) }) {
                Ok(_) => log::info!("removed {shown} left by an interrupted checkpoint"),
                Err(err) => warn!("cannot remove stale {shown}: {err}"),
            }
        }
    }

    /// Moves the target aside as `NAME.corrupt-YYYYMMDDTHHMMSSZ`.
    pub fn backup_corrupt(&self) -> anyhow::Result<PathBuf> {
        let stamp: String = UnixTime::now()
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        let backup = self.sibling("", &format!(".corrupt-{stamp}"))?;
        let shown = self.display_sibling(&backup);
        self.rename(&self.name, &backup).with_context(|| {
            format!(
                "cannot move corrupt {} to {}",
                self.path.display(),
                shown.display()
            )
        })?;
        Ok(shown)
    }

    /// `<prefix><name><suffix>` in the same directory.
    fn sibling(&self, prefix: &str, suffix: &str) -> anyhow::Result<CString> {
        let mut name = prefix.as_bytes().to_vec();
        name.extend_from_slice(self.name.as_bytes());
        name.extend_from_slice(suffix.as_bytes());
        Ok(CString::new(name)?)
    }

    fn display_sibling(&self, name: &CStr) -> PathBuf {
        self.path.with_file_name(OsStr::from_bytes(name.to_bytes()))
    }

    /// `openat` without following a symlink, without blocking on a fifo or
    /// device, and only ever returning a regular file.
    fn open_at(&self, name: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        let fd = open_raw(Some(&self.dir), name, flags | libc::O_NOFOLLOW, mode)?;
        let file = File::from(fd);
        let kind = file.metadata()?.mode() & libc::S_IFMT;
        if kind != libc::S_IFREG {
            return Err(io::Error::other(format!(
                "not a regular file (a {})",
                mode_name(kind)
            )));
        }
        Ok(file)
    }

    fn rename(&self, from: &CStr, to: &CStr) -> io::Result<()> {
        let dir = self.dir.as_raw_fd();
        // SAFETY: renameat within a directory descriptor we own, with
        // NUL-terminated names.
        cvt(unsafe { libc::renameat(dir, from.as_ptr(), dir, to.as_ptr()) }).map(drop)
    }

    fn unlink(&self, name: &CStr) {
        // SAFETY: as in `rename`.
        unsafe { libc::unlinkat(self.dir.as_raw_fd(), name.as_ptr(), 0) };
    }

    /// Anyone who can write the directory can swap the checkpoint file.
    fn warn_if_others_can_write(&self, dir_path: &Path) {
        // SAFETY: an all-zero stat is valid, and fstat fills it from a
        // descriptor we own.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(self.dir.as_raw_fd(), &mut stat) } == 0 && stat.st_mode & 0o002 != 0
        {
            warn!(
                "{} is writable by every user: anyone can replace the checkpoint; use a directory only root can write",
                dir_path.display()
            );
        }
    }
}

/// A symlinked output directory is followed once, at start-up, and said:
/// refusing it would break the common `/var/lib/netmon` → bigger-disk
/// link, and once the directory is held open swapping the link changes
/// nothing.
fn say_if_symlink(dir: &Path) {
    if fs::symlink_metadata(dir).is_ok_and(|meta| meta.file_type().is_symlink()) {
        let real = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
        warn!(
            "--output's directory {} is a symlink; writing in {}",
            dir.display(),
            real.display()
        );
    }
}

fn open_raw(
    dir: Option<&OwnedFd>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    let dir = dir.map_or(libc::AT_FDCWD, |dir| dir.as_raw_fd());
    let flags = flags | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY;
    // SAFETY: openat with a NUL-terminated name; the descriptor returned is
    // owned by nothing else.
    let fd = cvt(unsafe { libc::openat(dir, name.as_ptr(), flags, libc::c_uint::from(mode)) })?;
    // SAFETY: `fd` was just opened and is ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &OsStr) -> anyhow::Result<CString> {
    CString::new(path.as_bytes())
        .with_context(|| format!("{} contains a NUL byte", Path::new(path).display()))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// What kind of file the type bits `kind` (of `st_mode`) say, in words.
pub(super) fn mode_name(kind: libc::mode_t) -> &'static str {
    match kind {
        libc::S_IFDIR => "directory",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFSOCK => "socket",
        _ => "regular file",
    }
}

/// Unpredictable, so nobody can plant the next temp name in advance.
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got == 8 {
        u64::from_ne_bytes(bytes)
    } else {
        // Without getrandom the O_EXCL retry still keeps this correct.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ u64::from(std::process::id()).rotate_left(32)
    }
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
        let target = Target::open(&path, false).unwrap();
        target.remove_stale_temp_files();
        let backup = target.backup_corrupt().unwrap();
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

    /// Another user of the directory cannot block checkpoints by creating
    /// the next temp file first, nor redirect them with a symlink there.
    #[test]
    fn planted_temp_files_block_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let outside = dir.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        let pid = std::process::id();
        fs::write(dir.path().join(format!(".peers.json.tmp-{pid}")), b"").unwrap();
        std::os::unix::fs::symlink(&outside, dir.path().join(format!(".peers.json.tmp-{pid}x")))
            .unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
    }

    /// Opening never blocks on a fifo, and never returns anything but a
    /// regular file.
    #[test]
    fn a_fifo_in_place_of_the_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("peers.json");
        let c = CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let target = Target::open(&path, false).unwrap();
        let err = target.open_existing().unwrap_err().to_string();
        assert!(err.contains("not a regular file (a fifo)"), "{err}");
    }

    /// The directory is held: renaming it away and putting a symlink in its
    /// place after opening does not move where checkpoints go.
    #[test]
    fn the_directory_is_pinned_once_opened() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        fs::create_dir(&out).unwrap();
        let elsewhere = root.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        let target = Target::open(&out.join("peers.json"), false).unwrap();
        fs::rename(&out, root.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
        target.write_atomically_with(|w| w.write_all(b"x")).unwrap();
        assert!(root.path().join("moved/peers.json").exists());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }
}
