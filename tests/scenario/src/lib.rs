//! What the integration tests and the kernel matrix share: the loopback
//! workload (and a stream of connections across a restart) and the
//! addresses each test owns, the per-peer checks on a
//! checkpoint, the harness that runs `netmon run`, the files the tests
//! write, the network-namespace fleet of the access-map tests, and the
//! one-line result format of the matrix, and the real UDP software of
//! tests/udp.rs.
//!
//! tests/collector.rs runs these on the host kernel; the `netmon-scenario`
//! binary runs the same code inside each VM of `cargo xtask vm-test`, so a
//! mode that passes here and there has passed the same workload.
pub mod case;
pub mod check;
pub mod confine;
pub mod files;
pub mod fleet;
pub mod harness;
pub mod ipv6;
pub mod isolate;
pub mod mptcp;
pub mod net;
pub mod netns;
pub mod result;
pub mod software;
pub mod stream;
pub mod udp;
pub mod workload;
