//! Whether a running netmon is confined: no capability in any set,
//! `no_new_privs`, and no write outside its output directory.
use std::{fs, path::Path, process::Command};

use crate::harness::Netmon;

/// Each capability set of `pid` that is not empty, and `NoNewPrivs` if it
/// is not set, from /proc/PID/status: empty when netmon holds nothing.
pub fn privileges_left(pid: u32) -> Vec<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_owned()
    };
    let mut left: Vec<String> = ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"]
        .into_iter()
        .map(|set| (set, field(set)))
        .filter(|(_, value)| !value.trim_start_matches('0').is_empty())
        .map(|(set, value)| format!("{set}: {value}"))
        .collect();
    if field("NoNewPrivs") != "1" {
        left.push("NoNewPrivs: 0".into());
    }
    left
}

/// Makes process `pid` itself open `path` for writing (creating it, mode
/// 0600) and close it again, through gdb: netmon never writes anywhere but
/// its output directory on its own, so only the process's own call shows
/// what its confinement allows. Returns the errno of a failed open.
pub fn create_as(pid: u32, path: &Path) -> Result<(), i32> {
    let path = path.to_str().unwrap();
    assert!(!path.contains('"'), "{path}");
    let output = Command::new("gdb")
        .args(["-nx", "-batch", "-p", &pid.to_string()])
        // O_WRONLY | O_CREAT, 0600; then errno, then close what opened.
        .args(["-ex", &format!("print (int) open(\"{path}\", 65, 384)")])
        .args(["-ex", "print ((int *(*)(void)) __errno_location)()[0]"])
        .args(["-ex", "print $1 >= 0 ? (int) close($1) : -1"])
        .output()
        .expect("run gdb");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let values: Vec<i64> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix('$')?.split_once(" = ")?.1.parse().ok())
        .collect();
    let [fd, errno, _] = values[..] else {
        panic!(
            "gdb could not run open(2) in {pid}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    if fd >= 0 { Ok(()) } else { Err(errno as i32) }
}

/// Fails unless `netmon` holds no capability in any set, has
/// `no_new_privs`, and can create files in `output`'s directory but not in
/// the one above it (Landlock: the test kernels have it).
pub fn assert_confined(netmon: &Netmon, output: &Path) {
    let left = privileges_left(netmon.pid());
    assert!(left.is_empty(), "{left:?}\n{}", netmon.log());
    let dir = output.parent().unwrap();
    let inside = dir.join("written-by-netmon");
    assert_eq!(create_as(netmon.pid(), &inside), Ok(()), "{}", netmon.log());
    fs::remove_file(&inside).unwrap();
    let outside = dir.parent().unwrap().join("written-by-netmon");
    assert_eq!(
        create_as(netmon.pid(), &outside),
        Err(libc::EACCES),
        "netmon could create a file outside {}:\n{}",
        dir.display(),
        netmon.log()
    );
    assert!(!outside.exists());
}
