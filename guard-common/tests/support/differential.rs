//! What every differential test of a command-line grammar shares: its seed and case count
//! from the environment, and the shell line that reproduces a case (the fuzz targets, which
//! include the oracles by path, include this too).

/// `GUARD_ARGV_SEED` (decimal or 0x-hex), or `default`.
pub(crate) fn seed(default: u64) -> u64 {
    let Ok(text) = std::env::var("GUARD_ARGV_SEED") else {
        return default;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("GUARD_ARGV_SEED={text:?} is not a number"))
}

/// `GUARD_ARGV_CASES`, or 2,000 command lines per interpreter.
pub(crate) fn cases() -> usize {
    std::env::var("GUARD_ARGV_CASES")
        .ok()
        .map(|n| n.parse().expect("GUARD_ARGV_CASES is a number"))
        .unwrap_or(2000)
}

/// `program` and `words` as one line to paste into bash: plain words as they are, others
/// quoted, and those holding control bytes in `$'…'` with each control byte escaped (a raw
/// newline or carriage return would cut the line, a tab turn into spaces).
pub(crate) fn shell_line(program: &str, words: &[Vec<u8>]) -> String {
    let mut line = String::from(program);
    for word in words {
        let text = String::from_utf8_lossy(word);
        let plain = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,".contains(&b));
        line.push(' ');
        if plain {
            line.push_str(&text);
        } else if text.chars().any(char::is_control) {
            line.push_str("$'");
            for c in text.chars() {
                match c {
                    '\r' => line.push_str("\\r"),
                    '\t' => line.push_str("\\t"),
                    '\n' => line.push_str("\\n"),
                    '\'' => line.push_str("\\'"),
                    '\\' => line.push_str("\\\\"),
                    c if c.is_control() => line.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => line.push(c),
                }
            }
            line.push('\'');
        } else {
            line.push('\'');
            line.push_str(&text.replace('\'', "'\\''"));
            line.push('\'');
        }
    }
    line
}

#[test]
fn shell_lines_reproduce_their_words() {
    let words = |w: &[&[u8]]| w.iter().map(|w| w.to_vec()).collect::<Vec<_>>();
    assert_eq!(shell_line("perl", &words(&[b"-e", b"1"])), "perl -e 1");
    assert_eq!(shell_line("ruby", &words(&[b"", b"a b"])), "ruby '' 'a b'");
    assert_eq!(shell_line("node", &words(&[b"it's"])), "node 'it'\\''s'");
    assert_eq!(
        shell_line("python3", &words(&[b"-c\n\x01'"])),
        "python3 $'-c\\n\\u0001\\''"
    );
}
