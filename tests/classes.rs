//! Address classes through the real binary: a checkpoint holding the first
//! and last address of every special-purpose block, each of which `netmon
//! list` must class as the registry says, and `--family` on it. No root,
//! no eBPF.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
};

use netmon_scenario::files::{rfc3339, unix_now};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The blocks and classes, written out from IANA's IPv4 and IPv6
/// special-purpose address registries (plus the IPv4 reserved and
/// broadcast space and IPv6 multicast, which netmon also tells apart),
/// not taken from netmon's own table: a row netmon gets wrong fails here.
const REGISTRY: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this-network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "ietf-protocol"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4-relay"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("255.255.255.255/32", "broadcast"),
    // IPv6, in the registry's order.
    ("::1/128", "loopback"),
    ("::/128", "unspecified"),
    ("::ffff:0:0/96", "ipv4-mapped"),
    ("64:ff9b::/96", "translation"),
    ("64:ff9b:1::/48", "translation"),
    ("100::/64", "discard-only"),
    ("100:0:0:1::/64", "dummy"),
    ("2001::/23", "ietf-protocol"),
    ("2001::/32", "teredo"),
    ("2001:1::1/128", "anycast"),
    ("2001:1::2/128", "anycast"),
    ("2001:1::3/128", "anycast"),
    ("2001:2::/48", "benchmarking"),
    ("2001:3::/32", "anycast"),
    ("2001:4:112::/48", "anycast"),
    ("2001:10::/28", "orchid"),
    ("2001:20::/28", "orchid"),
    ("2001:30::/28", "orchid"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("2620:4f:8000::/48", "anycast"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "srv6"),
    ("fc00::/7", "private"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
];

/// A registry row as (is IPv4, first, last), counted in integers.
fn bounds(prefix: &str) -> (bool, u128, u128) {
    let (network, length) = prefix.split_once('/').unwrap();
    let length: u32 = length.parse().unwrap();
    let (v4, width, first) = match network.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => (true, 32, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, 128, u128::from(v6)),
    };
    let size_less_one = if width - length == 128 {
        u128::MAX
    } else {
        (1u128 << (width - length)) - 1
    };
    (v4, first, first + size_less_one)
}

fn address(v4: bool, bits: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap()))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

/// The class the registry gives `addr`: its narrowest row's, or public.
fn registry_class(addr: IpAddr) -> &'static str {
    let (family, bits) = match addr {
        IpAddr::V4(v4) => (true, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (false, u128::from(v6)),
    };
    REGISTRY
        .iter()
        .map(|&(prefix, class)| (bounds(prefix), class))
        .filter(|&((v4, first, last), _)| v4 == family && (first..=last).contains(&bits))
        .min_by_key(|&((_, first, last), _)| last - first)
        .map_or("public", |(_, class)| class)
}

/// The first and last address of every row, as written in the file.
fn edges() -> BTreeSet<IpAddr> {
    REGISTRY
        .iter()
        .flat_map(|&(prefix, _)| {
            let (v4, first, last) = bounds(prefix);
            [address(v4, first), address(v4, last)]
        })
        .collect()
}

/// A format 4 checkpoint with one outbound peer per address.
fn checkpoint(dir: &Path, addrs: &BTreeSet<IpAddr>) -> PathBuf {
    let now = unix_now();
    let peers: Vec<_> = addrs
        .iter()
        .map(|ip| {
            json!({
                "ip": ip.to_string(), "first_seen": rfc3339(now - 60), "last_seen": rfc3339(now),
                "outbound": 1, "inbound": 0, "remote_ports": ["443/tcp"], "local_ports": [],
                "processes": ["curl"],
            })
        })
        .collect();
    let file = json!({
        "version": 4, "host": "web1", "addresses": ["10.0.0.1", "fd00::1"],
        "updated": rfc3339(now), "mode": "proc", "lost_events": 0, "peers": peers,
    });
    let path = dir.join("peers.json");
    fs::write(&path, serde_json::to_string_pretty(&file).unwrap()).unwrap();
    path
}

