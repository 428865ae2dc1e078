//! What rules built from a file allow: (peer, service) pairs, per direction.
//!
//! `netmon rules` writes an [`Allowed`] as a firewall script and `netmon
//! diff` checks another file's connections against one, so the dry run
//! and the rules are worked out in one place and cannot disagree.
//!
//! Inbound, a pair is the peer's address and our port it connected to;
//! outbound, the peer's address and its port we connected to. Either way
//! the port is a packet's destination port, on the chain of its direction.
use std::{collections::BTreeSet, fmt, net::IpAddr};

use anyhow::bail;
use log::warn;

use super::{Filter, Inputs, Peer};
pub use crate::peer::{Protocol, Service};
use crate::{classify::Class, peer::Direction, store::LIST_CAP};

/// What a rule matches beside the peer's address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ports {
    /// Only the ports the peer was seen on (the default).
    #[default]
    Observed,
    /// Any port and protocol: address-only rules (`--any-port`).
    Any,
}

/// One thing a rule allows: a peer, in a direction, on a service or on
/// any port (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Access {
    pub direction: Direction,
    pub service: Option<Service>,
    pub peer: IpAddr,
}

/// In rule terms: `10.0.0.5 -> :5432/tcp` inbound, `-> 10.0.0.5:5432/tcp`
/// or `-> [fd00::5]:5432/tcp` outbound, `any port` without a service.
impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let service = self
            .service
            .map_or_else(|| "any port".to_owned(), |s| format!(":{s}"));
        let sep = if self.service.is_some() { "" } else { " " };
        match self.direction {
            Direction::Inbound => write!(f, "{} -> {service}", self.peer),
            // `[fd00::53]:53/udp`, as in a URL: `fd00::53:53` would be
            // an address of its own.
            Direction::Outbound => match self.peer {
                IpAddr::V6(v6) if self.service.is_some() => write!(f, "-> [{v6}]{service}"),
                peer => write!(f, "-> {peer}{sep}{service}"),
            },
        }
    }
}

/// Which peers, directions and ports rules allow: `netmon rules`' and
/// `netmon diff`'s selection flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSelection {
    pub filter: Filter,
    pub ports: Ports,
}

impl RuleSelection {
    /// The directions with a chain: the one `--direction` names, or both.
    pub fn directions(&self) -> &'static [Direction] {
        match self.filter.direction {
            Some(Direction::Inbound) => &[Direction::Inbound],
            Some(Direction::Outbound) => &[Direction::Outbound],
            None => &[Direction::Inbound, Direction::Outbound],
        }
    }

    /// Port rules need ports, which address lists do not record.
    pub(super) fn check_inputs(&self, inputs: &Inputs) -> anyhow::Result<()> {
        if self.ports == Ports::Observed
            && let Some(path) = inputs.sources.address_lists().next()
        {
            bail!(
                "{} is an address list, which records no ports: use --any-port for rules by address alone",
                path.display()
            );
        }
        Ok(())
    }
}

/// As the flags that select the same.
impl fmt::Display for RuleSelection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.filter.is_empty(), self.ports) {
            (_, Ports::Observed) => write!(f, "{}", self.filter),
            (true, Ports::Any) => f.write_str("--any-port"),
            (false, Ports::Any) => write!(f, "{} --any-port", self.filter),
        }
    }
}

/// Addresses no generated allow list ever holds.
///
/// Loopback traffic never crosses a hook the runbook puts the chains
/// behind (`iif lo accept` comes first). The host's own addresses belong
/// here too: a host that connected to its own public address has it as
/// an outbound peer, and on its input chain every packet's destination is
/// that address. Version 1 checkpoints do not record them.
#[derive(Clone, Debug, Default)]
pub struct Exclusions {
    own: BTreeSet<IpAddr>,
}

impl Exclusions {
    /// The own addresses of every host whose file is among `inputs`, the
    /// ones a host can have.
    pub fn of(inputs: &Inputs) -> Self {
        Self {
            // A claim no host can make (a link-local address) would
            // drop a neighbour's peer from every host's rules.
            own: (inputs.snapshot.addresses.iter().copied())
                .filter(|addr| super::fleet::can_be_own(*addr))
                .collect(),
        }
    }

    /// Loopback (`::1` too), 0.0.0.0/8 and `::`, multicast (`ff00::/8`
    /// too) and broadcast addresses are no peer's the chains could filter,
    /// and a host's own addresses no peer of its own; they are peers of its
    /// containers' namespaces, though, which reach the host over their veth.
    pub fn excludes(&self, peer: &Peer<'_>) -> bool {
        Class::of(peer.ip).names_no_host() || (peer.netns.is_none() && self.own.contains(&peer.ip))
    }
}

