//! A TCP storm's worker (`cargo xtask bench-storm`, run by the bench in
//! the storm's namespace): a listener of its own on 0.0.0.0, and
//! connections to it from each source address to each destination
//! address of its ranges, as fast as it can, for a fixed time. A UDP
//! storm's worker is udp_storm.rs.
use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Socket, Type};

use super::outcome::nth;

/// How long a worker waits for its acceptor to catch up after the storm.
const DRAIN: Duration = Duration::from_secs(2);
/// The accept queue: deep enough that the acceptor falling behind for a
/// moment does not drop handshakes (which would stall connects for 1 s).
const BACKLOG: i32 = 4096;

/// `cargo xtask bench-storm`: one worker of a storm (hidden; run by the
/// bench). Prints `ready`, waits for a line on stdin, connects for
/// `--millis`, then prints `made=N accepted=M failed=F secs=S unmade=I,J|-`.
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

/// A TCP storm's worker (a UDP storm's is `udp_storm.rs`).
pub fn tcp(args: &WorkerArgs) -> anyhow::Result<()> {
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
    // Which of its addresses were ever connected: in a repeated storm a
    // peer whose first connection failed may be made by the next.
    let mut connected = vec![false; args.peers as usize];
    let started = Instant::now();
    let until = started + Duration::from_millis(args.millis);
    let mut i = 0u64;
    while Instant::now() < until && (args.cycle || i < u64::from(args.peers)) {
        let dest = SocketAddr::new(address(args.dests, i), port);
        match connect_from(address(args.sources, i), dest) {
            Ok(socket) => {
                made += 1;
                connected[(i % u64::from(args.peers)) as usize] = true;
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
    let used = i.min(u64::from(args.peers)) as usize;
    let unmade: Vec<String> = (0..used)
        .filter(|&k| !connected[k])
        .map(|k| k.to_string())
        .collect();
    let unmade = if unmade.is_empty() {
        "-".to_owned()
    } else {
        unmade.join(",")
    };
    println!("made={made} accepted={accepted} failed={failed} secs={secs:.3} unmade={unmade}");
    Ok(())
}

/// A TCP connection from `source` (any port) to `dest`.
fn connect_from(source: IpAddr, dest: SocketAddr) -> std::io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(dest), Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(source, 0).into())?;
    socket.connect(&dest.into())?;
    Ok(socket)
}
