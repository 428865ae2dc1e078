//! `netmon rules`: what the selected peers did, as nftables, ipset or
//! iptables rules.
//!
//! By default a rule allows a (peer, port) pair: inbound, the peer's
//! address to our port it connected to; outbound, our connections to the
//! peer's port ([`Allowed`] works them out, as `netmon diff` does). Each
//! direction gets its own set and chain: the input chain matches only
//! source addresses and the output chain only destination addresses, so
//! a peer's address can never let in traffic merely addressed to it. The
//! addresses of each port are aggregated into the fewest CIDR blocks that
//! cover exactly them, so a firewall holds one /24 rather than 256 /32s
//! and never an address that was not observed.
//!
//! Both families are filtered alike: an IPv6 packet reaching a chain is
//! let through exactly when an IPv4 one would be, with IPv6's own sets
//! beside IPv4's (nft, ipset) or an ip6tables script beside the iptables
//! one. No rule lets a whole family through: before IPv6 peers were
//! recorded, the chains returned every IPv6 packet, and a dual-stack host
//! was open to anyone reaching it over IPv6.
//!
//! Every script is safe to load twice (it replaces what it loaded before,
//! and only that) and changes no traffic until the admin hooks it in: the
//! policy stays theirs.
mod aggregate;
mod ipset;
mod iptables;
mod name;
mod nft;

use std::{
    collections::BTreeSet,
    io::{self, Write},
    path::PathBuf,
};

use anyhow::{bail, ensure};
use log::warn;

pub use self::{aggregate::aggregate, name::RuleName};
use crate::{
    classify::{Cidr, Family},
    peer::Direction,
    report::{self, Allowed, Inputs, Ports, Protocol, RuleSelection, Service},
    time::UnixTime,
};

/// The firewall tool a script is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleFormat {
    /// An `nft -f` script: table inet netmon, interval sets, unhooked chains.
    Nft,
    /// An `ipset restore` script: hash:net,port sets, swapped in atomically.
    Ipset,
    /// An `iptables-restore --noflush` script: chains of RETURN rules,
    /// IPv4's.
    Iptables,
    /// The same for `ip6tables-restore --noflush`: IPv6's.
    Ip6tables,
}

impl RuleFormat {
    /// The name sets and chains start with, without `--name`.
    fn default_name(self) -> &'static str {
        match self {
            Self::Nft => "peers_v4",
            Self::Ipset => "netmon_peers",
            // Chains of the same name in the other family's tables.
            Self::Iptables | Self::Ip6tables => "NETMON-PEERS",
        }
    }

    /// The families a script of this format filters.
    const fn families(self) -> &'static [Family] {
        match self {
            Self::Nft | Self::Ipset => &[Family::V4, Family::V6],
            Self::Iptables => &[Family::V4],
            Self::Ip6tables => &[Family::V6],
        }
    }
}

/// An address family in the words of the tools.
impl Family {
    /// The nft payload protocol of its addresses.
    const fn nft(self) -> &'static str {
        match self {
            Self::V4 => "ip",
            Self::V6 => "ip6",
        }
    }

    /// The nft type of its addresses.
    const fn nft_type(self) -> &'static str {
        match self {
            Self::V4 => "ipv4_addr",
            Self::V6 => "ipv6_addr",
        }
    }

    /// ipset's `family`.
    const fn ipset(self) -> &'static str {
        match self {
            Self::V4 => "inet",
            Self::V6 => "inet6",
        }
    }

    /// The command of its netfilter tables.
    const fn iptables(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    /// What its set's name ends in: IPv4's keep the names they had before
    /// netmon wrote IPv6 sets.
    const fn set_suffix(self) -> &'static str {
        match self {
            Self::V4 => "",
            Self::V6 => "6",
        }
    }

    const fn long_name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// What `netmon rules` writes.
#[derive(Clone, Debug)]
pub struct RulesRequest {
    /// Checkpoints or address lists, merged.
    pub files: Vec<PathBuf>,
    pub selection: RuleSelection,
    pub format: RuleFormat,
    /// What the sets and chains are named after; `None` for the format's
    /// own name.
    pub name: Option<RuleName>,
    /// Build this host's rules from every file: its own, and the
    /// connections other hosts recorded with it (see
    /// [`crate::report::host_view`]). `None`: the files' peers, merged.
    pub host: Option<String>,
}

