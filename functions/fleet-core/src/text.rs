//! Strings cut at character boundaries, never at a byte index. AWS limits (an SSM command's
//! Comment, a Step Functions execution name) count characters, and slicing a `str` at a byte
//! index that falls inside a multibyte character panics, which aborts a release build
//! (`panic = "abort"`).

/// The first `max_chars` characters of `s` (all of it when shorter).
pub fn clip(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((byte, _)) => &s[..byte],
        None => s,
    }
}

/// The last `max_chars` characters of `s` (all of it when shorter).
pub fn tail(s: &str, max_chars: usize) -> &str {
    if max_chars == 0 {
        return "";
    }
    match s.char_indices().rev().nth(max_chars - 1) {
        Some((byte, _)) => &s[byte..],
        None => s,
    }
}

/// Shorten `s` in place to at most `max_chars` characters.
pub fn truncate_chars(s: &mut String, max_chars: usize) {
    let keep = clip(s, max_chars).len();
    s.truncate(keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = "déploiement-été-日本語-😀-fin";

    #[test]
    fn clip_and_tail_count_characters() {
        assert_eq!(clip(MIXED, 3), "dép");
        assert_eq!(clip(MIXED, 17), "déploiement-été-日");
        assert_eq!(clip(MIXED, 1000), MIXED);
        assert_eq!(clip(MIXED, 0), "");
        assert_eq!(tail(MIXED, 5), "😀-fin");
        assert_eq!(tail(MIXED, 6), "-😀-fin");
        assert_eq!(tail(MIXED, 1000), MIXED);
        assert_eq!(tail(MIXED, 0), "");
        assert_eq!(tail("", 3), "");
    }

    #[test]
    fn every_cut_of_multibyte_text_is_safe() {
        let n = MIXED.chars().count();
        for k in 0..=n + 2 {
            assert_eq!(clip(MIXED, k).chars().count(), k.min(n));
            assert_eq!(tail(MIXED, k).chars().count(), k.min(n));
            let mut s = MIXED.to_string();
            truncate_chars(&mut s, k);
            assert_eq!(s, clip(MIXED, k));
        }
    }
}