fn stdout_of(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(args)
        .output()
        .expect("cannot run netmon");
    assert!(
        output.status.success(),
        "netmon {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn plain(args: &[&str]) -> BTreeSet<IpAddr> {
    stdout_of(args)
        .lines()
        .map(|line| line.parse().unwrap())
        .collect()
}

#[test]
fn every_registry_block_edge_is_classed_as_the_registry_says() {
    let dir = TempDir::new().unwrap();
    let written = edges();
    let file = checkpoint(dir.path(), &written);
    let file = file.to_str().unwrap();

    // An IPv4-mapped address is stored, and classed, as the IPv4 address it
    // maps: the ipv4-mapped block's edges come back as 0.0.0.0 and
    // 255.255.255.255.
    let expected: BTreeMap<IpAddr, &str> = written
        .iter()
        .map(|ip| (ip.to_canonical(), registry_class(ip.to_canonical())))
        .collect();
    let json: Value =
        serde_json::from_str(&stdout_of(&["list", "--format", "json", file])).unwrap();
    let listed: BTreeMap<IpAddr, &str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|peer| {
            (
                peer["ip"].as_str().unwrap().parse().unwrap(),
                peer["class"].as_str().unwrap(),
            )
        })
        .collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|&(ip, class)| listed.get(ip) != Some(class))
        .map(|(ip, class)| format!("{ip}: {:?}, registry {class}", listed.get(ip)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(listed.len(), expected.len());
    assert!(!listed.values().any(|&class| class == "ipv4-mapped"));

    // --class selects the same peers, class by class.
    let classes: BTreeSet<&str> = expected.values().copied().collect();
    for class in classes {
        let want: BTreeSet<IpAddr> = expected
            .iter()
            .filter(|&(_, c)| *c == class)
            .map(|(ip, _)| *ip)
            .collect();
        let got = plain(&["list", "--format", "plain", "--class", class, file]);
        assert_eq!(got, want, "--class {class}");
    }
}

#[test]
fn family_selects_one_address_family_in_every_report() {
    let dir = TempDir::new().unwrap();
    let addrs: BTreeSet<IpAddr> = [
        "10.0.0.9",
        "1.1.1.1",
        "::ffff:192.0.2.7",
        "2606:4700:4700::1111",
        "fd00::7",
        "fe80::1",
    ]
    .iter()
    .map(|text| text.parse().unwrap())
    .collect();
    let file = checkpoint(dir.path(), &addrs);
    let file = file.to_str().unwrap();
    let v4: BTreeSet<IpAddr> = ["10.0.0.9", "1.1.1.1", "192.0.2.7"]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
    let v6: BTreeSet<IpAddr> = ["2606:4700:4700::1111", "fd00::7", "fe80::1"]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();

    let list = |args: &[&str]| plain(&[&["list", "--format", "plain"], args, &[file]].concat());
    assert_eq!(list(&["--family", "4"]), v4);
    assert_eq!(list(&["--family", "6"]), v6);
    assert_eq!(list(&[]), &v4 | &v6);
    // With the other filters: every one must match.
    assert_eq!(
        list(&["--family", "6", "--class", "private", "--class", "public"]),
        ["2606:4700:4700::1111", "fd00::7"]
            .iter()
            .map(|text| text.parse().unwrap())
            .collect()
    );
    assert_eq!(
        list(&["--family", "4", "--class", "link-local"]),
        BTreeSet::new()
    );

    // stats counts only the chosen family's peers.
    let stats = stdout_of(&["stats", "--family", "6", file]);
    let total = stats
        .lines()
        .find(|line| line.starts_with("total"))
        .unwrap_or_else(|| panic!("no total in:\n{stats}"));
    assert_eq!(total.split_whitespace().nth(1), Some("3"), "{stats}");

    let refused = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(["list", "--family", "5", file])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--family"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[test]
fn help_lists_each_class_with_both_families_blocks() {
    let help = stdout_of(&["list", "--help"]);
    for (class, blocks) in [
        (
            "private",
            &["10.0.0.0/8 (RFC 1918)", "fc00::/7 (RFC 4193)"][..],
        ),
        ("link-local", &["169.254.0.0/16", "fe80::/10 (RFC 4291)"]),
        (
            "documentation",
            &["192.0.2.0/24", "2001:db8::/32", "3fff::/20"],
        ),
        ("teredo", &["2001::/32 (RFC 4380)"]),
    ] {
        let line = help
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("- {class}:")))
            .unwrap_or_else(|| panic!("no {class} in:\n{help}"));
        for block in blocks {
            assert!(line.contains(block), "{block} not in {line}");
        }
    }
}
