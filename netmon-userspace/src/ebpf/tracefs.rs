//! tracefs: where it is (mounting it if need be) and the field layout of
//! the `sock/inet_sock_set_state` tracepoint.
//!
//! The layout is read from the tracepoint's `format` file at start rather
//! than hard-coded: it has changed across kernel versions (fields were added
//! in 5.x), and the file is the kernel's own statement of it.
use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use netmon_common::config::TracepointOffsets;

const MOUNT_POINTS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

pub const CATEGORY: &str = "sock";
pub const TRACEPOINT: &str = "inet_sock_set_state";

/// Returns tracefs's mount point, mounting it at /sys/kernel/tracing when
/// it is not mounted anywhere.
pub fn ensure_mounted() -> anyhow::Result<PathBuf> {
    if let Some(found) = find() {
        return Ok(found);
    }
    let target = Path::new(MOUNT_POINTS[0]);
    if !target.is_dir() {
        bail!(
            "tracefs is not mounted and {} does not exist (kernel built without CONFIG_TRACING?)",
            target.display()
        );
    }
    mount_tracefs(target).with_context(|| {
        format!(
            "tracefs is not mounted and mounting it on {} failed; mount it with `mount -t tracefs tracefs {}`",
            target.display(),
            target.display()
        )
    })?;
    log::info!("mounted tracefs on {}", target.display());
    find().ok_or_else(|| {
        anyhow!(
            "mounted tracefs on {} but it has no events directory",
            target.display()
        )
    })
}

fn find() -> Option<PathBuf> {
    MOUNT_POINTS
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("events").is_dir())
}

fn mount_tracefs(target: &Path) -> io::Result<()> {
    let source = c"tracefs";
    let target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            source.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn format_path(tracefs: &Path) -> PathBuf {
    tracefs
        .join("events")
        .join(CATEGORY)
        .join(TRACEPOINT)
        .join("format")
}

/// The tracepoint's layout: what the program reads of each transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateFormat {
    pub offsets: TracepointOffsets,
    /// Where the socket's address is (0: the record has none), to read its
    /// network namespace and cgroup.
    pub skaddr: u32,
}

/// Reads the tracepoint's layout; the error names the file.
pub fn read_state_format(tracefs: &Path) -> anyhow::Result<StateFormat> {
    let path = format_path(tracefs);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (tracepoint {CATEGORY}/{TRACEPOINT} needs Linux 4.16+)",
            path.display()
        )
    })?;
    parse_state_format(&text).with_context(|| format!("{}: unexpected layout", path.display()))
}

/// Parses `field:int oldstate;\toffset:16;\tsize:4;\tsigned:1;` lines.
pub fn parse_state_format(text: &str) -> anyhow::Result<StateFormat> {
    let mut fields = Vec::new();
    for line in text.lines() {
        let mut parts = line.trim().split(';').map(str::trim);
        let Some(decl) = parts.next().and_then(|p| p.strip_prefix("field:")) else {
            continue;
        };
        let name = decl.rsplit([' ', '*']).next().unwrap_or_default();
        let name = name.split('[').next().unwrap_or_default();
        let mut offset = None;
        let mut size = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<u32>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<u32>().ok();
            }
        }
        if let (Some(offset), Some(size)) = (offset, size) {
            fields.push((name.to_owned(), offset, size));
        }
    }
    let get = |name: &str, size: u32| -> anyhow::Result<u32> {
        let (_, offset, actual) = fields
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| anyhow!("no field {name}"))?;
        if *actual != size {
            bail!("field {name} has size {actual}, expected {size}");
        }
        Ok(*offset)
    };
    let offsets = TracepointOffsets {
        oldstate: get("oldstate", 4)?,
        newstate: get("newstate", 4)?,
        sport: get("sport", 2)?,
        dport: get("dport", 2)?,
        family: get("family", 2)?,
        protocol: get("protocol", 2)?,
        daddr: get("daddr", 4)?,
        daddr_v6: get("daddr_v6", 16)?,
    };
    Ok(StateFormat {
        offsets,
        skaddr: get("skaddr", 8).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As printed by Linux 6.x.
    const FORMAT: &str = "name: inet_sock_set_state
ID: 1422
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;

print fmt: \"family=%s\"
";

    #[test]
    fn parses_the_6x_layout() {
        let format = parse_state_format(FORMAT).unwrap();
        assert_eq!(
            format.offsets,
            TracepointOffsets {
                oldstate: 16,
                newstate: 20,
                sport: 24,
                dport: 26,
                family: 28,
                protocol: 30,
                daddr: 36,
                daddr_v6: 56
            }
        );
        assert_eq!(format.skaddr, 8);
    }

    #[test]
    fn missing_or_resized_fields_are_errors() {
        let without = FORMAT.replace("protocol", "proto");
        assert!(
            parse_state_format(&without)
                .unwrap_err()
                .to_string()
                .contains("protocol")
        );
        let resized = FORMAT.replace("offset:20;\tsize:4", "offset:20;\tsize:8");
        assert!(
            parse_state_format(&resized)
                .unwrap_err()
                .to_string()
                .contains("newstate")
        );
    }
}
