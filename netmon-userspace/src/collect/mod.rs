//! Collecting: which way of watching connections this host allows.
//!
//! - [`mode`]: the attach modes, and what `--mode` asks for;
//! - [`ladder`]: the table of modes, best first, and the climb down it.
mod checkpointer;
pub mod ladder;
pub mod mode;
mod recorder;

pub use self::{
    checkpointer::Checkpointer,
    mode::{AttachMode, ModeRequest},
    recorder::Recorder,
};
