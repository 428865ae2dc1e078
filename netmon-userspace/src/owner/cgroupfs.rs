//! The cgroup2 filesystem: where it is mounted, which cgroup a process is
//! in, and every cgroup under the root with its ID.
use std::{
    fs,
    io::Read,
    os::unix::fs::{DirEntryExt, MetadataExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// A walk goes no deeper: systemd nests a handful of levels, Kubernetes
/// under systemd a few more.
const MAX_DEPTH: usize = 32;

/// A walk visits no more cgroups than this, to bound its time on a host
/// with a runaway tree.
const MAX_CGROUPS: usize = 16_384;

/// `/proc/<pid>/cgroup` is one line per hierarchy; more than this is not
/// read.
const MAX_PROC_CGROUP: u64 = 64 * 1024;

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on hosts with cgroup v2
/// alone, `/sys/fs/cgroup/unified` on hybrid ones.
pub fn cgroup2_root() -> anyhow::Result<PathBuf> {
    let text = fs::read_to_string(MOUNTINFO).with_context(|| format!("cannot read {MOUNTINFO}"))?;
    match cgroup2_in_mountinfo(&text) {
        Some(root) => Ok(root),
        // `ip netns exec` mounts a /sys of its own over the host's, which
        // hides the cgroup2 mount beneath it.
        None => bail!(
            "no cgroup2 filesystem is mounted (none in {MOUNTINFO}; under `ip netns exec`, \
             which remounts /sys, enter the namespace with `nsenter --net=/run/netns/NAME` instead)"
        ),
    }
}

/// The mount point of the cgroup2 filesystem in a mountinfo text,
/// preferring a mount of its root over bind mounts of a cgroup inside it.
pub(super) fn cgroup2_in_mountinfo(text: &str) -> Option<PathBuf> {
    let mounts = text.lines().filter_map(|line| {
        // `id parent dev root mountpoint options [optional…] - fstype source super`
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        let mut fields = left.split(' ');
        let root = fields.nth(3)?;
        let point = fields.next()?;
        Some((root == "/", unescape(point)))
    });
    let mut found = None;
    for (whole, point) in mounts {
        if whole {
            return Some(point);
        }
        found.get_or_insert(point);
    }
    found
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The path of process `pid`'s cgroup, if it is still cgroup `id`: the
/// process may have moved since, or gone and its PID been reused.
pub(super) fn path_of_pid(root: &Path, pid: u32, id: u64) -> Option<String> {
    let mut text = String::new();
    let file = fs::File::open(format!("/proc/{pid}/cgroup")).ok()?;
    file.take(MAX_PROC_CGROUP).read_to_string(&mut text).ok()?;
    let path = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    // Outside netmon's cgroup namespace a path climbs with `..`: not ours to follow.
    if path.split('/').any(|c| c == "..") {
        return None;
    }
    let dir = root.join(path.trim_start_matches('/'));
    let ino = fs::metadata(dir).ok()?.ino();
    (ino == id).then(|| path.to_owned())
}

/// Calls `each` with the ID and path (relative to `root`, `/` for the root
/// itself) of every cgroup under `root`, depth first, within the bounds
/// above; cgroups that vanish during the walk are skipped.
pub(super) fn walk(root: &Path, mut each: impl FnMut(u64, &str)) -> std::io::Result<()> {
    each(fs::metadata(root)?.ino(), "/");
    let mut visited = 1;
    let mut stack = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if visited >= MAX_CGROUPS {
                return Ok(());
            }
            visited += 1;
            // kernfs gives a directory entry the inode number stat would:
            // the cgroup's ID, with no stat per cgroup.
            let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
            each(entry.ino(), &path);
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), path, depth + 1));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_finds_cgroup2_hybrid_and_pure() {
        let hybrid = "\
25 1 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
42 31 0:39 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        assert_eq!(
            cgroup2_in_mountinfo(hybrid),
            Some("/sys/fs/cgroup/unified".into())
        );
        let pure = "30 25 0:27 / /sys/fs/cgroup rw,nosuid,nodev - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(cgroup2_in_mountinfo(pure), Some("/sys/fs/cgroup".into()));
        assert_eq!(
            cgroup2_in_mountinfo("25 1 0:23 / /sys rw - sysfs sysfs rw\n"),
            None
        );
        assert_eq!(cgroup2_in_mountinfo(""), None);
        assert_eq!(cgroup2_in_mountinfo("garbage\n - cgroup2\n"), None);
    }

    #[test]
    fn mountinfo_prefers_the_whole_tree_and_unescapes() {
        let text = "\
50 1 0:38 /kubepods/pod1 /mnt/bind rw - cgroup2 cgroup2 rw
51 1 0:38 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw
";
        assert_eq!(cgroup2_in_mountinfo(text), Some("/mnt/my cgroups".into()));
        let bind_only = "50 1 0:38 /x /mnt/bind rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_in_mountinfo(bind_only), Some("/mnt/bind".into()));
        assert_eq!(unescape("a\\134b\\0"), PathBuf::from("a\\b\\0"));
        assert_eq!(unescape("\\777"), PathBuf::from("?"));
    }

    #[test]
    fn walk_of_a_plain_tree_lists_directories_with_their_inodes() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("a.slice/b.service")).unwrap();
        fs::write(dir.path().join("a.slice/cgroup.procs"), "").unwrap();
        let mut found = Vec::new();
        walk(dir.path(), |id, path| found.push((id, path.to_owned()))).unwrap();
        found.sort_by(|a, b| a.1.cmp(&b.1));
        let paths: Vec<&str> = found.iter().map(|(_, p)| p.as_str()).collect();
        assert_eq!(paths, ["/", "/a.slice", "/a.slice/b.service"]);
        let ino = fs::metadata(dir.path().join("a.slice/b.service"))
            .unwrap()
            .ino();
        assert_eq!(found[2].0, ino);
        assert!(walk(&dir.path().join("missing"), |_, _| {}).is_err());
    }
}
