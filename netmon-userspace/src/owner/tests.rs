//! [`owner_of_path`] over layouts found in the wild, and [`Owners`] over
//! real cgroups (as root).
use super::*;

const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const UID: &str = "0b7e5ad8-3f0c-4c2e-9a5c-2d0d2f3e4b6a";

fn no_pods(_: &str) -> Option<String> {
    None
}

fn known_pod(uid: &str) -> Option<String> {
    (uid == UID).then(|| "shop/cart-7d4b9c-xk2pq".to_owned())
}

fn owner(path: &str) -> Option<String> {
    owner_of_path(path, &no_pods)
}

#[test]
fn systemd_units() {
    let cases = [
        ("/system.slice/nginx.service", "nginx.service"),
        ("/system.slice/nginx.service/worker", "nginx.service"),
        (
            "/system.slice/system-getty.slice/getty@tty1.service",
            "getty@tty1.service",
        ),
        (
            "/system.slice/systemd-fsck@dev-disk-by\\x2duuid-1234.service",
            "systemd-fsck@dev-disk-by\\x2duuid-1234.service",
        ),
        (
            "/user.slice/user-1000.slice/session-3.scope",
            "session-3.scope",
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service",
            "user@1000.service",
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service/init.scope",
            "user@1000.service",
        ),
        (
            // A user's own units are named under their manager: no user
            // can pass one off as the system's.
            "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service",
            "user@1000.service/dbus.service",
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
            "user@1000.service/nginx.service",
        ),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope",
            "user@1000.service/app-gnome-firefox-1234.scope",
        ),
        (
            "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope",
            "machine-qemu\\x2d1\\x2dvm.scope",
        ),
        ("/system.slice/run-u42.service", "run-u42.service"),
        // Podman's monitor is a scope, not the container.
        (
            &format!("/machine.slice/libpod-conmon-{ID}.scope"),
            &format!("libpod-conmon-{ID}.scope"),
        ),
        (
            &format!("/system.slice/crio-conmon-{ID}.scope"),
            &format!("crio-conmon-{ID}.scope"),
        ),
        ("/netmon-owner-test.service", "netmon-owner-test.service"),
        ("system.slice//cron.service/", "cron.service"),
    ];
    for (path, want) in cases {
        assert_eq!(owner(path).as_deref(), Some(want), "{path}");
    }
}

#[test]
fn containers() {
    let short = &ID[..12];
    let want = format!("container:{short}");
    let cases = [
        format!("/system.slice/docker-{ID}.scope"),
        format!("/docker/{ID}"),
        format!("/machine.slice/libpod-{ID}.scope"),
        format!("/machine.slice/libpod-{ID}.scope/container"),
        format!("/libpod_parent/libpod-{ID}"),
        format!("/system.slice/cri-containerd-{ID}.scope"),
        format!("/system.slice/crio-{ID}.scope"),
        format!("/netmon-owner-test/docker-{ID}.scope"),
        // systemd inside the container: still the container's.
        format!("/system.slice/docker-{ID}.scope/system.slice/nginx.service"),
        // A shortened ID is kept as is.
        format!("/system.slice/docker-{short}.scope"),
    ];
    for path in &cases {
        assert_eq!(owner(path).as_deref(), Some(want.as_str()), "{path}");
    }
    // Rootless: the user's, whose cgroups may bear any name.
    let rootless =
        format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope");
    assert_eq!(
        owner(&rootless).as_deref(),
        Some(format!("user@1000.service/{want}").as_str())
    );
    // No pod under a user's cgroups either.
    let fake_pod = format!(
        "/user.slice/user-1000.slice/user@1000.service/kubepods/pod{}/{ID}",
        "1".repeat(32)
    );
    assert_eq!(owner(&fake_pod).as_deref(), Some("user@1000.service"));
    // Docker in docker: the inner one.
    let inner = "0123456789ab".repeat(5) + "cdef";
    let nested = format!("/system.slice/docker-{ID}.scope/docker/{inner}");
    assert_eq!(owner(&nested).as_deref(), Some("container:0123456789ab"));
}

