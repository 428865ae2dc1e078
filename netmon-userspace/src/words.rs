//! Counts in sentences: "1 peer", "2 peers".

/// `n` and the noun, singular for one.
pub fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    let noun = if n == 1 { one } else { many };
    format!("{n} {noun}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(super::count(1u64, "peer", "peers"), "1 peer");
        assert_eq!(super::count(0u64, "peer", "peers"), "0 peers");
        assert_eq!(super::count(2u64, "entry", "entries"), "2 entries");
    }
}
