//! Integration tests of the report commands: the real binary on files the
//! tests write. No root, no eBPF.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use netmon_scenario::files::{rfc3339, unix_now as now};
use serde_json::{Value, json};
use tempfile::TempDir;

/// `diff`, and `diff`/`rules` over a fleet's files.
#[path = "reports/diff.rs"]
mod diff;

fn netmon(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(args)
        .output()
        .expect("cannot run netmon")
}

/// stdout of a run that must succeed.
fn stdout_of(args: &[&str]) -> String {
    let output = netmon(args);
    assert!(
        output.status.success(),
        "netmon {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A peer of a checkpoint: address, outbound and inbound counts, last
/// seen (Unix seconds), and the process.
struct Peer(&'static str, u64, u64, u64, &'static str);

fn write_checkpoint(dir: &Path, name: &str, host: &str, peers: &[Peer]) -> PathBuf {
    let peers: Vec<_> = peers
        .iter()
        .map(|Peer(ip, outbound, inbound, last_seen, process)| {
            json!({
                "ip": ip,
                "first_seen": rfc3339(last_seen - 60),
                "last_seen": rfc3339(*last_seen),
                "outbound": outbound,
                "inbound": inbound,
                "remote_ports": if *outbound > 0 { vec![443] } else { vec![] },
                "local_ports": if *inbound > 0 { vec![22] } else { vec![] },
                "processes": [process],
            })
        })
        .collect();
    let file = json!({
        "version": 1, "host": host, "updated": rfc3339(now()), "mode": "kprobe",
        "lost_events": 0, "peers": peers,
    });
    write(dir, name, &serde_json::to_string_pretty(&file).unwrap())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// One host's checkpoint, in no particular order, covering several
/// classes and both directions; one peer is a month old.
fn web1(dir: &TempDir) -> PathBuf {
    let now = now();
    write_checkpoint(
        dir.path(),
        "web1.json",
        "web1",
        &[
            Peer("10.0.0.10", 3, 0, now, "curl"),
            Peer("9.9.9.9", 1, 0, now, "curl"),
            Peer("10.0.0.9", 0, 4, now, "sshd"),
            Peer("100.64.1.1", 2, 0, now, "app"),
            Peer("192.0.2.7", 1, 0, now, "app"),
            Peer("1.1.1.1", 5, 1, now - 30 * 86_400, "dig"),
        ],
    )
}

#[test]
fn plain_list_is_numeric_and_filters_combine() {
    let dir = TempDir::new().unwrap();
    let file = web1(&dir);
    assert_eq!(
        stdout_of(&["list", "--format", "plain", arg(&file)]),
        "1.1.1.1\n9.9.9.9\n10.0.0.9\n10.0.0.10\n100.64.1.1\n192.0.2.7\n"
    );
    assert_eq!(
        stdout_of(&["list", "--format", "plain", "--class", "public", arg(&file)]),
        "1.1.1.1\n9.9.9.9\n"
    );
    assert_eq!(
        stdout_of(&[
            "list",
            "--format",
            "plain",
            "--class",
            "public",
            "--class",
            "shared",
            "--since",
            "7d",
            arg(&file)
        ]),
        "9.9.9.9\n100.64.1.1\n"
    );
    assert_eq!(
        stdout_of(&["list", "--format", "plain", "--direction", "in", arg(&file)]),
        "1.1.1.1\n10.0.0.9\n"
    );
}

#[test]
fn text_json_and_csv_carry_class_and_record() {
    let dir = TempDir::new().unwrap();
    let file = web1(&dir);
    let text = stdout_of(&["list", arg(&file)]);
    let lines: Vec<_> = text.lines().collect();
    assert!(lines[0].starts_with("ADDRESS "), "{text}");
    let row: Vec<_> = lines[3].split_whitespace().collect();
    assert_eq!(row[..5], ["10.0.0.9", "private", "in", "0", "4"], "{text}");
    assert_eq!(row[6..], ["-", "22/tcp", "sshd"], "{text}");
    // Aligned: every line has its class where the header has CLASS.
    let class_at = lines[0].find("CLASS").unwrap();
    assert!(
        lines[1..]
            .iter()
            .all(|l| l[class_at - 2..].starts_with("  ") && !l[class_at..].starts_with(' ')),
        "{text}"
    );
    assert!(lines.iter().all(|line| !line.ends_with(' ')), "{text}");
    assert!(text.contains("documentation"), "{text}");

    let json: Value =
        serde_json::from_str(&stdout_of(&["list", "--format", "json", arg(&file)])).unwrap();
    let shared = &json.as_array().unwrap()[4];
    assert_eq!(shared["ip"], "100.64.1.1");
    assert_eq!(shared["class"], "shared");
    assert_eq!(shared["direction"], "out");
    assert_eq!(shared["outbound"], 2);
    assert_eq!(shared["remote_ports"], json!(["443/tcp"]));
    assert_eq!(shared["processes"], json!(["app"]));

    let csv = stdout_of(&["list", "--format", "csv", "--class", "private", arg(&file)]);
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some(
            "ip,class,direction,outbound,inbound,first_seen,last_seen,remote_ports,local_ports,processes,owners"
        )
    );
    assert!(rows.next().unwrap().starts_with("10.0.0.9,private,in,0,4,"));
    assert!(
        rows.next()
            .unwrap()
            .starts_with("10.0.0.10,private,out,3,0,")
    );
    assert_eq!(rows.next(), None);
}

#[test]
fn old_poller_lists_load_and_mix_with_checkpoints() {
    let dir = TempDir::new().unwrap();
    let list = write(
        dir.path(),
        "old.json",
        r#"["203.0.113.5", "10.0.0.9", "8.8.8.8", "255.255.255.255"]"#,
    );
    let json: Value =
        serde_json::from_str(&stdout_of(&["list", "--format", "json", arg(&list)])).unwrap();
    assert_eq!(
        json,
        json!([
            {"ip": "8.8.8.8", "class": "public"},
            {"ip": "10.0.0.9", "class": "private"},
            {"ip": "203.0.113.5", "class": "documentation"},
            {"ip": "255.255.255.255", "class": "broadcast"},
        ])
    );
    let both = stdout_of(&["list", "--format", "plain", arg(&web1(&dir)), arg(&list)]);
    assert_eq!(both.lines().count(), 9, "each address once:\n{both}");
}

#[test]
fn merge_two_hosts_then_list_the_union() {
    let dir = TempDir::new().unwrap();
    let now = now();
    let web2 = write_checkpoint(
        dir.path(),
        "web2.json",
        "web2",
        &[
            Peer("9.9.9.9", 10, 0, now - 5, "wget"),
            Peer("8.8.4.4", 1, 0, now, "dig"),
        ],
    );
    let out = dir.path().join("all.json");
    stdout_of(&["merge", arg(&web1(&dir)), arg(&web2), "--output", arg(&out)]);
    let json: Value = serde_json::from_str(&stdout_of(&[
        "list",
        "--format",
        "json",
        "--class",
        "public",
        arg(&out),
    ]))
    .unwrap();
    let ips: Vec<_> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].clone())
        .collect();
    assert_eq!(ips, ["1.1.1.1", "8.8.4.4", "9.9.9.9"]);
    let quad9 = &json[2];
    assert_eq!(quad9["outbound"], 11);
    assert_eq!(quad9["processes"], json!(["curl", "wget"]));
    assert_eq!(quad9["last_seen"], rfc3339(now));
    let merged: Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(merged["host"], "web1,web2");
}