#[test]
fn kubernetes_pods_both_drivers() {
    let short = &ID[..12];
    let under = UID.replace('-', "_");
    let systemd = [
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{ID}.scope"
        ),
        format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{under}.slice/crio-{ID}.scope"
        ),
        format!("/kubepods.slice/kubepods-pod{under}.slice/docker-{ID}.scope"),
        // kind and other nested nodes.
        format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{under}.slice/cri-containerd-{ID}.scope"
        ),
    ];
    let cgroupfs = [
        format!("/kubepods/burstable/pod{UID}/{ID}"),
        format!("/kubepods/pod{UID}/{ID}"),
        format!("/kubepods/besteffort/pod{UID}/{ID}/sub"),
    ];
    for path in systemd.iter().chain(&cgroupfs) {
        let named = format!("pod:shop/cart-7d4b9c-xk2pq/{short}");
        assert_eq!(
            owner_of_path(path, &known_pod).as_deref(),
            Some(named.as_str()),
            "{path}"
        );
        let unnamed = format!("pod:{UID}/{short}");
        assert_eq!(owner(path).as_deref(), Some(unnamed.as_str()), "{path}");
    }
    // The pod's own cgroup, with no container below it.
    let pod = format!("/kubepods/burstable/pod{UID}");
    assert_eq!(
        owner_of_path(&pod, &known_pod).as_deref(),
        Some("pod:shop/cart-7d4b9c-xk2pq")
    );
    // The pods' parents alone have no owner.
    for path in [
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        "/kubepods/burstable",
    ] {
        assert_eq!(owner(path), None, "{path}");
    }
    // A pod-like name outside kubepods is not a pod.
    assert_eq!(owner(&format!("/pod{UID}/{ID}")), None);
}

#[test]
fn no_owner() {
    let long = format!("/system.slice/{}.service", "a".repeat(300));
    let very_long = format!("/{}", "x.slice/".repeat(1000)) + "nginx.service";
    let cases = [
        "",
        "/",
        "/init.scope",
        "/user.slice",
        "/system.slice",
        "/user.slice/user-1000.slice",
        "/machine.slice",
        "/netmon-owner-test",
        "/some/random/path",
        "/.service",
        "/.scope",
        "/system.slice/../nginx.service",
        "/system.slice/./nginx.service",
        "/../../../docker/x",
        "/system.slice/ngi nx.service",
        "/system.slice/nginx\u{1b}[31m.service",
        "/system.slice/\u{fffd}\u{fffd}.service",
        "/docker/not-hex",
        "/docker/4F1A2B3C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F8",
        &long,
        &very_long,
    ];
    for path in cases {
        assert_eq!(owner(path), None, "{path:?}");
    }
    // A hostile component is skipped, not the unit around it.
    assert_eq!(
        owner("/system.slice/nginx.service/x\n.service").as_deref(),
        Some("nginx.service")
    );
    // Too short for a container ID: a scope like any other.
    assert_eq!(
        owner("/system.slice/docker-abc.scope").as_deref(),
        Some("docker-abc.scope")
    );
    // A container ID longer than 64 digits is no container ID.
    assert_eq!(owner(&format!("/docker/{ID}0")), None);
    assert_eq!(
        owner(&format!("/system.slice/docker-{ID}0.scope")),
        Some(format!("docker-{ID}0.scope"))
    );
}

#[test]
fn hasher_spreads_sequential_ids() {
    // hashbrown picks a bucket with the low bits and tags it with the top 7.
    let hashes: Vec<u64> = (1..=16_384u64)
        .map(|id| {
            let mut h = IdHasher::default();
            h.write_u64(id);
            h.finish()
        })
        .collect();
    let buckets: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0x3fff).collect();
    let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
    assert!(buckets.len() > 10_000, "{}", buckets.len());
    assert_eq!(tags.len(), 128);
}

#[test]
fn cache_stays_bounded_and_answers_hits_without_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let mut owners = Owners::new(dir.path().join("gone"));
    let owner: Arc<str> = Arc::from("a.service");
    for id in 1..=(CACHE_CAP as u64 * 2) {
        owners.keep(
            id,
            Entry {
                owner: Some(owner.clone()),
                until: None,
            },
            None,
        );
        assert!(owners.cache.len() <= CACHE_CAP);
    }
    let last = CACHE_CAP as u64 * 2;
    assert_eq!(owners.resolve(last, 0).as_deref(), Some("a.service"));
    // Unknown, the root unreadable: none, and no second walk within a second.
    assert_eq!(owners.resolve(u64::MAX, 0), None);
    assert!(owners.last_walk.is_some());
    assert_eq!(owners.resolve(u64::MAX - 1, 1), None);
    assert_eq!(owners.resolve(0, 0), None);
}

