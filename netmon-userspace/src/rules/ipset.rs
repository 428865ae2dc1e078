//! The ipset script: a set per direction and family (`family inet` and
//! `family inet6`), each filled as a new set and swapped in, for iptables
//! and ip6tables rules to match with `--match-set`.
use std::io::Write;

use anyhow::ensure;

use super::{Chain, FILTERED, Family, Ruleset, Words, iptables};
use crate::report::Ports;

/// Entries that a set holds at most.
pub(super) const MAXELEM: usize = 1 << 24;

pub(super) fn write(ruleset: &Ruleset, out: &mut impl Write) -> anyhow::Result<()> {
    for chain in &ruleset.chains {
        for family in [Family::V4, Family::V6] {
            let entries = chain.entries_of(family).count();
            ensure!(
                entries <= MAXELEM,
                "{entries} entries are more than the ipset {} of this script holds ({MAXELEM})",
                ruleset.set_of(chain, family)
            );
        }
    }
    let kind = match ruleset.ports {
        Ports::Observed => "hash:net,port",
        Ports::Any => "hash:net",
    };
    ruleset.write_about(out)?;
    writeln!(
        out,
        "#\n\
         # Load with `ipset restore -f FILE`: each set is filled as SET-new and\n\
         # swapped in at once, so re-applying never leaves it empty or partial.\n\
         # If a set exists with other parameters, ipset refuses it: pick another\n\
         # --name. Loading changes no traffic until a rule uses the sets; to allow\n\
         # only the peers, keep what must always pass (loopback, established\n\
         # connections, SSH) ahead of these, for example (IPv4's sets with\n\
         # iptables, IPv6's with ip6tables, which must let ICMPv6 neighbour\n\
         # discovery through first: without it no neighbour's address resolves\n\
         # and every IPv6 connection on the link stops, allowed ones included):"
    )?;
    for chain in &ruleset.chains {
        let Words { hook, ipset, .. } = chain.words();
        let hook = hook.to_uppercase();
        for family in [Family::V4, Family::V6] {
            let (tool, set) = (family.iptables(), ruleset.set_of(chain, family));
            iptables::write_basics(out, chain, family)?;
            match ruleset.ports {
                // The port is the destination's in both directions; the
                // set's port entries name their protocol, one rule each.
                Ports::Observed => {
                    for protocol in FILTERED {
                        writeln!(
                            out,
                            "#   {tool} -A {hook} -p {protocol} -m set ! --match-set {set} {ipset},dst -j DROP"
                        )?;
                    }
                }
                Ports::Any => writeln!(
                    out,
                    "#   {tool} -A {hook} -m set ! --match-set {set} {ipset} -j DROP"
                )?,
            }
        }
    }
    for chain in &ruleset.chains {
        for family in [Family::V4, Family::V6] {
            write_set(ruleset, chain, family, kind, out)?;
        }
    }
    Ok(())
}

/// One set, filled as SET-new and swapped in. An empty one is written
/// too: its DROP rules then drop the whole family, as they should when
/// no peer of it was seen.
fn write_set(
    ruleset: &Ruleset,
    chain: &Chain,
    family: Family,
    kind: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let set = ruleset.set_of(chain, family);
    let new = format!("{set}-new");
    let create = format!("{kind} family {} maxelem {MAXELEM} -exist", family.ipset());
    writeln!(
        out,
        "create {set} {create}\ncreate {new} {create}\nflush {new}"
    )?;
    for entry in chain.entries_of(family) {
        match entry.service {
            Some(service) => writeln!(
                out,
                "add {new} {},{}:{}",
                entry.block,
                service.protocol.as_str(),
                service.port
            )?,
            None => writeln!(out, "add {new} {}", entry.block)?,
        }
    }
    writeln!(out, "swap {new} {set}\ndestroy {new}")?;
    Ok(())
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
        tests::script(RuleFormat::Ipset, chains, ports)
    }

    #[test]
    fn each_direction_and_family_swaps_a_filled_set_in() {
        let text = script(&BOTH, Ports::Observed);
        let mut expected = Vec::new();
        for (set, family, adds) in [
            (
                "netmon_peers_in",
                "inet",
                &["192.0.2.0/24,tcp:22", "192.0.2.0/24,udp:514"][..],
            ),
            (
                "netmon_peers_in6",
                "inet6",
                &["2001:db8:1::/120,tcp:22", "2001:db8:1::/120,udp:514"],
            ),
            (
                "netmon_peers_out",
                "inet",
                &[
                    "198.51.100.7/32,tcp:80",
                    "198.51.100.7/32,tcp:443",
                    "198.51.100.7/32,udp:53",
                ],
            ),
            (
                "netmon_peers_out6",
                "inet6",
                &[
                    "2001:db8::7/128,tcp:80",
                    "2001:db8::7/128,tcp:443",
                    "2001:db8::7/128,udp:53",
                ],
            ),
        ] {
            let create = format!("hash:net,port family {family} maxelem 16777216 -exist");
            expected.extend([
                format!("create {set} {create}"),
                format!("create {set}-new {create}"),
                format!("flush {set}-new"),
            ]);
            expected.extend(adds.iter().map(|add| format!("add {set}-new {add}")));
            expected.extend([
                format!("swap {set}-new {set}"),
                format!("destroy {set}-new"),
            ]);
        }
        assert_eq!(statements(&text), expected);
        for (tool, hook, set, side) in [
            ("iptables", "INPUT", "netmon_peers_in", "src"),
            ("iptables", "OUTPUT", "netmon_peers_out", "dst"),
            ("ip6tables", "INPUT", "netmon_peers_in6", "src"),
            ("ip6tables", "OUTPUT", "netmon_peers_out6", "dst"),
        ] {
            // The set's UDP entries are matched by a rule of their own.
            for protocol in ["tcp", "udp"] {
                let rule = format!(
                    "#   {tool} -A {hook} -p {protocol} -m set ! --match-set {set} {side},dst -j DROP\n"
                );
                assert!(text.contains(&rule), "{rule} in {text}");
            }
        }
        // Neighbour discovery passes ahead of IPv6's DROP rules.
        let nd =
            "#   ip6tables -A INPUT -p ipv6-icmp --icmpv6-type neighbour-solicitation -j ACCEPT\n";
        let drop = "#   ip6tables -A INPUT -p tcp -m set";
        assert!(text.find(nd).unwrap() < text.find(drop).unwrap(), "{text}");
    }

    #[test]
    fn any_port_is_a_set_of_addresses() {
        let text = script(&[Direction::Inbound], Ports::Any);
        assert!(text.contains("create netmon_peers_in hash:net family inet "));
        assert!(text.contains("create netmon_peers_in6 hash:net family inet6 "));
        assert!(text.contains("add netmon_peers_in-new 192.0.2.0/24\n"));
        assert!(text.contains("add netmon_peers_in6-new 2001:db8:1::/120\n"));
        assert!(
            text.contains("iptables -A INPUT -m set ! --match-set netmon_peers_in src -j DROP")
        );
        assert!(
            text.contains("ip6tables -A INPUT -m set ! --match-set netmon_peers_in6 src -j DROP")
        );
    }
}
