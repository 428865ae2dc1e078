//! What proc mode remembers from one poll to the next: the listeners, which
//! give connections their direction, and the sockets already reported, so
//! that each connection is reported once.
use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use super::Proto;

/// How long a socket that left the tables unannounced is remembered: see
/// [`Reported`].
const VANISHED_MEMORY: Duration = Duration::from_secs(3600);

/// The listeners, by port and address, each with the last poll it was
/// there for.
///
/// A connection netmon has not seen before was made after the poll before
/// the current one (or it would have been in that poll), so it is inbound
/// if a listener on its local port was there at any time since: seen by
/// that poll or a later one, or heard of as it closed since. Nothing
/// narrower can be known between two polls; a listener gone for longer
/// has no say, so a client that connects from its port later is outbound.
///
/// A listener on one address says nothing of a client that the kernel
/// gave the same port number on another: only a wildcard listener claims
/// the port on every address of its family, `::` of both (as IPv6
/// sockets are dual-stack unless `IPV6_V6ONLY`, which the tables do not
/// say).
#[derive(Default)]
pub(super) struct Listeners {
    ports: HashMap<(Proto, u16, Bound), u64>,
    /// Polls begun so far.
    poll: u64,
}

impl Listeners {
    /// A poll begins: listeners not there since the previous one are
    /// forgotten.
    pub fn next_poll(&mut self) {
        self.poll += 1;
        let since = self.poll - 1;
        self.ports.retain(|_, last| *last >= since);
    }

    /// A listener on `local`:`port` is there, or was until it closed just
    /// now.
    pub fn saw(&mut self, proto: Proto, local: Option<IpAddr>, port: u16) {
        self.ports.insert((proto, port, bound(local)), self.poll);
    }

    /// Whether a connection on `local`:`port` not seen before is inbound.
    pub fn has(&self, proto: Proto, local: Option<IpAddr>, port: u16) -> bool {
        let claims = |bound| self.ports.contains_key(&(proto, port, bound));
        match bound(local) {
            Bound::Address(ip) => {
                claims(Bound::Address(ip))
                    || claims(Bound::AnyIpv6)
                    || (ip.is_ipv4() && claims(Bound::AnyIpv4))
            }
            // A connection without a local address: any listener will do.
            wildcard => claims(wildcard) || claims(Bound::AnyIpv4) || claims(Bound::AnyIpv6),
        }
    }
}

/// What a socket is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Bound {
    /// One address; IPv4-mapped as IPv4, as a dual-stack socket's
    /// connections show it.
    Address(IpAddr),
    /// `0.0.0.0` (or none known).
    AnyIpv4,
    /// `::`: IPv6 and, dual-stack, IPv4 too.
    AnyIpv6,
}

fn bound(local: Option<IpAddr>) -> Bound {
    match local {
        None | Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)) => Bound::AnyIpv4,
        Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)) => Bound::AnyIpv6,
        Some(ip) => Bound::Address(ip.to_canonical()),
    }
}

/// The sockets reported so far, by key (`super::key`), so that none is
/// reported twice: not when polls see it again, nor when the kernel
/// announces it destroyed.
#[derive(Default)]
pub(super) struct Reported {
    /// In the last poll.
    seen: HashSet<u128>,
    /// In the poll before.
    previous: HashSet<u128>,
    /// In a poll once, in the tables no longer, and not announced yet
    /// (kept only where the kernel announces destroyed sockets). A socket
    /// leaves the tables when it is reset or closes into TIME_WAIT, but is
    /// destroyed, and announced, only when its process closes it too,
    /// which can be much later; and a dump that runs while sockets come
    /// and go can skip one that stays. Forgotten after
    /// [`VANISHED_MEMORY`], which bounds what lost notifications leave.
    vanished: HashMap<u128, Instant>,
}

impl Reported {
    /// A poll begins.
    pub fn next_poll(&mut self) {
        std::mem::swap(&mut self.previous, &mut self.seen);
        self.seen.clear();
    }

    /// The current poll shows `key`: whether it is new.
    pub fn saw(&mut self, key: u128) -> bool {
        self.seen.insert(key);
        !self.previous.contains(&key) && self.vanished.remove(&key).is_none()
    }

    /// Whether `key` was reported, without counting it as seen now.
    pub fn knows(&self, key: u128) -> bool {
        self.seen.contains(&key) || self.previous.contains(&key) || self.vanished.contains_key(&key)
    }

    /// The poll is done: where the kernel announces destroyed sockets
    /// (`announced`), what left the tables waits for its announcement.
    pub fn end_poll(&mut self, announced: bool, now: Instant) {
        if !announced {
            return;
        }
        for &key in self.previous.difference(&self.seen) {
            self.vanished.entry(key).or_insert(now);
        }
        self.vanished
            .retain(|_, since| now.duration_since(*since) < VANISHED_MEMORY);
    }

