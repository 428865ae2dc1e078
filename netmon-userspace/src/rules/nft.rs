//! The nft script: in table inet netmon, a set and a chain per direction.
//!
//! Port rules use sets of `ipv4_addr . inet_proto . inet_service` with
//! intervals, so each element is a CIDR block, a protocol and a port:
//! TCP and UDP services share one set (`. tcp . 443`, `. udp . 53`).
use std::io::{self, Write};

use super::{Chain, Entry, FILTERED, Ruleset, Words};
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
         # only the peers, keep what must always pass ahead of the jump:",
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
             #   nft add rule inet netmon {hook} tcp {ssh} accept\n\
             #   nft add rule inet netmon {hook} jump {target}"
        )?;
    }
    let set_type = match ruleset.ports {
        Ports::Observed => "ipv4_addr . inet_proto . inet_service",
        Ports::Any => "ipv4_addr",
    };
    writeln!(out, "table inet netmon {{")?;
    for chain in &ruleset.chains {
        let set = ruleset.name_of(chain);
        writeln!(
            out,
            "\tset {set} {{\n\t\ttype {set_type}\n\t\tflags interval\n\t}}\n\
             \tchain allow_{set} {{\n\t}}"
        )?;
    }
    writeln!(out, "}}")?;
    for chain in &ruleset.chains {
        let set = ruleset.name_of(chain);
        writeln!(
            out,
            "flush set inet netmon {set}\nflush chain inet netmon allow_{set}"
        )?;
    }
    for chain in &ruleset.chains {
        write_chain(ruleset, chain, out)?;
    }
    Ok(())
}

fn write_chain(ruleset: &Ruleset, chain: &Chain, out: &mut impl Write) -> io::Result<()> {
    let set = ruleset.name_of(chain);
    let rule = format!("add rule inet netmon allow_{set}");
    for entries in chain.entries.chunks(CHUNK) {
        writeln!(out, "add element inet netmon {set} {{")?;
        for (index, entry) in entries.iter().enumerate() {
            let comma = if index + 1 < entries.len() { "," } else { "" };
            writeln!(out, "\t{}{comma}", element(entry))?;
        }
        writeln!(out, "}}")?;
    }
    // netmon records IPv4 only: IPv6 is left to the admin's other rules.
    writeln!(out, "{rule} meta nfproto ipv6 return")?;
    let field = chain.words().nft;
    match ruleset.ports {
        Ports::Observed => {
            // And TCP and UDP only: other protocols are left alone too.
            writeln!(out, "{rule} meta l4proto != {} return", protocols())?;
            writeln!(
                out,
                "{rule} ip {field} . meta l4proto . th dport @{set} return"
            )?;
        }
        Ports::Any => writeln!(out, "{rule} ip {field} @{set} return")?,
    }
    // Counted, so `nft list chain` shows what the allow list blocks.
    writeln!(out, "{rule} counter drop")
}

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

    /// TCP and UDP services share each direction's set; the chain
    /// filters both protocols and leaves the others (ICMP) alone.
    #[test]
    fn each_direction_has_its_set_and_chain() {
        let text = script(&BOTH, Ports::Observed);
        assert_eq!(
            statements(&text),
            [
                "table inet netmon {",
                "\tset peers_v4_in {",
                "\t\ttype ipv4_addr . inet_proto . inet_service",
                "\t\tflags interval",
                "\t}",
                "\tchain allow_peers_v4_in {",
                "\t}",
                "\tset peers_v4_out {",
                "\t\ttype ipv4_addr . inet_proto . inet_service",
                "\t\tflags interval",
                "\t}",
                "\tchain allow_peers_v4_out {",
                "\t}",
                "}",
                "flush set inet netmon peers_v4_in",
                "flush chain inet netmon allow_peers_v4_in",
                "flush set inet netmon peers_v4_out",
                "flush chain inet netmon allow_peers_v4_out",
                "add element inet netmon peers_v4_in {",
                "\t192.0.2.0/24 . tcp . 22,",
                "\t192.0.2.0/24 . udp . 514",
                "}",
                "add rule inet netmon allow_peers_v4_in meta nfproto ipv6 return",
                "add rule inet netmon allow_peers_v4_in meta l4proto != { tcp, udp } return",
                "add rule inet netmon allow_peers_v4_in ip saddr . meta l4proto . th dport @peers_v4_in return",
                "add rule inet netmon allow_peers_v4_in counter drop",
                "add element inet netmon peers_v4_out {",
                "\t198.51.100.7/32 . tcp . 80,",
                "\t198.51.100.7/32 . tcp . 443,",
                "\t198.51.100.7/32 . udp . 53",
                "}",
                "add rule inet netmon allow_peers_v4_out meta nfproto ipv6 return",
                "add rule inet netmon allow_peers_v4_out meta l4proto != { tcp, udp } return",
                "add rule inet netmon allow_peers_v4_out ip daddr . meta l4proto . th dport @peers_v4_out return",
                "add rule inet netmon allow_peers_v4_out counter drop",
            ]
        );
        assert!(text.contains("#   nft add rule inet netmon input jump allow_peers_v4_in\n"));
        assert!(text.contains("#   nft add rule inet netmon output jump allow_peers_v4_out\n"));
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
        assert!(statements.contains(&"\t192.0.2.0/24"));
        assert!(
            statements
                .contains(&"add rule inet netmon allow_peers_v4_in ip saddr @peers_v4_in return")
        );
        assert!(!text.contains("l4proto"));
    }
}
