//! Command-line interface: the only module that knows clap.
//!
//! The argument structs here are converted, once, into the plain types the
//! library takes ([`Filter`], [`ListRequest`], [`RulesRequest`], ...), so a
//! report or a rule set can be produced without building a command line.
//! The library's enums become clap values in `values.rs`.
pub mod generate;
mod values;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

use crate::{
    classify::{Class, Family},
    collect::RunConfig,
    ebpf::events::TransportRequest,
    follow::LineFormat,
    graph::{GraphFormat, GraphRequest, Group},
    mode::ModeRequest,
    peer::Direction,
    procnet::TablesRequest,
    report::{
        DiffRequest, Filter, Format, ListRequest, MergeRequest, OwnerPattern, Ports, RuleSelection,
        StatsRequest,
    },
    rules::{RuleFormat, RuleName, RulesRequest},
    store::{NetnsScope, OnCorrupt},
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
    /// The dry run of rules: what NEW has that rules built from BASE with
    /// the same flags would block, (peer, port) by (peer, port), and what
    /// they allow that NEW no longer shows. Exit status 0 when nothing is
    /// new, 1 when something is, 2 on trouble.
    Diff(DiffArgs),
    /// Count peers per class and direction; top peers, ports, processes.
    Stats(StatsArgs),
    /// The access map across hosts, one checkpoint per host: who connects
    /// to whom, on which ports, as seen by the client, the server or both.
    /// An edge between two monitored hosts that only one of them recorded
    /// is flagged one-sided (NAT, a proxy, or a host not collecting).
    Graph(GraphArgs),
    /// Print nftables, ipset or iptables rules allowing what the peers
    /// did: each peer's address to our ports it connected to (an input
    /// set and chain, matching source addresses), and our connections to
    /// its ports (an output set and chain, matching destinations), in the
    /// fewest CIDR blocks per port; --direction keeps one of the two,
    /// --any-port allows addresses on every port. Loading them filters
    /// nothing until you hook them in; review them first.
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

    /// Seconds to wait for another netmon's lock on --output: one being
    /// restarted holds it while it writes its final checkpoint, and this
    /// one collects meanwhile. Still held after that, it is refused as a
    /// second collector on the same file.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub lock_wait: u64,

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
            lock_wait: Duration::from_secs(args.lock_wait),
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

/// The files a report reads.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// netmon checkpoints or old poller address lists; peers in several
    /// files are merged.
    #[arg(value_name = "FILE", default_value = DEFAULT_OUTPUT)]
    pub files: Vec<PathBuf>,
}

/// Which peers a report keeps; every filter given must match.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Only peers of this class (repeat for several).
    #[arg(long = "class", value_name = "CLASS")]
    pub classes: Vec<Class>,

    /// Only IPv4 (4) or only IPv6 (6) peers (in `rules`, the other
    /// family's set is then empty: a hooked chain drops that family).
    #[arg(long, value_name = "4|6")]
    pub family: Option<Family>,

    /// Only peers that connected to us (in) or that we connected to (out).
    #[arg(long)]
    pub direction: Option<Direction>,

    /// Only peers last seen within this long, such as 7d or 12h.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,

    /// Which network namespaces' peers: `host` (the one netmon ran in),
    /// `all`, or one by its inode number, as `lsns -t net` shows it.
    #[arg(long, value_name = "host|all|ID", default_value = "host", value_parser = values::netns)]
    pub netns: NetnsScope,

    /// Only peers an owner matching PATTERN talked to: a systemd unit or
    /// container, `*` and `?` as wildcards (`'*.service'`,
    /// `'container:3f4e*'`, `'pod:default/*'`); repeat for several.
    #[arg(long = "owner", value_name = "PATTERN")]
    pub owners: Vec<String>,
}

impl From<FilterArgs> for Filter {
    fn from(args: FilterArgs) -> Self {
        Self {
            classes: args.classes,
            family: args.family,
            direction: args.direction,
            since: args.since,
            netns: args.netns,
            owners: args.owners.into_iter().map(OwnerPattern::new).collect(),
        }
    }
}

/// What rules allow: `rules`' and `diff`'s selection flags.
#[derive(Debug, Args)]
pub struct SelectionArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// Allow each peer on any port and protocol, by address alone, rather
    /// than only on the TCP and UDP ports it was seen on.
    #[arg(long)]
    pub any_port: bool,
}

