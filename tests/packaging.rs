//! What ships beside the binary: shell completions and man pages (made by
//! netmon from its own clap definitions), the systemd unit and the
//! Kubernetes DaemonSet. Two tests run netmon's programs under the unit's
//! restrictions and need root: `cargo xtask test` runs them.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
    thread,
    time::Duration,
};

use k8s_openapi::{
    api::{apps::v1::DaemonSet, core::v1::Namespace},
    apimachinery::pkg::api::resource::Quantity,
};
use netmon_scenario::{
    confine,
    harness::{Netmon, chosen_mode, eventually, scrape},
    net::metrics_addr,
};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};

#[path = "packaging/unit.rs"]
mod unit;

const NETMON: &str = env!("CARGO_BIN_EXE_netmon");

fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Completes `words` (the last one being typed) with the bash script
/// `netmon completions bash` prints, sourced the way the README says.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let script = format!(
        r#"source <("$NETMON" completions bash) || exit 1
        complete -p netmon >/dev/null || exit 1
        COMP_WORDS=({words}); COMP_CWORD={cword}
        _netmon netmon "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
        printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = words
            .iter()
            .map(|word| format!("'{word}'"))
            .collect::<Vec<_>>()
            .join(" "),
        cword = words.len() - 1,
    );
    let output = run(Command::new("bash")
        .args(["-c", &script])
        .env("NETMON", NETMON));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completions_source_and_complete_commands_and_values() {
    assert_eq!(bash_complete(&["netmon", "r"]), ["run", "rules"]);
    assert_eq!(
        bash_complete(&["netmon", "run", "--mode", ""]),
        [
            "auto",
            "kprobe",
            "btf-tracepoint",
            "raw-tracepoint",
            "tracepoint",
            "proc"
        ]
    );
}

#[test]
fn zsh_and_fish_completions_name_every_command() {
    for shell in ["zsh", "fish"] {
        let output = run(Command::new(NETMON).args(["completions", shell]));
        let script = String::from_utf8(output.stdout).unwrap();
        for command in ["run", "probe", "list", "merge", "diff", "stats", "rules"] {
            assert!(
                script.contains(command),
                "{shell} completions lack {command}:\n{script}"
            );
        }
    }
}

#[test]
fn man_pages_cover_every_command_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    run(Command::new(NETMON).arg("man").arg(dir.path()));
    let page = |name: &str| {
        fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    assert!(page("netmon.1").contains(".TH netmon 1"));
    let run_page = page("netmon-run.1");
    for flag in ["output", "interval", "mode", "max\\-peers"] {
        assert!(
            run_page.contains(&format!("\\-\\-{flag}")),
            "--{flag}:\n{run_page}"
        );
    }
    // The generator's own command stays out of the pages.
    assert!(!dir.path().join("netmon-man.1").exists());
}

/// A file shipped under deploy/.
fn deploy_file(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, text)
}

/// The unit as shipped, but starting the binary under test: verify checks
/// that ExecStart= exists, and the test installs nothing.
fn unit_for_test() -> String {
    let (_, unit) = deploy_file("netmon.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/netmon run"),
        "{unit}"
    );
    unit.replace("/usr/local/bin/netmon", NETMON)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("netmon.service");
    fs::write(&unit, unit_for_test()).unwrap();
    // Documentation= names man pages; verify runs man(1) to find them.
    let man = dir.path().join("man");
    run(Command::new(NETMON).arg("man").arg(man.join("man1")));
    let output = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", &man));
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(complaints.trim().is_empty(), "{complaints}");
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn systemd_units_capabilities_are_enough_to_attach() {
    let set = unit::bounding_set_for_setpriv(&unit_for_test());
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("setpriv");
    command
        .args(["--bounding-set", &set, "--", NETMON, "run", "--output"])
        .arg(dir.path().join("peers.json"));
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    let (status, log) = netmon.stop();
    assert!(status.success(), "{log}");
    let mode = chosen_mode(&log).unwrap_or("-");
    assert!(
        ["kprobe", "btf-tracepoint", "raw-tracepoint", "tracepoint"].contains(&mode),
        "with {set} netmon should attach eBPF programs, not fall back to {mode}:\n{log}"
    );
    assert!(log.contains("dropped all capabilities"), "{log}");
}

