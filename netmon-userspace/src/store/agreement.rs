//! The fast reader against serde, on files in netmon's layout and on
//! every way a valid file can leave it.
use super::{Snapshot, parse, parse_with_serde, reader, to_json};

fn json(snapshot: &Snapshot) -> Vec<u8> {
    to_json(snapshot, "h", 1_700_000_000).unwrap()
}

/// `bytes` parse the same on both paths (both fail, or both give the
/// same set), and the fast reader took them in if `fast` says so.
fn agree(bytes: &[u8], fast: Option<bool>) {
    let took = reader::checkpoint(bytes, bytes.len() as u64)
        .unwrap()
        .is_some();
    if let Some(fast) = fast {
        assert_eq!(
            took,
            fast,
            "fast path on {}",
            String::from_utf8_lossy(bytes)
        );
    }
    match (parse(bytes, 0), parse_with_serde(bytes, 0)) {
        (Ok((a, _)), Ok((b, _))) => assert_eq!(json(&a), json(&b)),
        (Err(_), Err(_)) => {}
        (a, b) => panic!(
            "paths disagree on {}: {:?} vs {:?}",
            String::from_utf8_lossy(bytes),
            a.map(|_| ()),
            b.map(|_| ())
        ),
    }
}

const PEER: &str = r#"{"ip":"10.0.0.1","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","outbound":3,"inbound":0,"remote_ports":[443,80],"local_ports":[],"processes":["curl"]}"#;

fn file(peers: &str) -> String {
    format!(
        r#"{{"version":1,"host":"h","updated":"2026-01-02T00:00:00Z","mode":"tracepoint","lost_events":2,"peers":[{peers}]}}"#
    )
}

/// [`PEER`] as version 2 writes it: ports with their protocol.
const PEER_V2: &str = r#"{"ip":"10.0.0.1","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-02T00:00:00Z","outbound":3,"inbound":0,"remote_ports":["443/tcp","80/tcp"],"local_ports":[],"processes":["curl"]}"#;

fn file_v2(peers: &str) -> String {
    format!(
        r#"{{"version":2,"host":"h","addresses":["10.0.0.9"],"updated":"2026-01-02T00:00:00Z","mode":"tracepoint","lost_events":2,"uncounted_connections":1,"peers":[{peers}]}}"#
    )
}

#[test]
fn both_versions_read_alike() {
    agree(file_v2(PEER_V2).as_bytes(), Some(true));
    let (v1, _) = parse(file(PEER).as_bytes(), 0).unwrap();
    let (v2, _) = parse(file_v2(PEER_V2).as_bytes(), 0).unwrap();
    assert!(v1.peers.iter().eq(v2.peers.iter()));
    assert_eq!(v2.addresses, [std::net::Ipv4Addr::new(10, 0, 0, 9)]);
    assert!(v1.addresses.is_empty());
    // A version 2 file in any other layout goes to serde, which agrees.
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&file_v2(PEER_V2)).unwrap(),
    )
    .unwrap();
    agree(pretty.as_bytes(), Some(true));
}

#[test]
fn a_newer_version_is_named_in_the_error() {
    let newer =
        file_v2(&PEER_V2.replace("443/tcp", "443/sctp")).replace("\"version\":2", "\"version\":5");
    let err = format!("{:#}", parse(newer.as_bytes(), 0).unwrap_err());
    assert!(
        err.contains("checkpoint version 5 is not supported") && err.contains("newer netmon"),
        "{err}"
    );
}

#[test]
fn ipv6_peers_read_alike_and_mapped_ones_are_ipv4() {
    for ip in [
        "fd00::1",
        "FD00:0:0::0001",
        "2001:db8::a:b",
        "::ffff:10.0.0.7",
        "::1",
    ] {
        agree(file(&PEER.replace("10.0.0.1", ip)).as_bytes(), Some(true));
    }
    let (mapped, _) = parse(
        file(&PEER.replace("10.0.0.1", "::ffff:10.0.0.7")).as_bytes(),
        0,
    )
    .unwrap();
    let ips: Vec<_> = mapped.peers.iter().map(|(ip, _)| ip.to_string()).collect();
    assert_eq!(ips, ["10.0.0.7"]);
    // Both families in one file: IPv4 first, each in numeric order.
    let peers = ["fd00::2", "10.0.0.9", "fd00::10", "9.0.0.1"]
        .map(|ip| PEER.replace("10.0.0.1", ip))
        .join(",\n");
    let (both, _) = parse(file(&format!("\n{peers}\n")).as_bytes(), 0).unwrap();
    let ips: Vec<_> = both.peers.iter().map(|(ip, _)| ip.to_string()).collect();
    assert_eq!(ips, ["9.0.0.1", "10.0.0.9", "fd00::2", "fd00::10"]);
    let (again, _) = parse(&json(&both), 0).unwrap();
    assert_eq!(json(&again), json(&both));
}

#[test]
fn netmon_layout_takes_the_fast_path() {
    agree(file(PEER).as_bytes(), Some(true));
    agree(file("").as_bytes(), Some(true));
    let two = format!("\n{PEER},\n{}\n", PEER.replace("10.0.0.1", "10.0.0.2"));
    agree(file(&two).as_bytes(), Some(true));
}

