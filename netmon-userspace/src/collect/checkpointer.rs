//! Checkpointing: writing the set to `--output`, with the events lost.
use std::time::Instant;

use log::{info, warn};

use super::recorder::Recorder;
use crate::{store, time::UnixTime};

/// Where checkpoints go, and what they say besides the peers.
pub struct Checkpointer {
    output: store::Output,
    host: String,
    /// Lost events recorded by earlier runs on this file.
    lost_before: u64,
    /// Lost events in this run, as of the last checkpoint.
    lost_written: u64,
    /// The last checkpoint error, so a persistent one is logged once.
    last_error: Option<String>,
}

impl Checkpointer {
    pub fn new(output: store::Output, host: String, lost_before: u64) -> Self {
        Self {
            output,
            host,
            lost_before,
            lost_written: 0,
            last_error: None,
        }
    }

    /// Writes a checkpoint of `recorder`'s set, `lost` counting the events
    /// lost in this run, and logs how long it took, at `level`.
    pub fn checkpoint(
        &mut self,
        recorder: &mut Recorder,
        lost: u64,
        level: log::Level,
    ) -> anyhow::Result<()> {
        self.lost_written = lost;
        let snapshot = recorder.snapshot_with_lost_events(self.lost_before.saturating_add(lost));
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

    /// A periodic checkpoint: failures are logged (once per distinct error)
    /// and retried at the next one, while collection goes on in memory.
    pub fn checkpoint_or_warn(&mut self, recorder: &mut Recorder, lost: u64, level: log::Level) {
        match self.checkpoint(recorder, lost, level) {
            Ok(()) => {
                if self.last_error.take().is_some() {
                    info!(
                        "checkpoint to {} works again",
                        self.output.target.path().display()
                    );
                }
            }
            Err(err) => {
                let text = format!("{err:#}");
                if self.last_error.as_ref() != Some(&text) {
                    warn!("{text}; keeping peers in memory and retrying at the next checkpoint");
                }
                self.last_error = Some(text);
            }
        }
    }

    /// Says how many events were lost since the last checkpoint, if any;
    /// `lost` counts those lost in this run.
    pub fn warn_if_lost(&self, lost: u64) {
        if lost > self.lost_written {
            warn!(
                "{} events lost since the last checkpoint (ring buffer full); {lost} in this run",
                lost - self.lost_written
            );
        }
    }
}