/// Starts `netmon run ARGS --output OUTPUT` under the unit's restrictions
/// (see the `unit` module) and waits until it is ready.
fn netmon_under_unit(args: &[&str], output: &Path) -> Netmon {
    let mut command = unit::command(&unit_for_test());
    command.args(["--", NETMON, "run"]).args(args);
    command.arg("--output").arg(output);
    let netmon = Netmon::spawn(command);
    if let Err(err) = netmon.wait_ready() {
        panic!("netmon {args:?} under the unit's settings {err}");
    }
    netmon
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn systemd_units_address_families_leave_the_socket_tables_on_netlink() {
    let dir = tempfile::tempdir().unwrap();
    for mode in ["proc", "auto"] {
        let netmon = netmon_under_unit(&["--mode", mode], &dir.path().join("peers.json"));
        let (status, log) = netmon.stop();
        assert!(status.success(), "{log}");
        assert!(
            log.contains("socket tables: netlink sock_diag"),
            "--mode {mode}: RestrictAddressFamilies= must leave sock_diag to netmon:\n{log}"
        );
    }
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn under_the_systemd_units_settings_netmon_ends_up_confined() {
    for mode in ["auto", "proc"] {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("data/peers.json");
        let netmon = netmon_under_unit(&["--mode", mode], &output);
        confine::assert_confined(&netmon, &output);
        // SAFETY: plain kill(2) on netmon, which this test started.
        unsafe { libc::kill(netmon.pid() as i32, libc::SIGHUP) };
        // A checkpoint (temp file and rename) still works once confined.
        eventually(
            "the SIGHUP checkpoint",
            || (netmon.log().matches("checkpoint: ").count() >= 2).then_some(()),
            || netmon.log(),
        );
        let (status, log) = netmon.stop();
        assert!(status.success(), "{log}");
    }
}

/// Every document of a YAML file, as JSON values.
fn yaml_documents(text: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| serde_json::Value::deserialize(document).expect("valid YAML"))
        .collect()
}

/// `document` read as Kubernetes type `T`. Reading ignores fields `T` does
/// not have, so the typed value is written back and compared: a misspelt
/// or misplaced field is lost on the way and shows up as a difference.
fn kubernetes_object<T: DeserializeOwned + Serialize>(document: &serde_json::Value) -> T {
    let object: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("not a valid {}: {e}", std::any::type_name::<T>()));
    let written = serde_json::to_value(&object).unwrap();
    assert_eq!(
        &written, document,
        "fields Kubernetes does not know (left: as Kubernetes reads it)"
    );
    object
}

/// A memory quantity such as `384Mi`, in bytes.
fn mebibytes(quantity: &Quantity) -> u64 {
    let mib = quantity.0.strip_suffix("Mi").expect("memory in Mi");
    mib.parse::<u64>().unwrap() << 20
}

#[test]
fn daemonset_is_valid_kubernetes_and_privileged_on_every_node() {
    let (_, text) = deploy_file("kubernetes/daemonset.yaml");
    let documents = yaml_documents(&text);
    let [namespace, daemonset] = documents.as_slice() else {
        panic!("expected a Namespace and a DaemonSet, got {documents:?}");
    };
    let namespace: Namespace = kubernetes_object(namespace);
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels["pod-security.kubernetes.io/enforce"], "privileged",
        "Pod Security admission would reject a privileged pod"
    );

    let daemonset: DaemonSet = kubernetes_object(daemonset);
    assert_eq!(daemonset.metadata.namespace, namespace.metadata.name);
    let spec = daemonset.spec.unwrap();
    let template_labels = spec.template.metadata.unwrap().labels.unwrap();
    for (key, value) in spec.selector.match_labels.unwrap() {
        assert_eq!(
            template_labels[&key], value,
            "the selector must match the pods"
        );
    }
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.host_pid, Some(true));
    let tolerations = pod.tolerations.unwrap();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists") && t.key.is_none()),
        "a toleration of every taint, to run on every node: {tolerations:?}"
    );
    let data = pod
        .volumes
        .unwrap()
        .into_iter()
        .find_map(|volume| volume.host_path.filter(|h| h.path == "/var/lib/netmon"));
    assert!(data.is_some(), "the data directory is each node's own");

    let [container] = pod.containers.as_slice() else {
        panic!("one container");
    };
    let security = container.security_context.as_ref().unwrap();
    assert_eq!(security.privileged, Some(true));
    let args = container.args.as_ref().unwrap();
    let resources = container.resources.as_ref().unwrap();
    let limit = mebibytes(&resources.limits.as_ref().unwrap()["memory"]);
    assert!(resources.requests.as_ref().unwrap().contains_key("memory"));
    // The set must hit --max-peers before the pod hits its memory limit:
    // 84-115 bytes a peer measured (a loaded set, a set grown live) above
    // a start-up peak of about 30 MiB; 128 and 40 MiB for margin.
    let max_peers: u64 = args
        .iter()
        .find_map(|arg| arg.strip_prefix("--max-peers="))
        .expect("--max-peers bounds the memory the limit is sized for")
        .parse()
        .unwrap();
    assert!(
        (40 << 20) + max_peers * 128 < limit,
        "--max-peers={max_peers} does not fit in {limit} bytes"
    );
    assert_flags_exist(args);
}

