//! netmon: records which IPv4 hosts a Linux server talks to, with eBPF, so
//! its admins can turn the set into firewall allow and deny lists.
//!
//! The binary (`src/main.rs`) is a thin command dispatcher; everything lives
//! here, one module per concern, so that fuzz targets and benchmarks can
//! reach the parsers directly.
//!
//! - [`ebpf`]: loading the programs, the attach ladder, event transports;
//! - [`procnet`]: the `/proc/net` socket-table poller;
//! - [`store`]: the peer set and its checkpoint file;
//! - [`time`]: times as netmon records and writes them;
//! - [`run`]: the collection loop of `netmon run`;
//! - [`classify`], [`report`], [`rules`]: turning the set into decisions;
//! - [`cli`]: the command line.
pub mod classify;
pub mod cli;
pub mod ebpf;
pub mod follow;
pub mod generate;
pub mod lockfile;
pub mod metrics;
pub mod observe;
pub mod peer;
pub mod privilege;
pub mod probe;
pub mod procnet;
pub mod report;
pub mod rules;
pub mod run;
pub mod store;
pub mod time;
