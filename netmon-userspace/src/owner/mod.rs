//! Owners: which systemd unit, container or Kubernetes pod made a
//! connection, from the cgroup v2 ID the kernel reports with it (the inode
//! number of the cgroup's directory, what `bpf_get_current_cgroup_id()`
//! returns) and, when known, the process's PID.
//!
//! The kernel side is cheap; naming happens here, once per cgroup, cached.
//! A cgroup may be gone by the time its first event is read: what was
//! learnt stays in the cache, and an event is never failed for want of an
//! owner.
//!
//! - [`cgroup2_root`]: where the cgroup2 filesystem is mounted;
//! - [`owner_of_path`]: the owner a cgroup path names (pure);
//! - [`Owners`]: IDs to owners, cached and bounded.
mod cgroupfs;
mod path;
mod pods;
#[cfg(test)]
mod tests;

use std::{
    cell::RefCell,
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

pub use cgroupfs::cgroup2_root;
pub use path::owner_of_path;
use pods::Pods;

/// IDs cached at most; a full cache is emptied and refilled as events come.
const CACHE_CAP: usize = 16_384;

/// A miss walks the cgroup tree at most this often.
const WALK_EVERY: Duration = Duration::from_secs(1);

/// A miss on a cgroup newer than any the last walk found walks at most
/// this often: a short job's cgroup may be gone in a second.
const NEW_CGROUP_WALK_EVERY: Duration = Duration::from_millis(20);

/// How long an answer that may improve is kept: a cgroup no walk found, or
/// a pod whose name kubelet's files did not give yet.
const TENTATIVE: Duration = Duration::from_secs(10);

/// cgroup IDs to owners, cached.
///
/// A hit is one hash lookup. A miss reads the process's own cgroup when its
/// PID is known, else walks the cgroup tree (at most once a second) and
/// caches every cgroup it finds. Cgroup IDs are not reused on 64-bit
/// kernels, so an owner learnt is kept until the cache fills.
pub struct Owners {
    root: PathBuf,
    pods: RefCell<Pods>,
    cache: HashMap<u64, Entry, BuildHasherDefault<IdHasher>>,
    last_walk: Option<Instant>,
    /// The highest ID the last walk found: cgroup IDs only grow, so one
    /// above it is a cgroup made since, worth a walk sooner.
    newest: u64,
}

#[derive(Clone)]
struct Entry {
    owner: Option<Arc<str>>,
    /// When a tentative answer is to be looked up again; `None`: final.
    until: Option<Instant>,
}

impl Owners {
    /// Owners of the cgroups under `cgroup_root` (see [`cgroup2_root`]),
    /// with pod names from kubelet's `/var/log/pods`.
    pub fn new(cgroup_root: PathBuf) -> Self {
        Owners {
            root: cgroup_root,
            pods: RefCell::new(Pods::new(pods::DEFAULT_DIR.into())),
            cache: HashMap::default(),
            last_walk: None,
            newest: 0,
        }
    }

    /// Pod names from `dir` in place of `/var/log/pods`.
    pub fn with_pods_dir(mut self, dir: PathBuf) -> Self {
        self.pods = RefCell::new(Pods::new(dir));
        self
    }

    /// The owner of a connection made in cgroup `cgroup_id` by process `pid`
    /// (0: unknown). `None` when the cgroup is the root or has no
    /// recognisable owner, or cannot be found any more.
    ///
    /// Never fails, never blocks long: a miss may trigger one rescan of the
    /// cgroup tree, rate-limited.
    pub fn resolve(&mut self, cgroup_id: u64, pid: u32) -> Option<Arc<str>> {
        let stale = match self.cache.get(&cgroup_id) {
            Some(Entry { owner, until: None }) => return owner.clone(),
            Some(Entry {
                owner,
                until: Some(until),
            }) if Instant::now() < *until => return owner.clone(),
            Some(entry) => entry.owner.clone(),
            None => None,
        };
        if cgroup_id == 0 {
            return None;
        }
        if pid != 0
            && let Some(path) = cgroupfs::path_of_pid(&self.root, pid, cgroup_id)
        {
            let entry = self.classify(&path);
            return self.keep(cgroup_id, entry, stale);
        }
        self.walk(cgroup_id, stale)
    }

    /// One walk of the tree, if none ran within [`WALK_EVERY`] (or
    /// [`NEW_CGROUP_WALK_EVERY`] for a cgroup made since the last), caching
    /// every cgroup found; the answer for `wanted`.
    fn walk(&mut self, wanted: u64, stale: Option<Arc<str>>) -> Option<Arc<str>> {
        // A cgroup made since the last walk (a job's, a container's, gone
        // again in a moment) gets one sooner, within limits.
        let every = if wanted > self.newest {
            NEW_CGROUP_WALK_EVERY
        } else {
            WALK_EVERY
        };
        if self.last_walk.is_some_and(|at| at.elapsed() < every) {
            return stale;
        }
        self.last_walk = Some(Instant::now());
        let mut found = None;
        let mut learnt = Vec::new();
        let mut newest = self.newest;
        // An unreadable root leaves `found` empty: every ID is then unknown.
        let _ = cgroupfs::walk(&self.root.clone(), |id, path| {
            newest = newest.max(id);
            if id == wanted {
                found = Some(self.classify(path));
            } else if self.cache.get(&id).is_none_or(|e| e.until.is_some()) {
                learnt.push((id, self.classify(path)));
            }
        });
        // The wanted ID goes in last, so that a cache filled by the walk
        // still holds it.
        if self.cache.len() + learnt.len() >= CACHE_CAP {
            self.cache.clear();
        }
        self.cache.extend(learnt.into_iter().take(CACHE_CAP - 1));
        self.newest = newest;
        let entry = found.unwrap_or_else(|| Entry {
            owner: None,
            until: Some(Instant::now() + TENTATIVE),
        });
        self.keep(wanted, entry, stale)
    }

    /// Caches `entry` for `id` and answers with it; a tentative `None`
    /// keeps what was learnt before (a cgroup gone is still its owner's).
    fn keep(&mut self, id: u64, mut entry: Entry, stale: Option<Arc<str>>) -> Option<Arc<str>> {
        if entry.owner.is_none() && entry.until.is_some() && stale.is_some() {
            entry.owner = stale;
        }
        if self.cache.len() >= CACHE_CAP && !self.cache.contains_key(&id) {
            self.cache.clear();
        }
        let owner = entry.owner.clone();
        self.cache.insert(id, entry);
        owner
    }

    /// The owner a path names; tentative when it names a pod kubelet's
    /// files did not name (yet).
    fn classify(&self, path: &str) -> Entry {
        let unnamed = std::cell::Cell::new(false);
        let owner = owner_of_path(path, &|uid: &str| {
            let name = self.pods.borrow_mut().name(uid);
            unnamed.set(name.is_none());
            name
        });
        let until = unnamed.get().then(|| Instant::now() + TENTATIVE);
        Entry {
            owner: owner.map(Arc::from),
            until,
        }
    }
}

/// cgroup IDs are inode numbers the kernel hands out, not chosen by
/// anyone who could aim for collisions: a multiply spreads them, far
/// cheaper than SipHash on the hit path.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0 ^ u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}
