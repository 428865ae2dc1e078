//! The baseline: the 1-second psutil poller netmon replaces (poller.py),
//! run with Debian's python3 and python3-psutil.
use std::{
    fs,
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::netns::Netns;

/// The interpreter users run it with: Debian's, where python3-psutil goes.
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = include_str!("poller.py");

/// A running poller; killed if the bench fails before stopping it.
pub struct Poller {
    child: Child,
    output: PathBuf,
}

impl Poller {
    /// Starts the poller in `netns`, writing to `dir`, and waits for its
    /// first walk of the socket table.
    pub fn start(netns: &Netns, dir: &Path) -> anyhow::Result<Self> {
        let script = dir.join("poller.py");
        fs::write(&script, SCRIPT)?;
        let output = dir.join("poller.json");
        let mut command = Command::new(PYTHON);
        command.arg(&script).arg(&output).stdout(Stdio::piped());
        netns.enter(&mut command);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {PYTHON}"))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let poller = Self { child, output };
        if line.trim() != "ready" {
            bail!("the psutil poller did not start (it said {line:?})");
        }
        Ok(poller)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (it walks the table once more); returns the addresses it
    /// wrote.
    pub fn stop(mut self) -> anyhow::Result<Vec<Ipv4Addr>> {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("the psutil poller exited with {status}");
        }
        let text = fs::read_to_string(&self.output)
            .with_context(|| format!("cannot read {}", self.output.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a list of addresses", self.output.display()))
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
