//! `cargo xtask image`: netmon in a `FROM scratch` container image, tagged
//! `netmon:<version>`, built from the repository's Containerfile with
//! podman (or docker, where an engine answers), then checked: the binary
//! taken back out of the image must run and be statically linked.
use std::{fs, path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    build,
    cmd::{output_of, run_status},
    setup,
};

/// The image's name; the tag is the workspace version.
const NAME: &str = "netmon";

pub fn image() -> anyhow::Result<String> {
    let engine = engine()?;
    let bin_dir = build::build_static(&["netmon-userspace"])?;
    let tag = format!("{NAME}:{}", env!("CARGO_PKG_VERSION"));
    // A context holding only what the image needs, not the whole repo.
    let context = build::root().join("target/image/context");
    fs::create_dir_all(&context)?;
    fs::copy(bin_dir.join("netmon"), context.join("netmon"))
        .context("copying the static netmon into the build context")?;
    run_status(
        Command::new(engine)
            .args(["build", "--file"])
            .arg(build::root().join("Containerfile"))
            .args([
                "--build-arg",
                &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
            ])
            .args(["--tag", &tag])
            .arg(&context),
    )?;
    check(engine, &tag)?;
    eprintln!("xtask: built {tag} with {engine}");
    Ok(tag)
}

/// podman or docker, whichever can build here; podman from Debian when
/// neither can (a docker CLI without an engine cannot).
fn engine() -> anyhow::Result<&'static str> {
    for engine in ["podman", "docker"] {
        if output_of(Command::new(engine).arg("info")).is_ok() {
            return Ok(engine);
        }
    }
    setup::debian_packages(&["podman"])?;
    Ok("podman")
}

/// Takes the binary back out of the image and checks it runs and is
/// static: a scratch image has no libc or loader for anything else.
fn check(engine: &str, tag: &str) -> anyhow::Result<()> {
    let container = format!("netmon-image-check-{}", std::process::id());
    run_status(Command::new(engine).args(["create", "--name", &container, tag]))?;
    let extracted = build::root().join("target/image/extracted-netmon");
    let copied = run_status(
        Command::new(engine)
            .arg("cp")
            .arg(format!("{container}:/netmon"))
            .arg(&extracted),
    );
    run_status(Command::new(engine).args(["rm", &container]))?;
    copied?;
    let version = output_of(Command::new(&extracted).arg("--version"))?;
    let expected = format!("netmon {}", env!("CARGO_PKG_VERSION"));
    if version.trim() != expected {
        bail!("the image's netmon says {version:?}, not {expected:?}");
    }
    if let Some(interpreter) = interpreter(&extracted)? {
        bail!("the image's netmon is dynamically linked (needs {interpreter})");
    }
    eprintln!("xtask: the image's netmon runs ({expected}) and is statically linked");
    Ok(())
}

/// The dynamic loader an ELF64 little-endian executable asks for (its
/// PT_INTERP segment), or `None` for a static one.
fn interpreter(path: &Path) -> anyhow::Result<Option<String>> {
    const PT_INTERP: u32 = 3;
    let elf = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |at: usize, len: usize| -> anyhow::Result<u64> {
        let bytes = elf.get(at..at + len).context("truncated ELF file")?;
        let mut value = [0; 8];
        value[..len].copy_from_slice(bytes);
        Ok(u64::from_le_bytes(value))
    };
    if elf.get(..6) != Some(b"\x7fELF\x02\x01") {
        bail!("{} is not a 64-bit little-endian ELF file", path.display());
    }
    let (table, entry_size, entries) = (field(0x20, 8)?, field(0x36, 2)?, field(0x38, 2)?);
    for index in 0..entries {
        let header = usize::try_from(table + index * entry_size)?;
        if field(header, 4)? == u64::from(PT_INTERP) {
            let (offset, size) = (field(header + 0x08, 8)?, field(header + 0x20, 8)?);
            let start = usize::try_from(offset)?;
            let bytes = elf
                .get(start..start + usize::try_from(size)?)
                .context("truncated ELF file")?;
            let name = String::from_utf8_lossy(bytes);
            return Ok(Some(name.trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_its_loader() {
        // xtask itself: built for the host's glibc.
        let me = std::env::current_exe().unwrap();
        let loader = interpreter(&me).unwrap().expect("xtask's tests link glibc");
        assert!(loader.contains("ld-linux"), "{loader}");
    }
}
