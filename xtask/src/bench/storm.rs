//! The connection storm: several worker processes (this binary, re-run
//! with the hidden `bench-storm` subcommand) each connecting as fast as
//! they can to a listener of their own on 0.0.0.0, for a fixed time.
//!
//! Processes, not threads: netmon's kernel side keys its counts by pid and
//! runs per CPU, and a storm from one process would not show what many
//! clients on a busy server do. Every connection of a distinct storm comes
//! from a source address of its own and goes to a destination of its own,
//! so each adds two peers (one outbound, one inbound) and a collector that
//! misses one connection shows it in its count. Every other connection is
//! closed with RST (SO_LINGER 0), the rest gracefully, as the integration
//! tests' workload does: real servers see both, and only the graceful ones
//! leave a TIME_WAIT socket a poller can find later.
//!
//! An IPv6 storm ([`Family::V6`]) does the same between addresses of a
//! unique-local /64 that its namespace routes to itself (netns.rs).
use std::{
    collections::HashSet,
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

use super::netns::Netns;

/// Worker processes per storm: two per core keep every core busy while
/// one worker waits on the handshake. More only adds scheduling.
pub fn workers() -> u8 {
    let cores = thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u8::try_from(cores * 2)
        .unwrap_or(MAX_WORKERS)
        .min(MAX_WORKERS)
}

/// Each worker of a storm takes its addresses from a /15 of its own, so
/// at most this many fit in one block of [`BLOCK_OCTETS`].
const MAX_WORKERS: u8 = 4;
/// Second octets a worker's destinations (or sources) span: a /15.
const WORKER_OCTETS: u8 = 2;
/// Second octets one storm's addresses use: a /15 of destinations and one
/// of sources per worker. Storm `b` uses 127.(100 + 16b) to
/// 127.(115 + 16b), so no storm can count another's peers.
const BLOCK_OCTETS: u8 = 2 * WORKER_OCTETS * MAX_WORKERS;
const FIRST_OCTET: u8 = 100;
/// Addresses in a worker's /15, from .0.1 on: the most connections a
/// distinct storm's worker makes. A /16 could run out before a pair's
/// storm ended when the host was quick.
const PER_WORKER: u32 = (1 << 17) - 2;
/// Peers per worker in a repeated storm: "a few peers connecting over and
/// over", each direction.
pub const REPEATED_PEERS: u32 = 4;
/// How long a worker waits for its acceptor to catch up after the storm.
const DRAIN: Duration = Duration::from_secs(2);
/// The accept queue: deep enough that the acceptor falling behind for a
/// moment does not drop handshakes (which would stall connects for 1 s).
const BACKLOG: i32 = 4096;

/// What the workers exchange: TCP connections, or UDP datagrams with a
/// service (udp_storm.rs).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// The UDP service of worker `w` listens on this port plus `w`, on
/// 0.0.0.0 of the storm's own namespace: an explicit port, as a
/// resolver's is.
const UDP_PORT: u16 = 5300;

/// The storm's address family.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The /64 storm `block` takes its IPv6 addresses from: unique-local,
    /// routed to `lo` inside the storm's namespace only.
    pub fn v6_prefix(block: u8) -> Ipv6Addr {
        Ipv6Addr::new(0xfdbe, 0x4e4d, 0, u16::from(block), 0, 0, 0, 0)
    }
}

/// Whether every connection brings new peers or the same few again.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Distinct,
    Repeated,
}

impl Pattern {
    fn peers(self) -> u32 {
        match self {
            Self::Distinct => PER_WORKER,
            Self::Repeated => REPEATED_PEERS,
        }
    }
}

/// `cargo xtask bench-storm`: one worker of a storm (hidden; run by the
/// bench). Prints `ready`, waits for a line on stdin, connects for
/// `--millis`, then prints `made=N accepted=M failed=F secs=S`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// Connection i goes to DESTS + 1 + (i mod PEERS).
    #[arg(long)]
    pub(super) dests: IpAddr,
    /// ... from SOURCES + 1 + (i mod PEERS), of the same family.
    #[arg(long)]
    pub(super) sources: IpAddr,
    #[arg(long)]
    pub(super) peers: u32,
    /// Cycle through the PEERS addresses; without it, stop after PEERS
    /// connections.
    #[arg(long)]
    pub(super) cycle: bool,
    #[arg(long)]
    pub(super) millis: u64,
    /// Datagrams to a UDP service on this port instead of connections:
    /// `made` counts answered queries, `accepted` the sources it heard.
    #[arg(long)]
    pub(super) udp_port: Option<u16>,
}

