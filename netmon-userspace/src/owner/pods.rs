//! Kubernetes pods' namespaces and names, by UID, from the directories
//! kubelet keeps for their logs: `/var/log/pods/<namespace>_<name>_<uid>/`.
//! Reading them needs no API server and no credentials.
use std::{
    collections::HashMap,
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

/// Where kubelet keeps pods' logs.
pub(super) const DEFAULT_DIR: &str = "/var/log/pods";

/// An unknown UID rescans the directory no more often than this.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// A node runs at most a few hundred pods; more entries than this are not
/// read.
const MAX_PODS: usize = 16_384;

/// Pod names by UID, read from the log directories and reread when a UID
/// is not among them, at most every [`RESCAN_EVERY`].
pub(super) struct Pods {
    dir: PathBuf,
    /// `<namespace>/<name>` by UID.
    names: HashMap<String, String>,
    scanned: Option<Instant>,
}

impl Pods {
    pub fn new(dir: PathBuf) -> Self {
        Pods {
            dir,
            names: HashMap::new(),
            scanned: None,
        }
    }

    /// `<namespace>/<name>` of the pod with `uid`, if kubelet has its logs.
    pub fn name(&mut self, uid: &str) -> Option<String> {
        if let Some(name) = self.names.get(uid) {
            return Some(name.clone());
        }
        if self.scanned.is_some_and(|at| at.elapsed() < RESCAN_EVERY) {
            return None;
        }
        self.scan();
        self.names.get(uid).cloned()
    }

    /// Rereads the directory; a host without it (no kubelet) has no pods.
    fn scan(&mut self) {
        self.scanned = Some(Instant::now());
        self.names.clear();
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten().take(MAX_PODS) {
            let name = entry.file_name();
            if let Some((uid, pod)) = name.to_str().and_then(parse) {
                self.names.insert(uid.to_owned(), pod);
            }
        }
    }
}

/// The UID and `<namespace>/<name>` of a log directory's name. Neither a
/// namespace nor a name may hold `_`, so the split is unambiguous; anything
/// outside Kubernetes' own character sets is refused.
pub(super) fn parse(dir: &str) -> Option<(&str, String)> {
    let mut fields = dir.split('_');
    let (namespace, name, uid) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() {
        return None;
    }
    let dns = |s: &str, max: usize, dot: bool| {
        (1..=max).contains(&s.len())
            && s.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-') || (dot && b == b'.'))
    };
    let uid_ok =
        (1..=64).contains(&uid.len()) && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
    (dns(namespace, 63, false) && dns(name, 253, true) && uid_ok)
        .then(|| (uid, format!("{namespace}/{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b7e5ad8-3f0c-4c2e-9a5c-2d0d2f3e4b6a";

    #[test]
    fn parses_log_directory_names() {
        let dir = format!("kube-system_coredns-5d78c9869d-abcde_{UID}");
        assert_eq!(
            parse(&dir),
            Some((UID, "kube-system/coredns-5d78c9869d-abcde".to_owned()))
        );
        // A static pod's UID is a hash without dashes.
        let stat = "kube-system_etcd-node1.example.com_3b2f0a4c9d8e7f6a5b4c3d2e1f0a9b8c";
        assert_eq!(parse(stat).unwrap().1, "kube-system/etcd-node1.example.com");
        for bad in [
            "",
            "default_web",
            "default_web_uid_extra",
            "Default_web_0b7e",
            "default_web_xyz",
            "default__0b7e",
            "de fault_web_0b7e",
            "default_web/../x_0b7e",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scans_once_and_rescans_an_unknown_uid_later() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(format!("default_web-0_{UID}"))).unwrap();
        fs::create_dir(dir.path().join("not-a-pod")).unwrap();
        let mut pods = Pods::new(dir.path().to_path_buf());
        assert_eq!(pods.name(UID).as_deref(), Some("default/web-0"));
        let other = "11111111-2222-3333-4444-555555555555";
        fs::create_dir(dir.path().join(format!("prod_api-1_{other}"))).unwrap();
        // Scanned just now: a new pod waits for the next rescan.
        assert_eq!(pods.name(other), None);
        pods.scanned = Instant::now().checked_sub(RESCAN_EVERY);
        assert_eq!(pods.name(other).as_deref(), Some("prod/api-1"));
        let mut none = Pods::new(dir.path().join("missing"));
        assert_eq!(none.name(UID), None);
    }
}
