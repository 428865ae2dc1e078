//! `netmon diff`: the dry run of an allow list.
//!
//! Rules built from BASE allow exactly BASE's peers, so the peers NEW has
//! and BASE lacks are the ones those rules would now block. Peers BASE
//! has and NEW no longer shows are listed too: the rules may be wider
//! than they need to be.
use std::{io, path::Path, process::ExitCode};

use super::{Format, Inputs, Peer, output::Listing};

/// The two files being compared.
#[derive(Debug)]
pub struct DiffSets {
    base: Inputs,
    new: Inputs,
}

impl DiffSets {
    /// BASE is the set the rules were built from, NEW the set observed
    /// since.
    pub fn load(base: &Path, new: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            base: Inputs::load(&[base.to_owned()])?,
            new: Inputs::load(&[new.to_owned()])?,
        })
    }

    pub fn changes(&self) -> Changes<'_> {
        Changes {
            new: missing_from(&self.new, &self.base),
            gone: missing_from(&self.base, &self.new),
            // Either file may be an address list: print only what both
            // sides can fill in.
            detail: self.base.detail().min(self.new.detail()),
        }
    }
}

/// The peers of `inputs` that `other` lacks, in numeric order.
fn missing_from<'a>(inputs: &'a Inputs, other: &Inputs) -> Vec<Peer<'a>> {
    inputs
        .snapshot
        .peers
        .iter()
        .filter(|(ip, _)| other.snapshot.peers.get(*ip).is_none())
        .map(|(ip, record)| Peer::new(ip, record))
        .collect()
}

/// What changed between BASE and NEW.
#[derive(Debug)]
pub struct Changes<'a> {
    new: Vec<Peer<'a>>,
    gone: Vec<Peer<'a>>,
    detail: super::Detail,
}

impl Changes<'_> {
    /// 1 when NEW has a peer BASE lacks, so a cron job or CI can act on it;
    /// peers that went away alone block nothing and give 0.
    pub fn status(&self) -> ExitCode {
        if self.new.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    pub fn write(&self, out: &mut impl io::Write, format: Format) -> io::Result<()> {
        Listing::changes(&self.new, &self.gone, self.detail).write(out, format)?;
        if format == Format::Text {
            writeln!(
                out,
                "{} new (rules from BASE would block them), {} gone",
                self.new.len(),
                self.gone.len()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{report::tests::inputs, time::UnixTime};

    fn changes(base: &[u8], new: &[u8]) -> (String, ExitCode) {
        let sets = DiffSets {
            base: inputs(base),
            new: inputs(new),
        };
        let changes = sets.changes();
        let mut out = Vec::new();
        changes.write(&mut out, Format::Plain).unwrap();
        (String::from_utf8(out).unwrap(), changes.status())
    }

    #[test]
    fn new_and_gone_peers_in_numeric_order() {
        let (plain, status) = changes(
            br#"["10.0.0.1", "10.0.0.2", "10.0.0.10"]"#,
            br#"["10.0.0.20", "10.0.0.1", "10.0.0.9"]"#,
        );
        assert_eq!(plain, "+10.0.0.9\n+10.0.0.20\n-10.0.0.2\n-10.0.0.10\n");
        assert_eq!(status, ExitCode::from(1));
    }

    #[test]
    fn nothing_new_is_success_even_when_peers_went_away() {
        let (plain, status) = changes(br#"["10.0.0.1", "10.0.0.2"]"#, br#"["10.0.0.1"]"#);
        assert_eq!(plain, "-10.0.0.2\n");
        assert_eq!(status, ExitCode::SUCCESS);
    }

    #[test]
    fn json_has_both_sides_with_class_and_direction() {
        let base = crate::report::tests::checkpoint(&[("10.0.0.1", 1, 0, 100)]);
        let new = crate::report::tests::checkpoint(&[("8.8.8.8", 0, 2, 100)]);
        let sets = DiffSets {
            base: inputs(&base),
            new: inputs(&new),
        };
        let mut out = Vec::new();
        sets.changes().write(&mut out, Format::Json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["new"][0]["ip"], "8.8.8.8");
        assert_eq!(value["new"][0]["class"], "public");
        assert_eq!(value["new"][0]["direction"], "in");
        assert_eq!(value["gone"][0]["class"], "private");
        assert_eq!(value["gone"][0]["direction"], "out");
        assert_eq!(
            value["gone"][0]["last_seen"],
            UnixTime::from_secs(100).to_string()
        );
    }
}
