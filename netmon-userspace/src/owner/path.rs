//! Which owner a cgroup path names: a Kubernetes pod's container, a
//! container, or a systemd unit. Pure string work, so every layout in the
//! wild can be tested without one.

/// Longer paths are not classified: the kernel's own limit is `PATH_MAX`,
/// and nothing real comes near it.
const MAX_PATH: usize = 4096;

/// systemd's `UNIT_NAME_MAX`, less its terminating NUL.
const MAX_UNIT: usize = 255;

/// Container IDs are 64 hex digits; runtimes that shorten them keep 12.
const ID_LEN: std::ops::RangeInclusive<usize> = 12..=64;

/// How many hex digits of a container ID an owner keeps, as `docker ps` does.
const SHORT_ID: usize = 12;

/// Scope prefixes container runtimes give a container's own cgroup under
/// systemd (`docker-<id>.scope`); their monitors' scopes
/// (`libpod-conmon-<id>.scope`, `crio-conmon-<id>.scope`) are not
/// containers, and fail the hex test.
const RUNTIME_PREFIXES: [&str; 4] = ["docker-", "libpod-", "cri-containerd-", "crio-"];

/// The owner of a cgroup, from its path relative to the cgroup2 root
/// (`/system.slice/nginx.service`), or `None` for the root, slices alone,
/// `/init.scope` and layouts not recognised.
///
/// - a Kubernetes pod's container: `pod:<namespace>/<name>/<id12>`, or
///   `pod:<uid>/<id12>` when `pods` does not know the pod's UID (given with
///   dashes);
/// - a container: `container:<id12>`, the innermost in the path (systemd
///   inside a container still names the container);
/// - a systemd unit: the innermost `*.service`, else the innermost `*.scope`
///   (`session-3.scope`), as systemd spells it (`\x2d` escapes and all); a
///   user's own units under their manager's name
///   (`user@1000.service/nginx.service`), so that a user cannot pass a
///   unit of theirs off as the system's.
///
/// Kubernetes and containers are recognised only outside `/user.slice`,
/// where any user can make cgroups of any name.
pub fn owner_of_path(path: &str, pods: &impl Fn(&str) -> Option<String>) -> Option<String> {
    if path.len() > MAX_PATH {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.iter().any(|c| *c == "." || *c == "..") {
        return None;
    }
    if parts.first() == Some(&"user.slice") {
        return user_unit(&parts);
    }
    if let Some(owner) = kubernetes(&parts, pods) {
        return Some(owner);
    }
    let container = (0..parts.len())
        .rev()
        .find_map(|i| container_id(parts[i], i.checked_sub(1).map(|p| parts[p])));
    if let Some(id) = container {
        return Some(format!("container:{}", &id[..SHORT_ID]));
    }
    unit(&parts).map(str::to_owned)
}

/// Under `/user.slice`: a session's scope, or a unit or rootless
/// container of a user's own manager, named under it.
fn user_unit(parts: &[&str]) -> Option<String> {
    let manager = parts
        .iter()
        .position(|c| c.starts_with("user@") && c.ends_with(".service") && is_unit(c));
    let Some(at) = manager else {
        return unit(parts).map(str::to_owned);
    };
    let inner = &parts[at + 1..];
    let container = (0..inner.len())
        .rev()
        .find_map(|i| container_id(inner[i], i.checked_sub(1).map(|p| inner[p])));
    let owned = match container {
        Some(id) => Some(format!("container:{}", &id[..SHORT_ID])),
        None => unit(inner).map(str::to_owned),
    };
    Some(match owned {
        Some(owned) => format!("{}/{owned}", parts[at]),
        None => parts[at].to_owned(),
    })
}

/// A pod's container, when a pod cgroup follows a `kubepods` one: with the
/// systemd driver `kubepods-burstable-pod<uid with _>.slice` (or
/// `kubepods-pod<uid>.slice` for the Guaranteed class), with the cgroupfs
/// driver `pod<uid>`; the container's cgroup comes next.
fn kubernetes(parts: &[&str], pods: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let (at, uid) = parts.iter().enumerate().find_map(|(i, c)| {
        let under_kubepods = parts[..i].iter().any(|p| p.contains("kubepods"));
        under_kubepods
            .then(|| pod_uid(c))
            .flatten()
            .map(|uid| (i, uid))
    })?;
    let id = parts
        .get(at + 1)
        .and_then(|c| container_id(c, None).or_else(|| bare_id(c)));
    let pod = pods(&uid).unwrap_or(uid);
    Some(match id {
        Some(id) => format!("pod:{pod}/{}", &id[..SHORT_ID]),
        None => format!("pod:{pod}"),
    })
}

/// The UID, with dashes, of a pod cgroup's name.
fn pod_uid(component: &str) -> Option<String> {
    let uid = match component.strip_suffix(".slice") {
        Some(unit) => {
            let (class, uid) = unit.rsplit_once("-pod")?;
            if !class.contains("kubepods") {
                return None;
            }
            uid.replace('_', "-")
        }
        None => component.strip_prefix("pod")?.to_owned(),
    };
    let valid =
        (1..=64).contains(&uid.len()) && uid.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit());
    valid.then_some(uid)
}

/// The container ID a cgroup's name carries: a runtime's scope
/// (`docker-<id>.scope`, or without `.scope` as podman's cgroupfs driver
/// names it), or a bare ID under `docker` (docker's cgroupfs driver).
fn container_id<'a>(component: &'a str, parent: Option<&str>) -> Option<&'a str> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    let scoped = RUNTIME_PREFIXES
        .iter()
        .find_map(|prefix| name.strip_prefix(prefix))
        .filter(|id| is_id(id));
    scoped.or_else(|| {
        (parent == Some("docker"))
            .then(|| bare_id(component))
            .flatten()
    })
}

/// A cgroup named by a container ID alone.
fn bare_id(component: &str) -> Option<&str> {
    is_id(component).then_some(component)
}

fn is_id(s: &str) -> bool {
    ID_LEN.contains(&s.len()) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The innermost service, else the innermost scope other than systemd's
/// own `/init.scope`.
fn unit<'a>(parts: &[&'a str]) -> Option<&'a str> {
    let innermost = |suffix: &str| {
        parts.iter().enumerate().rev().find_map(|(i, c)| {
            let own_init = i == 0 && *c == "init.scope";
            (c.ends_with(suffix) && c.len() > suffix.len() && is_unit(c) && !own_init).then_some(*c)
        })
    };
    innermost(".service").or_else(|| innermost(".scope"))
}

/// The characters systemd allows in a unit name, so that nothing else
/// reaches an owner.
fn is_unit(name: &str) -> bool {
    name.len() <= MAX_UNIT
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'\\' | b'@')
        })
}
