//! Files someone else controls: outputs that are devices, fifos or
//! symlinked directories, planted temp and lock files, inputs of any size,
//! and a merge onto a running collector's file. The real binary, in proc
//! mode (no eBPF needed); device nodes are made with mknod in a temp
//! directory, so those cases need root and are skipped without it.
use std::{
    ffi::CString,
    fs::{self, File},
    io::Write as _,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, symlink},
        process::CommandExt as _,
    },
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use netmon_scenario::harness::Netmon;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// How long a refusal may take: it is a hang detector.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Address space a report may use: far below the sizes these inputs claim,
/// so a reservation proportional to a file's size fails the test rather
/// than the machine.
const MEMORY_LIMIT: u64 = 1 << 30;

/// Runs netmon with `args` under [`MEMORY_LIMIT`]; its exit status (`None`
/// if it hung and was killed) and stderr.
fn netmon(args: &[&Path]) -> (Option<ExitStatus>, String) {
    let stderr = tempfile::tempfile().unwrap();
    let mut command = Command::new(NETMON);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr.try_clone().unwrap());
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            libc::setrlimit(libc::RLIMIT_AS, &limit);
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let log = fs::read(stderr_path(&stderr)).unwrap();
    (status, String::from_utf8_lossy(&log).into_owned())
}

fn stderr_path(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd as _;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

fn p(text: &str) -> &Path {
    Path::new(text)
}

/// Asserts netmon exited 1 promptly, saying `needle`.
fn assert_refused(what: &str, (status, log): (Option<ExitStatus>, String), needle: &str) {
    let status = status.unwrap_or_else(|| panic!("{what}: hung\n{log}"));
    assert_eq!(status.code(), Some(1), "{what}: {status}\n{log}");
    assert!(log.contains(needle), "{what}: no {needle:?} in\n{log}");
    assert_eq!(log.lines().count(), 1, "{what}: one line\n{log}");
}

fn mkfifo(path: &Path) {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// A character device `major:minor` at `path`, or `false` without root.
fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let dev = libc::makedev(major, minor);
    // SAFETY: mknod with a NUL-terminated path.
    let made = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) } == 0;
    if !made {
        eprintln!("skipping the device node case: mknod needs root");
    }
    made
}

fn is_char_device(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

const CHECKPOINT: &str = r#"{"version":1,"host":"a","updated":"2026-01-01T00:00:00Z","peers":[
{"ip":"10.0.0.1","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z","outbound":1,"inbound":0,"remote_ports":[443],"local_ports":[],"processes":[]}
]}
"#;

#[test]
fn a_fifo_at_the_output_does_not_hang_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    mkfifo(&output);
    let (status, log) = netmon(&[p("run"), p("--mode"), p("proc"), p("--output"), &output]);
    assert_refused("run onto a fifo", (status, log), "fifo");
}

#[test]
fn a_planted_temp_file_blocks_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    let netmon = Netmon::ready(NETMON, &output, "proc");
    // The name a checkpoint of this pid used to take.
    fs::write(
        dir.path().join(format!(".peers.json.tmp-{}", netmon.pid())),
        b"",
    )
    .unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "the final checkpoint is written:\n{log}");
}

#[test]
fn a_planted_lock_file_is_neither_read_whole_nor_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    let lock = dir.path().join(".peers.json.lock");
    let mut file = File::create(&lock).unwrap();
    file.write_all(b"\x1b[2J\x1b[31mforged\n").unwrap();
    // Within the memory limit, so that reading it whole would succeed.
    file.set_len(64 << 20).unwrap();
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor we own; held until `file` drops.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    let (status, log) = netmon(&[
        p("run"),
        p("--mode"),
        p("proc"),
        p("--lock-wait"),
        p("0"),
        p("--output"),
        &output,
    ]);
    assert!(!log.contains('\x1b'), "escape codes printed: {log:?}");
    // The lock is taken after attaching: what netmon logged about that
    // comes before the one line of error.
    let error = log
        .lines()
        .filter(|line| !line.starts_with('['))
        .collect::<Vec<_>>()
        .join("\n");
    assert_refused(
        "run onto a held lock",
        (status, error),
        "another process holds",
    );
}

