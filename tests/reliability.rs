//! Reliability and least-privilege tests of `netmon run`: crashes, a full
//! disk, a second instance, corrupt files, planted symlinks, capabilities,
//! unprivileged runs, SIGHUP and `--max-peers` (storms during checkpoints:
//! `checkpoints.rs`). The real binary, mostly in
//! `--mode auto`. Tests of the file run as any user (in proc mode without
//! root); the rest need root and are run by `cargo xtask test`, one at a
//! time.
use std::{
    fs,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use netmon_scenario::{
    confine,
    files::temp_output,
    harness::{Netmon, eventually},
    net::Block,
    stream::Stream,
    workload::connect_from,
};
use serde_json::Value;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

fn peers(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).unwrap();
    let file: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", path.display()));
    file["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].as_str().unwrap().to_owned())
        .collect()
}

/// Connects from `block`'s 127.B.`c`.i to its 127.B.`c`.(128+i) for i in
/// 1..=count; a listener on 0.0.0.0 accepts them all. Returns the
/// destinations.
fn connect_many(block: Block, c: u8, count: u8) -> Vec<Ipv4Addr> {
    assert!(count < 128, "sources would meet destinations");
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (1..=count)
        .map(|i| {
            let dest = block.addr(c, 128 + i);
            let client = connect_from(block.addr(c, i), SocketAddrV4::new(dest, port)).unwrap();
            drop((client, listener.accept().unwrap()));
            dest
        })
        .collect()
}

fn pid_of(netmon: &Netmon) -> i32 {
    netmon.pid() as i32
}

fn kill(netmon: &Netmon, signal: i32) {
    // SAFETY: plain kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(pid_of(netmon), signal) }, 0);
}

#[test]
fn kill_9_at_any_instant_leaves_the_last_checkpoint_readable() {
    let (_dir, path) = temp_output();
    // Load throughout: new peers keep arriving, so checkpoints keep
    // rewriting the file.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            for c in (0..=255).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                connect_many(Block::KillNine, c, 4);
                // Load, not a flood: a flood fills the socket tables with
                // TIME_WAIT entries every later test would have to wade through.
                thread::sleep(Duration::from_millis(20));
            }
        })
    };
    for round in 1..=10u64 {
        let netmon = Netmon::start(NETMON, &path, "auto", &["--interval", "1"]);
        netmon.wait_ready().unwrap();
        thread::sleep(Duration::from_millis(round * 97));
        let before = peers(&path);
        // SIGHUP starts a checkpoint; the SIGKILL right behind it lands
        // before, during or after the write.
        kill(&netmon, libc::SIGHUP);
        kill(&netmon, libc::SIGKILL);
        drop(netmon);
        let after = peers(&path);
        let lost: Vec<_> = before.iter().filter(|ip| !after.contains(ip)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: the file lost checkpointed peers {lost:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    // The next start removes whatever a kill left mid-write.
    let netmon = Netmon::ready(NETMON, &path, "auto");
    let temps: Vec<_> = fs::read_dir(path.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(
        temps.is_empty(),
        "stale temp files survived a restart: {temps:?}"
    );
    assert!(netmon.stop().0.success());
}

/// A tiny tmpfs, unmounted when dropped.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "netmon-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs");
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_full_disk_keeps_the_old_file_and_loses_nothing_once_space_returns() {
    let tmpfs = Tmpfs::new("256k");
    let path = tmpfs.0.path().join("peers.json");
    let netmon = Netmon::start(NETMON, &path, "auto", &["--interval", "1"]);
    netmon.wait_ready().unwrap();
    let before = fs::read(&path).unwrap();
    // Fill the disk to the last byte.
    let filler = tmpfs.0.path().join("filler");
    let _ = fs::write(&filler, vec![0u8; 512 * 1024]);
    let during = connect_many(Block::FullDisk, 1, 5);
    eventually(
        "a logged checkpoint failure",
        || {
            netmon
                .log()
                .contains("No space left on device")
                .then_some(())
        },
        || netmon.log(),
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "a failed checkpoint must leave the previous file intact"
    );
    fs::remove_file(&filler).unwrap();
    kill(&netmon, libc::SIGHUP);
    eventually(
        "a checkpoint once space returned",
        || {
            let now = peers(&path);
            during
                .iter()
                .all(|ip| now.contains(&ip.to_string()))
                .then_some(())
        },
        || netmon.log(),
    );
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        log.matches("No space left on device").count(),
        1,
        "one warning per distinct error:\n{log}"
    );
}

/// The peers of the file at `path` once it holds all of `expected`.
fn eventually_holds(path: &Path, expected: &[Ipv4Addr], netmon: &Netmon) {
    eventually(
        "a checkpoint with the peers made while the disk could not be written",
        || {
            let text = fs::read_to_string(path).ok()?;
            let file: Value = serde_json::from_str(&text).ok()?;
            let held: Vec<&str> = file["peers"]
                .as_array()?
                .iter()
                .filter_map(|p| p["ip"].as_str())
                .collect();
            expected
                .iter()
                .all(|ip| held.contains(&ip.to_string().as_str()))
                .then_some(())
        },
        || netmon.log(),
    );
}

/// Starts netmon in proc mode on `path`, on a disk that cannot be written
/// yet: it must get ready all the same and say why once.
fn start_on_unwritable_disk(path: &Path, error: &str) -> Netmon {
    let netmon = Netmon::start(NETMON, path, "proc", &["--interval", "1"]);
    netmon.wait_ready().unwrap();
    eventually(
        "a warning that the checkpoint cannot be written",
        || netmon.log().contains(error).then_some(()),
        || netmon.log(),
    );
    netmon
}

fn stop_having_said_once(netmon: Netmon, error: &str) {
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert_eq!(
        log.matches(error).count(),
        1,
        "said once, not at every checkpoint:\n{log}"
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_disk_full_at_start_up_is_waited_for_in_memory() {
    let tmpfs = Tmpfs::new("64k");
    let filler = tmpfs.0.path().join("filler");
    let _ = fs::write(&filler, vec![0u8; 256 * 1024]);
    let path = tmpfs.0.path().join("peers.json");
    let netmon = start_on_unwritable_disk(&path, "No space left on device");
    let during = connect_many(Block::FullDiskAtStart, 1, 5);
    fs::remove_file(&filler).unwrap();
    eventually_holds(&path, &during, &netmon);
    stop_having_said_once(netmon, "No space left on device");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_disk_read_only_at_start_up_is_waited_for_without_writing_unlocked() {
    let tmpfs = Tmpfs::new("64k");
    let remount = |how: &str| {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{how}")])
            .arg(tmpfs.0.path())
            .status()
            .unwrap();
        assert!(status.success(), "remount {how}");
    };
    remount("ro");
    let path = tmpfs.0.path().join("peers.json");
    // Not even the lock file can be made: the lock is taken once it can.
    let netmon = start_on_unwritable_disk(&path, "Read-only file system");
    assert!(
        netmon.log().contains("without the output's lock"),
        "{}",
        netmon.log()
    );
    let during = connect_many(Block::ReadOnlyAtStart, 1, 5);
    remount("rw");
    eventually_holds(&path, &during, &netmon);
    assert!(tmpfs.0.path().join(".peers.json.lock").exists());
    stop_having_said_once(netmon, "Read-only file system");
}

#[test]
fn a_second_instance_on_the_same_file_names_the_first() {
    let (_dir, path) = temp_output();
    let first = Netmon::ready(NETMON, &path, "auto");
    let (status, log) = Netmon::start(NETMON, &path, "auto", &["--lock-wait", "1"]).wait();
    assert_eq!(status.code(), Some(1), "{log}");
    let pid = format!("pid {}", first.pid());
    let waited = log.lines().filter(|line| line.contains("waiting up to 1s"));
    assert_eq!(
        waited.filter(|line| line.contains(&pid)).count(),
        1,
        "{log}"
    );
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains(&pid) && last.contains("after waiting 1s"),
        "{log}"
    );
    assert!(!log.contains("ready:"), "{log}");
    assert!(first.stop().0.success());
}

/// SIGTERM while netmon waits for another's lock ends it at once, having
/// written nothing, rather than at the end of --lock-wait.
#[test]
fn sigterm_while_waiting_for_the_lock_stops_at_once() {
    let (_dir, path) = temp_output();
    let first = Netmon::ready(NETMON, &path, "auto");
    let written = fs::read(&path).unwrap();
    let second = Netmon::start(NETMON, &path, "auto", &["--lock-wait", "3600"]);
    eventually(
        "the second netmon to wait for the lock, or to give up",
        || {
            let log = second.log();
            (log.contains("waiting up to") || log.contains("already being written")).then_some(())
        },
        || second.log(),
    );
    let (status, log) = second.stop();
    assert_eq!(status.code(), Some(1), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(last.contains("SIGTERM before --output was loaded"), "{log}");
    assert_eq!(fs::read(&path).unwrap(), written, "{log}");
    assert!(first.stop().0.success());
}

/// A successor started before its predecessor is stopped attaches, waits
/// for the lock while it collects, then loads the predecessor's final
/// checkpoint: of a stream of connections that runs across the handover,
/// each one is in the file. (Before netmon attached first, the successor
/// refused to start while the lock was held.)
#[test]
#[ignore = "needs root: run cargo xtask test"]
fn a_successor_started_before_the_stop_misses_no_connection() {
    let (_dir, path) = temp_output();
    let first = Netmon::ready(NETMON, &path, "auto");
    let stream = Stream::start(Block::Handover.net(), Duration::from_millis(2), || Ok(()));
    let second = Netmon::start(NETMON, &path, "auto", &[]);
    let pid = format!("pid {}", first.pid());
    eventually(
        "the successor to wait for the lock, or to give up",
        || {
            let log = second.log();
            (log.contains("waiting up to") || log.contains("already being written")).then_some(())
        },
        || second.log(),
    );
    assert!(second.log().contains(&pid), "{}", second.log());
    let (status, log) = first.stop();
    assert!(status.success(), "{log}");
    second.wait_ready().unwrap();
    let made = stream.stop().unwrap();
    let (status, log) = second.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("continuing from"), "{log}");
    let held = peers(&path);
    let missed: Vec<_> = made
        .iter()
        .filter(|made| !held.contains(&made.source.to_string()))
        .collect();
    assert!(made.len() > 50, "{} connections made", made.len());
    assert!(
        missed.is_empty(),
        "{} of {} connections missed, from {:?}:\n{log}",
        missed.len(),
        made.len(),
        missed.first()
    );
}

#[test]
fn a_corrupt_file_is_moved_aside_with_on_corrupt_backup() {
    let (_dir, path) = temp_output();
    let dir = path.parent().unwrap();
    fs::create_dir(dir).unwrap();
    fs::write(&path, b"not json").unwrap();
    let (status, log) = Netmon::start(NETMON, &path, "auto", &[]).wait();
    assert_eq!(status.code(), Some(1), "refused by default:\n{log}");
    assert_eq!(fs::read(&path).unwrap(), b"not json");

    let netmon = Netmon::start(NETMON, &path, "auto", &["--on-corrupt", "backup"]);
    netmon.wait_ready().unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let backups: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("peers.json.corrupt-"))
        .collect();
    assert_eq!(backups.len(), 1, "{log}");
    assert_eq!(
        fs::read(&backups[0]).unwrap(),
        b"not json",
        "the backup keeps the bytes"
    );
    assert!(
        log.contains(&backups[0].display().to_string()),
        "it says where:\n{log}"
    );
    peers(&path);
}

#[test]
fn a_symlink_at_the_output_path_is_never_followed() {
    let (dir, path) = temp_output();
    fs::create_dir(path.parent().unwrap()).unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    symlink(&victim, &path).unwrap();
    let (status, log) = Netmon::start(NETMON, &path, "auto", &[]).wait();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("symlink"), "{log}");

    // Planted while it runs: the next checkpoint replaces the link itself.
    fs::remove_file(&path).unwrap();
    let netmon = Netmon::ready(NETMON, &path, "auto");
    fs::remove_file(&path).unwrap();
    symlink(&victim, &path).unwrap();
    kill(&netmon, libc::SIGHUP);
    eventually(
        "the checkpoint to replace the link",
        || {
            fs::symlink_metadata(&path)
                .is_ok_and(|m| m.file_type().is_file())
                .then_some(())
        },
        || netmon.log(),
    );
    assert!(netmon.stop().0.success());
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o037,
        0,
        "mode 0640 or stricter"
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn once_attached_netmon_is_confined_and_collection_goes_on() {
    for mode in ["auto", "proc"] {
        confined_run(mode);
    }
}

fn confined_run(mode: &str) {
    let (_dir, path) = temp_output();
    let netmon = Netmon::ready(NETMON, &path, mode);
    confine::assert_confined(&netmon, &path);
    let dests = connect_many(Block::Capabilities, 1, 3);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let after = peers(&path);
    assert!(
        dests.iter().all(|d| after.contains(&d.to_string())),
        "{log}"
    );
}

/// `setpriv` to nobody with no capabilities at all.
fn as_nobody(path: &Path, mode: &str) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(NETMON);
    command
        .args(["run", "--output"])
        .arg(path)
        .args(["--mode", mode]);
    command
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn without_privileges_auto_falls_back_to_proc_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let path = dir.path().join("peers.json");

    let output = as_nobody(&path, "tracepoint").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("netmon: --mode tracepoint: cannot attach:"),
        "{stderr}"
    );
    assert!(
        last.contains("CAP_BPF") && last.contains("--mode proc works without them"),
        "{stderr}"
    );

    let netmon = Netmon::spawn(as_nobody(&path, "auto"));
    netmon.wait_ready().unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("mode: proc"), "{log}");
    assert!(
        log.contains("--mode proc works without them"),
        "the skipped rungs say what is missing:\n{log}"
    );
    assert!(log.contains("proc mode needs none"), "{log}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn sighup_writes_a_checkpoint_at_once() {
    let (_dir, path) = temp_output();
    let netmon = Netmon::start(NETMON, &path, "auto", &["--interval", "86400"]);
    netmon.wait_ready().unwrap();
    let dests = connect_many(Block::Sighup, 1, 3);
    kill(&netmon, libc::SIGHUP);
    eventually(
        "the SIGHUP checkpoint",
        || {
            let now = peers(&path);
            dests
                .iter()
                .all(|d| now.contains(&d.to_string()))
                .then_some(())
        },
        || netmon.log(),
    );
    assert!(netmon.stop().0.success());
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn max_peers_bounds_the_set_and_warns() {
    let (_dir, path) = temp_output();
    let netmon = Netmon::start(NETMON, &path, "tracepoint", &["--max-peers", "1"]);
    netmon.wait_ready().unwrap();
    connect_many(Block::MaxPeers, 1, 10);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(peers(&path).len() <= 1, "{:?}", peers(&path));
    assert!(log.contains("--max-peers 1 reached"), "{log}");
}