/// A worker's result line.
struct Made {
    connections: u64,
    accepted: u64,
    failed: u64,
    secs: f64,
}

pub fn worker(args: &WorkerArgs) -> anyhow::Result<()> {
    if let Some(port) = args.udp_port {
        return super::udp_storm::worker(args, port);
    }
    let any = match args.dests {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let listener = Socket::new(
        Domain::for_address(SocketAddr::new(any, 0)),
        Type::STREAM,
        None,
    )?;
    listener.bind(&SocketAddr::new(any, 0).into())?;
    listener.listen(BACKLOG)?;
    let port = listener
        .local_addr()?
        .as_socket()
        .context("listener has no port")?
        .port();
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    {
        let accepted = Arc::clone(&accepted);
        // Never joined: it blocks in accept(2) and ends with the process.
        thread::spawn(move || {
            while let Ok((_stream, from)) = listener.accept() {
                if let Some(from) = from.as_socket() {
                    accepted.lock().unwrap().insert(from.ip());
                }
            }
        });
    }
    println!("ready");
    // End of input instead of a line: the bench is gone, so no storm.
    if std::io::stdin().read_line(&mut String::new())? == 0 {
        bail!("the bench closed its end before saying go");
    }

    let address = |base: IpAddr, i: u64| nth(base, i % u64::from(args.peers));
    let (mut made, mut failed) = (0u64, 0u64);
    let started = Instant::now();
    let until = started + Duration::from_millis(args.millis);
    let mut i = 0u64;
    while Instant::now() < until && (args.cycle || i < u64::from(args.peers)) {
        let dest = SocketAddr::new(address(args.dests, i), port);
        match connect_from(address(args.sources, i), dest) {
            Ok(socket) => {
                made += 1;
                if i.is_multiple_of(2) {
                    socket.set_linger(Some(Duration::ZERO))?;
                }
            }
            Err(_) => failed += 1,
        }
        i += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    // Every connection reached ESTABLISHED on both sides before connect
    // returned; accepting them all just empties the queue before exit.
    let drained = Instant::now() + DRAIN;
    let wanted = if args.cycle {
        made.min(u64::from(args.peers))
    } else {
        made
    };
    let accepted = loop {
        let count = accepted.lock().unwrap().len() as u64;
        if count >= wanted || Instant::now() > drained {
            break count;
        }
        thread::sleep(Duration::from_millis(10));
    };
    println!("made={made} accepted={accepted} failed={failed} secs={secs:.3}");
    Ok(())
}

/// Address `base` + 1 + `i`, in `base`'s family.
pub fn nth(base: IpAddr, i: u64) -> IpAddr {
    match base {
        IpAddr::V4(base) => IpAddr::V4(Ipv4Addr::from(base.to_bits() + 1 + i as u32)),
        IpAddr::V6(base) => IpAddr::V6(Ipv6Addr::from(base.to_bits() + 1 + u128::from(i))),
    }
}

/// A TCP connection from `source` (any port) to `dest`.
fn connect_from(source: IpAddr, dest: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&dest.into())?;
    Ok(socket)
}

impl std::str::FromStr for Made {
    type Err = anyhow::Error;

    fn from_str(line: &str) -> anyhow::Result<Self> {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .with_context(|| format!("worker said {line:?}, without {name}="))
        };
        Ok(Self {
            connections: field("made")?.parse()?,
            accepted: field("accepted")?.parse()?,
            failed: field("failed")?.parse()?,
            secs: field("secs")?.parse()?,
        })
    }
}