#[test]
fn walk_of_a_plain_tree_names_its_directories_and_remembers_them() {
    use std::os::unix::fs::MetadataExt;
    // Any directory tree walks like a cgroup tree: IDs are inode numbers.
    let root = tempfile::tempdir().unwrap();
    let unit = root.path().join("system.slice/a.service");
    std::fs::create_dir_all(&unit).unwrap();
    let id = std::fs::metadata(&unit).unwrap().ino();
    let slice = std::fs::metadata(root.path().join("system.slice"))
        .unwrap()
        .ino();
    let mut owners = Owners::new(root.path().to_path_buf());
    assert_eq!(owners.resolve(id, 0).as_deref(), Some("a.service"));
    // The walk cached the slice too: no owner, final.
    assert!(
        owners
            .cache
            .get(&slice)
            .is_some_and(|e| e.owner.is_none() && e.until.is_none())
    );

    // Made after the walk: not found within the second, and not cached.
    let later = root.path().join("system.slice/b.service");
    std::fs::create_dir(&later).unwrap();
    let later_id = std::fs::metadata(&later).unwrap().ino();
    assert_eq!(owners.resolve(later_id, 0), None);
    assert!(!owners.cache.contains_key(&later_id));
    // A second on, the next miss walks again.
    owners.last_walk = Instant::now().checked_sub(WALK_EVERY);
    assert_eq!(owners.resolve(later_id, 0).as_deref(), Some("b.service"));

    // Gone: the cache still answers; an ID no walk finds is kept briefly.
    std::fs::remove_dir(&unit).unwrap();
    owners.last_walk = Instant::now().checked_sub(WALK_EVERY);
    assert_eq!(owners.resolve(id, 0).as_deref(), Some("a.service"));
    let unknown = u64::MAX;
    assert_eq!(owners.resolve(unknown, 0), None);
    assert!(
        owners
            .cache
            .get(&unknown)
            .is_some_and(|e| e.until.is_some())
    );
    // Expired and still unknown, a tentative owner learnt before stays.
    let stale: Arc<str> = Arc::from("c.service");
    let expired = Instant::now().checked_sub(Duration::from_secs(1));
    owners.cache.insert(
        unknown,
        Entry {
            owner: Some(stale),
            until: expired,
        },
    );
    owners.last_walk = Instant::now().checked_sub(WALK_EVERY);
    assert_eq!(owners.resolve(unknown, 0).as_deref(), Some("c.service"));
}

#[test]
fn owners_can_move_to_another_thread() {
    fn send<T: Send>() {}
    send::<Owners>();
}

/// Child processes and cgroups a test made, removed however it ends.
#[derive(Default)]
struct Cgroups {
    children: Vec<std::process::Child>,
    /// Created, parents first.
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    /// Creates `dir` and the parents missing, remembering what it created.
    fn make(&mut self, dir: &std::path::Path) {
        let mut missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !d.exists())
            .map(PathBuf::from)
            .collect();
        missing.reverse();
        for d in missing {
            std::fs::create_dir(&d)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
            self.dirs.push(d);
        }
    }

    /// A `sleep` moved into cgroup `dir`: its PID.
    fn spawn_in(&mut self, dir: &std::path::Path) -> u32 {
        let child = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        self.children.push(child);
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", dir.display()));
        pid
    }

    fn end(&mut self) {
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for dir in self.dirs.drain(..).rev() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                eprintln!("cannot remove {}: {e}", dir.display());
            }
        }
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        self.end();
    }
}

