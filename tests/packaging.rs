//! What ships beside the binary: shell completions and man pages (made by
//! netmon from its own clap definitions), the systemd unit and the
//! Kubernetes DaemonSet.
use std::process::{Command, Output};

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
        ["auto", "kprobe", "tracepoint", "proc"]
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
        std::fs::read_to_string(dir.path().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
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
