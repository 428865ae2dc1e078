//! `cargo xtask vm-test`: the kernel matrix.
//!
//! The host kernel only exercises the attach modes it happens to support,
//! so every mode is also run on real kernels: each kernel boots once under
//! QEMU with an initramfs of busybox, a static netmon and the static
//! `netmon-scenario` binary, whose init runs every case of
//! `netmon_scenario::case::VM_CASES` (the integration tests' own workload
//! and checks) and prints one result line per case on a serial port of
//! its own. Any missing line, failed case, panic or hang fails the run.
mod initramfs;
mod kernels;
mod qemu;
mod report;

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
    time::Instant,
};

use anyhow::bail;
use netmon_scenario::result::{Row, read_host_rows};

use crate::{build, setup};

/// Debian packages the matrix needs on the host.
pub const PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "zstd"];

#[derive(clap::Args, Default)]
pub struct VmTestArgs {
    /// Boot this kernel instead of Debian's cloud kernels: a Debian kernel
    /// package (.deb) or a kernel image (vmlinuz/bzImage). Repeatable.
    #[arg(long = "kernel", value_name = "DEB_OR_VMLINUZ")]
    pub kernels: Vec<PathBuf>,

    /// VMs running at once; each emulates one CPU on one host thread.
    /// Default: one per host CPU. On 2 cores, the four Debian kernels took
    /// 52 s one at a time and 26-39 s two at a time.
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// cargo's `target/tmp` (`CARGO_TARGET_TMPDIR` of the integration tests),
/// where they leave the host kernel's rows.
pub fn target_tmp() -> PathBuf {
    build::root().join("target/tmp")
}

pub fn vm_test(args: &VmTestArgs) -> anyhow::Result<()> {
    let vm_dir = build::root().join("target/vm");
    // Before anything slow, so a mistyped path fails at once.
    if let Some(missing) = args.kernels.iter().find(|path| !path.is_file()) {
        bail!("--kernel {}: no such file", missing.display());
    }
    setup::debian_packages(PACKAGES)?;
    let kernels = kernels::resolve(&args.kernels, &vm_dir)?;
    let bin_dir = build::build_static(&["netmon-userspace", "netmon-scenario"])?;
    let initramfs = vm_dir.join("initramfs.cpio");
    initramfs::write(&initramfs, &bin_dir)?;

    let jobs = args
        .jobs
        .unwrap_or_else(|| thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
        .clamp(1, kernels.len().max(1));
    let started = Instant::now();
    let outcomes = boot_all(&kernels, &initramfs, &vm_dir.join("runs"), jobs);
    let host_rows: Vec<Row> = read_host_rows(&target_tmp())?;
    report::print_table(&outcomes, &host_rows);
    println!(
        "\n{} kernels, {jobs} at a time: {:.0} s",
        kernels.len(),
        started.elapsed().as_secs_f64()
    );
    report::print_failures(&outcomes);
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| o.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on {}", failed.join(", "));
    }
    Ok(())
}

/// The shared initramfs with `kernel`'s modules added, in `dir`.
fn initrd_for(kernel: &kernels::Kernel, initramfs: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir)?;
    let initrd = dir.join("initramfs.cpio");
    initramfs::with_modules(initramfs, &kernel.modules, &initrd)?;
    Ok(initrd)
}

/// Boots every kernel, `jobs` at a time, and judges each.
fn boot_all(
    kernels: &[kernels::Kernel],
    initramfs: &Path,
    runs: &Path,
    jobs: usize,
) -> Vec<report::Outcome> {
    let next = AtomicUsize::new(0);
    let outcomes = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                while let Some(kernel) = kernels.get(next.fetch_add(1, Ordering::Relaxed)) {
                    eprintln!("xtask: booting {}", kernel.label);
                    let dir = runs.join(&kernel.label);
                    let boot = initrd_for(kernel, initramfs, &dir)
                        .and_then(|initrd| qemu::boot(&kernel.vmlinuz, &initrd, &dir));
                    if let Ok(boot) = &boot {
                        eprintln!(
                            "xtask: {} powered off after {:.0} s",
                            kernel.label,
                            boot.elapsed.as_secs_f64()
                        );
                    }
                    let outcome = report::judge(&kernel.label, boot);
                    outcomes.lock().unwrap().push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|o| kernels.iter().position(|k| k.label == o.label));
    outcomes
}
