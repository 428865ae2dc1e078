//! The shipped unit's restrictions applied to a command without systemd
//! (the test hosts have no systemd as pid 1, so `systemd-run -p` cannot
//! start it): `CapabilityBoundingSet=` and `NoNewPrivileges=` through
//! setpriv, `LimitNOFILE=` and `RestrictAddressFamilies=` between fork and
//! exec, the latter as systemd implements it, a seccomp filter on
//! socket(2)'s family that fails the others with EAFNOSUPPORT.
use std::{io, os::unix::process::CommandExt as _, process::Command};

/// The value of the unit's `KEY=` line.
pub fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
}

/// `CapabilityBoundingSet=CAP_BPF CAP_PERFMON` as setpriv's
/// `-all,+bpf,+perfmon`.
pub fn bounding_set_for_setpriv(unit: &str) -> String {
    let mut set = String::from("-all");
    for cap in setting(unit, "CapabilityBoundingSet").split_whitespace() {
        let name = cap.strip_prefix("CAP_").expect("CAP_ names");
        set.push_str(&format!(",+{}", name.to_lowercase()));
    }
    set
}

/// setpriv, ready for `-- NETMON ARGS...`, that runs its command with the
/// unit's bounding set, `no_new_privs`, file limit and address families.
pub fn command(unit: &str) -> Command {
    assert_eq!(setting(unit, "NoNewPrivileges"), "yes");
    let mut command = Command::new("setpriv");
    command.args([
        "--bounding-set",
        &bounding_set_for_setpriv(unit),
        "--no-new-privs",
    ]);
    let files = setting(unit, "LimitNOFILE")
        .parse::<libc::rlim_t>()
        .unwrap();
    // No further than the hard limit: a test host may lack CAP_SYS_RESOURCE.
    let mut hard = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut hard) },
        0
    );
    let files = files.min(hard.rlim_max);
    let filter = family_filter(setting(unit, "RestrictAddressFamilies"));
    // SAFETY: only raw syscalls on memory allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: files,
                rlim_max: files,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(io::Error::last_os_error());
            }
            let program = libc::sock_fprog {
                len: filter.len() as u16,
                filter: filter.as_ptr().cast_mut(),
            };
            // Root has CAP_SYS_ADMIN, so no no_new_privs is needed yet.
            let ret = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &program,
            );
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

fn family(name: &str) -> libc::c_int {
    match name {
        "AF_UNIX" => libc::AF_UNIX,
        "AF_INET" => libc::AF_INET,
        "AF_INET6" => libc::AF_INET6,
        "AF_NETLINK" => libc::AF_NETLINK,
        "AF_PACKET" => libc::AF_PACKET,
        other => panic!("RestrictAddressFamilies={other}: add it to this table"),
    }
}

/// A seccomp program that lets socket(2) create only `families` and fails
/// it with EAFNOSUPPORT otherwise; native calls only, as the unit's
/// `SystemCallArchitectures=native` leaves nothing else.
fn family_filter(families: &str) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = |offset: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let ret = |k: u32| stmt(libc::BPF_RET | libc::BPF_K, k);
    // struct seccomp_data: nr at 0, args[0]'s low word at 16 (little endian).
    let mut program = vec![
        load(0),
        jeq(libc::SYS_socket as u32, 1, 0),
        ret(libc::SECCOMP_RET_ALLOW),
        load(16),
    ];
    for name in families.split_whitespace() {
        program.push(jeq(family(name) as u32, 0, 1));
        program.push(ret(libc::SECCOMP_RET_ALLOW));
    }
    program.push(ret(libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32));
    program
}