#[test]
fn other_valid_forms_agree() {
    let pretty = serde_json::to_string_pretty(
        &serde_json::from_str::<serde_json::Value>(&file(PEER)).unwrap(),
    )
    .unwrap();
    agree(pretty.as_bytes(), Some(true));
    // Fields in another order, lists left out, a null mode.
    let reordered = r#"{"ip":"10.0.0.1","outbound":3,"inbound":0,"last_seen":"2026-01-02T01:00:00Z","first_seen":"2026-01-01T00:00:00Z"}"#;
    agree(file(reordered).as_bytes(), Some(true));
    agree(
        file(PEER).replace("\"tracepoint\"", "null").as_bytes(),
        Some(true),
    );
    // Times in other forms go through the general time parser.
    agree(
        file(&PEER.replace("01T00:00:00Z", "01 00:00:00Z")).as_bytes(),
        None,
    );
    agree(
        file(&PEER.replace("01T00:00:00Z", "01T01:00:00+01:00")).as_bytes(),
        None,
    );
    // Escapes, as netmon writes a process name any local user picked:
    // read on the fast path, as serde reads them.
    for escaped in [
        r"cu\u0072l",
        r#"q\"\\\u000a\ufffd\u0001"#,
        r"a\/b\b\f\n\r\t",
        r"\ud83d\ude00x",
    ] {
        agree(file(&PEER.replace("curl", escaped)).as_bytes(), Some(true));
    }
    // What JSON does not allow in a string is serde's to refuse.
    for bad in [
        r"\ud83d", r"\ude00", r"\ud83dx", r"\x41", r"\u12g4", "a\u{1}b",
    ] {
        agree(file(&PEER.replace("curl", bad)).as_bytes(), Some(false));
    }
    // Left to serde: an unknown field, a repeated field.
    agree(
        file(&PEER.replace("\"inbound\"", "\"x\":1,\"inbound\"")).as_bytes(),
        Some(false),
    );
    agree(
        file(&PEER.replace("\"inbound\":0", "\"inbound\":0,\"inbound\":1")).as_bytes(),
        Some(false),
    );
    agree(
        file(PEER)
            .replace("\"version\":1", "\"version\":1.0")
            .as_bytes(),
        Some(false),
    );
}

#[test]
fn invalid_files_fail_on_both_paths() {
    for bad in [
        file(PEER).replace("\"version\":1", "\"version\":5"),
        file(&PEER.replace("10.0.0.1", "fd00::g")),
        file(&PEER.replace("10.0.0.1", "fd00:::1")),
        file(&PEER.replace("10.0.0.1", "[fd00::1]")),
        file(&PEER.replace("10.0.0.1", "fd00::1%eth0")),
        file_v2(&PEER_V2.replace("443/tcp", "443/sctp")),
        file_v2(&PEER_V2.replace("443/tcp", "443/UDP")),
        file_v2(&PEER_V2.replace("443/tcp", "65536/tcp")),
        file_v2(&PEER_V2.replace("443/tcp", "/tcp")),
        file_v2(&PEER_V2.replace("443/tcp", "443")),
        file_v2(&PEER_V2.replace("443/tcp", "-1/tcp")),
        file_v2(PEER_V2).replace("[\"10.0.0.9\"]", "[\"10.0.0.256\"]"),
        file(&PEER.replace("10.0.0.1", "10.0.0.256")),
        file(&PEER.replace("10.0.0.1", "010.0.0.1")),
        file(&PEER.replace("443", "65536")),
        file(&PEER.replace(":3,", ":-3,")),
        file(&PEER.replace(":3,", ":03,")),
        file(&PEER.replace("2026-01-01T00", "2026-13-01T00")),
        file(PEER).replace("\"host\":\"h\",", ""),
        format!("{} x", file(PEER)),
        file(PEER)[..100].to_owned(),
        "{}".to_owned(),
    ] {
        agree(bad.as_bytes(), None);
        assert!(parse(bad.as_bytes(), 0).is_err(), "{bad}");
    }
    agree(&[b'{', 0xff, b'}'], Some(false));
}

/// A reader that hands out a few bytes per call.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len()).min(997);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn peers_across_buffer_refills_are_read_whole() {
    // Several megabytes, every third peer in a layout the fast path has
    // to rewind from, so rewinds land on refills too.
    let peers: Vec<String> = (0..40_000u32)
        .map(|i| {
            let peer = PEER.replace("10.0.0.1", &std::net::Ipv4Addr::from(i).to_string());
            if i % 3 == 0 {
                peer.replace(',', ", ")
            } else {
                peer
            }
        })
        .collect();
    let text = file(&peers.join(",\n"));
    assert!(text.len() > 3 * reader::CHUNK);
    let fast = reader::checkpoint(Trickle(text.as_bytes()), 0)
        .unwrap()
        .unwrap();
    assert_eq!(fast.peers.keys.len(), 40_000);
    agree(text.as_bytes(), Some(true));
}
