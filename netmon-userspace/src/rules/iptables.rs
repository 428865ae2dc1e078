//! The iptables and ip6tables scripts: a chain of RETURN rules per
//! direction, of one family's peers.
use std::io::{self, Write};

use super::{Chain, FILTERED, Family, Ruleset, Words};
use crate::report::Ports;

/// ICMPv6 neighbour discovery, as ip6tables names its types (133-137:
/// RS, RA, NS, NA, redirect): conntrack tracks none of it, so the
/// `ESTABLISHED,RELATED` rule does not pass it, and without it no
/// neighbour's address resolves.
pub(super) const ND_TYPES: [&str; 5] = [
    "router-solicitation",
    "router-advertisement",
    "neighbour-solicitation",
    "neighbour-advertisement",
    "redirect",
];

/// Rules past which a chain is slow enough to suggest ipset's hashed
/// lookup instead.
const MANY: usize = 1000;

/// The hook example's first lines, as comments: what must always pass
/// on `chain`'s hook before anything jumps to netmon's rules (loopback,
/// established connections, SSH) and, for IPv6, neighbour discovery.
pub(super) fn write_basics(out: &mut impl Write, chain: &Chain, family: Family) -> io::Result<()> {
    let tool = family.iptables();
    let Words { hook, ssh, .. } = chain.words();
    let hook = hook.to_uppercase();
    let lo = if hook == "INPUT" { "-i lo" } else { "-o lo" };
    writeln!(
        out,
        "#   {tool} -A {hook} {lo} -j ACCEPT\n\
         #   {tool} -A {hook} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
         #   {tool} -A {hook} -p tcp --{ssh} -j ACCEPT"
    )?;
    if family == Family::V6 {
        for kind in ND_TYPES {
            writeln!(
                out,
                "#   {tool} -A {hook} -p ipv6-icmp --icmpv6-type {kind} -j ACCEPT"
            )?;
        }
    }
    Ok(())
}

