//! The iptables script: a chain of RETURN rules per direction.
use std::io::{self, Write};

use super::{FILTERED, Ruleset};
use crate::report::Ports;

/// Rules past which a chain is slow enough to suggest ipset's hashed
/// lookup instead.
const MANY: usize = 1000;

pub(super) fn write(ruleset: &Ruleset, out: &mut impl Write) -> io::Result<()> {
    ruleset.write_about(out)?;
    writeln!(
        out,
        "#\n\
         # Load with `iptables-restore --noflush FILE` (check first with --test):\n\
         # --noflush keeps your other rules, and declaring a chain empties it, so\n\
         # re-applying replaces its rules. Each chain lets its peers through\n\
         # (RETURN) and drops the rest, but nothing reaches it until you jump to\n\
         # it.\n\
         # {}\n\
         # Jump to them after what must always pass (loopback, established\n\
         # connections, SSH), for example:",
        ruleset.scope()
    )?;
    for chain in &ruleset.chains {
        let hook = chain.words().hook.to_uppercase();
        writeln!(out, "#   iptables -A {hook} -j {}", ruleset.name_of(chain))?;
    }
    let rules: usize = ruleset.chains.iter().map(|c| c.entries.len()).sum();
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
        for entry in &chain.entries {
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

    fn script(chains: &[Direction], ports: Ports) -> String {
        tests::script(RuleFormat::Iptables, chains, ports)
    }

    /// TCP and UDP pairs return; the rest of both protocols is dropped,
    /// and other protocols (ICMP) reach the chain's end and return.
    #[test]
    fn each_direction_returns_for_its_pairs_and_drops_the_rest() {
        assert_eq!(
            statements(&script(&BOTH, Ports::Observed)),
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
    }

    #[test]
    fn any_port_returns_for_addresses() {
        assert_eq!(
            statements(&script(&[Direction::Outbound], Ports::Any)),
            [
                "*filter",
                ":NETMON-PEERS-OUT - [0:0]",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -j RETURN",
                "-A NETMON-PEERS-OUT -j DROP",
                "COMMIT",
            ]
        );
    }
}
