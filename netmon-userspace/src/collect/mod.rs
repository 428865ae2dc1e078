//! Collecting: which way of watching connections this host allows.
//!
//! - [`mode`]: the attach modes, and what `--mode` asks for;
//! - [`ladder`]: the table of modes, best first, and the climb down it.
pub mod ladder;
pub mod mode;

pub use self::mode::{AttachMode, ModeRequest};
