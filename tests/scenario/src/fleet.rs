//! A small fleet of "hosts" on one machine: a network namespace each,
//! joined by veth pairs to a bridge in a namespace of its own. Every
//! address is inside namespaces the fleet created (10.213.0.0/24 and the
//! unique-local fd10:213::/64, on their veths, the connected routes in
//! place before any packet); none has a default route, so nothing can
//! leave. Dropping the fleet deletes the
//! namespaces, and with them their links.
use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    process::{Command, Output},
    thread,
};

/// The namespaces of one fleet.
pub struct Fleet {
    prefix: String,
    hosts: Vec<String>,
}

impl Fleet {
    /// One namespace per name in `hosts`, addressed 10.213.0.1 and
    /// fd10:213::1 up in order; `tag` keeps fleets of different tests
    /// apart.
    pub fn new(tag: &str, hosts: &[&str]) -> Self {
        let fleet = Self {
            prefix: format!("nm-{tag}-{}", std::process::id()),
            hosts: hosts.iter().map(|host| (*host).to_owned()).collect(),
        };
        // Namespaces a crashed run with the same pid left behind.
        for ns in fleet.namespaces() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        }
        let switch = fleet.switch();
        ip(&["netns", "add", &switch]);
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        for (index, host) in fleet.hosts.iter().enumerate() {
            let ns = fleet.ns(host);
            let port = format!("v{index}");
            let addr = format!("{}/24", fleet.addr(host));
            let addr6 = format!("{}/64", fleet.addr6(host));
            ip(&["netns", "add", &ns]);
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ]);
            ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"]);
            ip(&["-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            // No duplicate address detection: the address is usable at
            // once, and the fleet alone hands them out.
            ip(&["-n", &ns, "addr", "add", &addr6, "dev", "eth0", "nodad"]);
            // Nor for the link-local address eth0 takes when it comes up.
            run_in(&ns, || {
                std::fs::write("/proc/sys/net/ipv6/conf/eth0/accept_dad", "0").unwrap();
            });
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        fleet
    }

    fn switch(&self) -> String {
        format!("{}-sw", self.prefix)
    }

    fn namespaces(&self) -> Vec<String> {
        let hosts = self.hosts.iter().map(|host| self.ns(host));
        hosts.chain([self.switch()]).collect()
    }

    /// The namespace of `host`.
    pub fn ns(&self, host: &str) -> String {
        let index = self.index(host);
        format!("{}-{index}", self.prefix)
    }

    fn index(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .position(|name| name == host)
            .unwrap_or_else(|| panic!("no host {host} in the fleet"))
    }

    /// The address of `host`.
    pub fn addr(&self, host: &str) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, 0, u8::try_from(self.index(host) + 1).unwrap())
    }

    /// The unique-local IPv6 address of `host`.
    pub fn addr6(&self, host: &str) -> Ipv6Addr {
        let index = u16::try_from(self.index(host) + 1).unwrap();
        Ipv6Addr::new(0xfd10, 0x213, 0, 0, 0, 0, 0, index)
    }

    /// The IPv6 link-local address of `host`'s eth0.
    pub fn link_local(&self, host: &str) -> Ipv6Addr {
        let ns = self.ns(host);
        let out = ip(&[
            "-n", &ns, "-6", "-o", "addr", "show", "dev", "eth0", "scope", "link",
        ]);
        let out = String::from_utf8_lossy(&out.stdout);
        out.split_whitespace()
            .skip_while(|word| *word != "inet6")
            .nth(1)
            .and_then(|cidr| cidr.split('/').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{host} has no link-local address: {out}"))
    }

    /// `program` run inside `host`'s namespace, in a UTS namespace of its
    /// own whose host name is `host`: each host's checkpoint names it.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        command_in(&self.ns(host), host, program)
    }

    /// Runs `work` on a thread inside `host`'s namespace (see [`run_in`]).
    pub fn run_in<T: Send>(&self, host: &str, work: impl FnOnce() -> T + Send) -> T {
        run_in(&self.ns(host), work)
    }
}

/// `program` run inside the network namespace `ns`, in a UTS namespace of
/// its own whose host name is `hostname`.
pub fn command_in(ns: &str, hostname: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns])
        .args([
            "unshare",
            "--uts",
            "sh",
            "-c",
            r#"hostname "$0" && exec "$@""#,
        ])
        .arg(hostname)
        .arg(program);
    command
}

/// Runs `work` on a thread inside the network namespace `ns`: sockets it
/// makes belong to that namespace, wherever they are used afterwards.
pub fn run_in<T: Send>(ns: &str, work: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: a valid descriptor of a network namespace; only
                // this thread moves.
                let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(entered, 0, "setns {path}");
                work()
            })
            .join()
            .unwrap()
    })
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> Output {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
