//! `netmon diff` against a base, and `diff`/`rules --host` over a fleet.
use super::*;

#[test]
fn diff_exit_status_says_whether_anything_is_new() {
    let dir = TempDir::new().unwrap();
    let base = write(dir.path(), "base.json", r#"["10.0.0.1", "10.0.0.2"]"#);
    let same = write(dir.path(), "same.json", r#"["10.0.0.2", "10.0.0.1"]"#);
    let fewer = write(dir.path(), "fewer.json", r#"["10.0.0.1"]"#);
    let more = write(
        dir.path(),
        "more.json",
        r#"["10.0.0.1", "10.0.0.2", "8.8.8.8"]"#,
    );
    let bad = write(dir.path(), "bad.json", "[");

    // Address lists record no ports: only rules by address compare them.
    let status = |new: &Path| {
        netmon(&["diff", "--any-port", arg(&base), arg(new)])
            .status
            .code()
    };
    assert_eq!(status(&same), Some(0));
    assert_eq!(status(&fewer), Some(0));
    assert_eq!(status(&more), Some(1));
    assert_eq!(status(&bad), Some(2));
    let output = netmon(&["diff", arg(&base), arg(&more)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr_of(&output).contains("records no ports: use --any-port"),
        "{}",
        stderr_of(&output)
    );

    let output = netmon(&[
        "diff",
        "--any-port",
        "--format",
        "plain",
        arg(&fewer),
        arg(&more),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "+in 8.8.8.8 any\n+out 8.8.8.8 any\n+in 10.0.0.2 any\n+out 10.0.0.2 any\n"
    );
    let output = netmon(&["diff", "--any-port", arg(&base), arg(&more)]);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("new     in   8.8.8.8 -> any port  public")),
        "{text}"
    );
}

/// The README's rules are built with `--direction in --since 30d`: a peer
/// BASE saw only outbound, or longer ago, is not in them, so NEW's inbound
/// connections from it are what the rules would block.
#[test]
fn diff_checks_new_against_the_rules_base_gives() {
    let dir = TempDir::new().unwrap();
    let now = now();
    let base = write_checkpoint(
        dir.path(),
        "base.json",
        "db1",
        &[
            Peer("10.0.0.5", 2, 0, now, "psql"),
            Peer("10.0.0.6", 0, 1, now - 40 * 86_400, "sshd"),
            Peer("10.0.0.7", 0, 1, now, "sshd"),
        ],
    );
    let new = write_checkpoint(
        dir.path(),
        "new.json",
        "db1",
        &[
            Peer("10.0.0.5", 2, 1, now, "sshd"),
            Peer("10.0.0.6", 0, 1, now, "sshd"),
            Peer("10.0.0.7", 0, 1, now, "sshd"),
        ],
    );
    let flags = ["--direction", "in", "--since", "30d", "--format", "plain"];
    let output = netmon(&[&["diff"], &flags[..], &[arg(&base), arg(&new)]].concat());
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "+in 10.0.0.5 22/tcp\n+in 10.0.0.6 22/tcp\n"
    );
    // Against itself, every flag's rules allow what they were built from.
    let output = netmon(&[&["diff"], &flags[..], &[arg(&new), arg(&new)]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    assert!(output.stdout.is_empty());
}

/// A format 2 checkpoint of `host` (own address `addr`) with one peer a
/// `(ip, outbound, inbound, remote ports, local ports)`.
fn fleet_file(dir: &Path, host: &str, addr: &str, peers: &[(&str, u64, u64, &str, &str)]) {
    let time = rfc3339(now());
    let peers: Vec<Value> = peers
        .iter()
        .map(|(ip, outbound, inbound, remote, local)| {
            let ports = |list: &str| -> Vec<String> {
                list.split_whitespace()
                    .map(|port| format!("{port}/tcp"))
                    .collect()
            };
            json!({"ip": ip, "first_seen": time, "last_seen": time, "outbound": outbound,
                   "inbound": inbound, "remote_ports": ports(remote), "local_ports": ports(local),
                   "processes": []})
        })
        .collect();
    let file =
        json!({"version": 2, "host": host, "addresses": [addr], "updated": time, "peers": peers});
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(format!("{host}.json")), file.to_string()).unwrap();
}

/// `diff --host` diffs one host's rules as `rules --host` builds them from
/// a fleet's files: a connection to db1 that only the client's file
/// recorded is in db1's rules, and a new one is reported as blocked.
#[test]
fn diff_and_rules_for_one_host_read_the_whole_fleet() {
    let dir = TempDir::new().unwrap();
    let (base, new) = (dir.path().join("base"), dir.path().join("new"));
    for side in [&base, &new] {
        // db1 was not collecting: only web1's file has web1 -> db1:5432.
        fleet_file(side, "db1", "10.0.0.2", &[]);
        fleet_file(side, "web1", "10.0.0.1", &[("10.0.0.2", 3, 0, "5432", "")]);
    }
    fleet_file(
        &new,
        "web2",
        "10.0.0.3",
        &[("10.0.0.2", 1, 0, "5432 6379", "")],
    );
    let rules = stdout_of(&[
        "rules",
        "--host",
        "db1",
        "--direction",
        "in",
        "--format",
        "nft",
        arg(&base),
    ]);
    assert!(rules.contains("10.0.0.1/32 . tcp . 5432"), "{rules}");
    // The host by one of its own addresses: the same rules.
    let by_address = stdout_of(&[
        "rules",
        "--host",
        "10.0.0.2",
        "--direction",
        "in",
        "--format",
        "nft",
        arg(&base),
    ]);
    assert_eq!(by_address, rules);
    let output = netmon(&[
        "diff",
        "--host",
        "db1",
        "--direction",
        "in",
        "--format",
        "plain",
        arg(&base),
        arg(&new),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "+in 10.0.0.3 5432/tcp\n+in 10.0.0.3 6379/tcp\n"
    );
    let same = netmon(&[
        "diff",
        "--host",
        "db1",
        "--direction",
        "in",
        arg(&base),
        arg(&base),
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", stderr_of(&same));
    let unknown = netmon(&["rules", "--host", "db9", "--format", "nft", arg(&base)]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr_of(&unknown).contains("--host db9: no such host in the files"),
        "{}",
        stderr_of(&unknown)
    );
}
