//! Judging each boot by its result lines, and the table of every kernel and
//! case.
use netmon_scenario::{
    case::VM_CASES,
    result::{Row, format_count},
};

use super::{initramfs::DONE, qemu::Boot};

/// Lines of console shown for a kernel that failed.
const CONSOLE_TAIL: usize = 60;
/// Longest note in the table; results.log under target/vm/runs has them
/// whole.
const NOTE_WIDTH: usize = 90;

/// One kernel's boot, its rows and everything wrong with it.
pub struct Outcome {
    pub label: String,
    pub boot: Option<Boot>,
    pub rows: Vec<Row>,
    pub problems: Vec<String>,
}

/// A kernel passes when it powered off by itself after printing a passing
/// row for every case; anything else is a problem.
pub fn judge(label: &str, boot: anyhow::Result<Boot>) -> Outcome {
    let boot = match boot {
        Ok(boot) => boot,
        Err(err) => {
            return Outcome {
                label: label.into(),
                boot: None,
                rows: Vec::new(),
                problems: vec![format!("{err:#}")],
            };
        }
    };
    let rows = Row::find_all(&boot.results);
    let mut problems: Vec<String> = boot.trouble.iter().cloned().collect();
    if !boot.console.contains(DONE) {
        problems.push("init did not finish its cases".into());
    }
    for case in VM_CASES {
        match rows.iter().find(|row| row.case == case.name) {
            None => problems.push(format!("case {}: no result line", case.name)),
            Some(row) if !row.ok => problems.push(format!("case {}: {}", case.name, row.note)),
            Some(_) => {}
        }
    }
    Outcome {
        label: label.into(),
        boot: Some(boot),
        rows,
        problems,
    }
}

/// The table: every case of every kernel (a missing row shows as such),
/// then the host kernel's rows from the integration tests.
pub fn print_table(outcomes: &[Outcome], host_rows: &[Row]) {
    println!(
        "\n{:<28} {:<14} {:<14} {:>7} {:>7}  {:<6} note",
        "kernel", "case", "mode", "out", "in", "result"
    );
    for outcome in outcomes {
        let release = outcome
            .rows
            .first()
            .map_or(outcome.label.as_str(), |row| row.kernel.as_str());
        for case in VM_CASES {
            match outcome.rows.iter().find(|row| row.case == case.name) {
                Some(row) => print_row(release, row),
                None => println!(
                    "{release:<28} {:<14} {:<14} {:>7} {:>7}  MISSING",
                    case.name, "-", "-", "-"
                ),
            }
        }
    }
    for row in host_rows {
        print_row(&format!("{} (host)", row.kernel), row);
    }
}

fn print_row(kernel: &str, row: &Row) {
    let mut note = row.note.clone();
    if note.chars().count() > NOTE_WIDTH {
        note = note.chars().take(NOTE_WIDTH - 1).collect::<String>() + "…";
    }
    println!(
        "{kernel:<28} {:<14} {:<14} {:>7} {:>7}  {:<6} {note}",
        row.case,
        row.chosen,
        format_count(row.outbound),
        format_count(row.inbound),
        if row.ok { "OK" } else { "FAIL" },
    );
}

/// Every problem of every failed kernel, with the end of its console.
pub fn print_failures(outcomes: &[Outcome]) {
    for outcome in outcomes.iter().filter(|o| !o.problems.is_empty()) {
        eprintln!("\n=== {}: FAILED", outcome.label);
        for problem in &outcome.problems {
            eprintln!("  - {problem}");
        }
        if let Some(boot) = &outcome.boot {
            let lines: Vec<&str> = boot.console.lines().collect();
            let tail = &lines[lines.len().saturating_sub(CONSOLE_TAIL)..];
            eprintln!("--- last {} lines of its console ---", tail.len());
            for line in tail {
                eprintln!("{}", line.trim_end_matches('\r'));
            }
        }
    }
}
