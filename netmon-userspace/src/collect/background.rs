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
        let (pieces, mut queue) = mpsc::channel::<Piece>(QUEUE_CHUNKS);
        let (report, written) = mpsc::unbounded_channel();
        let thread = thread::Builder::new()
            .name("netmon-checkpoint".into())
            .spawn(move || {
                while let Some(first) = queue.blocking_recv() {
                    // Set as pieces are written; a write that fails before
                    // it reads `first` leaves it as `first` says.
                    let mut ended = first.last;
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

#[cfg(test)]
mod tests {
    use std::{fs, time::Duration};

    use super::*;

    async fn send(background: &Background, bytes: &[u8], last: bool) {
        let room = background.room().await.expect("the thread is running");
        room.send(Piece {
            bytes: bytes.to_vec(),
            last,
        });
    }

    /// Pieces make the file; one abandoned leaves no temp file; a write
    /// that fails before its one piece is read reports at once, and the
    /// next checkpoint is its own.
    #[test]
    fn the_thread_writes_abandons_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let path = out.join("peers.json");
        let target = Target::open(&path, false).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut background = Background::start(&target).unwrap();
            send(&background, b"one ", false).await;
            send(&background, b"two", true).await;
            background.written().await.unwrap();
            assert_eq!(fs::read(&path).unwrap(), b"one two");

            // The temp file cannot be made in a directory that is gone.
            fs::remove_dir_all(&out).unwrap();
            for _ in 0..2 {
                send(&background, b"x", true).await;
                let written = tokio::time::timeout(Duration::from_secs(10), background.written());
                assert!(written.await.expect("a report, not a hang").is_err());
            }
            background.stop();
        });

        let out = dir.path().join("again");
        fs::create_dir(&out).unwrap();
        let target = Target::open(&out.join("peers.json"), false).unwrap();
        runtime.block_on(async {
            let background = Background::start(&target).unwrap();
            send(&background, b"half", false).await;
            background.stop();
        });
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }
}