/// `netmon rules`.
pub fn rules(request: &RulesRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let inputs = match &request.host {
        None => Inputs::load(&request.files)?,
        Some(host) => report::host_inputs(&request.files, host)?,
    };
    if request.selection.filter.netns == crate::store::NetnsScope::All {
        log::warn!(
            "--netns all joins every namespace's peers into one set of rules, which fits no one namespace: \
             build each namespace's with --netns ID"
        );
    }
    if !request.selection.filter.owners.is_empty() {
        log::warn!(
            "--owner picks the peers a matching owner talked to, and their rules allow every port any owner \
             used with them: netmon records ports per peer, not per owner"
        );
    }
    let allowed = Allowed::build(&inputs, &request.selection, UnixTime::now().secs())?;
    let ruleset = Ruleset::new(request, &allowed)?;
    match request.format {
        RuleFormat::Nft => nft::write(&ruleset, out)?,
        RuleFormat::Ipset => ipset::write(&ruleset, out)?,
        RuleFormat::Iptables => iptables::write(&ruleset, Family::V4, out)?,
        RuleFormat::Ip6tables => iptables::write(&ruleset, Family::V6, out)?,
    }
    Ok(())
}

/// The protocols port rules filter, what netmon records: a packet of
/// another passes the chains untouched.
const FILTERED: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

/// One allowed block of addresses, on a service or any port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    block: Cidr,
    service: Option<Service>,
}

/// One direction's allow list: what a set and a chain hold.
#[derive(Debug)]
struct Chain {
    direction: Direction,
    /// In service order, each service's blocks in numeric order.
    entries: Vec<Entry>,
}

impl Chain {
    /// `allowed`'s accesses in `direction`, aggregated port by port.
    fn new(allowed: &Allowed, direction: Direction) -> Self {
        let accesses: Vec<_> = allowed.of(direction).collect();
        let mut entries = Vec::new();
        for group in accesses.chunk_by(|a, b| a.service == b.service) {
            let service = group[0].service;
            let blocks = aggregate(group.iter().map(|access| access.peer));
            entries.extend(blocks.into_iter().map(|block| Entry { block, service }));
        }
        Self { direction, entries }
    }

    /// The entries of one family, in order.
    fn entries_of(&self, family: Family) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(move |entry| Family::of(entry.block.first()) == family)
    }

    /// A family without entries is dropped whole by a hooked chain (new
    /// connections; replies pass as established), which is right when it
    /// was never seen, or not selected (`--family`), and worth a word.
    fn warn_without(&self, family: Family, ports: Ports) {
        if self.entries_of(family).next().is_none() {
            let what = match ports {
                Ports::Observed => "TCP connection and UDP datagram",
                Ports::Any => "packet",
            };
            let family = family.long_name();
            warn!(
                "no {family} peer is allowed {}bound: the {} chain drops every new {family} {what}",
                self.direction,
                self.words().hook,
            );
        }
    }

    /// Port rules drop every UDP datagram no entry names: an outbound chain
    /// without any drops DNS, which is worth a word (a file from a netmon
    /// before format 3 records no UDP at all).
    fn warn_without_udp(&self, ports: Ports) {
        if ports == Ports::Observed
            && self.direction == Direction::Outbound
            && !self
                .entries
                .iter()
                .any(|entry| entry.service.is_some_and(|s| s.protocol == Protocol::Udp))
        {
            warn!(
                "no UDP peers were seen outbound: the output chain drops every UDP datagram, DNS and NTP included"
            );
        }
    }

    /// How each tool says this chain's direction.
    const fn words(&self) -> Words {
        match self.direction {
            Direction::Inbound => Words {
                nft: "saddr",
                iptables: "-s",
                ipset: "src",
                hook: "input",
                loopback: "iif lo",
                ssh: "dport 22",
                suffix: "in",
            },
            Direction::Outbound => Words {
                nft: "daddr",
                iptables: "-d",
                ipset: "dst",
                hook: "output",
                loopback: "oif lo",
                ssh: "sport 22",
                suffix: "out",
            },
        }
    }
}

/// A direction in the words of nft, iptables and ipset: the peer is the
/// source of packets on input and the destination on output.
struct Words {
    /// The nft payload field of the peer's address.
    nft: &'static str,
    /// The iptables option.
    iptables: &'static str,
    /// The `--match-set` flag of the address.
    ipset: &'static str,
    /// The netfilter hook the chain belongs on.
    hook: &'static str,
    /// The nft match for loopback traffic on that hook.
    loopback: &'static str,
    /// The nft match for SSH on that hook, when this host is the server.
    ssh: &'static str,
    /// What the chain's and set's names end in.
    suffix: &'static str,
}

/// What one script says.
#[derive(Debug)]
struct Ruleset {
    /// Input first, then output; only those with peers.
    chains: Vec<Chain>,
    ports: Ports,
    name: RuleName,
    format: RuleFormat,
    /// Comment lines saying where the rules came from.
    about: Vec<String>,
}

