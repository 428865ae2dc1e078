//! The iptables script: a chain of RETURN rules per direction.
use std::io::{self, Write};

use super::Ruleset;
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
        if ruleset.ports == Ports::Observed {
            writeln!(out, "-A {name} ! -p tcp -j RETURN")?;
        }
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
        writeln!(out, "-A {name} -j DROP")?;
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

    #[test]
    fn each_direction_returns_for_its_pairs_and_drops_the_rest() {
        assert_eq!(
            statements(&script(&BOTH, Ports::Observed)),
            [
                "*filter",
                ":NETMON-PEERS-IN - [0:0]",
                ":NETMON-PEERS-OUT - [0:0]",
                "-A NETMON-PEERS-IN ! -p tcp -j RETURN",
                "-A NETMON-PEERS-IN -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j RETURN",
                "-A NETMON-PEERS-IN -j DROP",
                "-A NETMON-PEERS-OUT ! -p tcp -j RETURN",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -p tcp -m tcp --dport 80 -j RETURN",
                "-A NETMON-PEERS-OUT -d 198.51.100.7/32 -p tcp -m tcp --dport 443 -j RETURN",
                "-A NETMON-PEERS-OUT -j DROP",
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
