//! The library's enums as clap values.
//!
//! The library stays free of clap: the names each variant takes on the
//! command line, and the help `--help` shows for it, are given here.
use clap::{ValueEnum, builder::PossibleValue};

use crate::{
    classify::{Class, Family, SPECIAL},
    ebpf::events::TransportRequest,
    graph::{GraphFormat, Group},
    mode::ModeRequest,
    peer::{Direction, NetnsId},
    procnet::TablesRequest,
    report::Format,
    rules::RuleFormat,
    store::{NetnsScope, OnCorrupt},
};

/// `--netns`: `host`, `all`, or a namespace's inode number.
pub fn netns(text: &str) -> Result<NetnsScope, String> {
    match text {
        "host" => Ok(NetnsScope::Host),
        "all" => Ok(NetnsScope::All),
        id => match id.parse::<u32>() {
            Ok(id) if id != 0 => Ok(NetnsScope::Only(NetnsId(id))),
            _ => Err(format!(
                "{id:?} is not host, all, or a network namespace's inode number (as lsns -t net shows it)"
            )),
        },
    }
}

/// Implements [`ValueEnum`] from a list of variants, each with its name
/// and optionally its help, as `#[derive(ValueEnum)]` would from the
/// variants' names and doc comments, and any other names it also takes
/// (`| "alias"`). The `match` is exhaustive, so a variant added to the
/// library cannot be left out.
macro_rules! value_enum {
    ($type:ty { $($variant:ident => $name:literal $(| $alias:literal)? $(: $help:literal)?,)+ }) => {
        impl ValueEnum for $type {
            fn value_variants<'a>() -> &'a [Self] {
                &[$(Self::$variant),+]
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                Some(match self {
                    $(Self::$variant => PossibleValue::new($name)$(.alias($alias))?$(.help($help))?,)+
                })
            }
        }
    };
}

value_enum!(Format {
    Text => "text": "An aligned table for people",
    Json => "json": "One object per peer, with its class and recorded fields",
    Csv => "csv": "A header row, then one row per peer",
    Plain => "plain": "One address per line, for other tools",
});

value_enum!(Family {
    V4 => "4": "IPv4 peers",
    V6 => "6": "IPv6 peers",
});

value_enum!(GraphFormat {
    Text => "text": "One edge a line; with --host, who reaches it and what it reaches",
    Json => "json": "{\"nodes\": [...], \"edges\": [...]}, as docs/design.md describes",
    Dot => "dot": "Graphviz: hosts as boxes, edges labelled with ports, one-sided edges dashed",
    Csv => "csv": "A header row, then one edge a row",
});

value_enum!(Group {
    None => "none": "One node per peer address",
    Slash24 => "/24" | "/64": "One node per /24 of IPv4 peers and per /64 of IPv6 ones that \
        are no monitored host (/64 is the same grouping)",
    Class => "class": "One node per address class (private, public, ...)",
});

value_enum!(RuleFormat {
    Nft => "nft": "An `nft -f` script: table inet netmon, an interval set per direction and \
        family and an unhooked chain per direction",
    Ipset => "ipset": "An `ipset restore` script: a hash:net,port set per direction and family \
        (family inet and inet6; hash:net with --any-port), swapped in atomically",
    Iptables => "iptables": "An `iptables-restore --noflush` script: a chain of RETURN rules per \
        direction, for IPv4 (IPv6's is --format ip6tables)",
    Ip6tables => "ip6tables": "An `ip6tables-restore --noflush` script: the same for IPv6",
});

value_enum!(ModeRequest {
    Auto => "auto": "The best mode this host allows: kprobe, then btf-tracepoint, then \
        raw-tracepoint, then tracepoint, then proc",
    Kprobe => "kprobe",
    BtfTracepoint => "btf-tracepoint",
    RawTracepoint => "raw-tracepoint",
    Tracepoint => "tracepoint",
    Proc => "proc",
});

value_enum!(TransportRequest {
    Auto => "auto": "The ring buffer where the kernel supports it, else perf buffers",
    Ringbuf => "ringbuf",
    Perf => "perf",
});

value_enum!(TablesRequest {
    Auto => "auto": "Netlink where the kernel has sock_diag, else the /proc/net text",
    Netlink => "netlink": "NETLINK_SOCK_DIAG dumps (CONFIG_INET_DIAG), plus destroy \
        notifications in proc mode",
    Procfs => "procfs": "The text under --proc-net",
});

value_enum!(OnCorrupt {
    Refuse => "refuse": "Exit non-zero naming the file and the problem; leave it untouched",
    Backup => "backup": "Rename it to PATH.corrupt-TIMESTAMP, say so, and start fresh",
});

impl ValueEnum for Direction {
    fn value_variants<'a>() -> &'a [Self] {
        &[Self::Inbound, Self::Outbound]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(PossibleValue::new(self.as_str()))
    }
}

impl ValueEnum for Class {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    /// `--help` shows each class's blocks and RFCs, from [`SPECIAL`].
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let blocks: Vec<_> = SPECIAL
            .iter()
            .filter(|special| special.class == *self)
            .map(|special| format!("{} ({})", special.block, special.rfc))
            .collect();
        let help = match (*self, blocks.is_empty()) {
            (_, true) => "any address in no other class".to_owned(),
            // Peers are stored normalised, so a filter on it selects none.
            (Self::Ipv4Mapped, false) => format!(
                "{}; never a peer's: one is stored as the IPv4 address it maps",
                blocks.join(", ")
            ),
            (_, false) => blocks.join(", "),
        };
        Some(PossibleValue::new(self.as_str()).help(help))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse_as_they_print() {
        for class in Class::ALL {
            assert_eq!(
                <Class as ValueEnum>::from_str(class.as_str(), false).ok(),
                Some(class),
                "clap spelling of {class}"
            );
        }
    }

    #[test]
    fn directions_parse_as_they_print() {
        for direction in [Direction::Inbound, Direction::Outbound] {
            assert_eq!(
                <Direction as ValueEnum>::from_str(direction.as_str(), false).ok(),
                Some(direction)
            );
        }
    }
}