#[test]
fn a_symlinked_output_directory_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    fs::create_dir(&real).unwrap();
    let link = dir.path().join("link");
    symlink(&real, &link).unwrap();
    let netmon = Netmon::ready(NETMON, &link.join("peers.json"), "proc");
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(
        log.contains(&format!("{} is a symlink; writing in", link.display())),
        "{log}"
    );
    assert!(real.join("peers.json").is_file());
}

/// Neither `run` (even with `--on-corrupt backup`) nor `merge` replaces or
/// moves aside an output that is not a regular file.
#[test]
fn outputs_that_are_not_regular_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("a.json");
    fs::write(&input, CHECKPOINT).unwrap();
    let fifo = dir.path().join("fifo.json");
    mkfifo(&fifo);
    let device = dir.path().join("null.json");
    let mut outputs = vec![fifo.clone()];
    if mknod(&device, 1, 3) {
        outputs.push(device.clone());
    }
    for output in &outputs {
        let what = output.display().to_string();
        assert_refused(
            &format!("merge --output {what}"),
            netmon(&[p("merge"), &input, p("--output"), output]),
            "not a regular file",
        );
        let run = [
            p("run"),
            p("--mode"),
            p("proc"),
            p("--on-corrupt"),
            p("backup"),
            p("--output"),
            output,
        ];
        assert_refused(
            &format!("run --output {what}"),
            netmon(&run),
            "not a regular file",
        );
    }
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    if outputs.len() > 1 {
        assert!(is_char_device(&device), "the device node stays");
    }
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.starts_with(".") || !name.ends_with(".lock"))
        .collect();
    assert_eq!(
        names.len(),
        outputs.len() + 1,
        "nothing moved aside: {names:?}"
    );
}

/// Sizes are claimed, not content: sparse files, a fifo and a device are
/// refused before memory or time is spent on what they say they hold.
#[test]
fn inputs_are_read_no_further_than_their_content() {
    let dir = tempfile::tempdir().unwrap();
    let sparse = |name: &str, head: &str, len: u64| {
        let path = dir.path().join(name);
        let mut file = File::create(&path).unwrap();
        file.write_all(head.as_bytes()).unwrap();
        file.set_len(len).unwrap();
        path
    };
    let header = r#"{"version":1,"host":"h","updated":"2026-01-01T00:00:00Z","peers":["#;
    let inputs = [
        sparse("zeros-100g.json", "", 100 << 30),
        sparse("zeros-4g.json", "", 4 << 30),
        sparse("list-4g.json", "[", 4 << 30),
        sparse("checkpoint-100g.json", header, 100 << 30),
    ];
    for input in &inputs {
        let started = Instant::now();
        assert_refused(
            &input.display().to_string(),
            netmon(&[p("list"), input]),
            &input.display().to_string(),
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{}: rejected in {:?}",
            input.display(),
            started.elapsed()
        );
    }
    let fifo = dir.path().join("fifo.json");
    mkfifo(&fifo);
    assert_refused("a fifo", netmon(&[p("list"), &fifo]), "not a regular file");
    let zero = dir.path().join("zero.json");
    if mknod(&zero, 1, 5) {
        assert_refused(
            "a zero device",
            netmon(&[p("stats"), &zero]),
            "not a regular file",
        );
    }
}

#[test]
fn merge_onto_a_running_collectors_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    let a = dir.path().join("a.json");
    fs::write(&a, CHECKPOINT).unwrap();
    let b = dir.path().join("b.json");
    fs::write(&b, CHECKPOINT.replace("10.0.0.1", "10.0.0.2")).unwrap();
    let collector = Netmon::ready(NETMON, &output, "proc");
    let before = fs::read_to_string(&output).unwrap();
    let (status, log) = netmon(&[p("merge"), &a, &b, p("--output"), &output]);
    assert_eq!(
        fs::read_to_string(&output).unwrap(),
        before,
        "the file is untouched"
    );
    assert_refused(
        "merge onto a collector's file",
        (status, log.clone()),
        &format!("pid {}", collector.pid()),
    );
    assert!(log.contains(".peers.json.lock"), "{log}");
    assert!(collector.stop().0.success());
}