impl From<SelectionArgs> for RuleSelection {
    fn from(args: SelectionArgs) -> Self {
        Self {
            filter: args.filter.into(),
            ports: if args.any_port {
                Ports::Any
            } else {
                Ports::Observed
            },
        }
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

impl From<ListArgs> for ListRequest {
    fn from(args: ListArgs) -> Self {
        Self {
            files: args.inputs.files,
            filter: args.filter.into(),
            format: args.format,
        }
    }
}

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// One checkpoint per host (netmon 0.2 and later record each host's own
    /// addresses, so hosts' files can be joined).
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub filter: FilterArgs,

    /// How peers that are no monitored host become nodes.
    #[arg(long, value_enum, default_value_t = Group::None)]
    pub group: Group,

    /// Only this host's edges: who reaches it on which ports, and what it
    /// reaches. HOST is its name or one of its own addresses.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
}

impl From<GraphArgs> for GraphRequest {
    fn from(args: GraphArgs) -> Self {
        Self {
            files: args.files,
            filter: args.filter.into(),
            group: args.group,
            host: args.host,
            format: args.format,
        }
    }
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

impl From<MergeArgs> for MergeRequest {
    fn from(args: MergeArgs) -> Self {
        Self {
            files: args.files,
            output: args.output,
        }
    }
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The file the rules were built from, or a directory of checkpoints
    /// (one per host, with --host).
    pub base: PathBuf,

    /// The file observed since, or a directory of checkpoints.
    pub new: PathBuf,

    /// Diff HOST's rules, as `netmon rules --host HOST` builds them from
    /// every host's file: BASE and NEW are directories of one checkpoint
    /// per host. HOST is its name or one of its own addresses.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// The flags the rules were (or will be) built with; they select from
    /// BASE only, and NEW is checked whole in the directions the rules
    /// filter.
    #[command(flatten)]
    pub selection: SelectionArgs,

    /// How to print the accesses: one a row (text, csv), one an object in
    /// "new" and "gone" (json), or one a line as `+in ADDRESS PORT/tcp`
    /// (plain; `-` for gone, `any` for --any-port).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl From<DiffArgs> for DiffRequest {
    fn from(args: DiffArgs) -> Self {
        Self {
            base: args.base,
            new: args.new,
            selection: args.selection.into(),
            host: args.host,
            format: args.format,
        }
    }
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

impl From<StatsArgs> for StatsRequest {
    fn from(args: StatsArgs) -> Self {
        Self {
            files: args.inputs.files,
            filter: args.filter.into(),
            top: args.top.into(),
        }
    }
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(flatten)]
    pub inputs: InputArgs,

    #[command(flatten)]
    pub selection: SelectionArgs,

    /// The tool the script is for.
    #[arg(long, value_enum)]
    pub format: RuleFormat,

    /// What the sets and chains are named after (nft: peers_v4, giving
    /// sets peers_v4_in and peers_v4_out, IPv6's peers_v4_in6 and
    /// peers_v4_out6, and chains allow_peers_v4_in and allow_peers_v4_out;
    /// ipset: netmon_peers, giving netmon_peers_in, netmon_peers_out and
    /// IPv6's netmon_peers_in6 and netmon_peers_out6; iptables and
    /// ip6tables: NETMON-PEERS, giving chains NETMON-PEERS-IN and
    /// NETMON-PEERS-OUT).
    #[arg(long)]
    pub name: Option<RuleName>,

    /// Build HOST's rules from every host's file (one each, as `netmon
    /// graph` takes them): its own, and the connections other hosts
    /// recorded with it, even while HOST was not collecting. A connection
    /// only the other side recorded is allowed from each of that side's
    /// own addresses, since its file does not say which one it used.
    /// HOST is its name or one of its own addresses.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
}

impl From<RulesArgs> for RulesRequest {
    fn from(args: RulesArgs) -> Self {
        Self {
            files: args.inputs.files,
            selection: args.selection.into(),
            format: args.format,
            name: args.name,
            host: args.host,
        }
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    /// clap checks its definitions only when a command line reaches them.
    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn filter_flags_become_a_filter() {
        let cli = Cli::parse_from([
            "netmon",
            "rules",
            "--format=nft",
            "--class=private",
            "--family=4",
            "--direction=out",
            "--since=12h",
            "a.json",
        ]);
        let Command::Rules(args) = cli.command else {
            panic!("not rules: {:?}", cli.command);
        };
        let request = RulesRequest::from(args);
        assert_eq!(
            request.selection,
            RuleSelection {
                filter: Filter {
                    classes: vec![Class::Private],
                    family: Some(Family::V4),
                    direction: Some(Direction::Outbound),
                    since: Some(Duration::from_secs(12 * 3600)),
                    ..Filter::default()
                },
                ports: Ports::Observed,
            }
        );
        assert_eq!(request.files, [PathBuf::from("a.json")]);
        assert_eq!((request.format, request.name), (RuleFormat::Nft, None));
    }

    #[test]
    fn diff_takes_the_rules_selection_flags() {
        let cli = Cli::parse_from([
            "netmon",
            "diff",
            "--direction=in",
            "--any-port",
            "base.json",
            "new.json",
        ]);
        let Command::Diff(args) = cli.command else {
            panic!("not diff: {:?}", cli.command);
        };
        let request = DiffRequest::from(args);
        assert_eq!(request.selection.ports, Ports::Any);
        assert_eq!(request.selection.filter.direction, Some(Direction::Inbound));
        assert_eq!(request.new, PathBuf::from("new.json"));
    }
}
