//! Which peers a report keeps: [`Filter`], the flags every report and
//! `netmon rules` share, resolved once into a selection that matches peer
//! after peer.
use std::{fmt, net::IpAddr, time::Duration};

use log::warn;

use super::Inputs;
use crate::{
    classify::{Class, Family},
    peer::{Direction, NetnsId, Owner},
    store::{NetnsScope, PeerRecord},
};

/// A set of classes, as one bit per [`Class`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClassSet(u32);

const _: () = assert!(Class::ALL.len() <= 32, "a ClassSet holds 32 classes");

impl ClassSet {
    const ALL: Self = Self(u32::MAX);

    fn bit(class: Class) -> u32 {
        1 << class as u32
    }

    fn contains(self, class: Class) -> bool {
        self.0 & Self::bit(class) != 0
    }
}

impl FromIterator<Class> for ClassSet {
    fn from_iter<I: IntoIterator<Item = Class>>(classes: I) -> Self {
        Self(
            classes
                .into_iter()
                .map(Self::bit)
                .fold(0, |set, bit| set | bit),
        )
    }
}

/// One selected peer.
#[derive(Clone, Copy, Debug)]
pub struct Peer<'a> {
    pub ip: IpAddr,
    pub class: Class,
    /// The network namespace it was seen from, if not the host's.
    pub netns: Option<NetnsId>,
    pub record: &'a PeerRecord,
}

impl<'a> Peer<'a> {
    /// A peer of the host's own network namespace.
    pub fn new(ip: IpAddr, record: &'a PeerRecord) -> Self {
        Self {
            ip,
            class: Class::of(ip),
            netns: None,
            record,
        }
    }
}

/// An `--owner` pattern: a unit or container name, `*` matching any run
/// of characters and `?` any one (`'*.service'`, `'pod:default/*'`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerPattern(String);

impl OwnerPattern {
    pub fn new(pattern: impl Into<String>) -> Self {
        Self(pattern.into())
    }

    pub fn matches(&self, owner: Owner) -> bool {
        glob(self.0.as_bytes(), owner.name().as_bytes())
    }
}

/// Escaped: a pattern may come from a file, and lands in a script's
/// comment (`# selected with --owner '…'`) where a newline would be code.
impl fmt::Display for OwnerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::escape::Escaped::new(self.0.as_str()))
    }
}

/// Whether `text` matches `pattern` (`*` and `?` only), in time linear in
/// their lengths' product at worst: one backtrack point, the last `*`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Which peers a report keeps; every filter given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only peers of these classes; none means any class.
    pub classes: Vec<Class>,
    /// Only peers of this address family.
    pub family: Option<Family>,
    /// Only peers seen in this direction.
    pub direction: Option<Direction>,
    /// Only peers last seen within this long before the report.
    pub since: Option<Duration>,
    /// Which network namespaces' peers: the host's unless asked.
    pub netns: NetnsScope,
    /// Only peers one of whose owners matches one of these.
    pub owners: Vec<OwnerPattern>,
}

impl Filter {
    /// Whether no filter was given, so every peer matches.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
            && self.family.is_none()
            && self.direction.is_none()
            && self.since.is_none()
            && self.netns == NetnsScope::Host
            && self.owners.is_empty()
    }

    /// Whether `peer` matches; `now` (Unix seconds) anchors `since`.
    pub fn matches(&self, peer: &Peer<'_>, now: u64) -> bool {
        Selection::new(self, now).matches(peer)
    }

    /// The peers of `inputs` that match, in numeric order; `now` (Unix
    /// seconds) anchors `since`.
    ///
    /// Warns when a direction filter meets an address list, whose peers
    /// it can only leave out.
    pub fn select<'a>(&self, inputs: &'a Inputs, now: u64) -> Vec<Peer<'a>> {
        if let Some(direction) = self.direction {
            for path in inputs.sources.address_lists() {
                warn!(
                    "{} is an address list, which records no directions: --direction {direction} leaves out the peers only it names",
                    path.display()
                );
            }
        }
        let selection = Selection::new(self, now);
        inputs
            .snapshot
            .peers
            .entries()
            .map(|(key, record)| Peer {
                netns: key.netns(),
                ..Peer::new(key.ip(), record)
            })
            .filter(|peer| selection.matches(peer))
            .collect()
    }
}

