use super::*;
use std::net::Ipv6Addr;

const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0 100 0 0 10 0
   1: 0100007F:0016 0200007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 101 1 0 20 4 30 10 -1
   2: 0100007F:9C40 0300007F:01BB 01 00000000:00000000 00:00000000 00000000     0        0 102 1 0 20 4 30 10 -1
   3: 0100007F:9C41 0400007F:0050 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0
";
const TCP6: &str = "  sl  local_address                         remote_address                        st
   0: 0000000000000000FFFF00000100007F:1F90 0000000000000000FFFF00000500007F:A000 01 00000000:00000000
   1: 00000000000000000000000001000000:1F91 00000000000000000000000001000000:A001 01 00000000:00000000
";

fn scan_dir(files: &[(&str, &str)]) -> (tempfile::TempDir, Scanner) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let scanner = Scanner::text(dir.path());
    (dir, scanner)
}

fn collect(scanner: &mut Scanner) -> Vec<(IpAddr, Direction, u16, u16)> {
    let mut out = Vec::new();
    scanner
        .scan(|c, _| out.push((c.peer, c.direction, c.local_port, c.remote_port)))
        .unwrap();
    out
}

#[test]
fn classifies_directions_and_skips_listeners() {
    let (_dir, mut scanner) = scan_dir(&[("tcp", TCP), ("tcp6", TCP6)]);
    let got = collect(&mut scanner);
    assert_eq!(
        got,
        [
            (
                IpAddr::from(Ipv4Addr::new(127, 0, 0, 2)),
                Direction::Inbound,
                22,
                0xd431
            ),
            (
                IpAddr::from(Ipv4Addr::new(127, 0, 0, 3)),
                Direction::Outbound,
                0x9c40,
                443
            ),
            (
                IpAddr::from(Ipv4Addr::new(127, 0, 0, 4)),
                Direction::Outbound,
                0x9c41,
                80
            ),
            (
                IpAddr::from(Ipv4Addr::new(127, 0, 0, 5)),
                Direction::Outbound,
                8080,
                0xa000
            ),
            (
                IpAddr::from(Ipv6Addr::LOCALHOST),
                Direction::Outbound,
                0x1f91,
                0xa001
            ),
        ]
    );
}

#[test]
fn a_connection_is_reported_once_across_polls() {
    let (_dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
    assert_eq!(collect(&mut scanner).len(), 3);
    assert!(collect(&mut scanner).is_empty());
}

#[test]
fn a_connection_stays_inbound_after_its_listener_closes() {
    let (dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
    collect(&mut scanner);
    let without_listener: String = TCP
        .lines()
        .filter(|l| !l.contains(" 0A "))
        .map(|l| format!("{l}\n"))
        .collect();
    let late = without_listener.replace("0200007F:D431", "0600007F:D432");
    std::fs::write(dir.path().join("tcp"), &late).unwrap();
    assert_eq!(
        collect(&mut scanner),
        [(
            IpAddr::from(Ipv4Addr::new(127, 0, 0, 6)),
            Direction::Inbound,
            22,
            0xd432
        )]
    );
    // A poll later, a connection from that port is a client's.
    let later = late.replace("0600007F:D432", "0700007F:D433");
    std::fs::write(dir.path().join("tcp"), later).unwrap();
    assert_eq!(
        collect(&mut scanner),
        [(
            IpAddr::from(Ipv4Addr::new(127, 0, 0, 7)),
            Direction::Outbound,
            22,
            0xd433
        )]
    );
}

#[test]
fn a_time_wait_socket_is_a_connection_closed() {
    let tcp = |state, timewait| Row {
        local: None,
        local_port: 1,
        remote: None,
        remote_port: 2,
        state,
        cookie: None,
        timewait,
    };
    const FIN_WAIT2: i32 = 5;
    let cases = [
        (tcp(FIN_WAIT2, false), false, Liveness::Open),
        (tcp(FIN_WAIT2, true), false, Liveness::Closed),
        (tcp(FIN_WAIT2, true), true, Liveness::Recovered),
        (tcp(TIME_WAIT, false), false, Liveness::Closed),
        (tcp(TIME_WAIT, false), true, Liveness::Recovered),
        (tcp(CLOSE, false), true, Liveness::Closed),
    ];
    for (row, recover, wanted) in cases {
        assert_eq!(liveness(Proto::Tcp, &row, recover), wanted, "{row:?}");
    }
}

#[test]
fn garbage_lines_are_skipped() {
    for line in [
        "",
        "   0:",
        "0: zz:1 00000000:0000 01",
        "0: 0100007F:10000 0100007F:0001 01",
    ] {
        assert_eq!(text::parse_row(line.as_bytes(), false), None, "{line}");
    }
}

#[test]
fn missing_tcp_table_is_an_error() {
    let (_dir, mut scanner) = scan_dir(&[]);
    assert!(scanner.scan(|_, _| {}).is_err());
}

/// A destroyed socket as a notification describes it.
fn destroyed(cookie: u64, local_port: u16, remote: [u8; 4]) -> (Proto, Row) {
    let row = Row {
        local: Some(Ipv4Addr::new(127, 0, 0, 1).into()),
        local_port,
        remote: Some(Ipv4Addr::from(remote).into()),
        remote_port: 0,
        state: CLOSE,
        cookie: Some(cookie),
        timewait: false,
    };
    (Proto::Tcp, row)
}

fn announced(scanner: &mut Scanner, rows: &[(Proto, Row)]) -> Vec<(IpAddr, Direction)> {
    let mut out = Vec::new();
    scanner
        .announce(rows, &mut |c, liveness| {
            assert_eq!(liveness, Liveness::Closed);
            out.push((c.peer, c.direction));
        })
        .unwrap();
    out
}

#[test]
fn a_destroyed_socket_a_poll_saw_is_not_counted_again() {
    let (_dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
    let seen = destroyed(7, 40000, [10, 0, 0, 1]);
    scanner.reported.next_poll();
    scanner
        .reported
        .saw(key(seen.0, &seen.1, Ipv4Addr::new(10, 0, 0, 1).into()));
    let unseen = destroyed(8, 40001, [10, 0, 0, 2]);
    assert_eq!(
        announced(&mut scanner, &[seen, unseen]),
        [(
            IpAddr::from(Ipv4Addr::new(10, 0, 0, 2)),
            Direction::Outbound
        )]
    );
}

#[test]
fn a_listener_closing_makes_its_connections_inbound() {
    let (_dir, mut scanner) = scan_dir(&[("tcp", TCP)]);
    // The connection's notification comes before its listener's.
    let rows = [
        destroyed(1, 8080, [10, 0, 0, 3]),
        destroyed(2, 8080, [0, 0, 0, 0]),
    ];
    assert_eq!(
        announced(&mut scanner, &rows),
        [(IpAddr::from(Ipv4Addr::new(10, 0, 0, 3)), Direction::Inbound)]
    );
}
