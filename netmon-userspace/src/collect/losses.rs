//! What a run could not see in full, as the checkpoint records it.

/// Counts of this run's losses, since the programs were loaded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// Events the kernel side could not deliver (ring buffer full); their
    /// connections were kept in the kernel's dedup map and still counted.
    pub events: u64,
    /// Connections the kernel side could neither deliver nor keep (ring
    /// buffer and dedup map both full): their peers may be missing.
    pub connections: u64,
}

impl Losses {
    pub fn saturating_add(self, other: Self) -> Self {
        Self {
            events: self.events.saturating_add(other.events),
            connections: self.connections.saturating_add(other.connections),
        }
    }
}