fn cgroup_id(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).unwrap().ino()
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn resolves_real_cgroups_by_pid_and_by_walk_and_after_they_are_gone() {
    let root = cgroup2_root().unwrap();
    let pods = tempfile::tempdir().unwrap();
    std::fs::create_dir(pods.path().join(format!("shop_cart-0_{UID}"))).unwrap();
    let unit_dir = root.join("system.slice/netmon-owner-test.service");
    let docker_dir = root.join(format!("netmon-owner-test/docker-{ID}.scope"));
    let pod_dir = root.join(format!(
        "netmon-owner-test/kubepods/burstable/pod{UID}/{ID}"
    ));
    let mut cgroups = Cgroups::default();
    for dir in [&unit_dir, &docker_dir, &pod_dir] {
        cgroups.make(dir);
    }
    let unit_pid = cgroups.spawn_in(&unit_dir);
    let docker_pid = cgroups.spawn_in(&docker_dir);
    let pod_pid = cgroups.spawn_in(&pod_dir);
    let (unit_id, docker_id, pod_id) = (
        cgroup_id(&unit_dir),
        cgroup_id(&docker_dir),
        cgroup_id(&pod_dir),
    );
    let container = format!("container:{}", &ID[..12]);
    let pod = format!("pod:shop/cart-0/{}", &ID[..12]);
    let owners = || Owners::new(root.clone()).with_pods_dir(pods.path().to_path_buf());

    // By PID: the process's own cgroup, no walk.
    let mut by_pid = owners();
    assert_eq!(
        by_pid.resolve(unit_id, unit_pid).as_deref(),
        Some("netmon-owner-test.service")
    );
    assert_eq!(
        by_pid.resolve(docker_id, docker_pid).as_deref(),
        Some(container.as_str())
    );
    assert_eq!(
        by_pid.resolve(pod_id, pod_pid).as_deref(),
        Some(pod.as_str())
    );
    assert!(by_pid.last_walk.is_none());
    // A PID now in another cgroup than the event's: the walk answers.
    let mut moved = owners();
    assert_eq!(
        moved.resolve(docker_id, unit_pid).as_deref(),
        Some(container.as_str())
    );
    assert!(moved.last_walk.is_some());

    // By walk: one walk learns them all.
    let mut by_walk = owners();
    let started = Instant::now();
    assert_eq!(
        by_walk.resolve(docker_id, 0).as_deref(),
        Some(container.as_str())
    );
    let walked = started.elapsed();
    assert_eq!(
        by_walk.resolve(unit_id, 0).as_deref(),
        Some("netmon-owner-test.service")
    );
    assert_eq!(by_walk.resolve(pod_id, 0).as_deref(), Some(pod.as_str()));
    assert_eq!(by_walk.resolve(cgroup_id(&root), 0), None);
    eprintln!("walk of {} cgroups: {walked:?}", by_walk.cache.len());

    // A hit, measured.
    let rounds = 1_000_000u32;
    let started = Instant::now();
    for i in 0..rounds {
        let id = [unit_id, docker_id, pod_id][i as usize % 3];
        std::hint::black_box(by_walk.resolve(std::hint::black_box(id), 0));
    }
    eprintln!("hit: {:?} per resolve", started.elapsed() / rounds);

    // A miss answered by the PID, measured.
    let started = Instant::now();
    assert_eq!(
        owners().resolve(unit_id, unit_pid).as_deref(),
        Some("netmon-owner-test.service")
    );
    eprintln!("miss by PID: {:?}", started.elapsed());

    // Gone: what was learnt stays; a fresh cache knows nothing.
    cgroups.end();
    assert!(!unit_dir.exists() && !docker_dir.exists());
    assert_eq!(
        by_pid.resolve(unit_id, unit_pid).as_deref(),
        Some("netmon-owner-test.service")
    );
    assert_eq!(
        by_walk.resolve(docker_id, 0).as_deref(),
        Some(container.as_str())
    );
    assert_eq!(owners().resolve(unit_id, unit_pid), None);
}

#[test]
#[ignore = "needs root: run cargo xtask test"]
fn walk_of_a_large_tree_measured() {
    let root = cgroup2_root().unwrap();
    let top = root.join("netmon-owner-walk");
    let mut cgroups = Cgroups::default();
    for slice in 0..20 {
        for unit in 0..50 {
            cgroups.make(&top.join(format!("s{slice}.slice/u{unit}.service")));
        }
    }
    let wanted = cgroup_id(&top.join("s19.slice/u49.service"));
    let mut owners = Owners::new(root);
    let started = Instant::now();
    assert_eq!(owners.resolve(wanted, 0).as_deref(), Some("u49.service"));
    eprintln!(
        "walk of {} cgroups: {:?}",
        owners.cache.len(),
        started.elapsed()
    );
}
