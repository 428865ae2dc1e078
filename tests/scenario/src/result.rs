//! One machine-readable line per kernel and case of the kernel matrix.
//!
//! The guest prints them on a serial port of their own, the integration
//! tests write them under `target/tmp/`, and `cargo xtask vm-test` parses
//! both into one table: the format lives here so writer and reader cannot
//! drift apart.
//!
//! ```text
//! netmon-matrix: on=vm kernel=6.1.0-50-cloud-amd64 case=auto chosen=kprobe out=40/40 in=20/20 result=OK note=...
//! ```
use crate::check::Verdict;
use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    str::FromStr,
};

const TAG: &str = "netmon-matrix:";

/// One case on one kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// `vm` or `host`.
    pub on: String,
    /// `uname -r`.
    pub kernel: String,
    pub case: String,
    /// The mode netmon ran in, or what happened instead (`refused`, `-`).
    pub chosen: String,
    /// (captured, expected) outbound peers; `None` where nothing ran.
    pub outbound: Option<(usize, usize)>,
    /// (captured, expected) inbound peers.
    pub inbound: Option<(usize, usize)>,
    pub ok: bool,
    /// Why it failed, or why netmon chose what it chose; free text.
    pub note: String,
}

impl Row {
    /// The running kernel's release.
    pub fn kernel_release() -> String {
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    }

    /// Finds every row in console or file text, ignoring everything else.
    pub fn find_all(text: &str) -> Vec<Row> {
        text.lines().filter_map(|line| line.parse().ok()).collect()
    }
}

/// `captured/expected`, or `-` where nothing ran.
pub fn format_count(count: Option<(usize, usize)>) -> String {
    count.map_or("-".into(), |(captured, expected)| {
        format!("{captured}/{expected}")
    })
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The note is last: it is the one field that may contain spaces.
        write!(
            f,
            "{TAG} on={} kernel={} case={} chosen={} out={} in={} result={} note={}",
            self.on,
            self.kernel,
            self.case,
            self.chosen,
            format_count(self.outbound),
            format_count(self.inbound),
            if self.ok { "OK" } else { "FAIL" },
            self.note.replace('\n', " | "),
        )
    }
}

impl FromStr for Row {
    type Err = String;

    fn from_str(line: &str) -> Result<Self, String> {
        let line = line.trim_end_matches(['\r', '\n']);
        let rest = line
            .split_once(TAG)
            .map(|(_, rest)| rest.trim_start())
            .ok_or("not a result line")?;
        let (fields, note) = rest.split_once(" note=").ok_or("no note=")?;
        let mut get = {
            let mut fields = fields.split(' ');
            move |key: &str| {
                fields
                    .next()
                    .and_then(|f| f.strip_prefix(key)?.strip_prefix('='))
                    .map(str::to_owned)
                    .ok_or(format!("expected {key}= in {line:?}"))
            }
        };
        let parse_count = |text: String| -> Result<Option<(usize, usize)>, String> {
            if text == "-" {
                return Ok(None);
            }
            let bad = || format!("bad count {text:?}");
            let (captured, expected) = text.split_once('/').ok_or_else(bad)?;
            Ok(Some((
                captured.parse().map_err(|_| bad())?,
                expected.parse().map_err(|_| bad())?,
            )))
        };
        Ok(Self {
            on: get("on")?,
            kernel: get("kernel")?,
            case: get("case")?,
            chosen: get("chosen")?,
            outbound: parse_count(get("out")?)?,
            inbound: parse_count(get("in")?)?,
            ok: match get("result")?.as_str() {
                "OK" => true,
                "FAIL" => false,
                other => return Err(format!("bad result {other:?}")),
            },
            note: note.to_owned(),
        })
    }
}

/// Where the integration tests leave the host kernel's rows, under
/// cargo's `target/tmp` (`CARGO_TARGET_TMPDIR`).
pub fn host_rows_dir(target_tmp: &Path) -> PathBuf {
    target_tmp.join("kernel-matrix")
}

/// Records a host row, one file per case so tests can run in any order.
/// Leaves this kernel's row of the matrix's `case` under `target_tmp`,
/// where `cargo xtask test` prints it beside the VMs' rows: what netmon
/// `chosen`, the counts of `verdict` (none where nothing ran), and `ok`
/// only if the verdict is complete too. Panics if it cannot: a test
/// whose row goes missing must not pass.
pub fn record_host_verdict(
    target_tmp: &Path,
    case: &str,
    chosen: &str,
    verdict: Option<&Verdict>,
    ok: bool,
    note: &str,
) {
    let row = Row {
        on: "host".into(),
        kernel: Row::kernel_release(),
        case: case.into(),
        chosen: chosen.into(),
        outbound: verdict.map(Verdict::outbound_count),
        inbound: verdict.map(Verdict::inbound_count),
        ok: ok && verdict.is_none_or(Verdict::complete),
        note: note.into(),
    };
    record_host_row(target_tmp, &row).unwrap_or_else(|e| panic!("recording {row}: {e}"));
}

pub fn record_host_row(target_tmp: &Path, row: &Row) -> io::Result<()> {
    // Fields are separated by spaces: a case name with one would not read
    // back, and its row would silently go missing from the table.
    if row.case.contains(char::is_whitespace) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("case name {:?} has whitespace", row.case),
        ));
    }
    let dir = host_rows_dir(target_tmp);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join(format!("{}.line", row.case)), format!("{row}\n"))
}

/// Every host row recorded so far, by case name.
pub fn read_host_rows(target_tmp: &Path) -> io::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = host_rows_dir(target_tmp);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(rows),
        Err(err) => return Err(err),
    };
    for entry in entries {
        rows.extend(Row::find_all(&fs::read_to_string(entry?.path())?));
    }
    rows.sort_by(|a, b| a.case.cmp(&b.case));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_survives_printing_and_parsing_amid_console_noise() {
        let row = Row {
            on: "vm".into(),
            kernel: "6.1.0-50-cloud-amd64".into(),
            case: "auto".into(),
            chosen: "kprobe".into(),
            outbound: Some((40, 40)),
            inbound: None,
            ok: false,
            note: "skipped x: y=z\nsecond line".into(),
        };
        let console = format!("[    1.0] boot\r\n{row}\r\nother\n");
        let parsed = Row::find_all(&console);
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed[0],
            Row {
                note: "skipped x: y=z | second line".into(),
                ..row
            }
        );
    }

    #[test]
    fn a_truncated_row_is_not_a_row() {
        assert!(
            "netmon-matrix: on=vm kernel=6.1 case=auto chosen=kprobe out=4"
                .parse::<Row>()
                .is_err()
        );
    }
}
