//! Command-line interface.
use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum, builder::PossibleValue};

use crate::{
    classify::Class,
    collect::RunConfig,
    ebpf::events::TransportRequest,
    follow::LineFormat,
    mode::ModeRequest,
    peer::Direction,
    procnet::TablesRequest,
    report::Format,
    rules::{RuleFormat, RuleName},
    store::OnCorrupt,
};

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
    /// Print the recorded peers, sorted numerically and classified.
    List(ListArgs),
    /// Combine several files (from several hosts, or old poller lists)
    /// into one checkpoint.
    Merge(MergeArgs),
    /// Show peers NEW has that BASE lacks, and the reverse: what rules
    /// built from BASE would now block. Exit status 0 when nothing is new,
    /// 1 when something is, 2 on trouble.
    Diff(DiffArgs),
    /// Count peers per class and direction; top peers, ports, processes.
    Stats(StatsArgs),
    /// Print the peers as nftables, ipset or iptables rules, aggregated
    /// into the fewest CIDR blocks. Loading them filters nothing until you
    /// hook them in; review them first.
    Rules(RulesArgs),
    /// Print a shell completion script: `source <(netmon completions bash)`,
    /// or save it where the shell loads completions from.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (netmon.1 and one per command) into DIR; used by
    /// `cargo xtask man`, so hidden.
    #[command(hide = true)]
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

impl Command {
    /// The exit status for an error: `diff` keeps 1 for "something new".
    pub fn failure_status(&self) -> u8 {
        match self {
            Self::Diff(_) => 2,
            _ => 1,
        }
    }
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

    /// Milliseconds between socket-table polls in proc mode. By default
    /// 100, or 1000 where netlink reports every socket closed between
    /// polls: polls then only find connections still open, and each walks
    /// every socket the kernel has, TIME_WAIT ones included.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub poll_interval: Option<u64>,

    /// How eBPF events reach netmon: the BPF ring buffer (Linux 5.8+) or
    /// per-CPU perf buffers; auto probes the kernel.
    #[arg(long, value_enum, default_value_t = TransportRequest::Auto)]
    pub transport: TransportRequest,

    /// Size of the eBPF ring buffer in KiB, a power of two from 4. Events
    /// that do not fit are counted as lost (and logged at each checkpoint);
    /// their peers still reach the file through the kernel's dedup map.
    #[arg(long, value_name = "KIB", default_value_t = crate::ebpf::RING_BYTES / 1024, value_parser = ring_buffer_kib)]
    pub ring_buffer: u32,

    /// What to do when --output holds something unreadable as peers:
    /// refuse to start, or move it aside as PATH.corrupt-TIMESTAMP and
    /// start fresh.
    #[arg(long, value_enum, default_value_t = OnCorrupt::Refuse)]
    pub on_corrupt: OnCorrupt,

    /// Most peers to keep; new peers beyond it are counted as dropped and
    /// warned about, so a flood cannot exhaust memory.
    #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_peers: u64,

    /// The socket tables read by proc mode and the start-up scan: those of
    /// netmon's network namespace by default. In a container that shares
    /// the host's pid namespace, /proc/1/net holds the host's.
    #[arg(long, value_name = "DIR", default_value = "/proc/net")]
    pub proc_net: PathBuf,

    /// How proc mode and the start-up scan read the socket tables: over
    /// netlink (sock_diag, as ss does; proc mode then also hears of every
    /// socket closed between polls) or as the text in --proc-net; auto
    /// takes netlink where the kernel has it.
    #[arg(long, value_enum, default_value_t = TablesRequest::Auto)]
    pub socket_tables: TablesRequest,

    /// Serve Prometheus metrics at http://ADDR/metrics, such as
    /// 127.0.0.1:9464. Bound at start-up, before capabilities are dropped.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Print a line on stdout the moment a peer is first seen in a
    /// direction: time, direction, address, class, port, process.
    #[arg(long)]
    pub follow: bool,

    /// With --follow: one JSON object per line, for log shippers.
    #[arg(long, requires = "follow")]
    pub json: bool,
}

