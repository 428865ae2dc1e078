//! `netmon run`: collecting connections into the peer set.
//!
//! - [`ladder`]: the table of attach modes ([`crate::mode`]), best first,
//!   and the climb down it to the first this host allows;
//! - `collector.rs`: the [`Collector`] the ladder settles on, eBPF programs
//!   ([`crate::ebpf`]) or proc mode's poller ([`crate::procnet`]);
//! - `recorder.rs`: the [`Recorder`], the peer set with its limit and
//!   observers;
//! - `checkpointer.rs`: the [`Checkpointer`], which writes the set to
//!   `--output` (made ready by [`crate::store::open_output`]), through
//!   `background.rs`'s writer thread once netmon runs;
//! - `run.rs`: the loop that ties them together, [`run`].
mod background;
mod checkpointer;
mod collector;
pub mod ladder;
mod recorder;
mod run;

pub use self::{
    checkpointer::{Checkpointer, Step},
    collector::{Arrived, Collector},
    recorder::Recorder,
    run::{RunConfig, run},
};
