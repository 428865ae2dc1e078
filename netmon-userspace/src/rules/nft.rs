//! The nft script: in table inet netmon, a set per direction and family
//! and a chain per direction.
//!
//! Port rules use sets of `ipv4_addr . inet_proto . inet_service` (and
//! `ipv6_addr . ...`) with intervals, so each element is a CIDR block, a
//! protocol and a port: TCP and UDP services share one set (`. tcp . 443`,
//! `. udp . 53`). One chain matches both families, each against its set.
use std::io::{self, Write};

use super::{Chain, Entry, FILTERED, Family, Ruleset, Words};
use crate::report::Ports;

/// Elements per `add element` statement: nft takes any number, people
/// reading the script take smaller blocks better.
const CHUNK: usize = 1024;

pub(super) fn write(ruleset: &Ruleset, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "#!/usr/sbin/nft -f")?;
    ruleset.write_about(out)?;
    writeln!(
        out,
        "#\n\
         # Loading this changes no traffic: each chain lets its peers through\n\
         # (return) and drops the rest, counted, but nothing reaches it until you\n\
         # jump to it.\n\
         # {}\n\
         # Check first with `nft -c -f FILE`. Re-applying replaces the sets and the\n\
         # chains, and leaves your own chains in the table alone (a set of the same\n\
         # name and another type, from --any-port, must be deleted first). To allow\n\
         # only the peers, keep what must always pass ahead of the jump; for IPv6\n\
         # that includes ICMPv6 neighbour discovery: without it no neighbour's\n\
         # address resolves and every IPv6 connection on the link stops, allowed\n\
         # ones included, and without router advertisements the default route\n\
         # expires:",
        ruleset.scope()
    )?;
    for chain in &ruleset.chains {
        let Words {
            hook,
            loopback,
            ssh,
            ..
        } = chain.words();
        let target = format!("allow_{}", ruleset.name_of(chain));
        writeln!(
            out,
            "#   nft add chain inet netmon {hook} '{{ type filter hook {hook} priority filter; }}'\n\
             #   nft add rule inet netmon {hook} {loopback} accept\n\
             #   nft add rule inet netmon {hook} ct state established,related accept\n\
             #   nft add rule inet netmon {hook} icmpv6 type {ND} accept\n\
             #   nft add rule inet netmon {hook} tcp {ssh} accept\n\
             #   nft add rule inet netmon {hook} jump {target}"
        )?;
    }
    writeln!(out, "table inet netmon {{")?;
    for chain in &ruleset.chains {
        for family in [Family::V4, Family::V6] {
            let set_type = match ruleset.ports {
                Ports::Observed => format!("{} . inet_proto . inet_service", family.nft_type()),
                Ports::Any => family.nft_type().to_owned(),
            };
            writeln!(
                out,
                "\tset {} {{\n\t\ttype {set_type}\n\t\tflags interval\n\t}}",
                ruleset.set_of(chain, family)
            )?;
        }
        writeln!(out, "\tchain allow_{} {{\n\t}}", ruleset.name_of(chain))?;
    }
    writeln!(out, "}}")?;
    for chain in &ruleset.chains {
        for family in [Family::V4, Family::V6] {
            writeln!(
                out,
                "flush set inet netmon {}",
                ruleset.set_of(chain, family)
            )?;
        }
        writeln!(
            out,
            "flush chain inet netmon allow_{}",
            ruleset.name_of(chain)
        )?;
    }
    for chain in &ruleset.chains {
        write_chain(ruleset, chain, out)?;
    }
    Ok(())
}

