//! Checkpointing: writing the set to `--output`, with what was lost.
//!
//! Once netmon is confined, a checkpoint is written in the background: the
//! run loop serializes the set a chunk at a time between folding events
//! ([`Checkpointer::begin`], [`Checkpointer::step`],
//! [`Checkpointer::send_chunk`]) and the writer thread of `background.rs`
//! writes, syncs and renames the file, then reports
//! ([`Checkpointer::finished`]). The first and the final checkpoints, with
//! nothing to collect meanwhile, are written at once.
use std::time::Instant;

use anyhow::Context as _;
use log::{info, warn};
use tokio::sync::mpsc::OwnedPermit;

use super::{
    Losses,
    background::{Background, CHUNK_BYTES, Piece},
    recorder::Recorder,
};
use crate::{host, store, time::UnixTime};

/// Where checkpoints go, and what they say besides the peers.
pub struct Checkpointer {
    output: store::Output,
    host: String,
    /// Losses recorded by earlier runs on this file.
    lost_before: Losses,
    /// Losses in this run, as of the last checkpoint.
    lost_written: Losses,
    /// The last checkpoint error, so a persistent one is logged once.
    last_error: Option<String>,
    /// The writer thread, once netmon is confined.
    background: Option<Background>,
    /// The checkpoint under way in the background.
    pending: Option<Pending>,
    /// A checkpoint asked for while one was under way, and the level to log
    /// it at: it starts when that one ends.
    queued: Option<log::Level>,
}

/// A checkpoint being sent to the writer thread.
struct Pending {
    chunks: store::Chunks,
    /// The bytes of the next piece so far (the header, for the first).
    next: Vec<u8>,
    /// Every piece is sent: waiting for the thread's word.
    sent: bool,
    level: log::Level,
    /// Losses: in this run, and in the file.
    lost: Losses,
    lost_in_file: Losses,
    started: Instant,
}

/// What the checkpoint under way waits for next.
pub enum Step {
    /// Room in the writer's queue for the next chunk.
    Room(OwnedPermit<Piece>),
    /// The writer thread's word on the checkpoint.
    Written(anyhow::Result<()>),
}

impl Checkpointer {
    pub fn new(output: store::Output, host: String, lost_before: Losses) -> Self {
        Self {
            output,
            host,
            lost_before,
            lost_written: Losses::default(),
            last_error: None,
            background: None,
            pending: None,
            queued: None,
        }
    }

    /// Starts the writer thread: from now on [`Checkpointer::begin`] writes
    /// in the background. Called once netmon is confined.
    pub fn start_writer(&mut self) -> anyhow::Result<()> {
        self.background = Some(Background::start(&self.output.target)?);
        Ok(())
    }

    /// Writes a checkpoint of `recorder`'s set at once, with `lost` in this
    /// run, and logs how long it took, at `level`.
    pub fn checkpoint(
        &mut self,
        recorder: &mut Recorder,
        lost: Losses,
        level: log::Level,
    ) -> anyhow::Result<()> {
        self.output
            .lock()
            .context("no checkpoint is written without the output's lock")?;
        self.lost_written = lost;
        refresh_addresses(recorder);
        let snapshot = recorder.snapshot_with_losses(self.lost_before.saturating_add(lost));
        let started = Instant::now();
        let written = store::write_checkpoint(
            &self.output.target,
            snapshot,
            &self.host,
            UnixTime::now().secs(),
        );
        recorder
            .observers()
            .checkpointed(written.is_ok(), started.elapsed(), lost);
        written?;
        let snapshot = recorder.snapshot();
        log::log!(
            level,
            "checkpoint: {} in {} ms ({} lost events)",
            crate::words::count(snapshot.peers.len() as u64, "peer", "peers"),
            started.elapsed().as_millis(),
            snapshot.lost_events
        );
        Ok(())
    }

    /// The checkpoint at start-up: like [`Checkpointer::checkpoint_or_warn`]
    /// if the disk is full or read-only, otherwise any failure stops netmon.
    pub fn first_checkpoint(
        &mut self,
        recorder: &mut Recorder,
        lost: Losses,
    ) -> anyhow::Result<()> {
        match self.checkpoint(recorder, lost, log::Level::Info) {
            Err(err) if store::disk_unwritable(&err) => {
                self.warn_once(&err);
                Ok(())
            }
            written => written,
        }
    }

    /// A checkpoint written at once, a failure logged once and retried at
    /// the next one (see `judge`).
    pub fn checkpoint_or_warn(
        &mut self,
        recorder: &mut Recorder,
        lost: Losses,
        level: log::Level,
    ) -> anyhow::Result<()> {
        let written = self.checkpoint(recorder, lost, level);
        self.judge(written)
    }

