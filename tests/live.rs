//! `netmon run --metrics` and `--follow` during the loopback workload: the
//! real binary, real connections, in `--mode auto`: the eBPF programs as
//! root (`cargo xtask test` runs them one at a time), proc mode otherwise.
use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netmon_scenario::{
    harness::{Netmon, chosen_mode, eventually, one_at_a_time, scrape},
    net::{Block, closed_port, metrics_addr},
    workload::{Workload, connect_from, workload},
};
use serde_json::Value;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// Starts netmon with `extra` flags on a fresh file and waits for it.
fn start(dir: &Path, extra: &[&str]) -> Netmon {
    let netmon = Netmon::start(NETMON, &dir.join("peers.json"), "auto", extra);
    netmon.wait_ready().unwrap();
    netmon
}

/// [`start`] with `--metrics` on a free loopback port; also returns the
/// address to scrape.
fn start_with_metrics(dir: &Path, extra: &[&str]) -> (Netmon, String) {
    let addr = metrics_addr();
    let args: Vec<&str> = ["--metrics", addr.as_str()]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    (start(dir, &args), addr)
}

/// The value of the sample `series` (name and labels, exactly as
/// written), if the exposition has it.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|value| value.parse().unwrap())
}

fn promtool_check(body: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; cargo xtask test installs it)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}\n{body}",
        output.status
    );
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package): run cargo xtask test"]
fn metrics_pass_promtool_and_count_the_workloads_peers() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (netmon, addr) = start_with_metrics(dir.path(), &["--interval", "1"]);
    let work = workload(Block::Metrics, 10);
    // Peers the workload made beside whatever else talks on loopback.
    let outbound = (work.destinations.len() + work.refused.len()) as f64;
    let inbound = work.sources.len() as f64;
    let loopback = |direction: &str, body: &str| {
        sample(
            body,
            &format!("netmon_peers{{class=\"loopback\",direction=\"{direction}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let body = eventually(
        "the workload's peers and a checkpoint in the metrics",
        || {
            let (_, body) = scrape(&addr, None);
            let out = loopback("out", &body) + loopback("in+out", &body);
            let inn = loopback("in", &body) + loopback("in+out", &body);
            let checkpoints = sample(&body, "netmon_checkpoints_total").unwrap_or(0.0);
            (out >= outbound && inn >= inbound && checkpoints >= 2.0).then_some(body)
        },
        || scrape(&addr, None).1 + &netmon.log(),
    );
    promtool_check(&body);

    let mode = chosen_mode(&netmon.log()).unwrap().to_owned();
    assert_eq!(
        sample(
            &body,
            &format!("netmon_attach_mode_info{{mode=\"{mode}\"}}")
        ),
        Some(1.0)
    );
    let connections_out = sample(&body, "netmon_connections_total{direction=\"out\"}").unwrap();
    assert!(connections_out >= outbound, "{body}");
    assert!(body.contains("netmon_build_info{version=\""), "{body}");
    assert!(body.contains("netmon_checkpoint_duration_seconds_count "));

    // What Prometheus itself asks for: OpenMetrics.
    let (head, openmetrics) = scrape(&addr, Some("application/openmetrics-text"));
    assert!(
        head.contains("Content-Type: application/openmetrics-text"),
        "{head}"
    );
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");

    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn peers_beyond_max_peers_are_counted_as_dropped() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let (netmon, addr) = start_with_metrics(dir.path(), &["--max-peers", "1"]);
    let work = workload(Block::MetricsDropped, 5);
    // Every workload peer but the one kept (if it was one) is turned away,
    // at least once each.
    let peers = (work.destinations.len() + work.refused.len() + work.sources.len()) as f64;
    eventually(
        "netmon_dropped_peers_total for a workload of many peers and room for one",
        || {
            let (_, body) = scrape(&addr, None);
            sample(&body, "netmon_dropped_peers_total").filter(|dropped| *dropped >= peers - 1.0)
        },
        || scrape(&addr, None).1 + &netmon.log(),
    );
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("--max-peers 1 reached"), "{log}");
}

