//! Command-line interface.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ebpf::ladder::ModeRequest;

/// Where `netmon run` writes, and where reports read, by default.
pub const DEFAULT_OUTPUT: &str = "/var/lib/netmon/peers.json";

/// Records which IPv4 hosts this server talks to, in both directions, for
/// firewall allow and deny lists.
#[derive(Debug, Parser)]
#[command(name = "netmon", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collect peers until SIGINT or SIGTERM, checkpointing to a JSON file.
    Run(RunArgs),
    /// Report which attach modes this host allows, and verify every eBPF
    /// program with the kernel's verifier without attaching anything.
    Probe,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Checkpoint file; its directory is created if missing. An existing
    /// file (netmon's or the old poller's JSON list) is loaded and extended.
    #[arg(short, long, default_value = DEFAULT_OUTPUT)]
    pub output: PathBuf,

    /// Seconds between checkpoints.
    #[arg(short, long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub interval: u64,

    /// How to watch connections; auto takes the best this host allows.
    #[arg(short, long, value_enum, default_value_t = ModeRequest::Auto)]
    pub mode: ModeRequest,

    /// Milliseconds between socket-table polls in proc mode.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_interval: u64,
}
