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
    io::{BufRead as _, BufReader, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    compare::Block,
    netns::Netns,
    outcome::{Made, Outcome},
};

pub use super::outcome::{Pattern, REPEATED_PEERS, Ranges};

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

/// The workers of one storm, started and waiting for [`Storm::go`].
pub struct Storm {
    block: Block,
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
        let block_of = match family {
            Family::V4 => Block::new(
                Ipv4Addr::new(127, first, 0, 0).into(),
                Ipv4Addr::new(127, first + BLOCK_OCTETS - 1, 255, 255).into(),
            ),
            Family::V6 => {
                let prefix = Family::v6_prefix(block).to_bits();
                Block::new(
                    Ipv6Addr::from(prefix).into(),
                    Ipv6Addr::from(prefix | u128::from(u64::MAX)).into(),
                )
            }
        };
        let mut storm = Self {
            block: block_of,
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
        Ok(Outcome::new(self.pattern, self.block, self.ranges, made))
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