impl Ruleset {
    fn new(request: &RulesRequest, allowed: &Allowed) -> anyhow::Result<Self> {
        let selection = &request.selection;
        let flags = if selection == &RuleSelection::default() {
            String::new()
        } else {
            format!(" {selection}")
        };
        ensure!(
            !allowed.is_empty(),
            "no peers match{flags}: rules allowing nobody would block everything"
        );
        let mut chains = Vec::new();
        for &direction in allowed.directions() {
            let chain = Chain::new(allowed, direction);
            if !chain.entries.is_empty() {
                chain.warn_without_udp(selection.ports);
                for &family in request.format.families() {
                    chain.warn_without(family, selection.ports);
                }
                chains.push(chain);
            } else if selection.filter.direction.is_some() {
                bail!("no peers match{flags}: rules allowing nobody would block everything");
            } else {
                // An empty chain, hooked, would block the whole direction.
                warn!(
                    "no peers were seen {direction}bound: no {} chain is written, and that direction stays as your other rules leave it",
                    chain.words().hook
                );
            }
        }
        // Escaped, so no file name can end a comment line and start a rule.
        let files: Vec<_> = request
            .files
            .iter()
            .map(|file| file.display().to_string().escape_debug().to_string())
            .collect();
        // iptables' and ip6tables' scripts hold one family each: their
        // counts are that family's.
        let (peers, entries, family) = match *request.format.families() {
            [family] => {
                let peers: BTreeSet<_> = (allowed.iter())
                    .filter(|access| Family::of(access.peer) == family)
                    .map(|access| access.peer)
                    .collect();
                let entries = chains.iter().map(|c| c.entries_of(family).count()).sum();
                (peers.len(), entries, format!("{} ", family.long_name()))
            }
            _ => {
                let entries: usize = chains.iter().map(|chain| chain.entries.len()).sum();
                (allowed.peers, entries, String::new())
            }
        };
        let mut about = vec![format!(
            "netmon rules: {} in {}, from {}",
            crate::words::count(
                peers as u64,
                &format!("{family}peer"),
                &format!("{family}peers")
            ),
            crate::words::count(entries as u64, "entry", "entries"),
            files.join(" ")
        )];
        if !flags.is_empty() {
            about.push(format!("selected with{flags}"));
        }
        Ok(Self {
            chains,
            ports: selection.ports,
            name: request
                .name
                .clone()
                .unwrap_or_else(|| RuleName::default_of(request.format)),
            format: request.format,
            about,
        })
    }

    /// The IPv4 set (nft, ipset) or chain (iptables) name of `chain`.
    fn name_of(&self, chain: &Chain) -> String {
        self.set_of(chain, Family::V4)
    }

    /// The set of `family` (nft, ipset), or the chain (iptables, the same
    /// in both families' tables) of `chain`.
    fn set_of(&self, chain: &Chain, family: Family) -> String {
        let suffix = chain.words().suffix;
        match self.format {
            RuleFormat::Nft | RuleFormat::Ipset => {
                format!("{}_{suffix}{}", self.name, family.set_suffix())
            }
            RuleFormat::Iptables | RuleFormat::Ip6tables => {
                format!("{}-{}", self.name, suffix.to_uppercase())
            }
        }
    }

    fn write_about(&self, out: &mut impl Write) -> io::Result<()> {
        for line in &self.about {
            writeln!(out, "# {line}")?;
        }
        Ok(())
    }

