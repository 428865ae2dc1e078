//! `netmon graph`: the access map of a small fleet, joined from each
//! host's own checkpoint.
//!
//! Five hosts, each a network namespace with its own `netmon run` in proc
//! mode (whose socket tables are its namespace's), plus one host that runs
//! no netmon; real connections between them on distinct ports, over IPv4
//! and IPv6 (each host's unique-local address); then the map, checked edge
//! by edge: a host is one node whichever family reached it.
use std::{
    collections::BTreeMap,
    fs,
    net::{IpAddr, SocketAddrV6, TcpListener, TcpStream},
    path::Path,
    process::Command,
};

use netmon_scenario::{fleet::Fleet, harness::Netmon};
use serde_json::{Value, json};

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

/// `netmon run` in proc mode inside `host`'s namespace, ready.
fn collect(fleet: &Fleet, host: &str, dir: &Path) -> Netmon {
    let mut command = fleet.command(host, NETMON);
    command.args([
        "run",
        "--mode",
        "proc",
        "--poll-interval",
        "100",
        "--output",
    ]);
    command.arg(dir.join(format!("{host}.json")));
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    netmon
}

fn stop(netmon: Netmon) {
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
}

/// `netmon graph ARGS FILES`, which must succeed: its stdout.
fn graph(args: &[&str], files: &[std::path::PathBuf]) -> String {
    let output = Command::new(NETMON)
        .arg("graph")
        .args(args)
        .args(files)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "netmon graph {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Renders `dot` to `svg` with Graphviz's `dot`, which must take it.
fn render(dot: &str, svg: &Path) {
    let rendered = Command::new("dot")
        .args(["-Tsvg", "-o"])
        .arg(svg)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(dot.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(rendered.success(), "dot refused:\n{dot}");
    assert!(fs::read_to_string(svg).unwrap().contains("<svg"));
}

/// Which address of a host a connection goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4,
    V6,
}

/// `host`'s address of `family`.
fn addr_of(fleet: &Fleet, host: &str, family: Family) -> IpAddr {
    match family {
        Family::V4 => fleet.addr(host).into(),
        Family::V6 => fleet.addr6(host).into(),
    }
}

type Listeners<'a> = BTreeMap<(&'a str, u16, Family), TcpListener>;

