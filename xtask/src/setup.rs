//! Idempotent installation of what builds and tests need.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::cmd::{output_of, run_status};

/// The bpf-linker release that links with the nightly's own LLVM; newer ones
/// need a system LLVM that Debian 12 does not ship.
const BPF_LINKER_VERSION: &str = "0.10.1";

pub fn require_root(why: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{why}: run it as root");
    }
    Ok(())
}

/// rust-src for the nightly (`-Z build-std`) and bpf-linker.
pub fn ebpf_toolchain() -> anyhow::Result<()> {
    let installed = output_of(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .context(
        "the nightly toolchain is required to build the eBPF object (rustup toolchain list)",
    )?;
    if !installed.lines().any(|line| line.starts_with("rust-src")) {
        eprintln!("xtask: installing rust-src for the nightly toolchain");
        run_status(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let linker = output_of(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if !linker.contains(BPF_LINKER_VERSION) {
        eprintln!("xtask: installing bpf-linker {BPF_LINKER_VERSION} (about 80 s)");
        run_status(Command::new("cargo").args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--locked",
        ]))?;
    }
    Ok(())
}

/// Installs the Debian packages that are not installed yet.
pub fn debian_packages(packages: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .map_or(true, |status| !status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run_status(Command::new("apt-get").args(["update", "-q"]))?;
    let _no_services = NoServiceStarts::install()?;
    run_status(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// A `policy-rc.d` that forbids starting services while packages install:
/// chrony's would query the public NTP pool, prometheus's listen on :9090,
/// and tests start the daemons they need themselves, on their own
/// addresses. Removed when dropped, unless one was there before.
struct NoServiceStarts(Option<&'static str>);

impl NoServiceStarts {
    const PATH: &'static str = "/usr/sbin/policy-rc.d";

    fn install() -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        if std::path::Path::new(Self::PATH).exists() {
            return Ok(Self(None));
        }
        std::fs::write(
            Self::PATH,
            "#!/bin/sh\n# cargo xtask: no service starts while installing\nexit 101\n",
        )
        .with_context(|| format!("cannot write {}", Self::PATH))?;
        std::fs::set_permissions(Self::PATH, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("cannot make {} executable", Self::PATH))?;
        Ok(Self(Some(Self::PATH)))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Adds a Rust target to the toolchain that runs xtask, if it is missing.
pub fn rust_target(target: &str) -> anyhow::Result<()> {
    let installed = output_of(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|line| line.trim() == target) {
        eprintln!("xtask: adding the Rust target {target}");
        run_status(Command::new("rustup").args(["target", "add", target]))?;
    }
    Ok(())
}
