//! Real UDP software from Debian for tests/udp.rs: dnsmasq answering
//! dig, chronyd serving chronyd -Q, socat; each started in a network
//! namespace of the test's own (or on its block of loopback), killed by
//! its pid, and optionally put in a cgroup of the test's making first.
use std::{
    fs,
    net::Ipv4Addr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use crate::harness::eventually;

/// The name every test's dnsmasq answers, and its answer.
pub const DNS_NAME: &str = "svc.netmon.test";
pub const DNS_ANSWER: &str = "192.0.2.53";

/// A daemon the test started: killed (SIGKILL, by its pid) and reaped
/// when dropped.
pub struct Daemon {
    child: Child,
    what: String,
}

impl Daemon {
    /// Starts `command`, its output discarded.
    pub fn start(mut command: Command, what: &str) -> Self {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics if the daemon has exited already (a bad flag, a port taken).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited with {status}", self.what);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup under the cgroup v2 root, made with every missing parent;
/// those it made are removed when dropped (after its processes are gone:
/// drop the daemons first).
pub struct Cgroup {
    path: PathBuf,
    made: Vec<PathBuf>,
}

impl Cgroup {
    /// `<cgroup2 root>/relative`.
    pub fn new(root: &Path, relative: &str) -> Self {
        let mut made = Vec::new();
        let mut path = root.to_path_buf();
        for component in relative.split('/') {
            path.push(component);
            if !path.exists() {
                fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
                made.push(path.clone());
            }
        }
        Self { path, made }
    }

    /// Its `cgroup.procs`, where a process writes its pid to move in.
    pub fn procs(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.made.iter().rev() {
            // A process reaped a moment ago may keep its cgroup busy for a
            // moment more.
            for _ in 0..100 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// `program` in the network namespace `ns` (the caller's if `None`),
/// run by a shell that first moves itself into `cgroup` (if any) and then
/// execs the program: every socket it makes is the cgroup's. The child's
/// pid is the program's (`ip netns exec` and the shell exec it).
pub fn command(ns: Option<&str>, cgroup: Option<&Cgroup>, program: &[&str]) -> Command {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    // The cgroup first: `ip netns exec` mounts a sysfs of the namespace's
    // own over /sys, hiding the cgroup2 mount beneath it.
    if let Some(cgroup) = cgroup {
        argv.extend(["sh", "-c", r#"echo $$ > "$0" && exec "$@""#].map(Into::into));
        argv.push(cgroup.procs().into());
    }
    if let Some(ns) = ns {
        argv.extend(["ip", "netns", "exec", ns].map(Into::into));
    }
    argv.extend(program.iter().map(Into::into));
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    command
}

/// The inode of the network namespace `ns` (as `lsns -t net` and
/// `netmon list --netns` name it).
pub fn netns_inode(ns: &str) -> u64 {
    let path = format!("/run/netns/{ns}");
    fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .ino()
}

/// Waits until something in `ns` listens on UDP `addr`:`port`.
pub fn wait_udp_listener(ns: &str, addr: Ipv4Addr, port: u16, daemon: &mut Daemon) {
    wait_listener(Some(ns), "-Hlun", addr, port, daemon);
}

/// Waits until something in the test's own namespace listens on TCP
/// `addr`:`port`.
pub fn wait_tcp_listener(addr: Ipv4Addr, port: u16, daemon: &mut Daemon) {
    wait_listener(None, "-Hltn", addr, port, daemon);
}

/// Waits until `ss FLAGS` in `ns` (the caller's if `None`) lists a socket
/// on `addr`:`port`.
fn wait_listener(ns: Option<&str>, flags: &str, addr: Ipv4Addr, port: u16, daemon: &mut Daemon) {
    let filter = format!("src {addr}:{port}");
    let mut argv = match ns {
        Some(ns) => vec!["ip", "netns", "exec", ns],
        None => Vec::new(),
    };
    argv.extend(["ss", flags, &filter]);
    eventually(
        &format!(
            "a listener on {addr}:{port} ({flags}) in {}",
            ns.unwrap_or("this namespace")
        ),
        || {
            daemon.assert_running();
            let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
            (!out.stdout.is_empty()).then_some(())
        },
        String::new,
    );
}

/// dnsmasq in the foreground in `ns`, answering [`DNS_NAME`] from its
/// command line only, on `addr`:53 only; ready.
pub fn dnsmasq(ns: &str, addr: Ipv4Addr, cgroup: Option<&Cgroup>) -> Daemon {
    let listen = format!("--listen-address={addr}");
    let answer = format!("--address=/{DNS_NAME}/{DNS_ANSWER}");
    let command = command(
        Some(ns),
        cgroup,
        &[
            "dnsmasq",
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--bind-interfaces",
            &listen,
            &answer,
        ],
    );
    let mut daemon = Daemon::start(command, "dnsmasq");
    wait_udp_listener(ns, addr, 53, &mut daemon);
    daemon
}

/// One `dig @server` from `ns` (from `source` if given), one try, which
/// must get [`DNS_ANSWER`].
pub fn dig(ns: &str, server: Ipv4Addr, source: Option<Ipv4Addr>, cgroup: Option<&Cgroup>) {
    let at = format!("@{server}");
    let mut args = vec!["dig", &at, DNS_NAME, "+tries=1", "+time=2", "+short"];
    let bind = source.map(|source| source.to_string());
    if let Some(bind) = &bind {
        args.extend(["-b", bind]);
    }
    let output = command(Some(ns), cgroup, &args).output().unwrap();
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && answer.trim() == DNS_ANSWER,
        "dig {args:?} in {ns}: {}\n{answer}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
