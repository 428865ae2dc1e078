//! `netmon run --metrics ADDR`: what the collector is doing, for Prometheus.
//!
//! The metrics are prometheus-client counters and gauges (atomics): the
//! collection loop updates them as it goes, without locks on the hot path,
//! and the responder in `http` encodes the registry at each scrape.
mod http;

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
        info::Info,
    },
    registry::{Registry, Unit},
};

pub use self::http::Endpoint;
use crate::{
    classify::Class,
    collect::Losses,
    mode::AttachMode,
    peer::{Direction, Directions, Source},
    store::PeerSet,
};

/// The metrics of one `netmon run`.
pub struct Metrics {
    registry: Arc<Registry>,
    peers: Family<PeerLabels, Gauge>,
    /// `netmon_peers` gauges already taken from `peers`, by class and
    /// [`directions_index`]: every new peer moves one or two, and asking the
    /// family each time costs a lock and a label hash. Filled on first use,
    /// so the exposition still lists only label sets that ever held a peer.
    peer_gauges: [[OnceLock<Gauge>; 4]; Class::ALL.len()],
    /// `netmon_events_total` for the attach mode in use, by [`source_index`].
    events: [Counter; SOURCES.len()],
    /// `netmon_connections_total`, by [`direction_index`].
    connections: [Counter; 2],
    lost_events: Counter,
    uncounted_connections: Counter,
    dropped_peers: Counter,
    follow_dropped_lines: Counter,
    checkpoints: Counter,
    checkpoint_errors: Counter,
    checkpoint_duration: Histogram,
}

/// A peer's class and the directions it was seen in: `netmon_peers` splits
/// the set by both, so summing over either gives the whole set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    class: &'static str,
    /// `in`, `out`, `in+out`, or `none` for a peer only an old address
    /// list named.
    direction: &'static str,
}

