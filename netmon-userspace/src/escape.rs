//! Text from outside netmon, made safe to print.
//!
//! Any process can name itself, and anyone who can write a checkpoint can
//! put what they like in its `host`: printed raw, a newline in either
//! forges a line of output, and an escape sequence clears or rewrites the
//! terminal. Every place that prints such text goes through [`Escaped`].
use std::{borrow::Cow, fmt};

/// Text shown with its control characters escaped (`\n`, `\u{1b}`), and
/// everything else, non-ASCII letters included, as it is.
#[derive(Clone, Debug)]
pub struct Escaped<'a>(Cow<'a, str>);

impl<'a> Escaped<'a> {
    pub fn new(text: impl Into<Cow<'a, str>>) -> Self {
        Self(text.into())
    }
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = &*self.0;
        while let Some(at) = rest.find(char::is_control) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_nothing_else() {
        assert_eq!(
            Escaped::new("a\n1.2.3.4 out").to_string(),
            "a\\n1.2.3.4 out"
        );
        assert_eq!(
            Escaped::new("\u{1b}[2J\r\t").to_string(),
            "\\u{1b}[2J\\r\\t"
        );
        assert_eq!(Escaped::new("naïve-進程").to_string(), "naïve-進程");
        assert_eq!(Escaped::new("\u{7f}\u{85}x").to_string(), "\\u{7f}\\u{85}x");
    }
}
