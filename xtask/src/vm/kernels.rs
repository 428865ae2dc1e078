//! The kernels the matrix boots: Debian's cloud kernels, fetched once with
//! apt into target/vm/, or kernels named on the command line.
//!
//! The host's apt sources list only its own release, so apt runs with a
//! private sources list, list directory and cache under target/vm/apt/;
//! every index is verified against Debian's archive keyring.
use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

use crate::build::{output_of, run_status};

/// A kernel to boot and the name it goes by in the table.
pub struct Kernel {
    pub label: String,
    pub vmlinuz: PathBuf,
}

/// One of Debian's cloud kernels, named by the metapackage that points at
/// the newest build in its suite.
struct DebianKernel {
    label: &'static str,
    /// Path of the archive on the mirror.
    archive: &'static str,
    suite: &'static str,
    metapackage: &'static str,
}

const MIRROR: &str = "http://deb.debian.org";
const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What `cargo xtask vm-test` boots without `--kernel`.
const DEBIAN_KERNELS: [DebianKernel; 4] = [
    DebianKernel {
        label: "debian-5.10",
        archive: "debian",
        suite: "bullseye",
        metapackage: "linux-image-cloud-amd64",
    },
    DebianKernel {
        label: "debian-6.1",
        archive: "debian",
        suite: "bookworm",
        metapackage: "linux-image-cloud-amd64",
    },
    DebianKernel {
        label: "debian-6.12",
        archive: "debian-security",
        suite: "bookworm-security",
        metapackage: "linux-image-6.12-cloud-amd64",
    },
    DebianKernel {
        label: "debian-sid",
        archive: "debian",
        suite: "sid",
        metapackage: "linux-image-cloud-amd64",
    },
];

/// The kernels to boot: `paths` (a .deb or a vmlinuz each), or Debian's.
pub fn resolve(paths: &[PathBuf], vm_dir: &Path) -> anyhow::Result<Vec<Kernel>> {
    if paths.is_empty() {
        return debian_kernels(vm_dir);
    }
    paths
        .iter()
        .map(|path| {
            let label = path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into(),
            );
            if !path.is_file() {
                bail!("--kernel {}: no such file", path.display());
            }
            let vmlinuz = if path.extension().is_some_and(|ext| ext == "deb") {
                let dir = vm_dir.join("kernels").join(&label);
                extract_vmlinuz(path, &dir)?
            } else {
                path.clone()
            };
            Ok(Kernel { label, vmlinuz })
        })
        .collect()
}

/// Debian's kernels, downloaded only where target/vm/kernels lacks them:
/// delete that directory to pick up newer builds.
fn debian_kernels(vm_dir: &Path) -> anyhow::Result<Vec<Kernel>> {
    let apt = Apt::new(&vm_dir.join("apt"))?;
    let mut updated = false;
    DEBIAN_KERNELS
        .iter()
        .map(|debian| {
            let dir = vm_dir.join("kernels").join(debian.label);
            let vmlinuz = dir.join("vmlinuz");
            if !vmlinuz.is_file() {
                if !updated {
                    apt.update()?;
                    updated = true;
                }
                let package = apt.kernel_package(debian)?;
                eprintln!("xtask: downloading {package} ({})", debian.suite);
                let deb = apt.download(&package, debian.suite)?;
                extract_vmlinuz(&deb, &dir)?;
                fs::remove_file(&deb)?;
            }
            Ok(Kernel {
                label: debian.label.into(),
                vmlinuz,
            })
        })
        .collect()
}

/// apt with every piece of state under one directory of its own.
struct Apt {
    dir: PathBuf,
    options: Vec<String>,
}