impl PeerLabels {
    fn new(class: Class, directions: Directions) -> Self {
        Self {
            class: class.as_str(),
            direction: directions.as_str().unwrap_or("none"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    mode: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

const SOURCES: [Source; 5] = [
    Source::KprobeConnect,
    Source::KretprobeAccept,
    Source::Tracepoint,
    Source::CgroupUdp,
    Source::SocketTable,
];

fn source_index(source: Source) -> usize {
    match source {
        Source::KprobeConnect => 0,
        Source::KretprobeAccept => 1,
        Source::Tracepoint => 2,
        Source::CgroupUdp => 3,
        Source::SocketTable => 4,
    }
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::KprobeConnect => "kprobe_tcp_connect",
        Source::KretprobeAccept => "kretprobe_inet_csk_accept",
        Source::Tracepoint => "tracepoint_inet_sock_set_state",
        Source::CgroupUdp => "cgroup_udp",
        Source::SocketTable => "socket_table",
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Outbound, Direction::Inbound];

fn directions_index(directions: Directions) -> usize {
    usize::from(directions.inbound) << 1 | usize::from(directions.outbound)
}

fn direction_index(direction: Direction) -> usize {
    match direction {
        Direction::Outbound => 0,
        Direction::Inbound => 1,
    }
}

impl Metrics {
    /// Registers every metric for a run in `mode` that starts from `peers`
    /// (the file it continues).
    pub fn new(mode: AttachMode, peers: &PeerSet) -> Self {
        let mut registry = Registry::with_prefix("netmon");
        registry.register(
            "build",
            "The netmon binary serving these metrics",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "attach_mode",
            "How netmon watches connections (kprobe, btf-tracepoint, raw-tracepoint, tracepoint or proc)",
            Info::new([("mode", mode.as_str())]),
        );
        let peers_family = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "peers",
            "Peers in the set, by address class and the directions they were seen in",
            peers_family.clone(),
        );
        let events_family = Family::<EventLabels, Counter>::default();
        registry.register(
            "events",
            "Observations of connections folded into the set, by attach mode and the hook or table that made them",
            events_family.clone(),
        );
        let connections_family = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "connections",
            "Connections seen opening, by who opened them (out: this host)",
            connections_family.clone(),
        );
        let lost_events = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not hand over because the buffer was full \
             (their connections were still counted through the dedup map)",
            lost_events.clone(),
        );
        let uncounted_connections = Counter::default();
        registry.register(
            "uncounted_connections",
            "Connections the kernel could neither hand over nor keep (buffer and dedup map \
             both full): their peers may be missing",
            uncounted_connections.clone(),
        );
        let dropped_peers = Counter::default();
        registry.register(
            "dropped_peers",
            "Observations of new peers not kept because the set held --max-peers",
            dropped_peers.clone(),
        );
        let follow_dropped_lines = Counter::default();
        registry.register(
            "follow_dropped_lines",
            "--follow lines not written because the reader of stdout did not keep up",
            follow_dropped_lines.clone(),
        );
        let checkpoints = Counter::default();
        registry.register("checkpoints", "Checkpoints written", checkpoints.clone());
        let checkpoint_errors = Counter::default();
        registry.register(
            "checkpoint_errors",
            "Checkpoints that failed (the previous file is left intact)",
            checkpoint_errors.clone(),
        );
        // 1 ms to 16 s: a few peers take a millisecond, a million about one
        // second (most of it fsync).
        let checkpoint_duration = Histogram::new(exponential_buckets(0.001, 4.0, 8));
        registry.register_with_unit(
            "checkpoint_duration",
            "Time to write a checkpoint, fsync included",
            Unit::Seconds,
            checkpoint_duration.clone(),
        );

        let mode = mode.as_str();
        let metrics = Self {
            registry: Arc::new(registry),
            events: SOURCES.map(|source| {
                events_family.get_or_create_owned(&EventLabels {
                    mode,
                    source: source_name(source),
                })
            }),
            connections: DIRECTIONS.map(|direction| {
                connections_family.get_or_create_owned(&DirectionLabels {
                    direction: direction.as_str(),
                })
            }),
            peers: peers_family,
            peer_gauges: Default::default(),
            lost_events,
            uncounted_connections,
            dropped_peers,
            follow_dropped_lines,
            checkpoints,
            checkpoint_errors,
            checkpoint_duration,
        };
        metrics.count_peers(peers);
        metrics
    }

    /// The registry, for [`Endpoint::serve`].
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// Sets `netmon_peers` from a whole set, counting locally first: a
    /// million peers would otherwise take a million lookups in the family.
    fn count_peers(&self, peers: &PeerSet) {
        let mut counts = std::collections::HashMap::new();
        for (ip, record) in peers.iter() {
            *counts
                .entry(PeerLabels::new(Class::of(ip), record.directions()))
                .or_insert(0) += 1;
        }
        for (labels, count) in counts {
            self.peers.get_or_create(&labels).set(count);
        }
    }

    /// One observation folded into the set, of `connections` connections.
    pub fn event(&self, source: Source, direction: Direction, connections: u64) {
        self.events[source_index(source)].inc();
        if connections > 0 {
            self.connections[direction_index(direction)].inc_by(connections);
        }
    }

    /// A new peer not kept: the set is full (`--max-peers`).
    pub fn dropped(&self) {
        self.dropped_peers.inc();
    }

    /// A `--follow` line dropped: its reader is not keeping up.
    pub fn follow_dropped(&self) {
        self.follow_dropped_lines.inc();
    }

    /// A peer of `class` now seen in `after`, and before in `before`
    /// (`None`: it is new to the set).
    pub fn peer_moved(&self, class: Class, before: Option<Directions>, after: Directions) {
        if let Some(before) = before {
            self.peer_gauge(class, before).dec();
        }
        self.peer_gauge(class, after).inc();
    }

    /// The `netmon_peers` gauge of `class` and `directions`.
    fn peer_gauge(&self, class: Class, directions: Directions) -> &Gauge {
        self.peer_gauges[class as usize][directions_index(directions)].get_or_init(|| {
            // A clone shares the family's atomic.
            self.peers
                .get_or_create(&PeerLabels::new(class, directions))
                .clone()
        })
    }

    /// A checkpoint attempt that took `took`; `lost` is the events lost in
    /// this run so far.
    pub fn checkpointed(&self, ok: bool, took: Duration, lost: Losses) {
        self.checkpoint_duration.observe(took.as_secs_f64());
        if ok {
            self.checkpoints.inc();
        } else {
            self.checkpoint_errors.inc();
        }
        for (counter, total) in [
            (&self.lost_events, lost.events),
            (&self.uncounted_connections, lost.connections),
        ] {
            if let Some(more) = total.checked_sub(counter.get()) {
                counter.inc_by(more);
            }
        }
    }
}

/// The two text formats a scrape can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// What Prometheus asks for, and what prometheus-client writes.
    OpenMetrics,
    /// The classic Prometheus text format, for every client that does not
    /// ask for OpenMetrics (curl, promtool).
    Classic,
}

