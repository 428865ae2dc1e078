//! `netmon rules`: the selected peers as nftables, ipset or iptables rules.
//!
//! The addresses are first aggregated into the fewest CIDR blocks that
//! cover exactly them, so a firewall holds one /24 rather than 256 /32s and
//! never an address that was not observed. Every script is safe to load
//! twice (it replaces what it loaded before, and only that) and changes no
//! traffic until the admin hooks it in: the policy stays theirs.
mod aggregate;
mod name;

use std::{
    io::{self, Write},
    path::PathBuf,
};

use anyhow::ensure;

pub use self::{aggregate::aggregate, name::RuleName};
use crate::{
    classify::Cidr,
    peer::Direction,
    report::{Filter, Inputs},
    time::UnixTime,
};

/// The firewall tool a script is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleFormat {
    /// An `nft -f` script: table inet netmon, interval set, unhooked chain.
    Nft,
    /// An `ipset restore` script: a hash:net set, swapped in atomically.
    Ipset,
    /// An `iptables-restore --noflush` script: one chain of RETURN rules.
    Iptables,
}

impl RuleFormat {
    /// The set (nft, ipset) or chain (iptables) name without `--name`.
    fn default_name(self) -> &'static str {
        match self {
            Self::Nft => "peers_v4",
            Self::Ipset => "netmon_peers",
            Self::Iptables => "NETMON-PEERS",
        }
    }
}

/// Which address of a packet is the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Peers that connect to us: their packets come from them.
    Source,
    /// Peers we connect to: our packets go to them.
    Destination,
}

impl Side {
    /// Without `--direction`, a packet matches if either address is a
    /// peer's: the chain then works hooked on input and on output alike.
    fn of(direction: Option<Direction>) -> &'static [Self] {
        match direction {
            Some(Direction::Inbound) => &[Self::Source],
            Some(Direction::Outbound) => &[Self::Destination],
            None => &[Self::Source, Self::Destination],
        }
    }

    /// How each tool says this side.
    const fn words(self) -> Words {
        match self {
            Self::Source => Words {
                nft: "saddr",
                iptables: "-s",
                ipset: "src",
                hook: "input",
                loopback: "iif lo",
                ssh: "dport 22",
            },
            Self::Destination => Words {
                nft: "daddr",
                iptables: "-d",
                ipset: "dst",
                hook: "output",
                loopback: "oif lo",
                ssh: "sport 22",
            },
        }
    }
}

/// A [`Side`] in the words of nft, iptables and ipset.
struct Words {
    /// The nft payload field.
    nft: &'static str,
    /// The iptables option.
    iptables: &'static str,
    /// The `--match-set` flag.
    ipset: &'static str,
    /// The netfilter hook whose packets carry the peer on this side.
    hook: &'static str,
    /// The nft match for loopback traffic on that hook.
    loopback: &'static str,
    /// The nft match for SSH on that hook, when this host is the server.
    ssh: &'static str,
}

/// Peers that an nft set or ipset holds at most.
const IPSET_MAXELEM: usize = 1 << 24;

/// What one script says.
struct Ruleset {
    blocks: Vec<Cidr>,
    sides: &'static [Side],
    name: RuleName,
    /// Comment lines saying where the rules came from.
    about: Vec<String>,
}

/// What `netmon rules` writes.
#[derive(Clone, Debug)]
pub struct RulesRequest {
    /// Checkpoints or address lists, merged.
    pub files: Vec<PathBuf>,
    pub filter: Filter,
    pub format: RuleFormat,
    /// The set or chain to fill; `None` for the format's own name.
    pub name: Option<RuleName>,
}

/// `netmon rules`.
pub fn rules(request: &RulesRequest, out: &mut impl Write) -> anyhow::Result<()> {
    let inputs = Inputs::load(&request.files)?;
    let peers = request.filter.select(&inputs, UnixTime::now().secs());
    ensure!(
        !peers.is_empty(),
        "no peers match{}{}: rules allowing nobody would block everything",
        if request.filter.is_empty() { "" } else { " " },
        request.filter
    );
    let ruleset = Ruleset::new(
        request,
        aggregate(peers.iter().map(|peer| peer.ip)),
        peers.len(),
    );
    ensure!(
        request.format != RuleFormat::Ipset || ruleset.blocks.len() <= IPSET_MAXELEM,
        "{} blocks are more than the ipset of this script holds ({IPSET_MAXELEM})",
        ruleset.blocks.len()
    );
    match request.format {
        RuleFormat::Nft => ruleset.write_nft(out)?,
        RuleFormat::Ipset => ruleset.write_ipset(out)?,
        RuleFormat::Iptables => ruleset.write_iptables(out)?,
    }
    Ok(())
}

