//! The start-up scan with IPv6: connections open before `netmon run`
//! starts are recorded from the socket tables (peer, direction, port,
//! uncounted), IPv6 ones by their IPv6 peer, a dual-stack socket's
//! IPv4-mapped ones as IPv4.
//!
//! Everything happens in a network namespace the test creates: its
//! loopback up, a unique-local /64 routed to it as `local` (so every
//! address of the prefix is the namespace's, as 127/8 is) and
//! `ip_nonlocal_bind` set there, so a client binds any of them as its
//! source. netmon runs in that namespace, whose socket tables it scans;
//! `--follow` prints what the scan found, in both of its formats.
use std::{
    fs::{self, File},
    net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener},
    path::Path,
    process::Command,
};

use netmon_scenario::{
    fleet::{command_in, run_in},
    harness::{Netmon, chosen_mode},
};
use serde_json::Value;
use socket2::{Domain, Socket, Type};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// The unique-local prefix routed to the namespace's loopback: its
/// addresses are wider than a dotted quad, as `--follow`'s text lines
/// must show.
const PREFIX: &str = "fd11:2020:3030:4040::/64";

/// A network namespace of the test's own, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let netns = Self(format!("nm-{tag}-{}", std::process::id()));
        // One a crashed run with the same pid left behind.
        let _ = Command::new("ip")
            .args(["netns", "delete", &netns.0])
            .output();
        netns.ip(&["netns", "add", &netns.0]);
        netns.ip(&["-n", &netns.0, "link", "set", "lo", "up"]);
        netns.ip(&[
            "-n", &netns.0, "-6", "route", "add", "local", PREFIX, "dev", "lo",
        ]);
        run_in(&netns.0, || {
            fs::write("/proc/sys/net/ipv6/ip_nonlocal_bind", "1").unwrap();
        });
        netns
    }

    fn ip(&self, args: &[&str]) {
        let output = Command::new("ip").args(args).output().unwrap();
        assert!(
            output.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .output();
    }
}

fn ula(last: u16) -> IpAddr {
    Ipv6Addr::new(0xfd11, 0x2020, 0x3030, 0x4040, 0, 0, 0, last).into()
}

/// A stream socket of `source`'s family bound to `source`, connected to
/// `dest`.
fn connect_from(source: SocketAddr, dest: SocketAddr) -> Socket {
    let domain = if source.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, None).unwrap();
    socket.bind(&source.into()).unwrap();
    socket.connect(&dest.into()).unwrap();
    socket
}

/// One established connection from `source` to a listener on `listen`,
/// both ends open, and the listener, which must outlive the scan: a
/// connection's local port that something listens on is what makes it
/// inbound.
fn established(listen: SocketAddr, source: SocketAddr) -> (u16, [Socket; 2], TcpListener) {
    let listener = TcpListener::bind(listen).unwrap();
    let port = listener.local_addr().unwrap().port();
    let dest = SocketAddr::new(
        match listen.ip() {
            // The dual-stack listener on [::] reached at an IPv4-mapped
            // address.
            IpAddr::V6(any) if any.is_unspecified() => {
                "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().into()
            }
            ip => ip,
        },
        port,
    );
    let client = connect_from(source, dest);
    let (server, _) = listener.accept().unwrap();
    (port, [client, server.into()], listener)
}

