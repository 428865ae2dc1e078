//! Building both halves of netmon and running cargo on them.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{cmd::run_status, setup};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release { Self::Release } else { Self::Debug }
    }

    fn dir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }
}

/// The repository root (xtask lives one level below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is in the repo")
        .to_path_buf()
}

fn ebpf_dir() -> PathBuf {
    root().join("netmon-ebpf")
}

/// The eBPF objects: the ring-buffer one and the perf-buffer one for
/// kernels before 5.8, each with the variable that hands it to
/// netmon-userspace/build.rs and the extra cargo arguments that build it.
const OBJECTS: [(&str, &str, &[&str]); 2] = [
    (
        "NETMON_EBPF_OBJECT",
        "target/bpfel-unknown-none/release/netmon",
        &[],
    ),
    (
        "NETMON_EBPF_OBJECT_PERF",
        "target/perf/bpfel-unknown-none/release/netmon",
        &["--features", "perf", "--target-dir", "target/perf"],
    ),
];

/// Points netmon-userspace's build script at the objects.
fn with_objects(command: &mut Command) -> &mut Command {
    for (var, path, _) in OBJECTS {
        command.env(var, ebpf_dir().join(path));
    }
    command
}

/// The cargo that runs xtask: the stable toolchain's.
fn cargo() -> Command {
    let mut command = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(root());
    command
}

/// Builds the object, then userspace with it embedded; returns the binary.
pub fn build(profile: Profile) -> anyhow::Result<PathBuf> {
    build_ebpf()?;
    let mut command = cargo();
    command.args(["build", "--package", "netmon-userspace", "--bin", "netmon"]);
    if profile == Profile::Release {
        command.arg("--release");
    }
    run_status(with_objects(&mut command))?;
    Ok(root().join("target").join(profile.dir()).join("netmon"))
}

/// The target of the binaries that go into the kernel matrix's initramfs:
/// static, so the guest needs no libc.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-musl";

/// Release builds of `packages` for [`STATIC_TARGET`]; returns the
/// directory the binaries are in. netmon-userspace/build.rs embeds the eBPF
/// objects from where [`build_ebpf`] leaves them, its default paths.
pub fn build_static(packages: &[&str]) -> anyhow::Result<PathBuf> {
    setup::rust_target(STATIC_TARGET)?;
    build_ebpf()?;
    let mut command = cargo();
    command.args(["build", "--release", "--target", STATIC_TARGET]);
    for package in packages {
        command.args(["--package", package]);
    }
    run_status(&mut command).context("building the static binaries")?;
    Ok(root().join("target").join(STATIC_TARGET).join("release"))
}

/// Builds the eBPF objects with the nightly toolchain.
///
/// The environment cargo gives xtask names the stable toolchain
/// (`RUSTUP_TOOLCHAIN`, `RUSTC`, ...) and would leak into the nested build;
/// it is cleared so the nightly is used throughout.
fn build_ebpf() -> anyhow::Result<()> {
    setup::ebpf_toolchain()?;
    for (_, path, args) in OBJECTS {
        let mut command = nightly_cargo();
        command.args(["build", "--release"]).args(args);
        run_status(&mut command).context("building the eBPF object")?;
        let object = ebpf_dir().join(path);
        let size = fs::metadata(&object)
            .with_context(|| format!("eBPF object {} missing after the build", object.display()))?
            .len();
        if size == 0 {
            bail!("eBPF object {} is empty", object.display());
        }
    }
    Ok(())
}

/// `cargo` of the nightly toolchain, in the eBPF crate, with none of the
/// stable toolchain's variables.
pub fn nightly_cargo() -> Command {
    let mut command = Command::new("rustup");
    command
        .args(["run", "nightly", "cargo"])
        .current_dir(ebpf_dir());
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO",
    ] {
        command.env_remove(var);
    }
    command
}

/// fmt and clippy on both workspaces (and both eBPF builds) and rustdoc on
/// the userspace one, warnings as errors.
pub fn lint() -> anyhow::Result<()> {
    run_status(cargo().args(["fmt", "--all", "--check"]))?;
    run_status(nightly_cargo().args(["fmt", "--check"]))?;
    let clippy = [
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ];
    run_status(with_objects(cargo().args(clippy)))?;
    // Doc comments are the design notes here: a link that no longer
    // resolves is a note gone stale.
    run_status(
        with_objects(cargo().args(["doc", "--workspace", "--no-deps"]))
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    for (_, _, args) in OBJECTS {
        let mut command = nightly_cargo();
        command.args(["clippy", "--release"]).args(args);
        run_status(command.args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

/// Tests run and failed, summed over cargo's per-binary summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestCounts {
    pub passed: u64,
    pub failed: u64,
}

impl TestCounts {
    /// Adds a `test result: ok. 11 passed; 0 failed; ...` line.
    fn add_summary(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(number), Some(what)) = (words.next(), words.next())
                && let Ok(number) = number.parse::<u64>()
            {
                match what {
                    "passed" => self.passed += number,
                    "failed" => self.failed += number,
                    _ => {}
                }
            }
        }
    }
}

/// Every test of the host workspace, those that need root (ignored by plain
/// `cargo test`) included. Integration tests share kernel state
/// (tracepoints, network namespaces), so they run one at a time. cargo's
/// output passes through; its per-binary summaries are added up.
pub fn cargo_test() -> (TestCounts, anyhow::Result<()>) {
    let test = [
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--include-ignored",
        "--test-threads=1",
    ];
    let mut command = cargo();
    with_objects(command.args(test)).stdout(std::process::Stdio::piped());
    let mut counts = TestCounts::default();
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            return (
                counts,
                Err(err).with_context(|| format!("cannot start {command:?}")),
            );
        }
    };
    let stdout = child.stdout.take().expect("piped");
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        println!("{line}");
        counts.add_summary(&line);
    }
    let result = match child.wait() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(anyhow::anyhow!("{command:?} failed: {status}")),
        Err(err) => Err(err).with_context(|| format!("cannot wait for {command:?}")),
    };
    (counts, result)
}

#[cfg(test)]
mod tests {
    use super::TestCounts;

    #[test]
    fn summaries_add_up() {
        let mut counts = TestCounts::default();
        counts.add_summary("test result: ok. 11 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 3.46s");
        counts.add_summary(
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        counts.add_summary("test something ... ok");
        assert_eq!(
            counts,
            TestCounts {
                passed: 13,
                failed: 1
            }
        );
    }
}
