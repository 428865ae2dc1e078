//! `cargo xtask man`: the man pages, rendered by netmon itself from its
//! clap definitions (its hidden `man` command), so they always describe
//! the binary that was built.
use std::{path::PathBuf, process::Command};

use crate::build::{self, Profile};

pub fn man() -> anyhow::Result<PathBuf> {
    let binary = build::build(Profile::Debug)?;
    let dir = build::root().join("target").join("man");
    crate::cmd::run_status(Command::new(binary).arg("man").arg(&dir))?;
    eprintln!(
        "xtask: man pages in {}; read one with man -l {}",
        dir.display(),
        dir.join("netmon.1").display()
    );
    Ok(dir)
}