/// Everything `peer` was seen doing in `direction`, as rules with `ports`
/// would allow it.
///
/// A peer of unknown direction (an address list's) is allowed both ways
/// by address; it has no ports, so port rules have nothing of it.
pub fn accesses(
    peer: &Peer<'_>,
    direction: Direction,
    ports: Ports,
) -> impl Iterator<Item = Access> {
    let record = peer.record;
    let directions = record.directions();
    let known = directions.inbound || directions.outbound;
    let any = (ports == Ports::Any && (!known || directions.has(direction))).then_some(None);
    let observed = match (ports, direction) {
        (Ports::Any, _) => None,
        (Ports::Observed, Direction::Inbound) => Some(record.local_ports.iter()),
        (Ports::Observed, Direction::Outbound) => Some(record.remote_ports.iter()),
    };
    let services = observed.into_iter().flatten().map(Some);
    any.into_iter().chain(services).map(move |service| Access {
        direction,
        service,
        peer: peer.ip,
    })
}

/// What rules built from one set of files allow.
#[derive(Debug)]
pub struct Allowed {
    directions: &'static [Direction],
    accesses: BTreeSet<Access>,
    /// Peers selected and not excluded, whether or not they allow
    /// anything (a peer seen without a port does not).
    pub peers: usize,
}

impl Allowed {
    /// The accesses of the peers `selection` picks from `inputs`; `now`
    /// (Unix seconds) anchors `--since`.
    ///
    /// Warns about peers whose ports the record may not hold in full, and
    /// about peers seen in a direction with no port recorded for it.
    pub fn build(inputs: &Inputs, selection: &RuleSelection, now: u64) -> anyhow::Result<Self> {
        selection.check_inputs(inputs)?;
        let exclusions = Exclusions::of(inputs);
        let directions = selection.directions();
        let mut peers = selection.filter.select(inputs, now);
        peers.retain(|peer| !exclusions.excludes(peer));
        let mut allowed = BTreeSet::new();
        let (mut capped, mut portless) = (0, 0);
        for peer in &peers {
            for &direction in directions {
                let before = allowed.len();
                allowed.extend(accesses(peer, direction, selection.ports));
                let added = allowed.len() - before;
                if selection.ports == Ports::Observed && peer.record.directions().has(direction) {
                    capped += usize::from(added >= LIST_CAP);
                    portless += usize::from(added == 0);
                }
            }
        }
        if capped > 0 {
            warn!(
                "{capped} peers were seen on {LIST_CAP} ports or more in a direction, the most a record keeps: \
                 their other ports are not allowed (--any-port allows every port)"
            );
        }
        if portless > 0 {
            warn!(
                "{portless} peers were seen in a direction with no port recorded for it (a connection reset \
                 before its port was known): that direction does not allow them"
            );
        }
        Ok(Self {
            directions,
            accesses: allowed,
            peers: peers.len(),
        })
    }