fn write_chain(ruleset: &Ruleset, chain: &Chain, out: &mut impl Write) -> io::Result<()> {
    for family in [Family::V4, Family::V6] {
        let set = ruleset.set_of(chain, family);
        let entries: Vec<_> = chain.entries_of(family).collect();
        for entries in entries.chunks(CHUNK) {
            writeln!(out, "add element inet netmon {set} {{")?;
            for (index, entry) in entries.iter().enumerate() {
                let comma = if index + 1 < entries.len() { "," } else { "" };
                writeln!(out, "\t{}{comma}", element(entry))?;
            }
            writeln!(out, "}}")?;
        }
    }
    let rule = format!("add rule inet netmon allow_{}", ruleset.name_of(chain));
    if ruleset.ports == Ports::Observed {
        // TCP and UDP only, what netmon records: other protocols are left
        // alone.
        writeln!(out, "{rule} meta l4proto != {} return", protocols())?;
    }
    let field = chain.words().nft;
    for family in [Family::V4, Family::V6] {
        let (proto, set) = (family.nft(), ruleset.set_of(chain, family));
        match ruleset.ports {
            Ports::Observed => writeln!(
                out,
                "{rule} {proto} {field} . meta l4proto . th dport @{set} return"
            )?,
            Ports::Any => writeln!(out, "{rule} {proto} {field} @{set} return")?,
        }
    }
    // Counted, so `nft list chain` shows what the allow list blocks.
    writeln!(out, "{rule} counter drop")
}

/// ICMPv6 neighbour discovery (RS, RA, NS, NA, redirect), for the hooks:
/// conntrack tracks none of it, so `established,related` does not pass it.
const ND: &str =
    "{ nd-router-solicit, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert, nd-redirect }";

/// The protocols port rules filter, as an nft set expression.
fn protocols() -> String {
    let names: Vec<_> = FILTERED.iter().map(|p| p.as_str()).collect();
    format!("{{ {} }}", names.join(", "))
}