    /// What the chains filter and leave to other rules, as a comment
    /// sentence.
    fn scope(&self) -> &'static str {
        match (self.format, self.ports) {
            (RuleFormat::Nft | RuleFormat::Ipset, Ports::Observed) => {
                "They filter TCP and UDP over IPv4 and IPv6 alike (what netmon\n\
                 # records): other protocols (ICMP, ICMPv6) are left to your other rules."
            }
            (RuleFormat::Nft | RuleFormat::Ipset, Ports::Any) => {
                "They filter every protocol over IPv4 and IPv6 alike."
            }
            (RuleFormat::Iptables, Ports::Observed) => {
                "They filter TCP and UDP over IPv4 (ICMP is left to your other rules).\n\
                 # IPv6 is ip6tables': load `netmon rules --format ip6tables` too, or\n\
                 # IPv6 goes unfiltered."
            }
            (RuleFormat::Iptables, Ports::Any) => {
                "They filter IPv4. IPv6 is ip6tables': load `netmon rules --format\n\
                 # ip6tables` too, or IPv6 goes unfiltered."
            }
            (RuleFormat::Ip6tables, Ports::Observed) => {
                "They filter TCP and UDP over IPv6 (ICMPv6 is left to your other rules).\n\
                 # IPv4 is iptables': load `netmon rules --format iptables` too, or IPv4\n\
                 # goes unfiltered."
            }
            (RuleFormat::Ip6tables, Ports::Any) => {
                "They filter IPv6. IPv4 is iptables': load `netmon rules --format\n\
                 # iptables` too, or IPv4 goes unfiltered."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        aggregate::tests::{range, range6},
        *,
    };

    /// The script `format` writes for [`ruleset`].
    pub(super) fn script(format: RuleFormat, chains: &[Direction], ports: Ports) -> String {
        let ruleset = ruleset(format, chains, ports);
        let mut out = Vec::new();
        match format {
            RuleFormat::Nft => nft::write(&ruleset, &mut out).unwrap(),
            RuleFormat::Ipset => ipset::write(&ruleset, &mut out).unwrap(),
            RuleFormat::Iptables => iptables::write(&ruleset, Family::V4, &mut out).unwrap(),
            RuleFormat::Ip6tables => iptables::write(&ruleset, Family::V6, &mut out).unwrap(),
        }
        String::from_utf8(out).unwrap()
    }

    /// 192.0.2.0/24 and 2001:db8:1::/120 connected to our port 22 and
    /// sent to our syslog (514/udp); we connected to 198.51.100.7 and
    /// 2001:db8::7 on 443 and 80 and asked them for names (53/udp).
    pub(super) fn ruleset(format: RuleFormat, chains: &[Direction], ports: Ports) -> Ruleset {
        let chains = chains
            .iter()
            .map(|&direction| {
                let (addrs, services) = match direction {
                    Direction::Inbound => (
                        [range([192, 0, 2, 0], 256), range6("2001:db8:1::", 256)].concat(),
                        vec![Service::tcp(22), Service::udp(514)],
                    ),
                    Direction::Outbound => (
                        vec![
                            "198.51.100.7".parse().unwrap(),
                            "2001:db8::7".parse().unwrap(),
                        ],
                        vec![Service::tcp(80), Service::tcp(443), Service::udp(53)],
                    ),
                };
                let services = match ports {
                    Ports::Observed => services.into_iter().map(Some).collect(),
                    Ports::Any => vec![None],
                };
                let entries = services
                    .into_iter()
                    .flat_map(|service| {
                        aggregate(addrs.clone())
                            .into_iter()
                            .map(move |block| Entry { block, service })
                    })
                    .collect();
                Chain { direction, entries }
            })
            .collect();
        Ruleset {
            chains,
            ports,
            name: RuleName::default_of(format),
            format,
            about: vec!["about".to_owned()],
        }
    }

    /// The lines that do something, without the comments.
    pub(super) fn statements(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    pub(super) const BOTH: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

    #[test]
    fn chains_aggregate_port_by_port() {
        let inputs = crate::report::tests::inputs(&crate::report::tests::checkpoint_with_ports(&[
            ("10.0.0.2", &[], &[22, 80]),
            ("10.0.0.3", &[], &[22]),
        ]));
        let allowed = Allowed::build(&inputs, &RuleSelection::default(), 0).unwrap();
        let chain = Chain::new(&allowed, Direction::Inbound);
        let entries: Vec<_> = chain
            .entries
            .iter()
            .map(|e| format!("{} {}", e.block, e.service.unwrap()))
            .collect();
        assert_eq!(entries, ["10.0.0.2/31 22/tcp", "10.0.0.2/32 80/tcp"]);
        assert!(Chain::new(&allowed, Direction::Outbound).entries.is_empty());
    }

    /// 53/udp and 53/tcp are different services: each has its entries,
    /// TCP's first, as the ports of a format 3 checkpoint name them.
    #[test]
    fn udp_services_are_their_own_entries() {
        let file = br#"{"version": 3, "host": "h1", "updated": "1970-01-01T00:00:00Z", "peers": [
            {"ip": "10.0.0.53", "first_seen": "1970-01-01T00:00:00Z", "last_seen": "1970-01-01T00:16:40Z",
             "outbound": 2, "inbound": 0, "remote_ports": ["53/udp", "53/tcp", "123/udp"], "local_ports": []},
            {"ip": "10.0.0.52", "first_seen": "1970-01-01T00:00:00Z", "last_seen": "1970-01-01T00:16:40Z",
             "outbound": 1, "inbound": 0, "remote_ports": ["53/udp"], "local_ports": []}]}"#;
        let inputs = crate::report::tests::inputs(file);
        let allowed = Allowed::build(&inputs, &RuleSelection::default(), 1_000).unwrap();
        let chain = Chain::new(&allowed, Direction::Outbound);
        let entries: Vec<_> = chain
            .entries
            .iter()
            .map(|e| format!("{} {}", e.block, e.service.unwrap()))
            .collect();
        assert_eq!(
            entries,
            [
                "10.0.0.53/32 53/tcp",
                "10.0.0.52/31 53/udp",
                "10.0.0.53/32 123/udp"
            ]
        );
    }
}