/// Elements per `add element` statement: nft takes any number, people
/// reading the script take smaller blocks better.
const NFT_CHUNK: usize = 1024;

impl Ruleset {
    fn new(request: &RulesRequest, blocks: Vec<Cidr>, peers: usize) -> Self {
        // Escaped, so no file name can end a comment line and start a rule.
        let files: Vec<_> = request
            .files
            .iter()
            .map(|file| file.display().to_string().escape_debug().to_string())
            .collect();
        let mut about = vec![format!(
            "netmon rules: {peers} peers in {} blocks, from {}",
            blocks.len(),
            files.join(" ")
        )];
        if !request.filter.is_empty() {
            about.push(format!("selected with {}", request.filter));
        }
        Self {
            blocks,
            sides: Side::of(request.filter.direction),
            name: request
                .name
                .clone()
                .unwrap_or_else(|| RuleName::default_of(request.format)),
            about,
        }
    }

    fn write_about(&self, out: &mut impl Write) -> io::Result<()> {
        for line in &self.about {
            writeln!(out, "# {line}")?;
        }
        Ok(())
    }

    fn write_nft(&self, out: &mut impl Write) -> io::Result<()> {
        let set = &self.name;
        let chain = format!("allow_{set}");
        writeln!(out, "#!/usr/sbin/nft -f")?;
        self.write_about(out)?;
        writeln!(
            out,
            "#\n\
             # Loading this changes no traffic: chain {chain} lets the peers through\n\
             # (return) and drops the rest, but nothing reaches it until you jump to it.\n\
             # Check first with `nft -c -f FILE`. Re-applying replaces the set and the\n\
             # chain, and leaves your own chains in the table alone. To allow only the\n\
             # peers, keep what must always pass ahead of the jump:"
        )?;
        for side in self.sides {
            let Words {
                hook,
                loopback,
                ssh,
                ..
            } = side.words();
            writeln!(
                out,
                "#   nft add chain inet netmon {hook} '{{ type filter hook {hook} priority filter; }}'\n\
                 #   nft add rule inet netmon {hook} {loopback} accept\n\
                 #   nft add rule inet netmon {hook} ct state established,related accept\n\
                 #   nft add rule inet netmon {hook} tcp {ssh} accept\n\
                 #   nft add rule inet netmon {hook} jump {chain}"
            )?;
        }
        writeln!(
            out,
            "table inet netmon {{\n\
             \tset {set} {{\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}}\n\
             \tchain {chain} {{\n\t}}\n\
             }}\n\
             flush set inet netmon {set}\n\
             flush chain inet netmon {chain}"
        )?;
        for chunk in self.blocks.chunks(NFT_CHUNK) {
            writeln!(out, "add element inet netmon {set} {{")?;
            for (index, block) in chunk.iter().enumerate() {
                let comma = if index + 1 < chunk.len() { "," } else { "" };
                writeln!(out, "\t{block}{comma}")?;
            }
            writeln!(out, "}}")?;
        }
        // netmon records IPv4 only: IPv6 is left to the admin's other rules.
        writeln!(out, "add rule inet netmon {chain} meta nfproto ipv6 return")?;
        for side in self.sides {
            let field = side.words().nft;
            writeln!(out, "add rule inet netmon {chain} ip {field} @{set} return")?;
        }
        // Counted, so `nft list chain` shows what the allow list blocks.
        writeln!(out, "add rule inet netmon {chain} counter drop")
    }

    fn write_ipset(&self, out: &mut impl Write) -> io::Result<()> {
        let set = &self.name;
        let new = format!("{set}-new");
        let create = format!("hash:net family inet maxelem {IPSET_MAXELEM} -exist");
        self.write_about(out)?;
        writeln!(
            out,
            "#\n\
             # Load with `ipset restore -f FILE`: the set is filled as {new} and\n\
             # swapped in at once, so re-applying never leaves it empty or partial.\n\
             # If {set} exists with other parameters, ipset refuses it: pick another\n\
             # --name. Loading changes no traffic until a rule uses the set; to allow\n\
             # only the peers, keep what must always pass ahead of it, for example:"
        )?;
        for side in self.sides {
            let Words { hook, ipset, .. } = side.words();
            let chain = hook.to_uppercase();
            writeln!(
                out,
                "#   iptables -A {chain} -m set ! --match-set {set} {ipset} -j DROP"
            )?;
        }
        writeln!(
            out,
            "create {set} {create}\ncreate {new} {create}\nflush {new}"
        )?;
        for block in &self.blocks {
            writeln!(out, "add {new} {block}")?;
        }
        writeln!(out, "swap {new} {set}\ndestroy {new}")
    }

