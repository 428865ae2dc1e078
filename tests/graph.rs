//! `netmon graph`: the access map of a small fleet, joined from each
//! host's own checkpoint.
//!
//! Five hosts, each a network namespace with its own `netmon run` in proc
//! mode (whose socket tables are its namespace's), plus one host that runs
//! no netmon; real connections between them on distinct ports; then the
//! map, checked edge by edge.
use std::{
    collections::BTreeMap,
    fs,
    net::{TcpListener, TcpStream},
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

/// Connects `times` times from `client` to `server`:`port` (listening in
/// `listeners`), keeping every connection open; returns both ends.
fn connect(
    fleet: &Fleet,
    listeners: &BTreeMap<(&str, u16), TcpListener>,
    (client, server, port): (&str, &str, u16),
    times: usize,
) -> Vec<(TcpStream, TcpStream)> {
    let dest = (fleet.addr(server), port);
    (0..times)
        .map(|_| {
            let stream = fleet.run_in(client, || TcpStream::connect(dest).unwrap());
            let (accepted, _) = listeners[&(server, port)].accept().unwrap();
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
    let listen = |host, port| {
        let addr = (fleet.addr(host), port);
        (
            (host, port),
            fleet.run_in(host, || TcpListener::bind(addr).unwrap()),
        )
    };
    let listeners: BTreeMap<_, _> = [
        listen("db1", 5432),
        listen("cache", 6379),
        listen("db2", 5433),
        listen("ext", 8080),
    ]
    .into_iter()
    .collect();

    // db2 collected, but not when web2 connected to it: only web2's file
    // has that edge.
    stop(collect(&fleet, "db2", dir.path()));
    let monitored = ["web1", "web2", "db1", "cache"];
    let netmons: Vec<_> = monitored
        .iter()
        .map(|host| collect(&fleet, host, dir.path()))
        .collect();
    let workload = [
        (("web1", "db1", 5432), 2),
        (("web2", "db1", 5432), 1),
        (("web1", "cache", 6379), 1),
        (("db1", "cache", 6379), 1),
        (("web2", "db2", 5433), 1),
        // ext runs no netmon at all.
        (("web1", "ext", 8080), 1),
    ];
    // Held open until every netmon has stopped: the last poll sees each
    // connection with its listener.
    let open: Vec<_> = workload
        .iter()
        .flat_map(|&(edge, times)| connect(&fleet, &listeners, edge, times))
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
    let seen = |connections: u64| json!(connections);
    let expected: Vec<Value> = [
        ("web1", "db1", "5432/tcp", Some(2), Some(2)),
        ("web2", "db1", "5432/tcp", Some(1), Some(1)),
        ("web1", "cache", "6379/tcp", Some(1), Some(1)),
        ("db1", "cache", "6379/tcp", Some(1), Some(1)),
        ("web2", "db2", "5433/tcp", Some(1), None),
        ("web1", "ext", "8080/tcp", Some(1), None),
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
    let ext = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|node| node["id"] == id("ext"))
        .unwrap();
    assert_eq!(ext["kind"], "address", "{ext}");

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

    // Graphviz renders the DOT as it is.
    let dot = graph(&["--format", "dot"], &files);
    let svg = dir.path().join("map.svg");
    let rendered = Command::new("dot")
        .args(["-Tsvg", "-o"])
        .arg(&svg)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(dot.as_bytes())?;
            child.wait()
        })
        .unwrap();
    assert!(rendered.success(), "dot refused:\n{dot}");
    assert!(fs::read_to_string(&svg).unwrap().contains("<svg"));
    // How docs/access-map.svg is made: from this run, by the real dot.
    if let Some(keep) = std::env::var_os("NETMON_KEEP_MAP_SVG") {
        fs::copy(&svg, keep).unwrap();
    }
}
