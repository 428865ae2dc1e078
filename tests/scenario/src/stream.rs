//! A steady stream of connections, each from a new loopback address, made
//! across a restart of netmon: which of them are missing from the file
//! says how long no netmon was collecting.
use std::{
    io,
    net::{Ipv4Addr, SocketAddrV4, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::{net::Net, workload::connect_from};

/// The third octet of the first source; the listener is 127.N.0.1.
const FIRST_SOURCE: u8 = 1;

/// Connections to one listener, each from the next source address of a
/// [`Net`] (127.N.1.1, 127.N.1.2, ...), one per period, on a thread of
/// its own until [`Stream::stop`].
pub struct Stream {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<Vec<Made>>>,
}

/// One connection of a stream: its source, the peer netmon must hold, and
/// when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Made {
    pub source: Ipv4Addr,
    pub at: Instant,
}

impl Stream {
    /// Starts connecting, one connection per `period`, after `enter` has
    /// run on the stream's thread (the bench moves it into a namespace).
    pub fn start(
        net: Net,
        period: Duration,
        enter: impl FnOnce() -> io::Result<()> + Send + 'static,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("nm-stream".into())
            .spawn(move || {
                enter()?;
                connect(net, period, &stopped)
            })
            .expect("start the stream's thread");
        Self { stop, thread }
    }

    /// Stops it; every connection it made, in order.
    pub fn stop(self) -> io::Result<Vec<Made>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the stream's thread panicked")
    }
}

fn connect(net: Net, period: Duration, stop: &AtomicBool) -> io::Result<Vec<Made>> {
    let listener = TcpListener::bind((net.addr(0, 1), 0))?;
    let dest = SocketAddrV4::new(net.addr(0, 1), listener.local_addr()?.port());
    let sources = (FIRST_SOURCE..=u8::MAX).flat_map(|c| (1..u8::MAX).map(move |d| (c, d)));
    let mut made = Vec::new();
    let mut next = Instant::now();
    for (c, d) in sources {
        if stop.load(Ordering::Relaxed) {
            return Ok(made);
        }
        let source = net.addr(c, d);
        let client = connect_from(source, dest)?;
        let at = Instant::now();
        // Accepted and closed at once, as a short request is.
        drop(listener.accept()?);
        drop(client);
        made.push(Made { source, at });
        // Paced against the start, so a slow connection is caught up on.
        next += period;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Err(io::Error::other(format!(
        "the stream ran out of addresses in {net:?} after {} connections",
        made.len()
    )))
}
