//! No script lets a whole address family through.
//!
//! Before netmon recorded IPv6 peers, the nft chains began with `meta
//! nfproto ipv6 return` and the iptables and ipset scripts touched IPv4
//! only: once hooked, anyone reaching the host over IPv6 passed. Every
//! format's every statement, and every hook its comments suggest, is
//! read here: a rule that lets traffic through must name addresses (a set
//! or a block), or be one of the basics the runbook keeps ahead of the
//! jump (loopback, established connections, SSH, neighbour discovery).
use std::{fs, path::Path};

use netmon_scenario::files::{rfc3339, unix_now};
use serde_json::json;
use tempfile::TempDir;

use crate::netmon_rules;

/// A checkpoint of IPv4 and IPv6 peers, each seen both ways: peers the
/// rules allow, and addresses no rule may hold.
fn checkpoint(dir: &Path) -> String {
    let now = rfc3339(unix_now());
    let peers: Vec<_> = ALLOWED
        .iter()
        .chain(NEVER)
        .map(|(ip, _)| {
            json!({"ip": ip, "first_seen": now, "last_seen": now, "outbound": 1, "inbound": 1,
                   "remote_ports": ["443/tcp", "53/udp"], "local_ports": ["22/tcp"]})
        })
        .collect();
    let file = json!({"version": 4, "host": "test", "updated": now,
                      "addresses": ["192.0.2.1", "2001:db8::1"], "peers": peers});
    let path = dir.join("peers.json");
    fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Peers, each with the block it must be allowed in. An IPv4-mapped
/// address is its IPv4 address, merging with its neighbour; a link-local
/// peer is allowed as observed (docs/firewall.md says why).
const ALLOWED: &[(&str, &str)] = &[
    ("192.0.2.7", "192.0.2.6/31"),
    ("::ffff:192.0.2.6", "192.0.2.6/31"),
    ("2001:db8::7", "2001:db8::6/127"),
    ("2001:db8::6", "2001:db8::6/127"),
    ("fe80::1", "fe80::1/128"),
];

/// Peers no rule may allow: loopback, unspecified, multicast, and the
/// host's own address.
const NEVER: &[(&str, &str)] = &[
    ("::1", "::1/128"),
    ("::", "::/128"),
    ("ff02::1", "ff02::1/128"),
    ("2001:db8::1", "2001:db8::1/128"),
];

/// Why `rule` (a statement, or a hook from the comments) lets a whole
/// family, or everything, through; `None` if it does not.
fn whole_family(rule: &str) -> Option<&'static str> {
    let words: Vec<_> = rule.split_whitespace().collect();
    let has = |word: &str| words.contains(&word);
    let lets_through = has("return") || has("accept") || has("RETURN") || has("ACCEPT");
    if rule.contains("nfproto") {
        return Some("matches a family");
    }
    if !lets_through {
        return None;
    }
    // What the hooks keep ahead of the jump, and the chains' leaving of
    // protocols netmon does not record to other rules.
    let basics = [
        "iif lo",
        "oif lo",
        "-i lo",
        "-o lo",
        "established",
        "ESTABLISHED",
        "dport 22",
        "sport 22",
        "icmpv6 type { nd-",
        "--icmpv6-type",
        "meta l4proto != { tcp, udp } return",
    ];
    let names_addresses = rule.contains(" @")
        || words
            .windows(2)
            .any(|pair| matches!(pair[0], "-s" | "-d") && pair[1].contains('/'));
    if names_addresses || basics.iter().any(|basic| rule.contains(basic)) {
        None
    } else {
        Some("lets packets through by no address")
    }
}

#[test]
fn no_rule_lets_a_whole_family_through() {
    let dir = TempDir::new().unwrap();
    let checkpoint = checkpoint(dir.path());
    for format in ["nft", "ipset", "iptables", "ip6tables"] {
        for any_port in [false, true] {
            let mut args = vec!["rules", "--format", format];
            if any_port {
                args.push("--any-port");
            }
            args.push(&checkpoint);
            let text = netmon_rules(&args);
            let rules = text
                .lines()
                .filter_map(|line| match line.strip_prefix("#   ") {
                    Some(hook) => Some(hook),
                    None => (!line.starts_with('#')).then_some(line),
                });
            for rule in rules {
                if let Some(why) = whole_family(rule) {
                    panic!("{format} (any port: {any_port}): {rule:?} {why}:\n{text}");
                }
            }
            // Each family's peers are in the script of each tool that
            // filters the family, and what no rule may allow is in none.
            let words: Vec<_> = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .collect();
            let filters = |block: &str| match format {
                "iptables" => !block.contains(':'),
                "ip6tables" => block.contains(':'),
                _ => true,
            };
            for (peer, block) in ALLOWED {
                assert_eq!(
                    words.contains(block),
                    filters(block),
                    "{format} (any port: {any_port}): {peer} as {block}:\n{text}"
                );
            }
            for (peer, block) in NEVER {
                assert!(
                    !words.contains(block),
                    "{format} (any port: {any_port}): {peer} allowed:\n{text}"
                );
            }
        }
    }
}

/// The checker itself: what the old scripts did is caught.
#[test]
fn the_check_catches_family_holes() {
    for hole in [
        "add rule inet netmon allow_peers_v4_in meta nfproto ipv6 return",
        "add rule inet netmon allow_peers_v4_in meta nfproto ipv6 accept",
        "-A NETMON-PEERS-IN -j RETURN",
        "ip6tables -A INPUT -j ACCEPT",
        "-A NETMON-PEERS-IN -p tcp -j ACCEPT",
    ] {
        assert!(whole_family(hole).is_some(), "{hole}");
    }
    for fine in [
        "add rule inet netmon allow_peers_v4_in ip6 saddr @peers_v4_in6 return",
        "-A NETMON-PEERS-IN -s 2001:db8::6/127 -p tcp -m tcp --dport 22 -j RETURN",
        "-A NETMON-PEERS-IN -p tcp -j DROP",
    ] {
        assert!(whole_family(fine).is_none(), "{fine}");
    }
}