/// `netmon run ARGS` in raw-tracepoint mode inside `netns` (tracepoint
/// where this kernel has no raw tracepoints), writing `output` and its
/// stdout to `stdout`, ready: its scan is done.
fn start(netns: &Netns, output: &Path, args: &[&str], stdout: &Path) -> Netmon {
    let mut last = String::new();
    for mode in ["raw-tracepoint", "tracepoint"] {
        let mut command = command_in(&netns.0, "startup6", NETMON);
        command
            .args(["run", "--mode", mode, "--output"])
            .arg(output)
            .args(args);
        let netmon = Netmon::spawn_with_stdout(command, File::create(stdout).unwrap().into());
        match netmon.wait_ready() {
            Ok(()) => return netmon,
            Err(log) => last = format!("--mode {mode}: {log}\n{}", netmon.stop().1),
        }
    }
    panic!("netmon started in neither mode:\n{last}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn ipv6_and_mapped_connections_open_before_start_are_recorded_by_the_scan() {
    let netns = Netns::new("startup6");
    let (server6, client6) = (ula(1), ula(2));
    let (mapped_server, mapped_client) = ("127.0.0.1", "127.0.0.2");
    // Outbound from client6 and inbound to server6, both in the
    // namespace: netmon records the connection from each end. And a
    // dual-stack socket's connection, ::ffff:127.0.0.2 to ::ffff:127.0.0.1.
    let (port6, port_mapped, open) = run_in(&netns.0, || {
        let (port6, ends6, listener6) =
            established(SocketAddr::new(server6, 0), SocketAddr::new(client6, 0));
        let mapped_source: SocketAddr = format!("[::ffff:{mapped_client}]:0").parse().unwrap();
        let (port_mapped, ends_mapped, listener_mapped) =
            established("[::]:0".parse().unwrap(), mapped_source);
        let open = (ends6, listener6, ends_mapped, listener_mapped);
        (port6, port_mapped, open)
    });
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, args: &[&str]| {
        let output = dir.path().join(format!("{name}.json"));
        let stdout = dir.path().join(format!("{name}.out"));
        let (status, log) = start(&netns, &output, args, &stdout).stop();
        assert!(status.success(), "{log}");
        let file: Value = serde_json::from_str(&fs::read_to_string(&output).unwrap()).unwrap();
        (file, log, fs::read_to_string(&stdout).unwrap())
    };
    let (file, log, json_lines) = run("json", &["--follow", "--json"]);
    // A file of its own, so that the scan's peers are new to it again.
    let (_, text_log, text_lines) = run("text", &["--follow"]);
    drop(open);

    let peer = |ip: &str| {
        file["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|peer| peer["ip"] == ip && peer.get("netns").is_none())
            .unwrap_or_else(|| panic!("no peer {ip} in ({log}):\n{file:#}"))
            .clone()
    };
    let tcp = |port: u16| Value::from(format!("{port}/tcp"));
    let mode = chosen_mode(&log).unwrap_or("-").to_owned();
    let expected = [
        (server6.to_string(), port6, "out", "private"),
        (client6.to_string(), port6, "in", "private"),
        (mapped_server.to_owned(), port_mapped, "out", "loopback"),
        (mapped_client.to_owned(), port_mapped, "in", "loopback"),
    ];
    // Recorded with its direction and port, but not counted: counts are
    // connections seen opening.
    for (ip, port, direction, _) in &expected {
        let peer = peer(ip);
        let ports = if *direction == "out" {
            "remote_ports"
        } else {
            "local_ports"
        };
        assert!(
            peer["outbound"] == 0
                && peer["inbound"] == 0
                && peer[ports].as_array().unwrap() == &[tcp(*port)],
            "{ip} ({mode}) should be recorded {direction} on {port}, uncounted: {peer}"
        );
    }
    assert!(
        !file.to_string().contains("::ffff:"),
        "an IPv4-mapped address recorded as IPv6 ({mode}):\n{file:#}"
    );

    // --follow --json: a line for each, with its class, IPv6 as RFC 5952
    // writes it.
    let lines: Vec<Value> = json_lines
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    for (ip, port, direction, class) in &expected {
        assert!(
            lines.iter().any(|line| line["ip"] == *ip
                && line["direction"] == *direction
                && line["port"] == *port
                && line["protocol"] == "tcp"
                && line["class"] == *class),
            "no --follow --json line for {ip} {direction} {port} ({mode}):\n{json_lines}"
        );
    }
    // --follow: the same in text, the class column after the widest
    // address printed so far (a dotted quad's at least).
    let mut width = 15;
    for line in text_lines.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        width = width.max(fields[2].len());
        let ip_at = line.find(&format!(" {} ", fields[2])).unwrap() + 1;
        assert_eq!(
            line.find(&format!(" {} ", fields[3])),
            Some(ip_at + width),
            "the class column of {line:?} is not after the widest address so far:\n{text_lines}"
        );
    }
    for (ip, port, direction, class) in &expected {
        assert!(
            text_lines.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields[1..5] == [*direction, ip.as_str(), *class, &format!("{port}/tcp")]
            }),
            "no --follow line for {ip} {direction} {port} ({text_log}):\n{text_lines}"
        );
    }
}