/// Connects `times` times from `client` to `server`:`port` over `family`
/// (listening in `listeners`), keeping every connection open; returns both
/// ends.
fn connect(
    fleet: &Fleet,
    listeners: &Listeners,
    (client, server, port, family): (&str, &str, u16, Family),
    times: usize,
) -> Vec<(TcpStream, TcpStream)> {
    let dest = (addr_of(fleet, server, family), port);
    (0..times)
        .map(|_| {
            let stream = fleet.run_in(client, || TcpStream::connect(dest).unwrap());
            let (accepted, _) = listeners[&(server, port, family)].accept().unwrap();
            (stream, accepted)
        })
        .collect()
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn the_map_of_a_fleet_has_every_edge_with_its_ports_and_sides() {
    let hosts = ["web1", "web2", "db1", "cache", "db2", "ext"];
    let fleet = Fleet::new("graph", &hosts);
    let dir = tempfile::tempdir().unwrap();
    let listen = |host, port, family| {
        let addr = (addr_of(&fleet, host, family), port);
        (
            (host, port, family),
            fleet.run_in(host, || TcpListener::bind(addr).unwrap()),
        )
    };
    // ext's link-local address, which web1 and web2 reach each on its own
    // link (their eth0): two nodes, one each.
    let on_link = fleet.run_in("ext", || TcpListener::bind("[::]:8081").unwrap());
    let link_local = |client: &str| {
        let scope = fleet.run_in(client, || {
            // SAFETY: a NUL-terminated interface name.
            unsafe { libc::if_nametoindex(c"eth0".as_ptr()) }
        });
        let dest = SocketAddrV6::new(fleet.link_local("ext"), 8081, 0, scope);
        let stream = fleet.run_in(client, || TcpStream::connect(dest).unwrap());
        (stream, on_link.accept().unwrap().0)
    };
    let listeners: Listeners = [("db1", 5432), ("cache", 6379), ("db2", 5433), ("ext", 8080)]
        .into_iter()
        .flat_map(|(host, port)| [Family::V4, Family::V6].map(|f| listen(host, port, f)))
        .collect();

    // db2 collected, but not when web2 connected to it: only web2's file
    // has that edge.
    stop(collect(&fleet, "db2", dir.path()));
    let monitored = ["web1", "web2", "db1", "cache"];
    let netmons: Vec<_> = monitored
        .iter()
        .map(|host| collect(&fleet, host, dir.path()))
        .collect();
    use Family::{V4, V6};
    let workload = [
        // Both families to one host: one edge.
        (("web1", "db1", 5432, V4), 2),
        (("web1", "db1", 5432, V6), 1),
        (("web2", "db1", 5432, V6), 1),
        (("web1", "cache", 6379, V6), 1),
        (("db1", "cache", 6379, V4), 1),
        (("web2", "db2", 5433, V6), 1),
        // ext runs no netmon at all: each of its addresses is a node.
        (("web1", "ext", 8080, V4), 1),
        (("web1", "ext", 8080, V6), 1),
    ];
    // Held open until every netmon has stopped: the last poll sees each
    // connection with its listener.
    let open: Vec<_> = workload
        .iter()
        .flat_map(|&(edge, times)| connect(&fleet, &listeners, edge, times))
        .chain(["web1", "web2"].map(link_local))
        .collect();
    netmons.into_iter().for_each(stop);
    drop(open);

    let files: Vec<_> = ["web1", "web2", "db1", "cache", "db2"]
        .iter()
        .map(|host| dir.path().join(format!("{host}.json")))
        .collect();
    let map: Value = serde_json::from_str(&graph(&["--format", "json"], &files)).unwrap();
    // A monitored host's node is its name; ext's, its address.
    let id = |host: &str| {
        if host == "ext" {
            fleet.addr(host).to_string()
        } else {
            host.to_owned()
        }
    };
    let ext6 = fleet.addr6("ext").to_string();
    let ext_link = fleet.link_local("ext");
    let seen = |connections: u64| json!(connections);
    let expected: Vec<Value> = [
        ("web1", "db1", "5432/tcp", Some(3), Some(3)),
        ("web2", "db1", "5432/tcp", Some(1), Some(1)),
        ("web1", "cache", "6379/tcp", Some(1), Some(1)),
        ("db1", "cache", "6379/tcp", Some(1), Some(1)),
        ("web2", "db2", "5433/tcp", Some(1), None),
        ("web1", "ext", "8080/tcp", Some(1), None),
        ("web1", &ext6, "8080/tcp", Some(1), None),
        (
            "web1",
            &format!("{ext_link}%web1"),
            "8081/tcp",
            Some(1),
            None,
        ),
        (
            "web2",
            &format!("{ext_link}%web2"),
            "8081/tcp",
            Some(1),
            None,
        ),
    ]
    .iter()
    .map(|&(client, server, port, by_client, by_server)| {
        json!({
            "client": id(client),
            "server": id(server),
            "ports": [port],
            "by_client": by_client.map(seen),
            "by_server": by_server.map(seen),
            "one_sided": client != "ext" && server == "db2",
        })
    })
    .collect();
    let mut actual: Vec<Value> = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| {
            json!({
                "client": edge["client"],
                "server": edge["server"],
                "ports": edge["ports"],
                "by_client": edge["by_client"]["connections"],
                "by_server": edge["by_server"]["connections"],
                "one_sided": edge["one_sided"],
            })
        })
        .collect();
    let key = |edge: &Value| edge.to_string();
    actual.sort_by_key(key);
    let mut expected = expected;
    expected.sort_by_key(key);
    assert_eq!(
        actual,
        expected,
        "edges of the map:\n{}",
        serde_json::to_string_pretty(&map).unwrap()
    );
    // One node per host, whichever family reached it; ext's two
    // addresses are two address nodes.
    let mut nodes: Vec<(String, String)> = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            (
                node["id"].as_str().unwrap().to_owned(),
                node["kind"].to_string(),
            )
        })
        .collect();
    nodes.sort();
    let mut expected_nodes: Vec<(String, String)> = ["web1", "web2", "db1", "cache", "db2"]
        .iter()
        .map(|host| (host.to_string(), r#""host""#.to_owned()))
        .chain(
            [
                id("ext"),
                ext6.clone(),
                format!("{ext_link}%web1"),
                format!("{ext_link}%web2"),
            ]
            .map(|ext| (ext, r#""address""#.to_owned())),
        )
        .collect();
    expected_nodes.sort();
    assert_eq!(nodes, expected_nodes, "{map:#}");
    // Each host's own addresses are both families', its link-local
    // fe80:: left out, in its checkpoint as in the map.
    for host in ["web1", "web2", "db1", "cache", "db2"] {
        let link = Command::new("ip")
            .args(["-n", &fleet.ns(host), "-6", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout);
        assert!(
            link.contains("inet6 fe80:"),
            "{host} has no link-local address to leave out:\n{link}"
        );
        let own = json!([fleet.addr(host).to_string(), fleet.addr6(host).to_string()]);
        let file: Value = serde_json::from_str(
            &fs::read_to_string(dir.path().join(format!("{host}.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(file["addresses"], own, "{host}'s checkpoint");
        let node = map["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["id"] == host)
            .unwrap();
        assert_eq!(node["addresses"], own, "{host}'s node");
    }

    // One host's view: who reaches db1, and what it reaches.
    let db1 = graph(&["--host", &id("db1")], &files);
    let (into, from) = db1.split_once("WHAT").unwrap();
    assert!(
        into.contains(&id("web1")) && into.contains(&id("web2")),
        "{db1}"
    );
    assert!(
        from.contains(&id("cache")) && !from.contains(&id("web1")),
        "{db1}"
    );

    // Or named by one of its addresses, of either family.
    for addr in [
        fleet.addr("db1").to_string(),
        fleet.addr6("db1").to_string(),
    ] {
        assert_eq!(graph(&["--host", &addr], &files), db1, "--host {addr}");
    }

    // Grouped, ext's IPv4 address is its /24's node and its IPv6 one its
    // /64's, in every format.
    let (net4, net6) = ("10.213.0.0/24", "fd10:213::/64");
    let grouped: Value =
        serde_json::from_str(&graph(&["--group", "/24", "--format", "json"], &files)).unwrap();
    let nets: Vec<&Value> = grouped["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|node| node["kind"] == "net")
        .map(|node| &node["id"])
        .collect();
    // A link-local peer's /64 is each host's link's still.
    assert_eq!(
        nets,
        [net4, net6, "fe80::/64%web1", "fe80::/64%web2"],
        "{grouped:#}"
    );
    let text = graph(&["--group", "/24"], &files);
    let csv = graph(&["--group", "/24", "--format", "csv"], &files);
    for net in [net4, net6] {
        let row = |line: &&str| line.starts_with("web1 ") && line.contains(net);
        assert!(text.lines().any(|line| row(&line)), "{text}");
        assert!(
            csv.lines()
                .any(|line| line.starts_with(&format!("web1,{net},8080/tcp,client,false,1,"))),
            "{csv}"
        );
    }
    let dot6 = graph(&["--group", "/24", "--format", "dot"], &files);
    assert!(dot6.contains(&format!("\"web1\" -> \"{net6}\"")), "{dot6}");

    // Graphviz renders the DOT as it is, IPv6 node names and all.
    let svg = dir.path().join("map.svg");
    render(&dot6, &svg);
    render(&graph(&["--format", "dot"], &files), &svg);
    // How docs/access-map.svg is made: from this run, by the real dot.
    if let Some(keep) = std::env::var_os("NETMON_KEEP_MAP_SVG") {
        fs::copy(&svg, keep).unwrap();
    }
}
