//! The bench's one table: every figure beside its target (issue 6) and
//! whether it was met.
use std::fmt;

/// Whether a figure met its target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// The measurement itself failed.
    NotMeasured,
}

struct Line {
    part: &'static str,
    what: String,
    value: String,
    target: String,
    verdict: Option<Verdict>,
}

#[derive(Default)]
pub struct Table {
    lines: Vec<Line>,
}

impl Table {
    /// A figure without a target (context for the others).
    pub fn info(&mut self, part: &'static str, what: impl Into<String>, value: impl Into<String>) {
        self.push(part, what.into(), value.into(), String::new(), None);
    }

    /// A figure and its target.
    pub fn check(
        &mut self,
        part: &'static str,
        what: impl Into<String>,
        value: impl Into<String>,
        target: impl Into<String>,
        met: bool,
    ) {
        let verdict = if met { Verdict::Met } else { Verdict::Missed };
        self.push(
            part,
            what.into(),
            value.into(),
            target.into(),
            Some(verdict),
        );
    }

    /// A part that could not be measured: one line saying why, counted as
    /// a target not shown to be met.
    pub fn failed(&mut self, part: &'static str, why: &str) {
        let why = why.lines().next().unwrap_or_default();
        self.push(
            part,
            "not measured".into(),
            why.into(),
            "-".into(),
            Some(Verdict::NotMeasured),
        );
    }

    fn push(
        &mut self,
        part: &'static str,
        what: String,
        value: String,
        target: String,
        verdict: Option<Verdict>,
    ) {
        self.lines.push(Line {
            part,
            what,
            value,
            target,
            verdict,
        });
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.lines
            .iter()
            .filter(|l| l.verdict == Some(verdict))
            .count()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Met => "met",
            Self::Missed => "MISSED",
            Self::NotMeasured => "NOT MEASURED",
        })
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = |column: fn(&Line) -> usize, title: &str| {
            self.lines
                .iter()
                .map(column)
                .max()
                .unwrap_or(0)
                .max(title.len())
        };
        let what = width(|l| l.what.chars().count(), "measure");
        let value = width(|l| l.value.chars().count(), "figure");
        let target = width(|l| l.target.chars().count(), "target");
        writeln!(
            f,
            "{:<8} {:<what$}  {:<value$}  {:<target$}  verdict",
            "part", "measure", "figure", "target"
        )?;
        for line in &self.lines {
            let verdict = line.verdict.map_or(String::new(), |v| v.to_string());
            writeln!(
                f,
                "{:<8} {:<what$}  {:<value$}  {:<target$}  {verdict}",
                line.part, line.what, line.value, line.target
            )?;
        }
        Ok(())
    }
}

/// `12345678` -> `12 345 678`: storm and peer counts run to millions.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(digit);
    }
    out
}

/// `part / whole` as a percentage.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1 000");
        assert_eq!(thousands(1_234_567), "1 234 567");
    }

    #[test]
    fn failures_count_apart_from_misses() {
        let mut table = Table::default();
        table.check("p", "a", "1", "0", false);
        table.check("p", "b", "0", "0", true);
        table.failed("p", "no bpftool\nmore");
        table.info("p", "c", "x");
        assert_eq!(table.count(Verdict::Met), 1);
        assert_eq!(table.count(Verdict::Missed), 1);
        assert_eq!(table.count(Verdict::NotMeasured), 1);
        assert!(
            !table.to_string().contains("more"),
            "only a failure's first line"
        );
    }
}
