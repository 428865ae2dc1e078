//! Embeds the eBPF objects built by `cargo xtask build`.
//!
//! Two objects: the ring-buffer one and the perf-buffer one for kernels
//! before 5.8. Each is copied into `OUT_DIR` so `include_bytes_aligned!`
//! finds it at a fixed place. Cargo reruns this script whenever an object
//! (or the variable naming it) changes, so a stale object is never
//! embedded.
//!
//! xtask names the objects in the variables, and an object it names must
//! be there. Without the variables they are taken from where the eBPF
//! build leaves them; where it has not run (a fresh clone, plain `cargo
//! test`, no nightly or bpf-linker) an empty object is embedded, with a
//! warning, so the tests that need no eBPF still build and run: netmon
//! then refuses the eBPF modes at run time and says why.
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
        let bytes = match env::var_os(var) {
            Some(named) => read(Path::new(&named)),
            None => {
                let object = Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../netmon-ebpf")
                    .join(default);
                if object.exists() {
                    read(&object)
                } else {
                    without(&object)
                }
            }
        };
        let out = out_dir.join(name);
        fs::write(&out, bytes).unwrap_or_else(|err| fail(&out, &err.to_string()));
    }
}

/// The object at `path`, which must be there and not empty.
fn read(path: &Path) -> Vec<u8> {
    println!("cargo::rerun-if-changed={}", path.display());
    match fs::read(path) {
        Ok(bytes) if !bytes.is_empty() => bytes,
        Ok(_) => fail(path, "is empty"),
        Err(err) => fail(path, &err.to_string()),
    }
}

/// The empty object, for a build without the eBPF one at `missing`.
fn without(missing: &Path) -> Vec<u8> {
    // Cargo reruns a script whose watched file is missing on every build,
    // and rebuilds the crate after it: watch the nearest directory that
    // exists instead, which changes when the eBPF build creates the file.
    let watched = missing
        .ancestors()
        .find(|dir| dir.is_dir())
        .expect("the manifest's directory exists");
    println!("cargo::rerun-if-changed={}", watched.display());
    println!(
        "cargo::warning=no eBPF object at {}: netmon is built without it and runs only in proc mode; \
         `cargo xtask build` builds it",
        missing.display()
    );
    Vec::new()
}

fn fail(path: &Path, why: &str) -> ! {
    eprintln!(
        "error: eBPF object {}: {why}; build with `cargo xtask build`, which compiles it first",
        path.display()
    );
    std::process::exit(1);
}
