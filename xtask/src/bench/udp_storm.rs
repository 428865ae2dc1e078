//! A UDP storm's worker: a resolver-like service on an explicit port of
//! 0.0.0.0, and clients querying it from kernel-picked ports, each query
//! answered before the next (a resolver's clients wait for their answer).
//!
//! A distinct storm's query i comes from a socket of its own on source
//! address i and goes to destination address i, so each query makes two
//! new peers, as a TCP distinct storm's connection does. A repeated storm
//! keeps one socket per source and sends query i from source i mod n to
//! destination i mod n: the same few peers over and over, the case the
//! kernel's dedup map counts without an event per datagram.
use std::{
    collections::HashSet,
    io::BufRead as _,
    net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::bail;

use super::worker::WorkerArgs;

/// How long a client waits for its answer before counting the query as
/// failed; on loopback, answers come in microseconds.
const ANSWER: Duration = Duration::from_secs(1);
/// How long the worker waits for its service to have heard every source.
const DRAIN: Duration = Duration::from_secs(2);

pub fn worker(args: &WorkerArgs, port: u16) -> anyhow::Result<()> {
    let service = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port))?;
    let heard = Arc::new(Mutex::new(HashSet::new()));
    {
        let heard = Arc::clone(&heard);
        // Never joined: it blocks in recvfrom(2) and ends with the process.
        thread::spawn(move || {
            let mut buf = [0; 512];
            while let Ok((len, from)) = service.recv_from(&mut buf) {
                if let std::net::SocketAddr::V4(from) = from {
                    heard.lock().unwrap().insert(*from.ip());
                }
                let _ = service.send_to(&buf[..len], from);
            }
        });
    }
    let address = |base: IpAddr, i: u64| match super::outcome::nth(base, i % u64::from(args.peers))
    {
        IpAddr::V4(address) => Ok(address),
        IpAddr::V6(address) => bail!("{address}: UDP storms are IPv4"),
    };
    // A repeated storm's clients exist before the storm: binding them is
    // not what it measures.
    let repeated: Vec<UdpSocket> = if args.cycle {
        (0..u64::from(args.peers))
            .map(|i| client(address(args.sources, i)?))
            .collect::<anyhow::Result<_>>()?
    } else {
        Vec::new()
    };
    println!("ready");
    if std::io::stdin().lock().read_line(&mut String::new())? == 0 {
        bail!("the bench closed its end before saying go");
    }

    let (mut made, mut failed) = (0u64, 0u64);
    let mut buf = [0; 512];
    let started = Instant::now();
    let until = started + Duration::from_millis(args.millis);
    let mut i = 0u64;
    while Instant::now() < until && (args.cycle || i < u64::from(args.peers)) {
        let dest = SocketAddrV4::new(address(args.dests, i)?, port);
        let own;
        let socket = if args.cycle {
            &repeated[(i % u64::from(args.peers)) as usize]
        } else {
            own = client(address(args.sources, i)?)?;
            &own
        };
        let query = i.to_le_bytes();
        let answered = socket
            .send_to(&query, dest)
            .and_then(|_| socket.recv_from(&mut buf))
            .is_ok_and(|(len, _)| buf[..len] == query);
        if answered {
            made += 1;
        } else {
            failed += 1;
        }
        i += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    let wanted = (made + failed).min(u64::from(args.peers));
    let drained = Instant::now() + DRAIN;
    let heard = loop {
        let count = heard.lock().unwrap().len() as u64;
        if count >= wanted || Instant::now() > drained {
            break count;
        }
        thread::sleep(Duration::from_millis(10));
    };
    println!("made={made} accepted={heard} failed={failed} secs={secs:.3}");
    Ok(())
}

/// A client socket: bound to `source` on a port the kernel picks.
fn client(source: Ipv4Addr) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind((source, 0))?;
    socket.set_read_timeout(Some(ANSWER))?;
    Ok(socket)
}