    fn write_iptables(&self, out: &mut impl Write) -> io::Result<()> {
        let chain = &self.name;
        self.write_about(out)?;
        writeln!(
            out,
            "#\n\
             # Load with `iptables-restore --noflush FILE` (check first with --test):\n\
             # --noflush keeps your other rules, and declaring the chain empties it,\n\
             # so re-applying replaces its rules. The chain lets the peers through\n\
             # (RETURN) and drops the rest, but nothing reaches it until you jump to\n\
             # it, after what must always pass, for example:"
        )?;
        for side in self.sides {
            let hook = side.words().hook.to_uppercase();
            writeln!(out, "#   iptables -A {hook} -j {chain}")?;
        }
        if self.blocks.len() > 1000 {
            writeln!(
                out,
                "# With {} rules, --format ipset matches faster (one hashed lookup).",
                self.blocks.len() * self.sides.len()
            )?;
        }
        writeln!(out, "*filter\n:{chain} - [0:0]")?;
        for block in &self.blocks {
            for side in self.sides {
                let option = side.words().iptables;
                writeln!(out, "-A {chain} {option} {block} -j RETURN")?;
            }
        }
        writeln!(out, "-A {chain} -j DROP\nCOMMIT")
    }
}

#[cfg(test)]
mod tests {
    use super::{aggregate::tests::range, *};

    fn script(format: RuleFormat, direction: Option<Direction>) -> String {
        let ruleset = Ruleset {
            blocks: aggregate(
                range([192, 0, 2, 0], 256)
                    .into_iter()
                    .chain(["198.51.100.7".parse().unwrap()]),
            ),
            sides: Side::of(direction),
            name: RuleName::default_of(format),
            about: vec!["about".to_owned()],
        };
        let mut out = Vec::new();
        match format {
            RuleFormat::Nft => ruleset.write_nft(&mut out),
            RuleFormat::Ipset => ruleset.write_ipset(&mut out),
            RuleFormat::Iptables => ruleset.write_iptables(&mut out),
        }
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The lines that do something, without the comments.
    fn statements(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn nft_matches_the_side_of_the_direction() {
        let inbound = script(RuleFormat::Nft, Some(Direction::Inbound));
        assert_eq!(
            statements(&inbound),
            [
                "table inet netmon {",
                "\tset peers_v4 {",
                "\t\ttype ipv4_addr",
                "\t\tflags interval",
                "\t}",
                "\tchain allow_peers_v4 {",
                "\t}",
                "}",
                "flush set inet netmon peers_v4",
                "flush chain inet netmon allow_peers_v4",
                "add element inet netmon peers_v4 {",
                "\t192.0.2.0/24,",
                "\t198.51.100.7/32",
                "}",
                "add rule inet netmon allow_peers_v4 meta nfproto ipv6 return",
                "add rule inet netmon allow_peers_v4 ip saddr @peers_v4 return",
                "add rule inet netmon allow_peers_v4 counter drop",
            ]
        );
        let outbound = script(RuleFormat::Nft, Some(Direction::Outbound));
        assert!(outbound.contains("ip daddr @peers_v4 return") && !outbound.contains("saddr @"));
        let either = script(RuleFormat::Nft, None);
        assert!(either.contains("ip saddr @peers_v4 return\nadd rule inet netmon allow_peers_v4 ip daddr @peers_v4 return"));
    }

    #[test]
    fn ipset_swaps_a_filled_set_in() {
        assert_eq!(
            statements(&script(RuleFormat::Ipset, None)),
            [
                "create netmon_peers hash:net family inet maxelem 16777216 -exist",
                "create netmon_peers-new hash:net family inet maxelem 16777216 -exist",
                "flush netmon_peers-new",
                "add netmon_peers-new 192.0.2.0/24",
                "add netmon_peers-new 198.51.100.7/32",
                "swap netmon_peers-new netmon_peers",
                "destroy netmon_peers-new",
            ]
        );
    }

    #[test]
    fn iptables_returns_for_peers_and_drops_the_rest() {
        assert_eq!(
            statements(&script(RuleFormat::Iptables, Some(Direction::Outbound))),
            [
                "*filter",
                ":NETMON-PEERS - [0:0]",
                "-A NETMON-PEERS -d 192.0.2.0/24 -j RETURN",
                "-A NETMON-PEERS -d 198.51.100.7/32 -j RETURN",
                "-A NETMON-PEERS -j DROP",
                "COMMIT",
            ]
        );
    }
}
