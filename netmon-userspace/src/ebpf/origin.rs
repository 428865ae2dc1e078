//! Where a connection was made, in userspace terms: the kernel's network
//! namespace inode and cgroup ID turned into [`Connection::netns`] and
//! [`Connection::owner`].
use std::{collections::HashMap, os::unix::fs::MetadataExt as _};

use crate::{
    owner::{Owners, cgroup2_root},
    peer::{Connection, NetnsId, Owner},
};

/// Owners kept by cgroup ID before the cache starts over: far more
/// cgroups than a host runs at once.
const CACHED_OWNERS: usize = 16_384;

/// Resolves origins, with what it needs cached.
pub struct Origins {
    /// The inode of the network namespace netmon runs in: the host's.
    host_netns: u32,
    /// Names cgroups; `None` without a cgroup v2 hierarchy to read.
    names: Option<Owners>,
    /// Owners found, by cgroup ID, interned.
    owners: HashMap<u64, Owner>,
}

impl Default for Origins {
    /// Looks up the host's namespace and the cgroup v2 hierarchy.
    fn default() -> Self {
        let host_netns = std::fs::metadata("/proc/self/ns/net")
            .map(|meta| meta.ino() as u32)
            .unwrap_or_else(|err| {
                log::warn!(
                    "cannot read /proc/self/ns/net ({err}): every network namespace's peers are recorded as the host's"
                );
                0
            });
        let names = match cgroup2_root() {
            Ok(root) => Some(Owners::new(root)),
            Err(err) => {
                log::info!("connections are recorded without owners: {err:#}");
                None
            }
        };
        Self {
            host_netns,
            names,
            owners: HashMap::new(),
        }
    }
}

impl Origins {
    /// Takes the namespace whose socket tables `proc_net` shows (a
    /// `/proc/PID/net`, as `--proc-net` names it) for the host's: netmon
    /// in a namespace of its own watching the host's records the host's
    /// peers as the host's.
    pub fn watch_from(&mut self, proc_net: &std::path::Path) {
        let ns = proc_net
            .canonicalize()
            .ok()
            .and_then(|net| Some(net.parent()?.join("ns/net")));
        match ns.as_deref().map(std::fs::metadata) {
            Some(Ok(meta)) => self.host_netns = meta.ino() as u32,
            Some(Err(err)) => log::warn!(
                "cannot read the network namespace of {} ({err}): peers are recorded as seen from netmon's own",
                proc_net.display()
            ),
            None => {}
        }
    }

    /// Fills in `conn`'s namespace and owner from its origin.
    pub fn resolve(&mut self, conn: &mut Connection) {
        let netns = conn.origin.netns;
        conn.netns = (netns != 0 && self.host_netns != 0 && netns != self.host_netns)
            .then_some(NetnsId(netns));
        conn.owner = self.owner(conn.origin.cgroup, conn.origin.pid);
    }

    fn owner(&mut self, cgroup: u64, pid: u32) -> Option<Owner> {
        if cgroup == 0 {
            return None;
        }
        if let Some(owner) = self.owners.get(&cgroup) {
            return Some(*owner);
        }
        let owner = Owner::new(&self.names.as_mut()?.resolve(cgroup, pid)?);
        if let Some(owner) = owner {
            if self.owners.len() >= CACHED_OWNERS {
                self.owners.clear();
            }
            self.owners.insert(cgroup, owner);
        }
        owner
    }
}
