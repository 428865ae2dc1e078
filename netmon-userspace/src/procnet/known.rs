//! What proc mode remembers from one poll to the next: the listeners, which
//! give connections their direction.
use std::collections::HashMap;

use super::Proto;

/// The ports with a listener, each with the last poll it was there for.
///
/// A connection netmon has not seen before was made after the poll before
/// the current one (or it would have been in that poll), so it is inbound
/// if a listener on its local port was there at any time since: seen by
/// that poll or a later one, or heard of as it closed since. Nothing
/// narrower can be known between two polls; a listener gone for longer
/// has no say, so a client that connects from its port later is outbound.
#[derive(Default)]
pub(super) struct Listeners {
    ports: HashMap<(Proto, u16), u64>,
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

    /// A listener on `port` is there, or was until it closed just now.
    pub fn saw(&mut self, proto: Proto, port: u16) {
        self.ports.insert((proto, port), self.poll);
    }

    /// Whether a connection on local `port` not seen before is inbound.
    pub fn has(&self, proto: Proto, port: u16) -> bool {
        self.ports.contains_key(&(proto, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_counts_until_a_poll_after_its_last_has_passed() {
        let mut listeners = Listeners::default();
        listeners.next_poll();
        listeners.saw(Proto::Tcp, 80);
        listeners.next_poll();
        // Gone from this poll: connections new in it may still be its.
        assert!(listeners.has(Proto::Tcp, 80));
        // Heard of as it closes, between polls.
        listeners.saw(Proto::Tcp, 80);
        listeners.next_poll();
        assert!(listeners.has(Proto::Tcp, 80));
        listeners.next_poll();
        assert!(!listeners.has(Proto::Tcp, 80));
        assert!(!listeners.has(Proto::Udp, 80));
    }
}