impl Format {
    /// Chooses by the request's `Accept` header, as Prometheus's own
    /// client libraries do.
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Classic,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The registry as text in `format`.
pub fn encode(registry: &Registry, format: Format) -> String {
    let mut openmetrics = String::new();
    text::encode(&mut openmetrics, registry).expect("writing to a String cannot fail");
    match format {
        Format::OpenMetrics => openmetrics,
        Format::Classic => to_classic(&openmetrics),
    }
}

/// prometheus-client writes OpenMetrics only. For the metric types used
/// here the classic format differs in the metadata lines alone: a
/// counter's HELP and TYPE name carry the `_total` its samples have, an
/// info metric is a gauge whose name ends in `_info`, and there are no
/// UNIT and EOF lines. Samples are left exactly as encoded.
fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE, and its name depends on the type.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ');
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {help_name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if !line.starts_with("# UNIT ") && line != "# EOF" {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::peer::Connection;

    fn outbound(peer: Ipv4Addr) -> Connection {
        Connection {
            peer: peer.into(),
            remote_port: 443,
            local_port: 40000,
            protocol: crate::peer::Protocol::Tcp,
            direction: Direction::Outbound,
            process: None,
            source: Source::Tracepoint,
            origin: crate::peer::Origin::default(),
            netns: None,
            owner: None,
        }
    }

    #[test]
    fn classic_format_names_counters_and_infos_as_their_samples() {
        let metrics = Metrics::new(AttachMode::Tracepoint, &PeerSet::default());
        let lost = Losses {
            events: 2,
            connections: 5,
        };
        metrics.checkpointed(true, Duration::from_millis(3), lost);
        let classic = encode(&metrics.registry, Format::Classic);
        for expected in [
            "# HELP netmon_build_info The netmon binary serving these metrics.\n# TYPE netmon_build_info gauge\nnetmon_build_info{version=\"",
            "# HELP netmon_checkpoints_total Checkpoints written.\n# TYPE netmon_checkpoints_total counter\nnetmon_checkpoints_total 1\n",
            "# TYPE netmon_lost_events_total counter\nnetmon_lost_events_total 2\n",
            "# TYPE netmon_uncounted_connections_total counter\nnetmon_uncounted_connections_total 5\n",
            "# TYPE netmon_checkpoint_duration_seconds histogram\nnetmon_checkpoint_duration_seconds_sum 0.003\n",
            "netmon_events_total{mode=\"tracepoint\",source=\"socket_table\"} 0\n",
        ] {
            assert!(classic.contains(expected), "{expected}\nnot in:\n{classic}");
        }
        assert!(!classic.contains("# UNIT") && !classic.contains("# EOF"));
        let openmetrics = encode(&metrics.registry, Format::OpenMetrics);
        assert!(openmetrics.ends_with("# EOF\n"));
        assert!(openmetrics.contains("# TYPE netmon_checkpoints counter\n"));
    }

    #[test]
    fn peers_move_between_direction_series_and_sum_to_the_set() {
        let mut peers = PeerSet::default();
        let known = Ipv4Addr::new(10, 0, 0, 1);
        peers.record(&outbound(known), 1, 0);
        let metrics = Metrics::new(AttachMode::Kprobe, &peers);
        let gauge = |class: Class, direction: &'static str| {
            metrics
                .peers
                .get(&PeerLabels {
                    class: class.as_str(),
                    direction,
                })
                .map_or(0, |gauge| gauge.get())
        };
        assert_eq!(gauge(Class::Private, "out"), 1);
        let both = Directions {
            outbound: true,
            inbound: true,
        };
        metrics.peer_moved(
            Class::Private,
            Some(peers.get(known.into()).unwrap().directions()),
            both,
        );
        metrics.peer_moved(Class::Public, None, both);
        assert_eq!(gauge(Class::Private, "out"), 0);
        assert_eq!(gauge(Class::Private, "in+out"), 1);
        assert_eq!(gauge(Class::Public, "in+out"), 1);
    }

    #[test]
    fn accept_header_picks_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(Format::negotiate(None), Format::Classic);
    }
}