/// The `--follow --json` lines, by (ip, direction).
fn sightings(netmon: &Netmon) -> BTreeMap<(Ipv4Addr, String), Vec<Value>> {
    let mut by_peer = BTreeMap::<_, Vec<Value>>::new();
    for line in netmon.stdout_lines() {
        let sighting: Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let ip = sighting["ip"].as_str().unwrap().parse().unwrap();
        let direction = sighting["direction"].as_str().unwrap().to_owned();
        by_peer.entry((ip, direction)).or_default().push(sighting);
    }
    by_peer
}

/// Whether every peer the workload made was printed, once, as expected.
fn all_printed(work: &Workload, seen: &BTreeMap<(Ipv4Addr, String), Vec<Value>>) -> bool {
    let outbound = work.destinations.iter().chain(&work.refused);
    let expected = outbound
        .map(|ip| (*ip, "out"))
        .chain(work.sources.iter().map(|ip| (*ip, "in")));
    expected.into_iter().all(|(ip, direction)| {
        seen.get(&(ip, direction.to_owned()))
            .is_some_and(|lines| lines.len() == 1 && lines[0]["class"] == "loopback")
    })
}

#[test]
fn follow_prints_each_workload_peer_as_it_appears() {
    let _turn = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let netmon = start(dir.path(), &["--follow", "--json"]);
    let work = workload(Block::Follow, 10);
    eventually(
        "a --follow line for every peer of the workload",
        || all_printed(&work, &sightings(&netmon)).then_some(()),
        || netmon.stdout_lines().join("\n"),
    );
    let seen = sightings(&netmon);
    let first = &seen[&(work.destinations[0], "out".to_owned())][0];
    assert_eq!(first["port"], work.port, "{first}");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(first["host"].is_string(), "{first}");
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_bad_metrics_address_stops_netmon_with_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    let run = |metrics: &str| {
        let result = Command::new(NETMON)
            .args(["run", "--metrics", metrics, "--output"])
            .arg(&output)
            .output()
            .unwrap();
        (
            result.status.code(),
            String::from_utf8(result.stderr).unwrap(),
        )
    };
    let (code, stderr) = run("localhost");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.lines().next().unwrap().contains("--metrics"),
        "{stderr}"
    );
    // A documentation address (RFC 5737) is on no interface here.
    let (code, stderr) = run("192.0.2.1:9464");
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        "netmon: --metrics 192.0.2.1:9464: cannot listen: Cannot assign requested address (os error 99)"
    );
    assert!(
        !output.exists(),
        "nothing is written before the flags are known good"
    );
}

/// The hard limit on open files.
fn nofile_hard() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the pointer is to a live rlimit.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    limit.rlim_max
}

/// Sets the soft and hard limits on open files.
fn set_nofile(soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: the pointer is to a live rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A connection to `addr` that sends nothing, started without waiting:
/// connections beyond netmon's accept queue would block a plain connect.
fn held_connection(addr: SocketAddr) -> socket2::Socket {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_nonblocking(true).unwrap();
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(err) => panic!("connect to {addr}: {err}"),
    }
    socket
}

