//! Embeds the eBPF object built by `cargo xtask build`.
//!
//! The object is copied into `OUT_DIR` so `include_bytes_aligned!` can find
//! it at a fixed place. Cargo reruns this script whenever the object (or the
//! variable naming it) changes, so a stale object is never embedded; a
//! missing or empty one is an error rather than a binary that cannot load.
use std::{env, fs, path::PathBuf};

const VAR: &str = "NETMON_EBPF_OBJECT";

fn main() {
    println!("cargo::rerun-if-env-changed={VAR}");
    let object = env::var_os(VAR).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../netmon-ebpf/target/bpfel-unknown-none/release/netmon")
    });
    println!("cargo::rerun-if-changed={}", object.display());
    let bytes = match fs::read(&object) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        Ok(_) => fail(&object, "is empty"),
        Err(err) => fail(&object, &err.to_string()),
    };
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("netmon.bpf.o");
    fs::write(&out, bytes).unwrap_or_else(|err| fail(&out, &err.to_string()));
}

fn fail(path: &std::path::Path, why: &str) -> ! {
    eprintln!(
        "error: eBPF object {}: {why}; build with `cargo xtask build`, which compiles it first",
        path.display()
    );
    std::process::exit(1);
}
