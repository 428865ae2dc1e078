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

use crate::cmd::{output_of, run_status};

/// A kernel to boot and the name it goes by in the table.
pub struct Kernel {
    pub label: String,
    pub vmlinuz: PathBuf,
    /// Modules the guest loads before the cases, in order: the sock_diag
    /// ones proc mode reads the socket tables with. None for a bare image.
    pub modules: Vec<PathBuf>,
}

/// The sock_diag modules, in load order (tcp_diag and udp_diag need
/// inet_diag), as Debian builds them: `CONFIG_INET_DIAG=m`. Without them
/// proc mode falls back to the /proc/net text, which the matrix then tests
/// instead.
pub const DIAG_MODULES: [&str; 3] = ["inet_diag", "tcp_diag", "udp_diag"];

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
            if path.extension().is_some_and(|ext| ext == "deb") {
                let dir = vm_dir.join("kernels").join(&label);
                extract(std::slice::from_ref(path), &dir)?;
                return Ok(Kernel::unpacked(label, &dir));
            }
            Ok(Kernel {
                label,
                vmlinuz: path.clone(),
                modules: Vec::new(),
            })
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
            if !dir.join("vmlinuz").is_file() || !dir.join("modules").is_dir() {
                if !updated {
                    apt.update()?;
                    updated = true;
                }
                let packages = apt.kernel_packages(debian)?;
                eprintln!(
                    "xtask: downloading {} ({})",
                    packages.join(", "),
                    debian.suite
                );
                let debs = apt.download(&packages, debian.suite)?;
                extract(&debs, &dir)?;
                for deb in debs {
                    fs::remove_file(deb)?;
                }
            }
            Ok(Kernel::unpacked(debian.label.into(), &dir))
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

    /// The packages holding the kernel image and its modules: the
    /// metapackage names `linux-image-<version>`, which has both up to
    /// bookworm and on sid only depends on the `linux-binary-<version>` and
    /// `linux-modules-<version>` packages that have them.
    fn kernel_packages(&self, debian: &DebianKernel) -> anyhow::Result<Vec<String>> {
        let image = self
            .dependency(debian.metapackage, debian.suite, "linux-image-")?
            .ok_or_else(|| anyhow!("{} names no linux-image-*", debian.metapackage))?;
        let split: Vec<String> = ["linux-binary-", "linux-modules-"]
            .into_iter()
            .map(|prefix| self.dependency(&image, debian.suite, prefix))
            .collect::<anyhow::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect();
        Ok(if split.is_empty() { vec![image] } else { split })
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

    /// Downloads `packages` from `suite`; returns the .debs.
    fn download(&self, packages: &[String], suite: &str) -> anyhow::Result<Vec<PathBuf>> {
        let debs = self.dir.join("debs");
        for old in fs::read_dir(&debs)? {
            fs::remove_file(old?.path())?;
        }
        run_status(
            self.command("apt-get")
                .args(["download", "-q"])
                .args(packages.iter().map(|package| format!("{package}/{suite}")))
                .current_dir(&debs),
        )?;
        let downloaded = fs::read_dir(&debs)?
            .map(|entry| Ok(entry?.path()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if downloaded.len() != packages.len() {
            bail!(
                "apt-get download {} left {} .debs",
                packages.join(" "),
                downloaded.len()
            );
        }
        Ok(downloaded)
    }
}

impl Kernel {
    /// A kernel [`extract`]ed into `dir`.
    fn unpacked(label: String, dir: &Path) -> Self {
        let modules = DIAG_MODULES
            .iter()
            .map(|name| dir.join("modules").join(format!("{name}.ko")))
            .filter(|path| path.is_file())
            .collect();
        Self {
            label,
            vmlinuz: dir.join("vmlinuz"),
            modules,
        }
    }
}

/// Extracts from a Debian kernel package the image into `dir/vmlinuz`
/// (`boot/vmlinuz-*` up to bookworm, `usr/lib/modules/*/vmlinuz` since)
/// and the [`DIAG_MODULES`] it has into `dir/modules/`, uncompressed for
/// busybox's insmod. Each package's archive is unpacked once, into a
/// staging directory; the image goes into place last: it marks the kernel
/// complete.
fn extract(debs: &[PathBuf], dir: &Path) -> anyhow::Result<()> {
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or_default().to_owned();
    let is_image = |path: &str| {
        let name = name_of(path);
        name == "vmlinuz" || name.starts_with("vmlinuz-")
    };
    let module_of = |path: &str| {
        let name = name_of(path);
        DIAG_MODULES.into_iter().find(|module| {
            path.contains("/kernel/net/ipv4/")
                && name
                    .strip_prefix(module)
                    .is_some_and(|rest| rest.starts_with(".ko"))
        })
    };
    let staging = dir.join("staging");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging)?;
    let mut image = None;
    let mut modules = Vec::new();
    for deb in debs {
        let listing = output_of(Command::new("dpkg-deb").arg("--contents").arg(deb))?;
        let wanted: Vec<&str> = listing
            .lines()
            .filter_map(|line| line.split_whitespace().nth(5))
            .filter(|path| is_image(path) || module_of(path).is_some())
            .collect();
        if wanted.is_empty() {
            continue;
        }
        unpack(deb, &wanted, &staging)?;
        for path in wanted {
            match module_of(path) {
                Some(module) => modules.push((module, staging.join(path))),
                None => image = image.or(Some(staging.join(path))),
            }
        }
    }
    let image =
        image.ok_or_else(|| anyhow!("{}: no vmlinuz in the packages", debs[0].display()))?;
    fs::create_dir_all(dir.join("modules"))?;
    for (module, path) in modules {
        let path = decompress(&path)?;
        fs::rename(&path, dir.join("modules").join(format!("{module}.ko")))?;
    }
    fs::rename(&image, dir.join("vmlinuz"))?;
    fs::remove_dir_all(&staging)?;
    Ok(())
}

/// Unpacks `members` of a .deb's data archive under `into`.
fn unpack(deb: &Path, members: &[&str], into: &Path) -> anyhow::Result<()> {
    let mut data = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(into)
        .args(members)
        .stdin(data.stdout.take().expect("piped"))
        .status()
        .context("cannot start tar")?;
    if !data.wait()?.success() || !tar.success() {
        bail!("{}: cannot extract {}", deb.display(), members.join(" "));
    }
    Ok(())
}

/// A module as Debian ships it: plain, or `.ko.xz` / `.ko.zst` (trixie
/// on), which is uncompressed in place. Returns the plain module's path.
fn decompress(path: &Path) -> anyhow::Result<PathBuf> {
    let tool = match path.extension().and_then(|ext| ext.to_str()) {
        Some("xz") => "xz",
        Some("zst") => "zstd",
        _ => return Ok(path.to_owned()),
    };
    // Both write the file without its last extension, and drop the other.
    run_status(Command::new(tool).args(["-d", "-q", "-f"]).arg(path))
        .with_context(|| format!("{tool} -d {}", path.display()))?;
    Ok(path.with_extension(""))
}
