//! Booting one kernel with the matrix's initramfs under QEMU.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// Boot plus every case; a guest still running after this has hung.
const TIMEOUT: Duration = Duration::from_secs(600);

/// What one boot left behind.
pub struct Boot {
    /// ttyS0: the kernel's messages, init's and the scenario's output.
    pub console: String,
    /// ttyS1: the result lines only.
    pub results: String,
    pub elapsed: Duration,
    /// Why the VM did not power off by itself, if it did not.
    pub trouble: Option<String>,
}

/// Boots `vmlinuz` and waits for it to power off; its serial ports are
/// written to files in `dir`.
///
/// TCG, not KVM: guests crash under KVM on the machines this runs on. No
/// network device: the scenario uses loopback only, and nothing may leave
/// the VM.
pub fn boot(vmlinuz: &Path, initramfs: &Path, dir: &Path) -> anyhow::Result<Boot> {
    fs::create_dir_all(dir)?;
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let serial = |path: &PathBuf| format!("file:{}", path.display());
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-smp", "1"])
        .args([
            "-nodefaults",
            "-nic",
            "none",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .args(["-serial", &serial(&console), "-serial", &serial(&results)])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start qemu-system-x86_64 (package qemu-system-x86)")?;
    let trouble = loop {
        if let Some(status) = qemu.try_wait()? {
            break (!status.success()).then(|| format!("qemu exited with {status}"));
        }
        if started.elapsed() > TIMEOUT {
            let _ = qemu.kill();
            let _ = qemu.wait();
            break Some(format!(
                "no power-off after {} s; killed",
                TIMEOUT.as_secs()
            ));
        }
        thread::sleep(Duration::from_millis(200));
    };
    let read = |path: &PathBuf| {
        fs::read(path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    };
    Ok(Boot {
        console: read(&console),
        results: read(&results),
        elapsed: started.elapsed(),
        trouble,
    })
}
