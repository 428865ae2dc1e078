//! The owner of each side of a TCP connection in every tracepoint mode:
//! a client in a container's cgroup connects to a service in a systemd
//! unit's, both started by socat inside their cgroup. The outbound peer
//! is the container's (read in the connecting task); the inbound one the
//! service's, read from the accepted socket in softirq: by the helper in
//! raw and plain tracepoint mode, by typed loads in btf-tracepoint mode
//! where the kernel's BTF types the socket's cgroup pointer (5.15+).
use std::path::Path;

use netmon::owner::cgroup2_root;
use netmon_scenario::{
    check::{read_peers, tcp_port},
    files::temp_output,
    harness::{self, one_at_a_time},
    net::Block,
    software::{self, Cgroup, Daemon},
};
use serde_json::json;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");
const PORT: u16 = 7100;

fn owners_of_both_sides(mode: &str, block: Block) {
    let _turn = one_at_a_time();
    let root = cgroup2_root().unwrap();
    let service = Cgroup::new(&root, &format!("system.slice/netmon-test-{mode}.service"));
    let id = format!(
        "{:064x}",
        u64::from(block as u8) << 32 | u64::from(std::process::id())
    );
    let container = Cgroup::new(&root, &format!("netmon-test/docker-{id}.scope"));
    let (server, client) = (block.addr(0, 1), block.addr(0, 2));
    let (_dir, path) = temp_output();
    let netmon = harness::Netmon::ready(NETMON, &path, mode);

    let listen = format!("TCP-LISTEN:{PORT},bind={server},reuseaddr");
    let serve = software::command(
        None,
        Some(&service),
        &["socat", "-u", &listen, "OPEN:/dev/null"],
    );
    let mut daemon = Daemon::start(serve, "socat server");
    software::wait_tcp_listener(server, PORT, &mut daemon);
    let connect = format!("TCP:{server}:{PORT},bind={client}");
    let status = software::command(
        None,
        Some(&container),
        &["socat", "-u", "OPEN:/dev/null", &connect],
    )
    .status()
    .unwrap();
    assert!(status.success(), "socat client: {status}");
    drop(daemon);
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains(&format!("mode: {mode}")), "{log}");

    let peers = read_peers(Path::new(&path));
    let (to_server, from_client) = (&peers[&server], &peers[&client]);
    assert_eq!(to_server["outbound"], 1, "{to_server}");
    assert_eq!(
        to_server["remote_ports"],
        json!([tcp_port(PORT)]),
        "{to_server}"
    );
    assert_eq!(
        to_server["owners"],
        json!([format!("container:{}", &id[..12])]),
        "the client's container owns the outbound peer: {to_server}"
    );
    assert_eq!(from_client["inbound"], 1, "{from_client}");
    assert_eq!(
        from_client["owners"],
        json!([format!("netmon-test-{mode}.service")]),
        "the service owns the inbound peer: {from_client}"
    );
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn btf_tracepoint_mode_names_both_sides_owners() {
    owners_of_both_sides("btf-tracepoint", Block::TcpOwnersBtf);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn raw_tracepoint_mode_names_both_sides_owners() {
    owners_of_both_sides("raw-tracepoint", Block::TcpOwnersRaw);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn tracepoint_mode_names_both_sides_owners() {
    owners_of_both_sides("tracepoint", Block::TcpOwnersTracepoint);
}
