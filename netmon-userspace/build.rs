//! Embeds the eBPF objects built by `cargo xtask build`.
//!
//! Two objects: the ring-buffer one and the perf-buffer one for kernels
//! before 5.8. Each is copied into `OUT_DIR` so `include_bytes_aligned!`
//! finds it at a fixed place. Cargo reruns this script whenever an object
//! (or the variable naming it) changes, so a stale object is never
//! embedded; a missing or empty one is an error rather than a binary that
//! cannot load.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

/// (variable naming the object, default path under netmon-ebpf/, name in OUT_DIR)
const OBJECTS: [(&str, &str, &str); 2] = [
    (
        "NETMON_EBPF_OBJECT",
        "target/bpfel-unknown-none/release/netmon",
        "netmon.bpf.o",
    ),
    (
        "NETMON_EBPF_OBJECT_PERF",
        "target/perf/bpfel-unknown-none/release/netmon",
        "netmon-perf.bpf.o",
    ),
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (var, default, name) in OBJECTS {
        println!("cargo::rerun-if-env-changed={var}");
        let object = env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../netmon-ebpf")
                .join(default)
        });
        println!("cargo::rerun-if-changed={}", object.display());
        let bytes = match fs::read(&object) {
            Ok(bytes) if !bytes.is_empty() => bytes,
            Ok(_) => fail(&object, "is empty"),
            Err(err) => fail(&object, &err.to_string()),
        };
        let out = out_dir.join(name);
        fs::write(&out, bytes).unwrap_or_else(|err| fail(&out, &err.to_string()));
    }
}

fn fail(path: &Path, why: &str) -> ! {
    eprintln!(
        "error: eBPF object {}: {why}; build with `cargo xtask build`, which compiles it first",
        path.display()
    );
    std::process::exit(1);
}