fn open_files(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

/// Far more clients than netmon has file descriptors, connected to
/// /metrics and sending nothing: netmon serves a few at a time, so
/// checkpoints, the final one included, still get the descriptors they
/// need.
#[test]
fn held_metrics_connections_leave_checkpoints_their_descriptors() {
    const NETMON_FILES: u64 = 256;
    let _turn = one_at_a_time();
    // This test holds the connections: it needs more files than netmon.
    let hard = nofile_hard();
    let held = 1_100.min(hard.saturating_sub(64) as usize);
    assert!(
        held as u64 > 2 * NETMON_FILES,
        "the hard limit on open files ({hard}) is too low for this test"
    );
    set_nofile(held as u64 + 64, hard).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("peers.json");
    let addr = SocketAddr::from((Block::MetricsFlood.addr(0, 1), closed_port()));
    let mut command = Netmon::command(NETMON, &output, "proc", &["--metrics", &addr.to_string()]);
    // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| set_nofile(NETMON_FILES, NETMON_FILES));
    }
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    let before = open_files(netmon.pid());

    let clients: Vec<_> = (0..held).map(|_| held_connection(addr)).collect();
    // Time to accept all of them, if nothing stopped it.
    thread::sleep(Duration::from_secs(1));
    let during = open_files(netmon.pid());
    assert!(
        during <= before + 40,
        "{during} files open with {} held connections, {before} before",
        clients.len()
    );
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(netmon.pid() as i32, libc::SIGHUP) };
    eventually(
        "a checkpoint while the connections are held",
        || {
            let log = netmon.log();
            log.lines()
                .skip_while(|l| !l.contains("SIGHUP"))
                .any(|l| l.contains("checkpoint:"))
                .then_some(())
        },
        || netmon.log(),
    );
    // Once they go, scrapes are answered again; then SIGTERM while as
    // many are held again.
    drop(clients);
    scrape(&addr.to_string(), None);
    let clients: Vec<_> = (0..held).map(|_| held_connection(addr)).collect();
    thread::sleep(Duration::from_secs(1));
    let (status, log) = netmon.stop();
    drop(clients);
    assert!(status.success(), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
    let after_sighup = log.lines().skip_while(|l| !l.contains("SIGHUP"));
    assert_eq!(
        after_sighup.filter(|l| l.contains("checkpoint:")).count(),
        2,
        "SIGHUP's checkpoint and the final one:\n{log}"
    );
    assert!(output.exists(), "{log}");
}

/// `GET /metrics`, giving up after a few seconds: the body, or `None` if
/// netmon did not answer in time.
fn scrape_within(addr: &str) -> Option<String> {
    let patience = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr.parse().unwrap(), patience).ok()?;
    stream.set_read_timeout(Some(patience)).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_owned())
}

/// The file's `updated`.
fn updated(path: &Path) -> String {
    let file: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    file["updated"].as_str().unwrap().to_owned()
}

/// Whether `pid` has exited (a zombie until its parent waits for it).
fn exited(pid: u32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = stat.rsplit_once(')').unwrap().1.trim_start();
    state.starts_with('Z')
}

#[test]
fn a_follow_reader_that_never_reads_stalls_nothing() {
    let _turn = one_at_a_time();
    let block = Block::FollowStalled;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("peers.json");
    let addr = format!("{}:{}", block.addr(0, 1), closed_port());
    // The read end stays open and unread for the whole test.
    let (_unread, stdout) = std::io::pipe().unwrap();
    let command = Netmon::command(
        NETMON,
        &path,
        "auto",
        &["--follow", "--json", "--interval", "1", "--metrics", &addr],
    );
    let netmon = Netmon::spawn_with_stdout(command, stdout.into());
    netmon.wait_ready().unwrap();

    // Two lines per connection (its source inbound, its destination
    // outbound), far more than a pipe's 64 KiB and netmon's queue hold.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for c in 1..=40 {
        for d in 1..=100 {
            let dest = SocketAddrV4::new(block.addr(c, 128 + d), port);
            let client = connect_from(block.addr(c, d), dest).unwrap();
            // RST, so that thousands of connections leave no TIME_WAIT.
            client.set_linger(Some(Duration::ZERO)).unwrap();
            let accepted = listener.accept().unwrap();
            drop((client, accepted));
        }
    }

    let after_storm = updated(&path);
    eventually(
        "a checkpoint after the storm",
        || (updated(&path) > after_storm).then_some(()),
        || netmon.log(),
    );
    let body = eventually(
        "an answer from /metrics counting dropped --follow lines",
        || {
            let body = scrape_within(&addr)?;
            let dropped = sample(&body, "netmon_follow_dropped_lines_total")?;
            (dropped > 0.0).then_some(body)
        },
        || netmon.log(),
    );
    eventually(
        "the dropped lines said in the log",
        || {
            netmon
                .log()
                .contains("--follow: the reader is not keeping up")
                .then_some(())
        },
        || format!("{}\n{body}", netmon.log()),
    );

    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(netmon.pid() as i32, libc::SIGTERM) };
    let stopping = Instant::now();
    while !exited(netmon.pid()) {
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "SIGTERM not honoured within 2 s:\n{}",
            netmon.log()
        );
        thread::sleep(Duration::from_millis(20));
    }
    let (status, log) = netmon.wait();
    assert!(status.success(), "{log}");
}