/// The script of `family`'s peers, for `iptables-restore` (IPv4) or
/// `ip6tables-restore` (IPv6).
pub(super) fn write(ruleset: &Ruleset, family: Family, out: &mut impl Write) -> io::Result<()> {
    let tool = family.iptables();
    ruleset.write_about(out)?;
    writeln!(
        out,
        "#\n\
         # Load with `{tool}-restore --noflush FILE` (check first with --test):\n\
         # --noflush keeps your other rules, and declaring a chain empties it, so\n\
         # re-applying replaces its rules. Each chain lets its peers through\n\
         # (RETURN) and drops the rest, but nothing reaches it until you jump to\n\
         # it.\n\
         # {}\n\
         # Jump to them after what must always pass (loopback, established\n\
         # connections, SSH{}",
        ruleset.scope(),
        match family {
            Family::V4 => "), for example:",
            Family::V6 => {
                ") and ICMPv6 neighbour discovery,\n\
                 # which conntrack does not track: without it no neighbour's address\n\
                 # resolves and every IPv6 connection on the link stops, allowed ones\n\
                 # included, and without router advertisements the default route\n\
                 # expires. For example:"
            }
        }
    )?;
    for chain in &ruleset.chains {
        let hook = chain.words().hook.to_uppercase();
        write_basics(out, chain, family)?;
        writeln!(out, "#   {tool} -A {hook} -j {}", ruleset.name_of(chain))?;
    }
    let rules: usize = ruleset
        .chains
        .iter()
        .map(|c| c.entries_of(family).count())
        .sum();
    if rules > MANY {
        writeln!(
            out,
            "# With {rules} rules, --format ipset matches faster (one hashed lookup)."
        )?;
    }
    writeln!(out, "*filter")?;
    for chain in &ruleset.chains {
        writeln!(out, ":{} - [0:0]", ruleset.name_of(chain))?;
    }
    for chain in &ruleset.chains {
        let name = ruleset.name_of(chain);
        let option = chain.words().iptables;
        for entry in chain.entries_of(family) {
            match entry.service {
                Some(service) => {
                    let protocol = service.protocol.as_str();
                    writeln!(
                        out,
                        "-A {name} {option} {} -p {protocol} -m {protocol} --dport {} -j RETURN",
                        entry.block, service.port
                    )?;
                }
                None => writeln!(out, "-A {name} {option} {} -j RETURN", entry.block)?,
            }
        }
        match ruleset.ports {
            // iptables names one protocol a rule: a packet of any other
            // reaches the chain's end, which returns.
            Ports::Observed => {
                for protocol in FILTERED {
                    writeln!(out, "-A {name} -p {protocol} -j DROP")?;
                }
            }
            Ports::Any => writeln!(out, "-A {name} -j DROP")?,
        }
    }
    writeln!(out, "COMMIT")
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

    fn script(format: RuleFormat, chains: &[Direction], ports: Ports) -> String {
        tests::script(format, chains, ports)
    }

    /// TCP and UDP pairs return; the rest of both protocols is dropped,
    /// and other protocols (ICMP) reach the chain's end and return. Each
    /// family's script holds its own peers only.
    #[test]
    fn each_direction_returns_for_its_pairs_and_drops_the_rest() {
        assert_eq!(
            statements(&script(RuleFormat::Iptables, &BOTH, Ports::Observed)),
            [
                "*filter",
                ":NETMON-PEERS-IN - [0:0]",
                ":NETMON-PEERS-OUT - [0:0]",
                "-A NETMON-PEERS-IN -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j RETURN",
                "-A NETMON-PEERS-IN -s 192.0.2.0/24 -p udp -m udp --dport 514 -j RETURN",
                "-A NETMON-PEERS-IN -p tcp -j DROP",
                "-A NETMON-PEERS-IN -p udp -j DROP",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -p tcp -m tcp --dport 80 -j RETURN",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -p tcp -m tcp --dport 443 -j RETURN",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -p udp -m udp --dport 53 -j RETURN",
                "-A NETMON-PEERS-OUT -p tcp -j DROP",
                "-A NETMON-PEERS-OUT -p udp -j DROP",
                "COMMIT",
            ]
        );
        let text = script(RuleFormat::Ip6tables, &BOTH, Ports::Observed);
        assert_eq!(
            statements(&text),
            [
                "*filter",
                ":NETMON-PEERS-IN - [0:0]",
                ":NETMON-PEERS-OUT - [0:0]",
                "-A NETMON-PEERS-IN -s 2001:db8:1::/120 -p tcp -m tcp --dport 22 -j RETURN",
                "-A NETMON-PEERS-IN -s 2001:db8:1::/120 -p udp -m udp --dport 514 -j RETURN",
                "-A NETMON-PEERS-IN -p tcp -j DROP",
                "-A NETMON-PEERS-IN -p udp -j DROP",
                "-A NETMON-PEERS-OUT -d 2001:db8::7/128 -p tcp -m tcp --dport 80 -j RETURN",
                "-A NETMON-PEERS-OUT -d 2001:db8::7/128 -p tcp -m tcp --dport 443 -j RETURN",
                "-A NETMON-PEERS-OUT -d 2001:db8::7/128 -p udp -m udp --dport 53 -j RETURN",
                "-A NETMON-PEERS-OUT -p tcp -j DROP",
                "-A NETMON-PEERS-OUT -p udp -j DROP",
                "COMMIT",
            ]
        );
        assert!(text.contains("# Load with `ip6tables-restore --noflush FILE`"));
        // Neighbour discovery passes ahead of the jump.
        let nd = "#   ip6tables -A OUTPUT -p ipv6-icmp --icmpv6-type neighbour-advertisement -j ACCEPT\n";
        let jump = "#   ip6tables -A OUTPUT -j NETMON-PEERS-OUT\n";
        assert!(text.find(nd).unwrap() < text.find(jump).unwrap(), "{text}");
    }

    #[test]
    fn any_port_returns_for_addresses() {
        for (format, block) in [
            (RuleFormat::Iptables, "198.51.100.7/32"),
            (RuleFormat::Ip6tables, "2001:db8::7/128"),
        ] {
            assert_eq!(
                statements(&script(format, &[Direction::Outbound], Ports::Any)),
                [
                    "*filter",
                    ":NETMON-PEERS-OUT - [0:0]",
                    &format!("-A NETMON-PEERS-OUT -d {block} -j RETURN"),
                    "-A NETMON-PEERS-OUT -j DROP",
                    "COMMIT",
                ]
            );
        }
    }
}
