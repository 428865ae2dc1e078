//! The thread that writes checkpoints, so a slow disk stalls nothing.
//!
//! The run loop serializes the set in chunks between folding events, and
//! sends each chunk here through a bounded queue: memory stays bounded,
//! and a full queue only delays the next chunk, never the events. This
//! thread writes them into a temp file, fsyncs and renames it (the
//! target's atomic write), and reports the result back.
use std::{
    io,
    thread::{self, JoinHandle},
};

use anyhow::Context as _;
use tokio::sync::mpsc;

use crate::store::Target;

/// Chunks queued at most: with chunks of [`CHUNK_BYTES`], 2 MiB.
const QUEUE_CHUNKS: usize = 8;
/// About the bytes of one chunk: a thousand-odd peers, well under a
/// millisecond to serialize, so events are drained that often.
pub const CHUNK_BYTES: usize = 256 << 10;

/// A piece of the checkpoint being written.
pub struct Piece {
    pub bytes: Vec<u8>,
    /// The checkpoint is complete with this piece: sync and rename it.
    pub last: bool,
}

/// The writer thread and both ends of its queues.
pub struct Background {
    pieces: mpsc::Sender<Piece>,
    written: mpsc::UnboundedReceiver<anyhow::Result<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts the thread. Called once netmon is confined: a thread inherits
    /// the confinement of the one that starts it.
    pub fn start(target: &Target) -> anyhow::Result<Self> {
        let target = target.try_clone().with_context(|| {
            format!(
                "cannot hold {} for the writer thread",
                target.path().display()
            )
        })?;
        let (pieces, mut queue) = mpsc::channel(QUEUE_CHUNKS);
        let (report, written) = mpsc::unbounded_channel();
        let thread = thread::Builder::new()
            .name("netmon-checkpoint".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    let mut ended = false;
                    let result = target.write_atomically_with(|out| {
                        write_pieces(first, &mut queue, out, &mut ended)
                    });
                    // A write that failed early leaves the rest of its
                    // pieces queued: none may start the next checkpoint.
                    while !ended {
                        match queue.blocking_recv() {
                            Some(piece) => ended = piece.last,
                            None => return,
                        }
                    }
                    if report.send(result).is_err() {
                        return;
                    }
                }
            })
            .context("cannot start the thread that writes checkpoints")?;
        Ok(Self {
            pieces,
            written,
            thread: Some(thread),
        })
    }

    /// Waits for room in the queue for one more piece.
    pub async fn room(&self) -> Option<mpsc::OwnedPermit<Piece>> {
        self.pieces.clone().reserve_owned().await.ok()
    }

    /// Waits for the thread to say how the last checkpoint went.
    pub async fn written(&mut self) -> anyhow::Result<()> {
        match self.written.recv().await {
            Some(result) => result,
            None => Err(anyhow::anyhow!("the thread that writes checkpoints ended")),
        }
    }

    /// Abandons a checkpoint half sent (its temp file is removed) and waits
    /// for the thread to end, so that nothing it still renames can replace
    /// a later checkpoint.
    pub fn stop(mut self) {
        drop(self.pieces);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes one checkpoint's pieces, `first` and then the queue's up to
/// the last; the queue closing first abandons it.
fn write_pieces(
    first: Piece,
    queue: &mut mpsc::Receiver<Piece>,
    out: &mut impl io::Write,
    ended: &mut bool,
) -> io::Result<()> {
    let mut piece = first;
    loop {
        *ended = piece.last;
        out.write_all(&piece.bytes)?;
        if piece.last {
            return Ok(());
        }
        piece = queue
            .blocking_recv()
            .ok_or_else(|| io::Error::other("netmon stopped during the checkpoint"))?;
    }
}
