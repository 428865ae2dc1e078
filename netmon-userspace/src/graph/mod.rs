//! The access map: who talks to whom across a fleet.
//!
//! Each checkpoint is one host's view: its peers, in and out, with ports.
//! [`Graph::build`] joins the views: a peer address that is another
//! file's own address (format 2's `addresses`) is that host. Nodes are the
//! hosts and the peers that are not hosts (grouped as asked); edges are
//! client → server, with the server's ports and what each side saw. An
//! edge between two monitored hosts that only one side recorded is
//! flagged as one-sided: NAT, a load balancer or proxy between them, or a
//! host that was not collecting then.
mod render;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

pub use self::render::GraphFormat;
use crate::{
    classify::Class,
    peer::{Direction, Owner, Service},
    report::{Filter, Peer, View, host_named, load_views},
    store::PeerRecord,
    time::UnixTime,
};

/// What `netmon graph` is asked for.
#[derive(Clone, Debug)]
pub struct GraphRequest {
    /// One checkpoint per host.
    pub files: Vec<PathBuf>,
    pub filter: Filter,
    pub group: Group,
    /// Only the edges that have this host at either end.
    pub host: Option<String>,
    pub format: GraphFormat,
}

/// How peers that are no monitored host become nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Group {
    /// One node per address.
    #[default]
    None,
    /// One node per /24, and per /64 for IPv6.
    Slash24,
    /// One node per address class (private, public, ...).
    Class,
}

/// `netmon graph`.
pub fn graph(request: &GraphRequest, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let views = load_views(&request.files)?;
    let mut graph = Graph::build(
        &views,
        &request.filter,
        request.group,
        UnixTime::now().secs(),
    );
    let host = match &request.host {
        Some(host) => {
            let name = host_named(&views, host)?;
            // Every file's host is a node, with edges or without.
            if let Some(node) = graph.host(name) {
                graph.keep_edges_of(node);
            }
            Some(name)
        }
        None => None,
    };
    render::write(&graph, request.format, host, out)?;
    Ok(())
}

/// A node of the map.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// A host with a file: its name.
    Host(String),
    /// A peer that is no monitored host.
    Address(IpAddr),
    /// Peers grouped by /24 (IPv4) or /64 (IPv6): the network's address.
    Net(IpAddr),
    /// An IPv6 link-local peer of `host`'s links, as [`Node::Address`],
    /// or with `net` its /64: every link has fe80::/64 alike, so one
    /// host's fe80::1 is not another's.
    LinkLocal { ip: IpAddr, net: bool, host: String },
    /// Peers grouped by class.
    Class(Class),
}

impl Node {
    pub fn is_host(&self) -> bool {
        matches!(self, Self::Host(_))
    }
}

/// What one side recorded of an edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    pub connections: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

impl Seen {
    fn of(record: &PeerRecord, connections: u64) -> Self {
        Self {
            connections,
            first_seen: record.first_seen,
            last_seen: record.last_seen,
        }
    }

    fn add(this: &mut Option<Self>, other: Self) {
        *this = Some(match *this {
            None => other,
            Some(seen) => Self {
                connections: seen.connections.saturating_add(other.connections),
                first_seen: seen.first_seen.min(other.first_seen),
                last_seen: seen.last_seen.max(other.last_seen),
            },
        });
    }
}

/// Connections from a client to a server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edge {
    /// The server's ports.
    pub ports: BTreeSet<Service>,
    /// As the client's file recorded them (its outbound).
    pub by_client: Option<Seen>,
    /// As the server's file recorded them (its inbound).
    pub by_server: Option<Seen>,
    /// The units and containers on either end that made them, as the
    /// files recorded them.
    pub owners: BTreeSet<Owner>,
}

/// Nodes, and edges keyed by (client, server) node index.
#[derive(Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub edges: BTreeMap<(usize, usize), Edge>,
    /// Each host's own addresses, as its file records them.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
}