    /// The kernel announced `key` destroyed: whether it was reported.
    /// Forgotten, since no poll can show it again: nothing waits for it.
    pub fn destroyed(&mut self, key: u128) -> bool {
        let vanished = self.vanished.remove(&key).is_some();
        let seen = self.seen.remove(&key);
        self.previous.remove(&key) | seen | vanished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_counts_until_a_poll_after_its_last_has_passed() {
        let mut listeners = Listeners::default();
        listeners.next_poll();
        listeners.saw(Proto::Tcp, None, 80);
        listeners.next_poll();
        // Gone from this poll: connections new in it may still be its.
        assert!(listeners.has(Proto::Tcp, None, 80));
        // Heard of as it closes, between polls.
        listeners.saw(Proto::Tcp, None, 80);
        listeners.next_poll();
        assert!(listeners.has(Proto::Tcp, None, 80));
        listeners.next_poll();
        assert!(!listeners.has(Proto::Tcp, None, 80));
        assert!(!listeners.has(Proto::Udp, None, 80));
    }

    /// A client the kernel gave a listener's port number on another
    /// address is not the listener's (seen in tests/ipv6.rs: a client's
    /// ephemeral port equal to a server's on another address).
    #[test]
    fn a_listener_on_one_address_claims_its_port_there_only() {
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        let mut listeners = Listeners::default();
        listeners.next_poll();
        listeners.saw(Proto::Tcp, ip("fd00::a:5"), 46617);
        listeners.saw(Proto::Tcp, ip("127.0.0.2"), 80);
        listeners.saw(Proto::Tcp, ip("::"), 443);
        assert!(listeners.has(Proto::Tcp, ip("fd00::a:5"), 46617));
        assert!(!listeners.has(Proto::Tcp, ip("fd00::b:5"), 46617));
        assert!(listeners.has(Proto::Tcp, ip("::ffff:127.0.0.2"), 80));
        assert!(!listeners.has(Proto::Tcp, ip("127.0.0.3"), 80));
        // `::` claims its port on both families' addresses (dual-stack);
        // 0.0.0.0 on IPv4 addresses only.
        assert!(listeners.has(Proto::Tcp, ip("10.0.0.1"), 443));
        assert!(listeners.has(Proto::Tcp, ip("fd77::2"), 443));
        assert!(listeners.has(Proto::Tcp, None, 443));
        listeners.saw(Proto::Udp, ip("0.0.0.0"), 7700);
        assert!(listeners.has(Proto::Udp, ip("10.77.0.2"), 7700));
        assert!(!listeners.has(Proto::Udp, ip("fd77::2"), 7700));
        assert!(!listeners.has(Proto::Tcp, ip("10.77.0.2"), 7700));
    }

    #[test]
    fn a_socket_is_new_once_however_often_polls_show_it() {
        let mut reported = Reported::default();
        let now = Instant::now();
        reported.next_poll();
        assert!(reported.saw(1));
        reported.end_poll(true, now);
        reported.next_poll();
        assert!(!reported.saw(1));
        reported.end_poll(true, now);
        // A dump that skipped it, then one that shows it again.
        reported.next_poll();
        reported.end_poll(true, now);
        reported.next_poll();
        reported.end_poll(true, now);
        reported.next_poll();
        assert!(!reported.saw(1));
    }

    #[test]
    fn a_socket_announced_long_after_it_left_the_tables_is_not_new() {
        let mut reported = Reported::default();
        let now = Instant::now();
        reported.next_poll();
        reported.saw(1);
        reported.saw(2);
        reported.end_poll(true, now);
        for _ in 0..5 {
            reported.next_poll();
            reported.saw(2);
            reported.end_poll(true, now);
        }
        assert!(reported.destroyed(1));
        assert!(reported.destroyed(2));
        assert!(!reported.destroyed(3));
        // Forgotten once announced.
        assert!(!reported.knows(1));
    }

    #[test]
    fn a_socket_announced_before_it_left_a_poll_leaves_nothing_waiting() {
        let mut reported = Reported::default();
        let now = Instant::now();
        reported.next_poll();
        reported.saw(1);
        reported.end_poll(true, now);
        assert!(reported.destroyed(1));
        reported.next_poll();
        reported.end_poll(true, now);
        assert!(reported.vanished.is_empty());
    }

    #[test]
    fn without_announcements_nothing_waits_for_one() {
        let mut reported = Reported::default();
        let now = Instant::now();
        reported.next_poll();
        reported.saw(1);
        reported.end_poll(false, now);
        for _ in 0..2 {
            reported.next_poll();
            reported.end_poll(false, now);
        }
        assert!(!reported.knows(1));
    }

    #[test]
    fn what_waits_too_long_is_forgotten() {
        let mut reported = Reported::default();
        let then = Instant::now();
        reported.next_poll();
        reported.saw(1);
        reported.end_poll(true, then);
        reported.next_poll();
        reported.end_poll(true, then);
        assert!(reported.knows(1));
        reported.next_poll();
        reported.end_poll(true, then + VANISHED_MEMORY);
        assert!(!reported.knows(1));
    }
}