fn element(entry: &Entry) -> String {
    match entry.service {
        Some(service) => format!(
            "{} . {} . {}",
            entry.block,
            service.protocol.as_str(),
            service.port
        ),
        None => entry.block.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        peer::Direction,
        rules::{
            RuleFormat,
            tests::{self, BOTH, statements},
        },
    };

    fn script(chains: &[Direction], ports: Ports) -> String {
        tests::script(RuleFormat::Nft, chains, ports)
    }

    /// TCP and UDP services share each direction's set of a family; the
    /// chain filters both protocols of both families, and leaves the other
    /// protocols (ICMP, ICMPv6) alone.
    #[test]
    fn each_direction_has_its_sets_and_chain() {
        let text = script(&BOTH, Ports::Observed);
        let set = |name: &str, family: &str| {
            [
                format!("\tset {name} {{"),
                format!("\t\ttype {family}_addr . inet_proto . inet_service"),
                "\t\tflags interval".to_owned(),
                "\t}".to_owned(),
            ]
        };
        let mut expected = vec!["table inet netmon {".to_owned()];
        for direction in ["in", "out"] {
            expected.extend(set(&format!("peers_v4_{direction}"), "ipv4"));
            expected.extend(set(&format!("peers_v4_{direction}6"), "ipv6"));
            expected.extend([
                format!("\tchain allow_peers_v4_{direction} {{"),
                "\t}".to_owned(),
            ]);
        }
        expected.push("}".to_owned());
        for direction in ["in", "out"] {
            expected.extend([
                format!("flush set inet netmon peers_v4_{direction}"),
                format!("flush set inet netmon peers_v4_{direction}6"),
                format!("flush chain inet netmon allow_peers_v4_{direction}"),
            ]);
        }
        expected.extend(
            [
                "add element inet netmon peers_v4_in {",
                "\t192.0.2.0/24 . tcp . 22,",
                "\t192.0.2.0/24 . udp . 514",
                "}",
                "add element inet netmon peers_v4_in6 {",
                "\t2001:db8:1::/120 . tcp . 22,",
                "\t2001:db8:1::/120 . udp . 514",
                "}",
                "add rule inet netmon allow_peers_v4_in meta l4proto != { tcp, udp } return",
                "add rule inet netmon allow_peers_v4_in ip saddr . meta l4proto . th dport @peers_v4_in return",
                "add rule inet netmon allow_peers_v4_in ip6 saddr . meta l4proto . th dport @peers_v4_in6 return",
                "add rule inet netmon allow_peers_v4_in counter drop",
                "add element inet netmon peers_v4_out {",
                "\t198.51.100.7/32 . tcp . 80,",
                "\t198.51.100.7/32 . tcp . 443,",
                "\t198.51.100.7/32 . udp . 53",
                "}",
                "add element inet netmon peers_v4_out6 {",
                "\t2001:db8::7/128 . tcp . 80,",
                "\t2001:db8::7/128 . tcp . 443,",
                "\t2001:db8::7/128 . udp . 53",
                "}",
                "add rule inet netmon allow_peers_v4_out meta l4proto != { tcp, udp } return",
                "add rule inet netmon allow_peers_v4_out ip daddr . meta l4proto . th dport @peers_v4_out return",
                "add rule inet netmon allow_peers_v4_out ip6 daddr . meta l4proto . th dport @peers_v4_out6 return",
                "add rule inet netmon allow_peers_v4_out counter drop",
            ]
            .map(str::to_owned),
        );
        assert_eq!(statements(&text), expected);
        assert!(text.contains("#   nft add rule inet netmon input jump allow_peers_v4_in\n"));
        assert!(text.contains("#   nft add rule inet netmon output jump allow_peers_v4_out\n"));
        // Neighbour discovery passes ahead of the jump, both ways.
        for hook in ["input", "output"] {
            let nd = format!("#   nft add rule inet netmon {hook} icmpv6 type {ND} accept\n");
            let jump = format!("#   nft add rule inet netmon {hook} jump");
            assert!(
                text.find(&nd).unwrap() < text.find(&jump).unwrap(),
                "{text}"
            );
        }
    }

    /// A family of which no peer was seen still has its (empty) set, so
    /// the chain drops it as it drops a stranger: no family passes whole.
    #[test]
    fn no_family_passes_whole() {
        let mut ruleset = tests::ruleset(RuleFormat::Nft, &BOTH, Ports::Any);
        for chain in &mut ruleset.chains {
            chain
                .entries
                .retain(|e| Family::of(e.block.first()) == Family::V4);
        }
        let mut out = Vec::new();
        write(&ruleset, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("nfproto"), "{text}");
        assert!(
            text.contains("\tset peers_v4_in6 {\n\t\ttype ipv6_addr\n"),
            "{text}"
        );
        assert!(text.contains("allow_peers_v4_in ip6 saddr @peers_v4_in6 return\n"));
        assert!(!text.contains("add element inet netmon peers_v4_in6"));
    }

    /// The input chain never matches a destination address: on input, every
    /// packet's destination is this host, and a host that once connected
    /// to its own address would let everything in.
    #[test]
    fn input_matches_sources_only() {
        for ports in [Ports::Observed, Ports::Any] {
            let text = script(&[Direction::Inbound], ports);
            assert!(!text.contains("daddr"), "{text}");
            let text = script(&[Direction::Outbound], ports);
            assert!(!text.contains("saddr"), "{text}");
        }
    }

    #[test]
    fn any_port_matches_addresses() {
        let text = script(&[Direction::Inbound], Ports::Any);
        let statements = statements(&text);
        assert!(statements.contains(&"\t\ttype ipv4_addr"));
        assert!(statements.contains(&"\t\ttype ipv6_addr"));
        assert!(statements.contains(&"\t192.0.2.0/24"));
        assert!(statements.contains(&"\t2001:db8:1::/120"));
        assert!(
            statements
                .contains(&"add rule inet netmon allow_peers_v4_in ip saddr @peers_v4_in return")
        );
        assert!(
            statements
                .contains(&"add rule inet netmon allow_peers_v4_in ip6 saddr @peers_v4_in6 return")
        );
        assert!(!text.contains("l4proto"));
    }
}
