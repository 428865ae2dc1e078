//! The ipset script: a set per direction, each filled as a new set and
//! swapped in, for iptables rules to match with `--match-set`.
use std::io::Write;

use anyhow::ensure;

use super::{FILTERED, Ruleset, Words};
use crate::report::Ports;

/// Entries that a set holds at most.
pub(super) const MAXELEM: usize = 1 << 24;

pub(super) fn write(ruleset: &Ruleset, out: &mut impl Write) -> anyhow::Result<()> {
    for chain in &ruleset.chains {
        ensure!(
            chain.entries.len() <= MAXELEM,
            "{} entries are more than the ipset {} of this script holds ({MAXELEM})",
            chain.entries.len(),
            ruleset.name_of(chain)
        );
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
         # connections, SSH) ahead of these, for example:"
    )?;
    for chain in &ruleset.chains {
        let Words { hook, ipset, .. } = chain.words();
        let (hook, set) = (hook.to_uppercase(), ruleset.name_of(chain));
        match ruleset.ports {
            // The port is the destination's in both directions; the
            // set's port entries name their protocol, one rule each.
            Ports::Observed => {
                for protocol in FILTERED {
                    writeln!(
                        out,
                        "#   iptables -A {hook} -p {protocol} -m set ! --match-set {set} {ipset},dst -j DROP"
                    )?;
                }
            }
            Ports::Any => writeln!(
                out,
                "#   iptables -A {hook} -m set ! --match-set {set} {ipset} -j DROP"
            )?,
        }
    }
    for chain in &ruleset.chains {
        let set = ruleset.name_of(chain);
        let new = format!("{set}-new");
        let create = format!("{kind} family inet maxelem {MAXELEM} -exist");
        writeln!(
            out,
            "create {set} {create}\ncreate {new} {create}\nflush {new}"
        )?;
        for entry in &chain.entries {
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
    }
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
    fn each_direction_swaps_a_filled_set_in() {
        let text = script(&BOTH, Ports::Observed);
        let create = "hash:net,port family inet maxelem 16777216 -exist";
        assert_eq!(
            statements(&text),
            [
                format!("create netmon_peers_in {create}").as_str(),
                &format!("create netmon_peers_in-new {create}"),
                "flush netmon_peers_in-new",
                "add netmon_peers_in-new 192.0.2.0/24,tcp:22",
                "add netmon_peers_in-new 192.0.2.0/24,udp:514",
                "swap netmon_peers_in-new netmon_peers_in",
                "destroy netmon_peers_in-new",
                &format!("create netmon_peers_out {create}"),
                &format!("create netmon_peers_out-new {create}"),
                "flush netmon_peers_out-new",
                "add netmon_peers_out-new 198.51.100.7/32,tcp:80",
                "add netmon_peers_out-new 198.51.100.7/32,tcp:443",
                "add netmon_peers_out-new 198.51.100.7/32,udp:53",
                "swap netmon_peers_out-new netmon_peers_out",
                "destroy netmon_peers_out-new",
            ]
        );
        assert!(text.contains(
            "#   iptables -A INPUT -p tcp -m set ! --match-set netmon_peers_in src,dst -j DROP\n"
        ));
        assert!(text.contains(
            "#   iptables -A OUTPUT -p tcp -m set ! --match-set netmon_peers_out dst,dst -j DROP\n"
        ));
        // The set's UDP entries are matched by a rule of their own.
        for hook in [
            "INPUT -p udp -m set ! --match-set netmon_peers_in src",
            "OUTPUT -p udp -m set ! --match-set netmon_peers_out dst",
        ] {
            assert!(
                text.contains(&format!("#   iptables -A {hook},dst -j DROP\n")),
                "{text}"
            );
        }
    }

    #[test]
    fn any_port_is_a_set_of_addresses() {
        let text = script(&[Direction::Inbound], Ports::Any);
        assert!(text.contains("create netmon_peers_in hash:net family inet"));
        assert!(text.contains("add netmon_peers_in-new 192.0.2.0/24\n"));
        assert!(text.contains("--match-set netmon_peers_in src -j DROP"));
    }
}