impl From<RunArgs> for RunConfig {
    fn from(args: RunArgs) -> Self {
        Self {
            output: args.output,
            interval: Duration::from_secs(args.interval),
            mode: args.mode,
            poll_interval: args.poll_interval.map(Duration::from_millis),
            transport: args.transport,
            ring_bytes: args.ring_buffer * 1024,
            on_corrupt: args.on_corrupt,
            max_peers: usize::try_from(args.max_peers).unwrap_or(usize::MAX),
            proc_net: args.proc_net,
            socket_tables: args.socket_tables,
            metrics: args.metrics,
            // `--follow` and `--json` as the one choice they make.
            follow: match (args.follow, args.json) {
                (false, _) => None,
                (true, false) => Some(LineFormat::Text),
                (true, true) => Some(LineFormat::Json),
            },
        }
    }
}

/// `--mode`.
impl ValueEnum for ModeRequest {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Self::Auto,
            Self::Kprobe,
            Self::RawTracepoint,
            Self::Tracepoint,
            Self::Proc,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Auto => PossibleValue::new("auto").help(
                "The best mode this host allows: kprobe, then raw-tracepoint, then tracepoint, then proc",
            ),
            Self::Kprobe => PossibleValue::new("kprobe"),
            Self::RawTracepoint => PossibleValue::new("raw-tracepoint"),
            Self::Tracepoint => PossibleValue::new("tracepoint"),
            Self::Proc => PossibleValue::new("proc"),
        })
    }
}

/// `--socket-tables`.
impl ValueEnum for TablesRequest {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Auto, Self::Netlink, Self::Procfs]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Auto => PossibleValue::new("auto")
                .help("Netlink where the kernel has sock_diag, else the /proc/net text"),
            Self::Netlink => PossibleValue::new("netlink").help(
                "NETLINK_SOCK_DIAG dumps (CONFIG_INET_DIAG), plus destroy notifications in proc mode",
            ),
            Self::Procfs => PossibleValue::new("procfs").help("The text under --proc-net"),
        })
    }
}

/// `--on-corrupt`.
impl ValueEnum for OnCorrupt {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Refuse, Self::Backup]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Self::Refuse => PossibleValue::new("refuse")
                .help("Exit non-zero naming the file and the problem; leave it untouched"),
            Self::Backup => PossibleValue::new("backup")
                .help("Rename it to PATH.corrupt-TIMESTAMP, say so, and start fresh"),
        })
    }
}

/// The files a report reads.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// netmon checkpoints or old poller address lists; peers in several
    /// files are merged.
    #[arg(value_name = "FILE", default_value = DEFAULT_OUTPUT)]
    pub files: Vec<PathBuf>,
}

/// Which peers a report keeps; every filter given must match.
#[derive(Debug, Default, Args)]
pub struct FilterArgs {
    /// Only peers of this class (repeat for several).
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<Class>,

    /// Only peers that connected to us (in) or that we connected to (out).
    #[arg(long)]
    pub direction: Option<Direction>,

    /// Only peers last seen within this long, such as 7d or 12h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
}

impl FilterArgs {
    /// Whether no filter was given, so every peer matches.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.direction.is_none() && self.since.is_none()
    }
}

/// As the flags that select the same peers.
impl fmt::Display for FilterArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes = self.classes.iter().map(|class| format!("--class {class}"));
        let direction = self.direction.map(|d| format!("--direction {d}"));
        let since = self
            .since
            .map(|since| format!("--since {}", humantime::format_duration(since)));
        let flags: Vec<_> = classes.chain(direction).chain(since).collect();
        f.write_str(&flags.join(" "))
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub inputs: InputArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The files to combine.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Where to write the merged checkpoint (atomically; it may be one of
    /// the inputs).
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The set the rules were built from.
    pub base: PathBuf,

    /// The set observed since.
    pub new: PathBuf,

    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub inputs: InputArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// Rows in each top list.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    pub top: u16,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    pub inputs: InputArgs,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// The tool the script is for.
    #[arg(long, value_enum)]
    pub format: RuleFormat,

    /// The set (nft: peers_v4, ipset: netmon_peers) or chain (iptables:
    /// NETMON-PEERS) to fill.
    #[arg(long)]
    pub name: Option<RuleName>,
}

impl ValueEnum for Direction {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Inbound, Self::Outbound]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

/// `--ring-buffer`: the kernel wants a power-of-two number of pages.
fn ring_buffer_kib(text: &str) -> Result<u32, String> {
    let kib: u32 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of KiB"))?;
    if kib < 4 || !kib.is_power_of_two() || kib > 1 << 20 {
        return Err(format!(
            "{kib} KiB: must be a power of two from 4 to 1048576"
        ));
    }
    Ok(kib)
}
