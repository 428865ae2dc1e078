//! Start-up after attaching: the output is locked and loaded on a thread
//! while the loop keeps collecting, so that a restart misses only what
//! happens before the programs are attached, however large the file and
//! however long the previous netmon takes to write its final checkpoint.
//!
//! What is collected meanwhile waits in a [`Backlog`], replayed into the
//! [`Recorder`] once the file is in: metrics and `--follow` then see each
//! connection against the file's peers, as they would have in order.
use std::{io, os::unix::net::UnixStream as StdUnixStream, pin::pin, thread, time::Instant};

use anyhow::{Context as _, anyhow, bail};
use log::info;
use tokio::net::UnixStream;

use super::{Collector, Recorder, RunConfig, recorder::Record};
use crate::{
    peer::Connection,
    store::{self, Output, Snapshot, Target},
};

/// Connections the backlog takes (under 50 bytes each) before the loop
/// stops reading events; past it, events wait in the ring buffer and the
/// kernel's dedup map, as they do while a checkpoint is written.
const BACKLOG_CAP: usize = 1 << 18;

/// Connections collected before the file is loaded, in arrival order.
#[derive(Default)]
pub struct Backlog {
    held: Vec<(Connection, u64, u64)>,
}

impl Record for Backlog {
    fn record(&mut self, conn: &Connection, connections: u64, now: u64) {
        self.held.push((*conn, connections, now));
    }
}

impl Backlog {
    fn has_room(&self) -> bool {
        self.held.len() < BACKLOG_CAP
    }

    /// Records what was held, with the times it was seen.
    pub fn replay(self, recorder: &mut Recorder) {
        for (conn, connections, now) in &self.held {
            recorder.record(conn, *connections, *now);
        }
    }
}

/// Locks and loads `target` on a thread of its own, waiting for another
/// netmon's lock up to `--lock-wait` (one being restarted holds it while
/// it writes its final checkpoint), while `collector` fills `backlog`;
/// `stop` (SIGTERM, SIGINT) ends the wait with an error.
///
/// The thread is joined before this returns the file, so no thread
/// outlives it with the capabilities that confinement drops later (on an
/// error netmon exits, the thread with it).
pub async fn load_while_collecting(
    target: Target,
    config: &RunConfig,
    collector: &mut Collector,
    backlog: &mut Backlog,
    stop: impl Future<Output = &'static str>,
) -> anyhow::Result<(Output, Snapshot)> {
    let started = Instant::now();
    let mut stop = pin!(stop);
    // The thread's end of the pair closes when it returns, however it
    // returns: the loop waits for that instead of polling.
    let (done, done_tx) = StdUnixStream::pair().context("cannot make a socket pair")?;
    done.set_nonblocking(true)
        .context("cannot make a socket non-blocking")?;
    let done = UnixStream::from_std(done).context("cannot register a socket with tokio")?;
    let loading = thread::Builder::new()
        .name("netmon-load".into())
        .spawn({
            let (on_corrupt, patience) = (config.on_corrupt, config.lock_wait);
            move || {
                let _done = done_tx;
                store::open_output(target, on_corrupt, patience)
            }
        })
        .context("cannot start the thread that loads --output")?;
    loop {
        tokio::select! {
            arrived = collector.ready(), if backlog.has_room() => {
                collector.fold(arrived?, backlog);
            }
            readable = done.readable() => {
                readable.context("waiting for --output to load")?;
                match done.try_read(&mut [0; 1]) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                    // End of file: the thread has returned.
                    _ => break,
                }
            }
            // Nothing can be written before the file is in, and the wait
            // for a lock may be long: exit at once, the lock (if taken)
            // going with the process.
            signal = &mut stop => bail!(
                "{signal} before --output was loaded (waiting for its lock, or reading it): nothing written"
            ),
        }
    }
    let loaded = loading
        .join()
        .map_err(|_| anyhow!("the thread that loads --output panicked"))??;
    info!(
        "held {} connections while taking the lock and loading ({} ms)",
        backlog.held.len(),
        started.elapsed().as_millis()
    );
    Ok(loaded)
}
