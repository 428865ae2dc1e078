//! The name `--name` gives the set or chain, checked against every tool.
//!
//! A name is refused if any of the tools would refuse it or read it as
//! something else, whatever `--format` says: a script is then never the
//! first to find out, and one name works for all three formats. Each tool
//! compares these words case-sensitively (iptables takes `input` and `drop`
//! as chains of their own, nft's keywords are lower case only), and so does
//! the check.
use std::{fmt, str::FromStr};

use super::RuleFormat;

/// A set or chain name that nft, ipset and iptables all accept: a letter,
/// then letters, digits, `_` or `-`, short enough for iptables' chains
/// (28) and for ipset's sets (31) with a direction's `_out` or `-OUT`,
/// the `6` of an IPv6 set and the `-new` of the set swapped in after it,
/// and none of the words the tools reserve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleName(String);

impl RuleName {
    const MAX_LEN: usize = 22;

    /// The format's own name, used without `--name`.
    pub(super) fn default_of(format: RuleFormat) -> Self {
        Self(format.default_name().to_owned())
    }
}

/// iptables' built-in chains: `-A INPUT -j DROP` drops everything.
const IPTABLES_CHAINS: [&str; 5] = ["INPUT", "OUTPUT", "FORWARD", "PREROUTING", "POSTROUTING"];

/// iptables' targets: the standard ones, and the extensions, which `-j`
/// prefers to a chain of the same name, so the jump would not reach the
/// chain (iptables-legacy refuses such a chain outright).
const IPTABLES_TARGETS: [&str; 45] = [
    "ACCEPT",
    "DROP",
    "QUEUE",
    "RETURN",
    "ERROR",
    "AUDIT",
    "CHECKSUM",
    "CLASSIFY",
    "CLUSTERIP",
    "CONNMARK",
    "CONNSECMARK",
    "CT",
    "DNAT",
    "DNPT",
    "DSCP",
    "ECN",
    "HL",
    "HMARK",
    "IDLETIMER",
    "LED",
    "LOG",
    "MARK",
    "MASQUERADE",
    "MIRROR",
    "NAT",
    "NETMAP",
    "NFLOG",
    "NFQUEUE",
    "NOTRACK",
    "RATEEST",
    "REDIRECT",
    "REJECT",
    "SAME",
    "SECMARK",
    "SET",
    "SNAT",
    "SNPT",
    "SYNPROXY",
    "TCPMSS",
    "TCPOPTSTRIP",
    "TEE",
    "TOS",
    "TPROXY",
    "TRACE",
    "TTL",
];

/// nft's keywords that its scanner knows in every context (from
/// nftables' src/scanner.l, v1.1.6), and `ll` and `nh`, keywords after
/// the `@` of a set reference: nft refuses a set of any of these names.
const NFT_KEYWORDS: [&str; 163] = [
    "accept",
    "add",
    "ah",
    "all",
    "and",
    "arp",
    "auto-merge",
    "bridge",
    "cgroup",
    "chain",
    "comment",
    "comp",
    "constant",
    "continue",
    "counter",
    "cpu",
    "create",
    "ct",
    "day",
    "dccp",
    "define",
    "delete",
    "describe",
    "destroy",
    "device",
    "devices",
    "dnat",
    "drop",
    "dst",
    "dup",
    "dynamic",
    "ecn",
    "element",
    "elements",
    "eq",
    "esp",
    "ether",
    "exists",
    "expires",
    "export",
    "exthdr",
    "fib",
    "flags",
    "flow",
    "flowtable",
    "flush",
    "frag",
    "fwd",
    "gc-interval",
    "ge",
    "geneve",
    "get",
    "goto",
    "gre",
    "gretap",
    "gt",
    "handle",
    "hbh",
    "hook",
    "hour",
    "ibriport",
    "ibrname",
    "icmp",
    "icmpv6",
    "igmp",
    "iif",
    "iifgroup",
    "iifname",
    "iiftype",
    "import",
    "include",
    "index",
    "inet",
    "insert",
    "interval",
    "ip",
    "ip6",
    "ipsec",
    "jhash",
    "jump",
    "last",
    "le",
    "limit",
    "list",
    "ll",
    "log",
    "lshift",
    "lt",
    "map",
    "mark",
    "masquerade",
    "meta",
    "meter",
    "mh",
    "missing",
    "monitor",
    "ne",
    "netdev",
    "nftrace",
    "nh",
    "not",
    "notrack",
    "numgen",
    "obriport",
    "obrname",
    "offload",
    "oif",
    "oifgroup",
    "oifname",
    "oiftype",
    "or",
    "osf",
    "pkttype",
    "policy",
    "position",
    "priority",
    "queue",
    "quota",
    "random",
    "redefine",
    "redirect",
    "reject",
    "rename",
    "replace",
    "reset",
    "return",
    "rshift",
    "rt",
    "rt0",
    "rt2",
    "rtclassid",
    "rule",
    "ruleset",
    "sctp",
    "secmark",
    "set",
    "size",
    "skgid",
    "skuid",
    "snat",
    "socket",
    "srh",
    "symhash",
    "synproxy",
    "table",
    "tcp",
    "th",
    "time",
    "timeout",
    "tproxy",
    "tunnel",
    "type",
    "typeof",
    "udp",
    "udplite",
    "undefine",
    "update",
    "vlan",
    "vmap",
    "vni",
    "vxlan",
    "xor",
    "xt",
];

