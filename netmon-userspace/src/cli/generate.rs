//! Shell completions and man pages, generated from the clap definitions in
//! [`super`] so that they cannot drift from what the binary accepts.
use std::{fs, io, path::Path};

use anyhow::Context as _;
use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

/// The name the scripts complete, whatever the binary was invoked as.
const BIN: &str = "netmon";

/// Writes the completion script for `shell` to `out`.
///
/// clap_complete panics on a failed write, so the script is built in
/// memory and written here, where a closed pipe is an ordinary error.
pub fn completions(shell: Shell, out: &mut impl io::Write) -> io::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut script);
    out.write_all(&script)
}

/// Writes `netmon.1` and a page per visible command (`netmon-run.1`, ...)
/// into `dir`, creating it.
pub fn man_pages(dir: &Path) -> anyhow::Result<()> {
    let context = || format!("cannot write man pages to {}", dir.display());
    fs::create_dir_all(dir).with_context(context)?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(context)
}
