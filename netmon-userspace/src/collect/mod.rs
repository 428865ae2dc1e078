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
//! - `startup.rs`: locking and loading the output after attaching, while
//!   what arrives waits in a backlog;
//! - `run.rs`: the loop that ties them together, [`run`].
mod background;
mod checkpointer;
mod collector;
pub mod ladder;
mod losses;
mod recorder;
mod run;
mod startup;

pub use self::{
    checkpointer::{Checkpointer, Step},
    collector::{Arrived, Collector},
    losses::Losses,
    recorder::Recorder,
    run::{RunConfig, run},
};