/// The workers of one storm, started and waiting for [`Storm::go`].
pub struct Storm {
    workers: Vec<Worker>,
    ranges: Vec<Ranges>,
    pattern: Pattern,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The first address of a worker's destinations and of its sources.
#[derive(Clone, Copy)]
struct Ranges {
    dests: IpAddr,
    sources: IpAddr,
    /// Its UDP service's port, in a UDP storm.
    udp_port: Option<u16>,
}

impl Storm {
    /// Starts the workers of storm number `block` (which fixes its
    /// addresses) inside `netns` and waits until each is listening. An
    /// IPv6 storm's namespace must route its /64 to itself
    /// ([`Netns::route_local_v6`]).
    pub fn prepare(
        netns: &Netns,
        family: Family,
        block: u8,
        protocol: Protocol,
        pattern: Pattern,
        duration: Duration,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the xtask binary")?;
        let millis = u64::try_from(duration.as_millis())?;
        let first = block
            .checked_mul(BLOCK_OCTETS)
            .and_then(|offset| offset.checked_add(FIRST_OCTET))
            .filter(|first| first.checked_add(BLOCK_OCTETS - 1).is_some())
            .with_context(|| format!("storm block {block} is past 127.255.0.0/16"))?;
        let mut storm = Self {
            workers: Vec::new(),
            ranges: Vec::new(),
            pattern,
        };
        for w in 0..workers() {
            let (dests, sources) = match family {
                Family::V4 => (
                    IpAddr::V4(Ipv4Addr::new(127, first + WORKER_OCTETS * w, 0, 0)),
                    IpAddr::V4(Ipv4Addr::new(
                        127,
                        first + WORKER_OCTETS * (MAX_WORKERS + w),
                        0,
                        0,
                    )),
                ),
                // Each worker's destinations, and its sources, take a /96.
                Family::V6 => {
                    let at = |n: u8| {
                        IpAddr::V6(Ipv6Addr::from(
                            Family::v6_prefix(block).to_bits() | u128::from(n) << 32,
                        ))
                    };
                    (at(w), at(MAX_WORKERS + w))
                }
            };
            let ranges = Ranges {
                dests,
                sources,
                udp_port: (protocol == Protocol::Udp).then_some(UDP_PORT + u16::from(w)),
            };
            let mut command = Command::new(&exe);
            command
                .arg("bench-storm")
                .args(["--dests", &ranges.dests.to_string()])
                .args(["--sources", &ranges.sources.to_string()])
                .args(["--peers", &pattern.peers().to_string()])
                .args(["--millis", &millis.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped());
            if pattern == Pattern::Repeated {
                command.arg("--cycle");
            }
            if let Some(port) = ranges.udp_port {
                command.args(["--udp-port", &port.to_string()]);
            }
            netns.enter(&mut command);
            let mut child = command
                .spawn()
                .with_context(|| format!("cannot start {exe:?}"))?;
            let (stdin, stdout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
            let mut worker = Worker {
                child,
                stdin,
                stdout: BufReader::new(stdout),
            };
            let line = worker.read_line()?;
            if line != "ready" {
                bail!("storm worker said {line:?} instead of ready");
            }
            storm.workers.push(worker);
            storm.ranges.push(ranges);
        }
        Ok(storm)
    }

    /// Lets every worker go at once and waits for their results.
    pub fn go(mut self) -> anyhow::Result<Outcome> {
        for worker in &mut self.workers {
            worker.stdin.write_all(b"go\n")?;
        }
        let mut made = Vec::new();
        for worker in &mut self.workers {
            made.push(worker.read_line()?.parse::<Made>()?);
        }
        Ok(Outcome {
            pattern: self.pattern,
            secs: made.iter().map(|m| m.secs).fold(0.0, f64::max),
            ranges: self.ranges,
            made,
        })
    }
}

impl Worker {
    fn read_line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        if line.is_empty() {
            bail!("storm worker exited: {:?}", self.child.wait()?);
        }
        Ok(line.trim().to_owned())
    }
}

/// A peer of a UDP storm (IPv4 only) and what its record must say.
pub struct UdpPeer {
    pub ip: Ipv4Addr,
    /// Sent to (outbound), or heard from by the service (inbound).
    pub outbound: bool,
    pub port: u16,
    pub times: u64,
}

/// What a storm did.
pub struct Outcome {
    pattern: Pattern,
    /// The longest worker's time.
    pub secs: f64,
    ranges: Vec<Ranges>,
    made: Vec<Made>,
}

impl Outcome {
    pub fn connections(&self) -> u64 {
        self.made.iter().map(|m| m.connections).sum()
    }

    pub fn failed(&self) -> u64 {
        self.made.iter().map(|m| m.failed).sum()
    }

    pub fn workers(&self) -> usize {
        self.made.len()
    }

    /// Connections per second: each worker's rate, summed. A worker that
    /// runs out of addresses stops early, and its connections over the
    /// longest worker's time would undersell the storm.
    pub fn rate(&self) -> f64 {
        self.made
            .iter()
            .filter(|m| m.secs > 0.0)
            .map(|m| m.connections as f64 / m.secs)
            .sum()
    }

    /// Distinct peers the storm made: destinations connected to plus
    /// sources accepted from.
    pub fn peers_made(&self) -> u64 {
        self.made
            .iter()
            .map(|m| {
                let dests = match self.pattern {
                    Pattern::Distinct => m.connections,
                    Pattern::Repeated => m.connections.min(u64::from(REPEATED_PEERS)),
                };
                dests + m.accepted
            })
            .sum()
    }