/// Each `--flag` of a `netmon run` command line is one netmon has.
fn assert_flags_exist(args: &[String]) {
    assert_eq!(args[0], "run");
    let help = run(Command::new(NETMON).args(["run", "--help"]));
    let help = String::from_utf8(help.stdout).unwrap();
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "netmon run has no {flag}"
        );
    }
}

/// The system calls a `SystemCallFilter=` line allows, its groups
/// expanded as `systemd-analyze syscall-filter` lists them.
fn allowed_syscalls(filter: &str) -> BTreeSet<String> {
    let listing = run(Command::new("systemd-analyze").arg("syscall-filter"));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let mut groups = BTreeMap::<&str, Vec<&str>>::new();
    let mut group = None;
    for line in listing.lines() {
        let item = line.trim();
        if line.starts_with('@') {
            group = Some(item);
        } else if let Some(group) = group
            && !item.is_empty()
            && !item.starts_with('#')
        {
            groups.entry(group).or_default().push(item);
        }
    }
    fn expand(item: &str, groups: &BTreeMap<&str, Vec<&str>>, into: &mut BTreeSet<String>) {
        match groups.get(item) {
            Some(members) => members.iter().for_each(|m| expand(m, groups, into)),
            None => {
                into.insert(item.to_owned());
            }
        }
    }
    let mut allowed = BTreeSet::new();
    for item in filter.split_whitespace() {
        expand(item, &groups, &mut allowed);
    }
    allowed
}

/// The pid of `parent`'s first child: the traced netmon under strace.
fn first_child(parent: u32) -> i32 {
    let children = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

/// The system calls netmon makes in `mode` through start-up, a metrics
/// scrape, `--follow`, periodic and SIGHUP checkpoints and SIGTERM.
fn syscalls_of_a_run(mode: &str) -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let metrics = metrics_addr();
    let mut command = Command::new("strace");
    command.args(["-f", "-qq", "-o"]).arg(&trace).arg("--");
    command.args([
        NETMON,
        "run",
        "--mode",
        mode,
        "--interval",
        "1",
        "--follow",
        "--json",
    ]);
    command.args(["--metrics", &metrics, "--output"]);
    command.arg(dir.path().join("peers.json"));
    let netmon = Netmon::spawn(command);
    netmon.wait_ready().unwrap();
    scrape(&metrics, None);
    thread::sleep(Duration::from_millis(1500));
    // strace holds on to signals meant for it; netmon is its child.
    let traced = first_child(netmon.pid());
    for signal in [libc::SIGHUP, libc::SIGTERM] {
        // SAFETY: plain kill(2) on netmon, which this test started.
        unsafe { libc::kill(traced, signal) };
        thread::sleep(Duration::from_millis(300));
    }
    let (status, log) = netmon.wait();
    assert!(status.success(), "{log}");
    fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let call = line.split_once(' ')?.1.trim_start();
            // With --follow's writer thread, strace splits a call that
            // another thread's interrupts: `accept4(... <unfinished ...>`,
            // then `<... accept4 resumed>...`.
            let name = match call.strip_prefix("<... ") {
                Some(resumed) => resumed.split_once(' ')?.0,
                None => call.split_once('(')?.0,
            };
            Some(name.to_owned())
        })
        .collect()
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn systemd_units_syscall_filter_allows_every_call_netmon_makes() {
    let unit = unit_for_test();
    let filter = unit
        .lines()
        .find_map(|line| line.strip_prefix("SystemCallFilter="))
        .expect("the unit filters system calls");
    let allowed = allowed_syscalls(filter);
    for mode in ["auto", "proc"] {
        let used = syscalls_of_a_run(mode);
        let denied: Vec<_> = used.difference(&allowed).collect();
        assert!(
            denied.is_empty(),
            "--mode {mode} calls {denied:?}, which SystemCallFilter={filter} denies"
        );
    }
}