impl Filter {
    /// Where peers this filter left out are, when it chose a namespace
    /// they are not in: containers with a network namespace of their own
    /// keep their peers (and owners) under it.
    pub fn elsewhere(&self, inputs: &Inputs) -> Option<String> {
        let namespaces = inputs.snapshot.peers.namespaces();
        if namespaces.is_empty() || self.netns == NetnsScope::All {
            return None;
        }
        let listed: Vec<String> = namespaces.keys().take(8).map(ToString::to_string).collect();
        let more = if namespaces.len() > listed.len() {
            ", …"
        } else {
            ""
        };
        Some(format!(
            "no peer matches in the chosen network namespace; peers are recorded under {} ({}{more}): --netns all shows every one",
            crate::words::count(
                namespaces.len() as u64,
                "other namespace",
                "other namespaces"
            ),
            listed.join(", ")
        ))
    }
}

/// As the flags that select the same peers.
impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let classes = self.classes.iter().map(|class| format!("--class {class}"));
        let family = self.family.map(|family| format!("--family {family}"));
        let direction = self.direction.map(|d| format!("--direction {d}"));
        let since = self
            .since
            .map(|since| format!("--since {}", humantime::format_duration(since)));
        let netns = match self.netns {
            NetnsScope::Host => None,
            NetnsScope::All => Some("--netns all".to_owned()),
            NetnsScope::Only(id) => Some(format!("--netns {id}")),
        };
        let owners = self.owners.iter().map(|owner| format!("--owner '{owner}'"));
        let flags: Vec<_> = classes
            .chain(family)
            .chain(direction)
            .chain(since)
            .chain(netns)
            .chain(owners)
            .collect();
        f.write_str(&flags.join(" "))
    }
}

/// A [`Filter`] resolved for matching peer after peer.
#[derive(Clone, Debug)]
struct Selection<'a> {
    classes: ClassSet,
    family: Option<Family>,
    direction: Option<Direction>,
    /// Unix seconds; peers last seen before are left out.
    seen_since: Option<u64>,
    netns: NetnsScope,
    owners: &'a [OwnerPattern],
}

impl<'a> Selection<'a> {
    fn new(filter: &'a Filter, now: u64) -> Self {
        Self {
            classes: if filter.classes.is_empty() {
                ClassSet::ALL
            } else {
                filter.classes.iter().copied().collect()
            },
            family: filter.family,
            direction: filter.direction,
            seen_since: filter
                .since
                .map(|since| now.saturating_sub(since.as_secs())),
            netns: filter.netns,
            owners: &filter.owners,
        }
    }

    fn matches(&self, peer: &Peer<'_>) -> bool {
        self.classes.contains(peer.class)
            && self
                .family
                .is_none_or(|family| family == Family::of(peer.ip))
            && self
                .direction
                .is_none_or(|direction| peer.record.directions().has(direction))
            && self
                .seen_since
                .is_none_or(|since| peer.record.last_seen >= since)
            && self.netns.contains(peer.netns)
            && (self.owners.is_empty()
                || peer
                    .record
                    .owners
                    .iter()
                    .any(|owner| self.owners.iter().any(|p| p.matches(owner))))
    }
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn glob_matches_stars_and_question_marks() {
        for (pattern, text, want) in [
            ("*.service", "nginx.service", true),
            ("*.service", "container:3f4e", false),
            ("pod:default/*", "pod:default/web-0/3f4e5a6b7c8d", true),
            ("pod:*/web-?/*", "pod:default/web-0/3f4e", true),
            ("nginx.service", "nginx.service", true),
            ("nginx.service", "nginx.service2", false),
            ("*", "", true),
            ("", "x", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
        ] {
            assert_eq!(
                glob(pattern.as_bytes(), text.as_bytes()),
                want,
                "{pattern} {text}"
            );
        }
        // Many stars over a long mismatch stay fast.
        let text = "a".repeat(10_000);
        assert!(!glob("*a*a*a*a*a*b".as_bytes(), text.as_bytes()));
    }
}
