//! Times as netmon records them: whole seconds since the Unix epoch,
//! written as RFC 3339 in UTC (`2026-11-28T16:00:33Z`) in checkpoints,
//! reports and `--follow` lines.
use std::{
    fmt,
    str::FromStr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// A time in whole seconds since the Unix epoch.
///
/// Displays, serializes and parses itself as RFC 3339 UTC; parsing also
/// takes the looser forms `humantime` reads (a space for the `T`, a
/// fraction), which old or hand-edited files may hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(u64);

impl UnixTime {
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// The current time; the epoch if the clock is set before it.
    pub fn now() -> Self {
        Self(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    }

    pub const fn secs(self) -> u64 {
        self.0
    }

    /// A [`SystemTime`] in whole seconds; the epoch for one before it.
    pub fn from_system_time(time: SystemTime) -> Self {
        Self(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    /// Serializes seconds held as a plain `u64` the way a `UnixTime` is, for
    /// `#[serde(serialize_with = ...)]`.
    pub fn serialize_secs<S: serde::Serializer>(
        secs: &u64,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        Self(*secs).serialize(serializer)
    }

    /// The exact form netmon writes, `YYYY-MM-DDTHH:MM:SSZ`, parsed without
    /// the general parser: a checkpoint holds two times per peer, and they
    /// dominate loading a large one. `None` for anything else, which the
    /// general parser ([`FromStr`]) may still read.
    pub fn parse_exact(text: &[u8]) -> Option<Self> {
        const SEPARATORS: [(usize, u8); 6] = [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'Z'),
        ];
        if text.len() != 20 || SEPARATORS.iter().any(|&(at, byte)| text[at] != byte) {
            return None;
        }
        let num = |from: usize, to: usize| {
            text[from..to].iter().try_fold(0u64, |acc, &d| {
                d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
            })
        };
        let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
        let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if year < 1970 || !(1..=12).contains(&month) || hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        if day == 0 || day > month_days[month as usize - 1] {
            return None;
        }
        // Days since 1970-01-01 (Howard Hinnant's days_from_civil).
        let (y, m) = if month <= 2 {
            (year - 1, month + 9)
        } else {
            (year, month - 3)
        };
        let era = y / 400;
        let year_of_era = y - era * 400;
        let day_of_year = (153 * m + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        let days = (era * 146_097 + day_of_era).checked_sub(719_468)?;
        Some(Self(days * 86_400 + hour * 3600 + minute * 60 + second))
    }
}

impl From<UnixTime> for u64 {
    fn from(time: UnixTime) -> Self {
        time.0
    }
}

/// RFC 3339 in UTC, to the second. Fails (as a formatting error) past the
/// year 9999, which the format cannot hold.
impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let time = UNIX_EPOCH + Duration::from_secs(self.0);
        fmt::Display::fmt(&humantime::format_rfc3339_seconds(time), f)
    }
}

/// Why a text is not a time.
#[derive(Debug)]
pub struct ParseTimeError {
    text: String,
    source: humantime::TimestampError,
}

impl fmt::Display for ParseTimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an RFC 3339 time: {}",
            self.text, self.source
        )
    }
}

impl std::error::Error for ParseTimeError {}

impl FromStr for UnixTime {
    type Err = ParseTimeError;

    /// Netmon's own form first, then anything `humantime` reads; a time
    /// before the epoch is the epoch.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(time) = Self::parse_exact(text.as_bytes()) {
            return Ok(time);
        }
        humantime::parse_rfc3339_weak(text)
            .map(Self::from_system_time)
            .map_err(|source| ParseTimeError {
                text: text.to_owned(),
                source,
            })
    }
}

impl Serialize for UnixTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UnixTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = UnixTime;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time")
            }

            // Parsed in place: no copy of the string.
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<UnixTime, E> {
                text.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exact_parser_agrees_with_the_general_one() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59Z",
            "2026-11-28T16:00:34Z",
            "2100-03-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let general = humantime::parse_rfc3339_weak(text).unwrap();
            let general = general.duration_since(UNIX_EPOCH).unwrap().as_secs();
            assert_eq!(
                UnixTime::parse_exact(text.as_bytes()),
                Some(UnixTime(general)),
                "{text}"
            );
            assert_eq!(UnixTime(general).to_string(), text);
        }
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28 16:00:34Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(UnixTime::parse_exact(text.as_bytes()), None, "{text}");
        }
    }

    #[test]
    fn looser_forms_parse_and_bad_ones_say_why() {
        let time: UnixTime = "2026-11-28 16:00:34.5Z".parse().unwrap();
        assert_eq!(time.to_string(), "2026-11-28T16:00:34Z");
        let err = "yesterday".parse::<UnixTime>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"yesterday\" is not an RFC 3339 time: timestamp format is invalid"
        );
    }

    #[test]
    fn serde_round_trips_as_a_string() {
        let json = serde_json::to_string(&UnixTime::from_secs(1_795_881_633)).unwrap();
        assert_eq!(json, "\"2026-11-28T16:00:33Z\"");
        let back: UnixTime = serde_json::from_str(&json).unwrap();
        assert_eq!(back.secs(), 1_795_881_633);
        let err = serde_json::from_str::<UnixTime>("7").unwrap_err();
        assert!(
            err.to_string().contains("expected an RFC 3339 time"),
            "{err}"
        );
    }
}
