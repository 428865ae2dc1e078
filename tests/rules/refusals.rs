//! What `netmon rules` refuses to write, and that it says why.
use std::process::Command;

use super::Fixture;

/// Rules allowing nobody would block everything once hooked: refused.
#[test]
fn an_empty_selection_is_refused() {
    let fixture = Fixture::new();
    let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
        .args(["rules", "--format", "nft", "--class", "multicast"])
        .arg(&fixture.checkpoint)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no peers match --class multicast"),
        "{stderr}"
    );
}

/// A built-in chain, a target or a keyword as `--name` would put the DROP
/// rule straight into the host's chain or give a script the tool refuses:
/// refused before any script is written, saying why.
#[test]
fn reserved_names_are_refused() {
    let fixture = Fixture::new();
    for (format, name, why) in [
        ("iptables", "INPUT", "built-in iptables chain"),
        ("iptables", "FORWARD", "built-in iptables chain"),
        ("iptables", "DROP", "iptables target"),
        ("iptables", "LOG", "iptables target"),
        ("nft", "drop", "nft keyword"),
        ("nft", "set", "nft keyword"),
        ("nft", "counter", "nft keyword"),
        ("ipset", "REJECT", "iptables target"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_netmon"))
            .args(["rules", "--format", format, "--name", name])
            .arg(&fixture.checkpoint)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{format} {name}");
        assert!(output.stdout.is_empty(), "{format} {name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("--name") && stderr.contains(name) && stderr.contains(why),
            "{format} {name}: {stderr}"
        );
    }
}