    /// The directions the rules filter, each with a chain.
    pub fn directions(&self) -> &'static [Direction] {
        self.directions
    }

    pub fn contains(&self, access: &Access) -> bool {
        self.accesses.contains(access)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Access> {
        self.accesses.iter()
    }

    /// The accesses of one direction, by service, in order.
    pub fn of(&self, direction: Direction) -> impl Iterator<Item = &Access> {
        self.accesses
            .iter()
            .filter(move |access| access.direction == direction)
    }

    pub fn is_empty(&self) -> bool {
        self.accesses.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{checkpoint_with_ports, inputs};

    /// A file claiming a link-local address (every link has fe80::1)
    /// must not take a neighbour's peer out of every host's rules.
    #[test]
    fn only_addresses_a_host_can_have_are_excluded_as_its_own() {
        let file = br#"{"version":4,"host":"h","addresses":["fe80::1","fd00::9","::"],"updated":"2026-01-01T00:00:00Z","peers":[
{"ip":"fe80::1","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z","outbound":0,"inbound":1,"remote_ports":[],"local_ports":["22/tcp"],"processes":[],"owners":[]},
{"ip":"fd00::9","first_seen":"2026-01-01T00:00:00Z","last_seen":"2026-01-01T00:00:00Z","outbound":0,"inbound":1,"remote_ports":[],"local_ports":["22/tcp"],"processes":[],"owners":[]}
]}"#;
        let inputs = inputs(file);
        let exclusions = Exclusions::of(&inputs);
        let excluded: Vec<String> = inputs
            .snapshot
            .peers
            .iter()
            .filter(|(ip, record)| exclusions.excludes(&Peer::new(*ip, record)))
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(excluded, ["fd00::9"]);
    }

    #[test]
    fn an_outbound_ipv6_access_brackets_its_address() {
        let access = |peer: &str, direction, port: Option<u16>| Access {
            direction,
            service: port.map(|port| Service {
                protocol: crate::peer::Protocol::Udp,
                port,
            }),
            peer: peer.parse().unwrap(),
        };
        let shown = [
            access("fd20:b::53", Direction::Outbound, Some(53)),
            access("fd20:b::53", Direction::Outbound, None),
            access("fd20:b::66", Direction::Inbound, Some(514)),
            access("10.0.0.5", Direction::Outbound, Some(53)),
        ]
        .map(|access| access.to_string());
        assert_eq!(
            shown,
            [
                "-> [fd20:b::53]:53/udp",
                "-> fd20:b::53 any port",
                "fd20:b::66 -> :514/udp",
                "-> 10.0.0.5:53/udp"
            ]
        );
    }

    fn allowed(file: &[u8], selection: &RuleSelection) -> Vec<String> {
        let inputs = inputs(file);
        Allowed::build(&inputs, selection, 1_000)
            .unwrap()
            .iter()
            .map(|access| format!("{} {access}", access.direction))
            .collect()
    }

    #[test]
    fn each_direction_allows_its_own_ports() {
        // 10.0.0.5 connected to our 5432; we connected to its 443 and 80.
        let file = checkpoint_with_ports(&[
            ("10.0.0.5", &[443, 80], &[5432]),
            ("127.0.0.1", &[8080], &[8080]),
        ]);
        assert_eq!(
            allowed(&file, &RuleSelection::default()),
            [
                "out -> 10.0.0.5:80/tcp",
                "out -> 10.0.0.5:443/tcp",
                "in 10.0.0.5 -> :5432/tcp",
            ]
        );
        let any = RuleSelection {
            ports: Ports::Any,
            ..RuleSelection::default()
        };
        assert_eq!(
            allowed(&file, &any),
            ["out -> 10.0.0.5 any port", "in 10.0.0.5 -> any port"]
        );
    }

    /// UDP services are allowed as TCP's are, each in its direction, and
    /// never stand in for the same port over TCP.
    #[test]
    fn udp_services_are_allowed_by_protocol() {
        let file = br#"{"version": 3, "host": "h1", "updated": "1970-01-01T00:00:00Z", "peers": [
            {"ip": "10.0.0.53", "first_seen": "1970-01-01T00:00:00Z", "last_seen": "1970-01-01T00:16:40Z",
             "outbound": 1, "inbound": 1, "remote_ports": ["53/udp"], "local_ports": ["514/udp", "514/tcp"]}]}"#;
        assert_eq!(
            allowed(file, &RuleSelection::default()),
            [
                "out -> 10.0.0.53:53/udp",
                "in 10.0.0.53 -> :514/tcp",
                "in 10.0.0.53 -> :514/udp",
            ]
        );
        let inputs = inputs(file);
        let allowed = Allowed::build(&inputs, &RuleSelection::default(), 1_000).unwrap();
        let peer = "10.0.0.53".parse().unwrap();
        let access = |service| Access {
            direction: Direction::Outbound,
            service: Some(service),
            peer,
        };
        assert!(allowed.contains(&access(Service::udp(53))));
        assert!(!allowed.contains(&access(Service::tcp(53))));
    }

    #[test]
    fn a_direction_filter_keeps_one_side() {
        let file = checkpoint_with_ports(&[("10.0.0.5", &[443], &[]), ("10.0.0.6", &[], &[22])]);
        let inbound = RuleSelection {
            filter: Filter {
                direction: Some(Direction::Inbound),
                ..Filter::default()
            },
            ports: Ports::Observed,
        };
        assert_eq!(allowed(&file, &inbound), ["in 10.0.0.6 -> :22/tcp"]);
    }

    #[test]
    fn address_lists_need_any_port() {
        let list = inputs(br#"["10.0.0.1"]"#);
        let error = Allowed::build(&list, &RuleSelection::default(), 0).unwrap_err();
        assert!(error.to_string().contains("--any-port"), "{error}");
        let any = RuleSelection {
            ports: Ports::Any,
            ..RuleSelection::default()
        };
        let got: Vec<_> = Allowed::build(&list, &any, 0)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["-> 10.0.0.1 any port", "10.0.0.1 -> any port"]);
    }
}