    /// Every peer a UDP storm made, with the exchanges it must be counted
    /// for: each destination outbound, each source inbound, both to the
    /// worker's service port. Each peer is one client socket's (one
    /// exchange), however many queries it sent.
    pub fn udp_peers(&self) -> Vec<UdpPeer> {
        let mut peers = Vec::new();
        for (ranges, m) in self.ranges.iter().zip(&self.made) {
            let Some(port) = ranges.udp_port else {
                continue;
            };
            let attempts = m.connections + m.failed;
            let n = attempts.min(u64::from(self.pattern.peers()));
            for i in 0..n {
                let times = 1;
                for (ip, outbound) in [
                    (nth(ranges.dests, i), true),
                    (nth(ranges.sources, i), false),
                ] {
                    let IpAddr::V4(ip) = ip else {
                        continue;
                    };
                    peers.push(UdpPeer {
                        ip,
                        outbound,
                        port,
                        times,
                    });
                }
            }
        }
        peers
    }

    /// How many of `held` are peers of this storm: addresses in the part
    /// of a worker's ranges it used.
    pub fn held(&self, held: impl IntoIterator<Item = IpAddr>) -> u64 {
        let used: Vec<(Ranges, u32)> = self
            .ranges
            .iter()
            .zip(&self.made)
            .map(|(ranges, m)| {
                let attempts = m.connections + m.failed;
                (
                    *ranges,
                    attempts.min(u64::from(self.pattern.peers())) as u32,
                )
            })
            .collect();
        let within = |addr: IpAddr, base: IpAddr, count: u32| {
            let offset = match (addr, base) {
                (IpAddr::V4(addr), IpAddr::V4(base)) => {
                    u128::from(addr.to_bits().wrapping_sub(base.to_bits()))
                }
                (IpAddr::V6(addr), IpAddr::V6(base)) => addr.to_bits().wrapping_sub(base.to_bits()),
                _ => return false,
            };
            (1..=u128::from(count)).contains(&offset)
        };
        held.into_iter()
            .filter(|&addr| {
                used.iter().any(|&(r, count)| {
                    within(addr, r.dests, count) || within(addr, r.sources, count)
                })
            })
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(pattern: Pattern, made: &str) -> Outcome {
        Outcome {
            pattern,
            secs: 2.0,
            ranges: vec![Ranges {
                dests: Ipv4Addr::new(127, 100, 0, 0).into(),
                sources: Ipv4Addr::new(127, 104, 0, 0).into(),
                udp_port: None,
            }],
            made: vec![made.parse().unwrap()],
        }
    }

    #[test]
    fn distinct_storm_counts_each_address_it_used() {
        let storm = outcome(Pattern::Distinct, "made=3 accepted=3 failed=0 secs=2.000");
        assert_eq!(storm.peers_made(), 6);
        assert_eq!(storm.rate(), 1.5);
        let held = [
            Ipv4Addr::new(127, 100, 0, 1),
            Ipv4Addr::new(127, 100, 0, 3),
            Ipv4Addr::new(127, 104, 0, 2),
            // Not this storm's: past what it used, or elsewhere.
            Ipv4Addr::new(127, 100, 0, 4),
            Ipv4Addr::new(127, 100, 0, 0),
            Ipv4Addr::new(127, 0, 0, 1),
        ];
        assert_eq!(storm.held(held.map(IpAddr::V4)), 3);
    }

    #[test]
    fn ipv6_storm_counts_each_address_it_used() {
        let mut storm = outcome(Pattern::Distinct, "made=2 accepted=2 failed=0 secs=2.000");
        let base = Family::v6_prefix(3);
        storm.ranges[0].dests = base.into();
        storm.ranges[0].sources = Ipv6Addr::from(base.to_bits() | 4 << 32).into();
        let held: [IpAddr; 4] = [
            "fdbe:4e4d:0:3::1".parse().unwrap(),
            "fdbe:4e4d:0:3:0:4:0:2".parse().unwrap(),
            // Past what it used, and an IPv4 address of the same offset.
            "fdbe:4e4d:0:3::3".parse().unwrap(),
            Ipv4Addr::new(0, 0, 0, 1).into(),
        ];
        assert_eq!(storm.held(held), 2);
        assert_eq!(nth(base.into(), 1).to_string(), "fdbe:4e4d:0:3::2");
    }

    #[test]
    fn repeated_storm_made_only_a_few_peers() {
        let storm = outcome(Pattern::Repeated, "made=1000 accepted=4 failed=0 secs=2");
        assert_eq!(storm.peers_made(), 2 * u64::from(REPEATED_PEERS));
    }

    #[test]
    fn worker_lines_must_be_complete() {
        assert!("made=1 accepted=1 secs=1".parse::<Made>().is_err());
    }
}