    /// Starts a periodic or SIGHUP checkpoint in the background, of the set
    /// as it is now with `lost` in this run; one already under way is
    /// finished first, and this one follows it.
    pub fn begin(
        &mut self,
        recorder: &mut Recorder,
        lost: Losses,
        level: log::Level,
    ) -> anyhow::Result<()> {
        if self.background.is_none() {
            return self.checkpoint_or_warn(recorder, lost, level);
        }
        if self.pending.is_some() {
            self.queued = self.queued.max(Some(level));
            return Ok(());
        }
        let locked = self
            .output
            .lock()
            .context("no checkpoint is written without the output's lock");
        if let Err(err) = locked {
            return self.judge(Err(err));
        }
        self.lost_written = lost;
        refresh_addresses(recorder);
        let lost_in_file = self.lost_before.saturating_add(lost);
        let snapshot = recorder.snapshot_with_losses(lost_in_file);
        let mut next = Vec::with_capacity(CHUNK_BYTES + 4096);
        let chunks = store::Chunks::start(snapshot, &self.host, UnixTime::now().secs(), &mut next)
            .context("cannot start a checkpoint")?;
        self.pending = Some(Pending {
            chunks,
            next,
            sent: false,
            level,
            lost,
            lost_in_file,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Whether a checkpoint is under way in the background.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// Waits for what the checkpoint under way needs next; never ready
    /// while none is.
    pub async fn step(&mut self) -> Step {
        match (&mut self.background, &self.pending) {
            (Some(background), Some(pending)) if pending.sent => {
                Step::Written(background.written().await)
            }
            (Some(background), Some(_)) => match background.room().await {
                Some(permit) => Step::Room(permit),
                None => Step::Written(Err(anyhow::anyhow!(
                    "the thread that writes checkpoints ended"
                ))),
            },
            _ => std::future::pending().await,
        }
    }

    /// Serializes the next chunk of the set into the room `permit` holds.
    pub fn send_chunk(&mut self, permit: OwnedPermit<Piece>, recorder: &Recorder) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        let mut bytes = std::mem::take(&mut pending.next);
        bytes.reserve(CHUNK_BYTES + 4096);
        let last = pending
            .chunks
            .fill(&recorder.snapshot().peers, &mut bytes, CHUNK_BYTES);
        pending.sent = last;
        permit.send(Piece { bytes, last });
    }

    /// Takes in the writer thread's word on the checkpoint under way: logs
    /// it and counts it as [`Checkpointer::checkpoint`] does, and judges a
    /// failure as [`Checkpointer::checkpoint_or_warn`] does. Gives the
    /// level of a checkpoint asked for meanwhile, to begin now.
    pub fn finished(
        &mut self,
        written: anyhow::Result<()>,
        recorder: &Recorder,
    ) -> anyhow::Result<Option<log::Level>> {
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        let took = pending.started.elapsed();
        recorder
            .observers()
            .checkpointed(written.is_ok(), took, pending.lost);
        if written.is_ok() {
            log::log!(
                pending.level,
                "checkpoint: {} in {} ms ({} lost events)",
                crate::words::count(pending.chunks.written() as u64, "peer", "peers"),
                took.as_millis(),
                pending.lost_in_file.events
            );
        }
        self.judge(written)?;
        Ok(self.queued.take())
    }

    /// Abandons a checkpoint under way in the background, and waits for
    /// the writer thread to end, before the final one is written at once.
    pub fn stop_writer(&mut self) {
        self.pending = None;
        if let Some(background) = self.background.take() {
            background.stop();
        }
    }

    /// A periodic checkpoint's failure: logged (once per distinct error)
    /// and retried at the next one, while collection goes on in memory. The
    /// lock, if it is still to be taken, is the exception: held by another
    /// netmon, or refused for a reason other than the disk, it stops netmon
    /// as it would have at start-up.
    fn judge(&mut self, written: anyhow::Result<()>) -> anyhow::Result<()> {
        match written {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(
                        "checkpoint to {} works again",
                        self.output.target.path().display()
                    );
                }
            }
            Err(err) if !self.output.locked() && !store::disk_unwritable(&err) => return Err(err),
            Err(err) => self.warn_once(&err),
        }
        Ok(())
    }

    /// Logs a checkpoint failure unless it is the same as the last one.
    fn warn_once(&mut self, err: &anyhow::Error) {
        let text = format!("{err:#}");
        if self.last_error.as_ref() != Some(&text) {
            warn!("{text}; keeping peers in memory and retrying at the next checkpoint");
        }
        self.last_error = Some(text);
    }

    /// Says what was lost since the last checkpoint, if anything; `lost`
    /// counts this run's losses.
    pub fn warn_if_lost(&self, lost: Losses) {
        if lost.events > self.lost_written.events {
            warn!(
                "{} events lost since the last checkpoint (ring buffer full; their connections \
                 were still counted through the kernel's dedup map); {} in this run",
                lost.events - self.lost_written.events,
                lost.events
            );
        }
        if lost.connections > self.lost_written.connections {
            warn!(
                "{} connections neither sent nor kept since the last checkpoint (ring buffer and \
                 dedup map both full): their peers may be missing; {} in this run",
                lost.connections - self.lost_written.connections,
                lost.connections
            );
        }
    }
}

/// The host's own addresses, refreshed at each checkpoint: they come and
/// go (DHCP, a VIP moving). On failure the last ones known stay.
fn refresh_addresses(recorder: &mut Recorder) {
    match host::own_addresses() {
        Ok(addresses) => recorder.set_addresses(addresses),
        Err(err) => log::debug!("cannot list this host's addresses: {err}"),
    }
}