/// Why a tool would not take `name`, if one would not.
fn reserved(name: &str) -> Option<&'static str> {
    if IPTABLES_CHAINS.contains(&name) {
        Some("a built-in iptables chain: the script's DROP rule would go straight into it")
    } else if IPTABLES_TARGETS.contains(&name) {
        Some("an iptables target: `-j` would not jump to a chain of that name")
    } else if NFT_KEYWORDS.contains(&name) {
        Some("an nft keyword: nft would refuse a set of that name")
    } else {
        None
    }
}

impl FromStr for RuleName {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        let mut chars = name.chars();
        let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            && name.len() <= Self::MAX_LEN;
        if !valid {
            return Err(format!(
                "{name:?} is not a usable name: a letter, then at most {} letters, digits, '_' or '-'",
                Self::MAX_LEN - 1
            ));
        }
        match reserved(name) {
            Some(why) => Err(format!("{name:?} is not a usable name: it is {why}")),
            None => Ok(Self(name.to_owned())),
        }
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["peers_v4", "NETMON-PEERS", "a", "abcdefghijklmnopqrstuv"] {
            assert!(good.parse::<RuleName>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "-x",
            "has space",
            "semi;colon",
            "abcdefghijklmnopqrstuvw",
            "naïve",
        ] {
            assert!(bad.parse::<RuleName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn words_the_tools_reserve_are_refused_saying_why() {
        for (name, why) in [
            ("INPUT", "a built-in iptables chain"),
            ("POSTROUTING", "a built-in iptables chain"),
            ("DROP", "an iptables target"),
            ("RETURN", "an iptables target"),
            ("REJECT", "an iptables target"),
            ("LOG", "an iptables target"),
            ("drop", "an nft keyword"),
            ("set", "an nft keyword"),
            ("counter", "an nft keyword"),
            ("ll", "an nft keyword"),
        ] {
            let error = name.parse::<RuleName>().unwrap_err();
            assert!(error.contains(why), "{name}: {error}");
        }
        let words = IPTABLES_CHAINS
            .iter()
            .chain(&IPTABLES_TARGETS)
            .chain(&NFT_KEYWORDS);
        for word in words {
            assert!(word.parse::<RuleName>().is_err(), "{word}");
        }
    }

    /// The tools tell these apart from what they reserve, and so does the
    /// check: refusing them would refuse names that work.
    #[test]
    fn other_cases_of_reserved_words_are_names() {
        for name in ["input", "Input", "Log", "Drop", "DROP_v4", "Set", "COUNTER"] {
            assert!(name.parse::<RuleName>().is_ok(), "{name}");
        }
    }
}