impl Apt {
    fn new(dir: &Path) -> anyhow::Result<Self> {
        let sources = dir.join("sources.list");
        let parts = dir.join("sources.list.d");
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "debs",
            "sources.list.d",
        ] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let mut lines: Vec<String> = DEBIAN_KERNELS
            .iter()
            .map(|k| {
                format!(
                    "deb [signed-by={KEYRING}] {MIRROR}/{} {} main",
                    k.archive, k.suite
                )
            })
            .collect();
        lines.dedup();
        fs::write(&sources, lines.join("\n") + "\n")?;
        let options = [
            format!("Dir::Etc::SourceList={}", sources.display()),
            // An empty directory: the host's own sources stay out.
            format!("Dir::Etc::SourceParts={}", parts.display()),
            format!("Dir::State::Lists={}", dir.join("lists").display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
            // Package lists only: no translations, no AppStream data.
            "Acquire::Languages=none".into(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
            "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
            // Root downloads into target/, which apt's _apt user may not
            // be able to write.
            "APT::Sandbox::User=root".into(),
        ]
        .into_iter()
        .flat_map(|option| ["-o".to_owned(), option])
        .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            options,
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.args(&self.options);
        command
    }

    fn update(&self) -> anyhow::Result<()> {
        run_status(self.command("apt-get").args(["update", "-q"]))
            .context("apt-get update on target/vm/apt (Debian's kernel suites)")
    }

    /// The package holding the kernel image: the metapackage names
    /// `linux-image-<version>`, which on sid only depends on the
    /// `linux-binary-<version>` package that has it.
    fn kernel_package(&self, debian: &DebianKernel) -> anyhow::Result<String> {
        let image = self
            .dependency(debian.metapackage, debian.suite, "linux-image-")?
            .ok_or_else(|| anyhow!("{} names no linux-image-*", debian.metapackage))?;
        Ok(self
            .dependency(&image, debian.suite, "linux-binary-")?
            .unwrap_or(image))
    }

    /// The first dependency of `package` in `suite` whose name starts with
    /// `prefix`.
    fn dependency(
        &self,
        package: &str,
        suite: &str,
        prefix: &str,
    ) -> anyhow::Result<Option<String>> {
        let record = output_of(
            self.command("apt-cache")
                .args(["show", &format!("{package}/{suite}")]),
        )?;
        let depends = record
            .lines()
            .find_map(|line| line.strip_prefix("Depends:"))
            .unwrap_or_default();
        Ok(depends
            .split([',', '|'])
            .filter_map(|dep| dep.split_whitespace().next())
            .find(|name| name.starts_with(prefix))
            .map(str::to_owned))
    }

    /// Downloads `package` from `suite`; returns the .deb.
    fn download(&self, package: &str, suite: &str) -> anyhow::Result<PathBuf> {
        let debs = self.dir.join("debs");
        for old in fs::read_dir(&debs)? {
            fs::remove_file(old?.path())?;
        }
        run_status(
            self.command("apt-get")
                .args(["download", "-q", &format!("{package}/{suite}")])
                .current_dir(&debs),
        )?;
        let deb = fs::read_dir(&debs)?
            .next()
            .ok_or_else(|| anyhow!("apt-get download {package} left no .deb"))??;
        Ok(deb.path())
    }
}

/// Extracts the kernel image from a Debian kernel package into
/// `dir/vmlinuz` (`boot/vmlinuz-*` up to bookworm,
/// `usr/lib/modules/*/vmlinuz` since).
fn extract_vmlinuz(deb: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let listing = output_of(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
    let member = listing
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|name| name == "vmlinuz" || name.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("{}: no vmlinuz in the package", deb.display()))?
        .to_owned();
    fs::create_dir_all(dir)?;
    let vmlinuz = dir.join("vmlinuz");
    let mut tar = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let image = Command::new("tar")
        .args(["-x", "-O", &member])
        .stdin(tar.stdout.take().expect("piped"))
        .output()
        .context("cannot start tar")?;
    let status = tar.wait()?;
    if !status.success() || !image.status.success() || image.stdout.is_empty() {
        bail!("{}: cannot extract {member}", deb.display());
    }
    let partial = dir.join("vmlinuz.partial");
    fs::write(&partial, &image.stdout)?;
    fs::rename(&partial, &vmlinuz)?;
    Ok(vmlinuz)
}
