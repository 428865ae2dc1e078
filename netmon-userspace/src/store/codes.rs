//! What each kind of list item is as a [`CappedSet`](super::CappedSet)
//! keeps it: a number, under 2^20 for every kind but a bare `u16`'s
//! (a test's), so that three fit inline.
use std::{
    collections::HashMap,
    sync::{OnceLock, RwLock},
};

use super::InlineItem;
use crate::peer::{Comm, Owner, Protocol, Service};

impl InlineItem for u16 {
    fn code(self) -> Option<u32> {
        Some(u32::from(self))
    }

    fn from_code(code: u32) -> Self {
        code as u16
    }
}

/// The protocol in bit 16, above the port: 17 bits.
impl InlineItem for Service {
    fn code(self) -> Option<u32> {
        let protocol = match self.protocol {
            Protocol::Tcp => 0,
            Protocol::Udp => 1,
        };
        Some(protocol << 16 | u32::from(self.port))
    }

    fn from_code(code: u32) -> Self {
        Self {
            protocol: if code >> 16 == 0 {
                Protocol::Tcp
            } else {
                Protocol::Udp
            },
            port: code as u16,
        }
    }
}

/// Owners are interned already: their number, under 2^16.
impl InlineItem for Owner {
    fn code(self) -> Option<u32> {
        Some(self.id())
    }

    fn from_code(code: u32) -> Self {
        Self::from_id(code)
    }
}

/// A process name's number in the process's table of them, under 2^20:
/// a host runs a few hundred distinct names, and a million peers keep
/// one or two each.
impl InlineItem for Comm {
    fn code(self) -> Option<u32> {
        comms::intern(self)
    }

    fn from_code(code: u32) -> Self {
        comms::name(code)
    }
}

/// Distinct process names a process keeps, as many as inline codes can
/// number; past that, a new name is recorded as no process (and said
/// once). Only names a record keeps are numbered (see
/// [`CappedSet::insert`](super::CappedSet::insert)), so filling it takes
/// a million names kept by peers, a flood of the order `--max-peers`
/// bounds. The table grows a chunk at a time: 16 bytes a name used.
pub const MAX_COMMS: usize = CHUNKS * CHUNK;
const CHUNK: usize = 1 << 16;
const CHUNKS: usize = 16;

/// The process's table of process names: looked up without a lock (a
/// checkpoint reads a name for most peers), added to under one.
mod comms {
    use std::cell::Cell;

    use super::*;

    /// Chunks of names, each allocated when its first name is numbered.
    static NAMES: [OnceLock<Box<[OnceLock<Comm>]>>; CHUNKS] = [const { OnceLock::new() }; CHUNKS];

    /// Where name `id` goes, its chunk allocated if need be.
    fn entry(id: usize) -> Option<&'static OnceLock<Comm>> {
        NAMES
            .get(id / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect())
            .get(id % CHUNK)
    }

    #[derive(Default)]
    struct Ids {
        ids: HashMap<Comm, u32>,
        full_said: bool,
    }

    static IDS: RwLock<Option<Ids>> = RwLock::new(None);

    /// Names recently interned on this thread, by a hash of the name:
    /// most events and most peers of a file name one of a few processes,
    /// found here without the lock.
    const CACHED: usize = 64;

    thread_local! {
        static RECENT: [Cell<Option<(Comm, u32)>>; CACHED] =
            const { [const { Cell::new(None) }; CACHED] };
    }

    fn slot(comm: Comm) -> usize {
        let [a, b] = halves(comm.raw());
        ((a ^ b.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }

    /// The name's two halves as words.
    fn halves(raw: [u8; 16]) -> [u64; 2] {
        let word = u128::from_le_bytes(raw);
        [word as u64, (word >> 64) as u64]
    }

    pub(super) fn intern(comm: Comm) -> Option<u32> {
        let slot = slot(comm);
        let cached = RECENT.with(|recent| recent[slot].get());
        if let Some((name, id)) = cached
            && name == comm
        {
            return Some(id);
        }
        let id = intern_locked(comm)?;
        RECENT.with(|recent| recent[slot].set(Some((comm, id))));
        Some(id)
    }

    fn intern_locked(comm: Comm) -> Option<u32> {
        if let Some(&id) = IDS.read().ok()?.as_ref().and_then(|ids| ids.ids.get(&comm)) {
            return Some(id);
        }
        let mut guard = IDS.write().ok()?;
        let ids = guard.get_or_insert_with(Ids::default);
        if let Some(&id) = ids.ids.get(&comm) {
            return Some(id);
        }
        let id = ids.ids.len();
        if id >= MAX_COMMS {
            if !ids.full_said {
                ids.full_said = true;
                log::warn!(
                    "more than {MAX_COMMS} distinct process names: new ones are recorded without a process"
                );
            }
            return None;
        }
        // Set before the id is known to anyone.
        let _ = entry(id).map(|entry| entry.set(comm));
        ids.ids.insert(comm, id as u32);
        Some(id as u32)
    }

    /// Whether `comm` has a number, without giving it one.
    #[cfg(test)]
    pub(super) fn is_numbered(comm: Comm) -> bool {
        IDS.read()
            .ok()
            .and_then(|ids| ids.as_ref().map(|ids| ids.ids.contains_key(&comm)))
            .unwrap_or(false)
    }

    pub(super) fn name(id: u32) -> Comm {
        let id = id as usize;
        NAMES
            .get(id / CHUNK)
            .and_then(OnceLock::get)
            .and_then(|chunk| chunk.get(id % CHUNK))
            .and_then(OnceLock::get)
            .copied()
            .or_else(|| Comm::from_name("?"))
            .expect("a one-letter name is a name")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_come_back_as_their_items() {
        for service in [Service::tcp(0), Service::tcp(65535), Service::udp(53)] {
            let code = service.code().unwrap();
            assert!(code < 1 << 17);
            assert_eq!(Service::from_code(code), service);
        }
        let (curl, psql) = (
            Comm::from_name("curl").unwrap(),
            Comm::from_name("psql").unwrap(),
        );
        let (a, b) = (curl.code().unwrap(), psql.code().unwrap());
        assert_ne!(a, b);
        assert_eq!(curl.code(), Some(a));
        assert_eq!((Comm::from_code(a), Comm::from_code(b)), (curl, psql));
        let owner = Owner::new("nginx.service").unwrap();
        assert_eq!(Owner::from_code(owner.code().unwrap()), owner);
    }

    /// One record offered more names than it keeps numbers only those it
    /// keeps: the table is the whole process's, for every other record.
    #[test]
    fn names_a_full_list_refuses_are_not_numbered() {
        let name = |i: usize| Comm::from_name(&format!("refused-{i:03}")).unwrap();
        let mut list = super::super::CappedSet::default();
        for i in 0..200 {
            list.insert(name(i));
        }
        assert_eq!(list.len(), super::super::LIST_CAP);
        assert!(comms::is_numbered(name(0)) && comms::is_numbered(name(63)));
        assert!((64..200).all(|i| !comms::is_numbered(name(i))));
    }
}
