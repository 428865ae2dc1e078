//! `cargo xtask`: build, run and test netmon.
//!
//! Building netmon takes two toolchains: the eBPF object needs the nightly
//! (`-Z build-std=core` for `bpfel-unknown-none`) and bpf-linker, userspace
//! builds on stable with the object embedded. Everything a fresh machine
//! lacks (rust-src, bpf-linker, Debian packages the tests use) is installed
//! here, idempotently, so CI needs nothing but `cargo xtask test`.
mod bench;
mod build;
mod cmd;
mod fuzz;
mod image;
mod man;
mod setup;
mod soak;
mod vm;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, run and test netmon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the eBPF object, then `netmon` with it embedded.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build, then run `netmon` with the given arguments.
    Run {
        #[arg(long)]
        release: bool,
        /// Arguments for netmon, after `--`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Install what the tests need, build, check formatting and lints, and
    /// run every test (unit and privileged integration tests, then the
    /// kernel matrix; needs root).
    Test,
    /// The kernel matrix: boot Debian's kernels (or --kernel ones) under
    /// QEMU and run every attach mode on each.
    VmTest(vm::VmTestArgs),
    /// `cargo fmt --check` and `cargo clippy -D warnings` on both workspaces.
    Lint,
    /// Write the man pages (netmon.1 and one per command) to target/man.
    Man,
    /// Build the container image netmon:VERSION (FROM scratch, static
    /// binary) with podman or docker, and check the binary in it.
    Image,
    /// Measure netmon against issue 6's targets (capture in a connection
    /// storm, kernel and user CPU, memory and times at 1M peers) beside a
    /// psutil poller, and print one table (needs root; about 6 minutes).
    Bench(bench::BenchArgs),
    /// Run every cargo-fuzz target (checkpoint loader, /proc/net and
    /// sock_diag parsers) for --seconds each, keeping the minimized corpus
    /// in fuzz/corpus.
    Fuzz(fuzz::FuzzArgs),
    /// netmon under continuous connection churn for --minutes, failing if
    /// its RSS or open file descriptors keep growing (needs root).
    Soak {
        #[arg(long, default_value_t = 5)]
        minutes: u64,
        /// netmon's --mode: proc soaks the sock_diag path.
        #[arg(long, default_value = "auto")]
        mode: String,
    },
    /// One worker process of the bench's connection storm.
    #[command(hide = true)]
    BenchStorm(bench::WorkerArgs),
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Build { release } => build::build(build::Profile::from_release(release)).map(drop),
        Command::Run { release, args } => {
            let binary = build::build(build::Profile::from_release(release))?;
            // Replaced by netmon rather than waiting for it: a SIGTERM or
            // SIGINT sent to this process must reach netmon, which then
            // writes its last checkpoint.
            let err = std::os::unix::process::CommandExt::exec(
                std::process::Command::new(&binary).args(args),
            );
            Err(anyhow::Error::new(err).context(format!("cannot run {}", binary.display())))
        }
        Command::Test => test(),
        Command::VmTest(args) => vm::vm_test(&args),
        Command::Lint => build::lint(),
        Command::Bench(args) => bench::bench(&args),
        Command::BenchStorm(args) => bench::worker(&args),
        Command::Man => man::man().map(drop),
        Command::Image => image::image().map(drop),
        Command::Fuzz(args) => fuzz::fuzz(&args),
        Command::Soak { minutes, mode } => soak::soak(minutes, &mode),
    }
}

/// Debian packages the integration tests use: `ip` for network namespaces,
/// the firewall tools the generated rules are loaded into, for the
/// shipped files `systemd-analyze` (which runs man(1) to check the unit's
/// Documentation=), setpriv and strace to check its capabilities and
/// system call filter, gdb to make a running netmon try a write its
/// Landlock domain forbids, promtool (Debian ships it only with the
/// Prometheus server) to check `--metrics`, and Graphviz's dot to render
/// `netmon graph --format dot`; real UDP software for tests/udp.rs: dnsmasq
/// (its -base package: the binary without a service that would take port
/// 53 on the host), dig, chrony and socat. chrony ships a service, which
/// the install does not start (see `setup::debian_packages`); on a host
/// with systemd the package takes systemd-timesyncd's place.
const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "ipset",
    "iptables",
    "systemd",
    "man-db",
    "util-linux",
    "strace",
    "gdb",
    "prometheus",
    "graphviz",
    // The UDP enforcement test's DNS server and client: dnsmasq-base is
    // the binary alone, without the system service that would start on
    // install and take the host's port 53.
    "dnsmasq-base",
    "bind9-dnsutils",
    // tests/udp.rs's NTP server and client (installing it replaces
    // systemd-timesyncd), and its plain UDP server and client.
    "chrony",
    "socat",
];

/// Seconds per fuzz target in `cargo xtask test`: enough to prove the
/// targets build and survive their corpus; `cargo xtask fuzz` fuzzes.
const FUZZ_SMOKE_SECONDS: u64 = 15;

fn test() -> anyhow::Result<()> {
    setup::require_root("cargo xtask test loads eBPF programs and creates network namespaces")?;
    setup::debian_packages(TEST_PACKAGES)?;
    setup::debian_packages(vm::PACKAGES)?;
    build::build(build::Profile::Debug)?;
    build::lint()?;
    // The integration tests leave the host kernel's rows for the matrix's
    // table; stale ones from an earlier run must not stand in for them.
    let host_rows = netmon_scenario::result::host_rows_dir(&vm::target_tmp());
    if host_rows.exists() {
        std::fs::remove_dir_all(&host_rows)?;
    }
    // The matrix runs even when a test failed: both results are wanted.
    let (counts, tests) = build::cargo_test();
    let tests = tests.and_then(|()| fuzz::smoke(FUZZ_SMOKE_SECONDS));
    // The container image builds, and the binary in it runs and is static.
    let image = image::image().map(drop);
    let matrix = vm::vm_test(&vm::VmTestArgs::default());
    let result = tests.and(image).and(matrix);
    // One closing line for the whole run (the matrix and the image above
    // fail the run on their own); a failed step counts as a failure.
    let failed = counts.failed + u64::from(result.is_err() && counts.failed == 0);
    println!("xtask test: {} passed, {failed} failed", counts.passed);
    result
}
