//! Writing large strings as JSON text quickly: output events carry up to a
//! chunk (4 MiB) of a command's output, and escaping it byte by byte was a
//! tenth of the server's CPU while streaming output. Eight bytes are checked
//! at a time for anything JSON must escape (`"`, `\`, control characters);
//! clean runs are copied whole.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `x` is below 0x20, `"` or `\`.
fn needs_escape(x: u64) -> bool {
    let has_zero = |v: u64| v.wrapping_sub(LO) & !v & HI != 0;
    // Bytes ≥ 0x80 have their high bit set in `x`, so `!x` clears them:
    // UTF-8 continuation bytes never count as control characters.
    let below_space = x.wrapping_sub(LO * 0x20) & !x & HI != 0;
    below_space || has_zero(x ^ (LO * b'"' as u64)) || has_zero(x ^ (LO * b'\\' as u64))
}

fn escape_byte(out: &mut String, b: u8) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
}

/// Append `s` to `out` as a JSON string literal, quotes included.
pub fn push_str_literal(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + bytes.len() / 16 + 2);
    out.push('"');
    let mut clean = 0; // start of the run not yet copied
    let mut i = 0;
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    while i < bytes.len() {
        let at = if i + 8 <= bytes.len() {
            let word = u64::from_le_bytes(bytes[i..i + 8].try_into().expect("8 bytes"));
            if !needs_escape(word) {
                i += 8;
                continue;
            }
            i + bytes[i..i + 8].iter().position(|&b| special(b)).expect("the word has one")
        } else if special(bytes[i]) {
            i
        } else {
            i += 1;
            continue;
        };
        // Everything before `at` is clean ASCII or whole UTF-8 sequences
        // and `at` is ASCII, so `clean..at` lies on char boundaries.
        out.push_str(&s[clean..at]);
        escape_byte(out, bytes[at]);
        clean = at + 1;
        i = at + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = String::new();
        push_str_literal(&mut out, s);
        out
    }

    #[test]
    fn matches_serde_json_on_every_byte_class_and_alignment() {
        let mut samples: Vec<String> = vec![
            String::new(),
            "plain ascii text that is long enough to use whole words".into(),
            "line\nbreaks\r\nand\ttabs \"quoted\" back\\slash".into(),
            "\u{0}\u{1}\u{8}\u{c}\u{1f}\u{7f} é ü 日本語 🦀".into(),
        ];
        // Every escapable byte at every offset of a word.
        for b in (0u8..0x20).chain([b'"', b'\\']) {
            for pad in 0..9 {
                samples.push(format!("{}{}{}", "x".repeat(pad), b as char, "é".repeat(5)));
            }
        }
        for s in samples {
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            let back: String = serde_json::from_str(&ours(&s)).unwrap();
            assert_eq!(back, s);
        }
    }
}
