//! Checkpointing: writing the set to `--output`, with what was lost.
use std::time::Instant;

use anyhow::Context as _;
use log::{info, warn};

use super::{Losses, recorder::Recorder};
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
}

impl Checkpointer {
    pub fn new(output: store::Output, host: String, lost_before: Losses) -> Self {
        Self {
            output,
            host,
            lost_before,
            lost_written: Losses::default(),
            last_error: None,
        }
    }

    /// Writes a checkpoint of `recorder`'s set, with `lost` in this run,
    /// and logs how long it took, at `level`.
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
        // Refreshed at each checkpoint: addresses come and go (DHCP, a
        // VIP moving). On failure the last ones known stay.
        match host::ipv4_addresses() {
            Ok(addresses) => recorder.set_addresses(addresses),
            Err(err) => log::debug!("cannot list this host's addresses: {err}"),
        }
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
            "checkpoint: {} peers in {} ms ({} lost events)",
            snapshot.peers.len(),
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

    /// A periodic checkpoint: failures are logged (once per distinct error)
    /// and retried at the next one, while collection goes on in memory. The
    /// lock, if it is still to be taken, is the exception: held by another
    /// netmon, or refused for a reason other than the disk, it stops netmon
    /// as it would have at start-up.
    pub fn checkpoint_or_warn(
        &mut self,
        recorder: &mut Recorder,
        lost: Losses,
        level: log::Level,
    ) -> anyhow::Result<()> {
        match self.checkpoint(recorder, lost, level) {
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