impl Graph {
    /// Joins the views; `filter` picks the peers (and, with a direction,
    /// which side of each file's traffic counts); `now` anchors `--since`.
    pub fn build(views: &[View], filter: &Filter, group: Group, now: u64) -> Self {
        let owners: HashMap<IpAddr, &str> = views
            .iter()
            .flat_map(|view| {
                view.snapshot
                    .addresses
                    .iter()
                    .map(|a| (*a, view.host.as_str()))
            })
            .collect();
        let mut graph = Self::default();
        let mut index: BTreeMap<Node, usize> = BTreeMap::new();
        let mut node = |graph: &mut Self, node: Node| {
            *index.entry(node.clone()).or_insert_with(|| {
                graph.nodes.push(node);
                graph.nodes.len() - 1
            })
        };
        for view in views {
            let me = node(&mut graph, Node::Host(view.host.clone()));
            graph
                .addresses
                .entry(view.host.clone())
                .or_default()
                .extend(&view.snapshot.addresses);
            for (key, record) in view.snapshot.peers.entries() {
                let (ip, netns) = (key.ip(), key.netns());
                if !filter.matches(
                    &Peer {
                        netns,
                        ..Peer::new(ip, record)
                    },
                    now,
                ) {
                    continue;
                }
                // Another namespace's peers (with --netns) are its own
                // node's, whose peer the host itself can be.
                let me = match netns {
                    None => me,
                    Some(id) => node(&mut graph, Node::Host(format!("{} netns {id}", view.host))),
                };
                let other = match owners.get(&ip) {
                    Some(&host) if host == view.host && netns.is_none() => continue,
                    Some(&host) => Node::Host(host.to_owned()),
                    None if ip.is_loopback() => continue,
                    None => group.node_of(ip, &view.host),
                };
                let other = node(&mut graph, other);
                let directions = record.directions();
                let wanted = |direction| filter.direction.is_none_or(|d| d == direction);
                if directions.outbound && wanted(Direction::Outbound) {
                    let edge = graph.edges.entry((me, other)).or_default();
                    edge.ports.extend(record.remote_ports.iter());
                    edge.owners.extend(record.owners.iter());
                    Seen::add(&mut edge.by_client, Seen::of(record, record.outbound));
                }
                if directions.inbound && wanted(Direction::Inbound) {
                    let edge = graph.edges.entry((other, me)).or_default();
                    edge.ports.extend(record.local_ports.iter());
                    edge.owners.extend(record.owners.iter());
                    Seen::add(&mut edge.by_server, Seen::of(record, record.inbound));
                }
            }
        }
        graph
    }

    /// Whether `edge`, between two monitored hosts, was recorded by one
    /// side only.
    pub fn one_sided(&self, (client, server): (usize, usize), edge: &Edge) -> bool {
        self.nodes[client].is_host()
            && self.nodes[server].is_host()
            && (edge.by_client.is_none() || edge.by_server.is_none())
    }

    fn host(&self, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|node| matches!(node, Node::Host(host) if host == name))
    }

    /// Drops every edge that does not touch `node`, and the nodes left
    /// without edges (`node` itself stays).
    fn keep_edges_of(&mut self, node: usize) {
        self.edges
            .retain(|&(client, server), _| client == node || server == node);
        let used: BTreeSet<usize> = self
            .edges
            .keys()
            .flat_map(|&(client, server)| [client, server])
            .chain([node])
            .collect();
        let renumber: HashMap<usize, usize> = used
            .iter()
            .enumerate()
            .map(|(new, &old)| (old, new))
            .collect();
        self.nodes = used.iter().map(|&old| self.nodes[old].clone()).collect();
        self.edges = std::mem::take(&mut self.edges)
            .into_iter()
            .map(|((client, server), edge)| ((renumber[&client], renumber[&server]), edge))
            .collect();
    }
}

impl Group {
    /// The node of `ip`, a peer of `host`.
    fn node_of(self, ip: IpAddr, host: &str) -> Node {
        let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
        match self {
            Self::None | Self::Slash24 if link_local => Node::LinkLocal {
                ip: if self == Self::None {
                    ip
                } else {
                    Self::net_of(ip)
                },
                net: self == Self::Slash24,
                host: host.to_owned(),
            },
            Self::None => Node::Address(ip),
            Self::Slash24 => Node::Net(Self::net_of(ip)),
            Self::Class => Node::Class(Class::of(ip)),
        }
    }

    /// The prefix length `--group /24` groups `ip`'s family by: IPv6's
    /// counterpart of an IPv4 /24 is a /64, one link's.
    fn net_bits(ip: IpAddr) -> u32 {
        if ip.is_ipv4() { 24 } else { 64 }
    }

    fn net_of(ip: IpAddr) -> IpAddr {
        let bits = Self::net_bits(ip);
        match ip {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & !(u32::MAX >> bits))),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & !(u128::MAX >> bits))),
        }
    }
}
