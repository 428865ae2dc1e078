//! `cargo xtask fuzz --seconds N`: every cargo-fuzz target for N seconds.
//!
//! The targets (fuzz/fuzz_targets/) feed arbitrary bytes to the checkpoint
//! loader, the /proc/net parser and the sock_diag notification parser.
//! Each runs on its corpus in fuzz/corpus/, which is minimized afterwards
//! and kept in the repository, so every run starts from what earlier runs
//! found.
use std::process::Command;

use anyhow::Context as _;

use crate::{
    build,
    cmd::{output_of, run_status},
};

/// The targets, as named in fuzz/Cargo.toml.
const TARGETS: [&str; 3] = ["checkpoint", "proc_net", "sock_diag"];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

/// Fuzzes every target, growing and then minimizing its kept corpus.
pub fn fuzz(args: &FuzzArgs) -> anyhow::Result<()> {
    prepare()?;
    for target in TARGETS {
        let corpus = format!("fuzz/corpus/{target}");
        run_target(target, &[&corpus], args.seconds)?;
        run_status(cargo_fuzz().args(["cmin", "--fuzz-dir", "fuzz", target, &corpus]))?;
    }
    Ok(())
}

/// A short run of every target for `cargo xtask test`: the targets must
/// build and survive their corpus. New finds go to a scratch directory, so
/// testing never rewrites the kept corpus.
pub fn smoke(seconds: u64) -> anyhow::Result<()> {
    prepare()?;
    for target in TARGETS {
        let scratch = build::root().join("target/fuzz-scratch").join(target);
        std::fs::create_dir_all(&scratch)?;
        let scratch = scratch.display().to_string();
        run_target(
            target,
            &[&scratch, &format!("fuzz/corpus/{target}")],
            seconds,
        )?;
    }
    Ok(())
}

fn run_target(target: &str, corpora: &[&str], seconds: u64) -> anyhow::Result<()> {
    run_status(
        cargo_fuzz()
            .args(["run", "--fuzz-dir", "fuzz", target])
            .args(corpora)
            .arg("--")
            .arg(format!("-max_total_time={seconds}")),
    )
    .with_context(|| {
        format!("fuzz target {target} failed: the crashing input is under fuzz/artifacts/{target}")
    })
}

/// cargo-fuzz, and the eBPF objects that netmon's library embeds.
fn prepare() -> anyhow::Result<()> {
    build::build(build::Profile::Debug)?;
    if output_of(Command::new("cargo").args(["fuzz", "--version"])).is_err() {
        eprintln!("xtask: installing cargo-fuzz (about 100 s)");
        run_status(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// cargo-fuzz needs the nightly (sanitizers); run from the repository root.
fn cargo_fuzz() -> Command {
    let mut command = build::nightly_cargo();
    command.current_dir(build::root()).arg("fuzz");
    command
}