#[test]
fn merge_with_a_bad_input_fails_and_writes_nothing() {
    let dir = TempDir::new().unwrap();
    let bad = write(dir.path(), "bad.json", r#"["10.0.0.1", "10.0.0.256"]"#);
    let out = dir.path().join("all.json");
    let output = netmon(&["merge", arg(&web1(&dir)), arg(&bad), "-o", arg(&out)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("bad.json") && stderr.contains("entry 1") && stderr.contains("10.0.0.256"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!out.exists());
}

#[test]
fn bad_files_name_the_file_and_the_entry() {
    let dir = TempDir::new().unwrap();
    let checkpoint = write(
        dir.path(),
        "broken.json",
        "{\"version\": 1, \"host\": \"h\", \"updated\": \"x\", \"peers\": [\n\
         {\"ip\": \"10.0.0.1\", \"first_seen\": \"2024-01-01T00:00:00Z\",\n\
          \"last_seen\": \"not a time\", \"outbound\": 1, \"inbound\": 0}]}",
    );
    let newer = write(dir.path(), "v5.json", r#"{"version": 5, "peers": {}}"#);
    for (file, says) in [
        (&checkpoint, "line 3"),
        (&newer, "version 5 is not supported"),
        (&dir.path().join("missing.json"), "no such file"),
    ] {
        let output = netmon(&["list", arg(file)]);
        assert_eq!(output.status.code(), Some(1));
        let stderr = stderr_of(&output);
        assert!(
            stderr.contains(arg(file)) && stderr.contains(says),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn stats_counts_classes_and_tops() {
    let dir = TempDir::new().unwrap();
    let text = stdout_of(&["stats", arg(&web1(&dir))]);
    for line in [
        "6 peers from 1 file, host web1 (lost events: 0)",
        "public             2   1    2",
        "total              6   2    5",
        "1.1.1.1     public         in+out            6",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
    }
}

/// IPv6 peers beside IPv4 ones: counted in their classes, the address
/// column as wide as the widest, an IPv4-mapped peer as its IPv4.
#[test]
fn stats_of_both_families() {
    let dir = TempDir::new().unwrap();
    let peer = |ip: &str, outbound: u64, inbound: u64, port: &str| {
        let (remote, local) = if outbound > 0 {
            (vec![port], vec![])
        } else {
            (vec![], vec![port])
        };
        json!({
            "ip": ip, "first_seen": rfc3339(now() - 60), "last_seen": rfc3339(now()),
            "outbound": outbound, "inbound": inbound,
            "remote_ports": remote, "local_ports": local, "processes": ["p"],
        })
    };
    let file = json!({
        "version": 4, "host": "web1", "addresses": ["10.0.0.9", "fd00::9"],
        "updated": rfc3339(now()), "mode": "raw-tracepoint", "lost_events": 0,
        "peers": [
            peer("2001:db8:ffff:ffff:ffff:ffff:ffff:fffe", 3, 0, "443/tcp"),
            peer("fd00::5", 0, 2, "22/tcp"),
            peer("10.0.0.1", 0, 2, "22/tcp"),
            peer("::ffff:10.0.0.2", 1, 0, "53/udp"),
        ],
    });
    let path = write(dir.path(), "web1.json", &file.to_string());
    let text = stdout_of(&["stats", arg(&path)]);
    let top = [
        "ADDRESS                                 CLASS          DIR  CONNECTIONS",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:fffe  documentation  out            3",
        // Ties in address order: IPv4 first.
        "10.0.0.1                                private        in             2",
        "fd00::5                                 private        in             2",
        "10.0.0.2                                private        out            1",
    ];
    for line in [
        "4 peers from 1 file, host web1 (lost events: 0)",
        "private            3   2    1",
        "documentation      1   0    1",
    ]
    .iter()
    .chain(&top)
    {
        assert!(text.lines().any(|l| l == *line), "no {line:?} in\n{text}");
    }
    assert!(text.contains(&top.join("\n")), "{text}");
}

/// Counts at u64::MAX stay there when more is added: merging them, or
/// adding a peer's two directions, must not wrap round to a small number.
#[test]
fn counts_saturate_at_the_maximum() {
    let dir = TempDir::new().unwrap();
    let now = now();
    let full = |name: &str, lost: u64, outbound: u64, inbound: u64| {
        let path = write_checkpoint(
            dir.path(),
            name,
            name,
            &[Peer("9.9.9.9", outbound, inbound, now, "curl")],
        );
        let mut file: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        file["lost_events"] = lost.into();
        fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
        path
    };
    let a = full("a", u64::MAX, u64::MAX, u64::MAX);
    let b = full("b", 1, 1, 1);
    let max = u64::MAX.to_string();

    let text = stdout_of(&["stats", arg(&a), arg(&b)]);
    let first = text.lines().next().unwrap();
    assert!(first.ends_with(&format!("(lost events: {max})")), "{text}");
    let top = format!("9.9.9.9  public  in+out  {max}");
    assert!(text.lines().any(|l| l == top), "no {top:?} in\n{text}");
    // One file is enough to overflow the sum of the two directions.
    let text = stdout_of(&["stats", arg(&a)]);
    assert!(text.lines().any(|l| l == top), "no {top:?} in\n{text}");

    let out = dir.path().join("all.json");
    stdout_of(&["merge", arg(&a), arg(&b), "--output", arg(&out)]);
    let merged: Value = serde_json::from_slice(&fs::read(&out).unwrap()).unwrap();
    assert_eq!(merged["lost_events"], u64::MAX, "{merged}");
    assert_eq!(merged["peers"][0]["outbound"], u64::MAX, "{merged}");
    assert_eq!(merged["peers"][0]["inbound"], u64::MAX, "{merged}");
}

/// `netmon list | head -1` must end quietly and successfully.
#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    let dir = TempDir::new().unwrap();
    let many: Vec<_> = (0..200_000u32)
        .map(|n| std::net::Ipv4Addr::from(n + 1).to_string())
        .collect();
    let file = write(
        dir.path(),
        "many.json",
        &serde_json::to_string(&many).unwrap(),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(["list", "--format", "plain", arg(&file)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "0.0.0.1\n");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr_of(&output));
    assert!(output.stderr.is_empty(), "{}", stderr_of(&output));
}

/// A container with a network namespace of its own keeps its peers under
/// it: a filter that finds nothing in the host's says where they are.
#[test]
fn an_empty_selection_names_the_namespaces_with_peers() {
    let dir = TempDir::new().unwrap();
    let file = write(
        dir.path(),
        "ns.json",
        concat!(
            r#"{"version":3,"host":"h","updated":"2026-01-01T00:00:00Z","peers":["#,
            r#"{"ip":"10.0.0.1","netns":4026532301,"first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z","#,
            r#""outbound":1,"inbound":0,"remote_ports":["53/udp"],"local_ports":[],"processes":[],"owners":["container:3f4e5a6b7c8d"]}]}"#
        ),
    );
    let output = netmon(&["list", "--owner", "container:*", arg(&file)]);
    assert_eq!(output.status.code(), Some(0));
    let stderr = stderr_of(&output);
    assert!(
        stderr.contains("peers are recorded under 1 other namespace (4026532301): --netns all"),
        "{stderr}"
    );
    let all = netmon(&["list", "--netns", "all", "--format", "plain", arg(&file)]);
    assert_eq!(String::from_utf8_lossy(&all.stdout), "10.0.0.1\n");
}
