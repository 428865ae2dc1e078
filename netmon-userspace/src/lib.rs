//! netmon: records which IPv4 hosts a Linux server talks to, with eBPF, so
//! its admins can turn the set into firewall allow and deny lists.
//!
//! The binary (`src/main.rs`) is a thin command dispatcher; everything lives
//! here, one module per concern, so that fuzz targets and benchmarks can
//! reach the parsers directly.
//!
//! - [`collect`]: `netmon run`: the attach ladder down the [`mode`]s, the
//!   collector it picks, recording and checkpointing, and the loop that
//!   ties them together;
//! - [`ebpf`]: loading the programs, event transports;
//! - [`procnet`]: the `/proc/net` socket-table poller;
//! - [`store`]: the peer set and its checkpoint file;
//! - [`host`]: the host's own addresses, which each checkpoint records;
//! - [`owner`]: which unit, container or pod a cgroup ID belongs to;
//! - [`time`]: times as netmon records and writes them;
//! - [`classify`], [`report`], [`rules`]: turning the set into decisions;
//! - [`graph`]: the access map, joining many hosts' files;
//! - [`escape`]: text from outside (process names, hosts) made safe to print;
//!   [`words`]: counts in sentences;
//! - [`cli`]: the command line, converted into the plain types above; no
//!   other module knows clap.
pub mod classify;
pub mod cli;
pub mod collect;
pub mod ebpf;
pub mod escape;
pub mod follow;
pub mod graph;
pub mod host;
pub mod metrics;
pub mod mode;
pub mod observe;
pub mod owner;
pub mod peer;
pub mod privilege;
pub mod probe;
pub mod procnet;
pub mod report;
pub mod rules;
pub mod store;
pub mod time;
pub mod words;
