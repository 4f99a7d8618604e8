//! Reading a JSON string literal's contents back into a `String`: clean
//! 16-byte blocks are stored whole, and each escape is decoded where the
//! block's bit mask finds it. Decoding never grows the text (every escape
//! is at least as long as what it stands for), so room for the whole input
//! is reserved once and every fixed-size store stays within it.

use crate::scan16;

/// Decode `text`, the bytes between the quotes of a JSON string literal.
///
/// `None` when `text` is not exactly such contents: a raw `"` or control
/// character, a malformed or unknown escape, a lone surrogate, or bytes
/// that are not UTF-8. Callers fall back to a full JSON parser, which
/// reports the error; on valid input the result equals what it decodes.
pub fn unescape_contents(text: &[u8]) -> Option<String> {
    // Slack for a 16-byte store past the decoded length.
    let mut out: Vec<u8> = Vec::with_capacity(text.len() + 16);
    let mut dst = out.as_mut_ptr();
    // Blocks are taken at fixed steps, so the next load never waits on how
    // the escapes in this one decode; `skip` is how far into a block the
    // last escape of the one before reached.
    let (mut i, mut skip) = (0, 0);
    // Whether any byte is not ASCII: only then is the result checked for
    // UTF-8 (escapes always decode to UTF-8).
    let mut non_ascii = 0;
    // While 16 bytes follow the block, runs are copied with 16-byte loads
    // from any offset in it.
    while i + 32 <= text.len() {
        let block: &[u8; 16] = text[i..i + 16].try_into().expect("16 bytes");
        let mut from = skip;
        let (specials, high) = scan16(block);
        non_ascii |= high;
        let mut mask = specials & (u32::MAX << from);
        // SAFETY: the decoded text never outgrows what it was decoded from,
        // so `dst` is at most `i + from` bytes into `out`, whose capacity is
        // `text.len() + 16`; each 16-byte store (and the at most four bytes
        // of an escape) stays within it, and the loads stay within `text`
        // (`i + from + 16 <= i + 32`).
        unsafe {
            while mask != 0 {
                let at = mask.trailing_zeros() as usize;
                std::ptr::copy_nonoverlapping(text.as_ptr().add(i + from), dst, 16);
                dst = dst.add(at - from);
                if text[i + at] != b'\\' {
                    return None;
                }
                let took = match SIMPLE[usize::from(*text.get(i + at + 1)?)] {
                    0 => {
                        let mut scratch = Vec::with_capacity(4);
                        let took = decode_escape(&text[i + at..], &mut scratch)?;
                        std::ptr::copy_nonoverlapping(scratch.as_ptr(), dst, scratch.len());
                        dst = dst.add(scratch.len());
                        took
                    }
                    b => {
                        *dst = b;
                        dst = dst.add(1);
                        2
                    }
                };
                from = at + took;
                if from >= 16 {
                    break;
                }
                mask &= u32::MAX << from;
            }
            if from < 16 {
                std::ptr::copy_nonoverlapping(text.as_ptr().add(i + from), dst, 16);
                dst = dst.add(16 - from);
            }
            out.set_len(dst.offset_from(out.as_ptr()) as usize);
        }
        skip = from.saturating_sub(16);
        i += 16;
    }
    // The last few bytes, one at a time.
    let mut i = i + skip;
    while i < text.len() {
        match text[i] {
            b'\\' => i += decode_escape(&text[i..], &mut out)?,
            b if crate::special(b) => return None,
            b => {
                non_ascii |= u32::from(b >= 0x80);
                out.push(b);
                i += 1;
            }
        }
    }
    if non_ascii == 0 {
        // SAFETY: every byte of `text` is ASCII, so `out` holds ASCII bytes
        // and the UTF-8 encodings of decoded escapes.
        return Some(unsafe { String::from_utf8_unchecked(out) });
    }
    String::from_utf8(out).ok()
}

/// What the two-byte escapes `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`
/// stand for, by the byte after the backslash (0: not one of them).
const SIMPLE: [u8; 256] = {
    let mut table = [0u8; 256];
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table[b'/' as usize] = b'/';
    table[b'b' as usize] = 0x08;
    table[b'f' as usize] = 0x0c;
    table[b'n' as usize] = b'\n';
    table[b'r' as usize] = b'\r';
    table[b't' as usize] = b'\t';
    table
};

/// Decode the escape at the start of `esc` (which starts with `\`) into
/// `out`; returns how many bytes it took.
fn decode_escape(esc: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let simple = match *esc.get(1)? {
        b'"' => b'"',
        b'\\' => b'\\',
        b'/' => b'/',
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'u' => {
            let unit = hex4(esc.get(2..6)?)?;
            let (c, len) = match unit {
                0xd800..=0xdbff => {
                    if esc.get(6..8)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(esc.get(8..12)?)?;
                    if !(0xdc00..=0xdfff).contains(&low) {
                        return None;
                    }
                    (0x10000 + ((unit - 0xd800) << 10) + (low - 0xdc00), 12)
                }
                0xdc00..=0xdfff => return None,
                _ => (unit, 6),
            };
            let c = char::from_u32(c)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            return Some(len);
        }
        _ => return None,
    };
    out.push(simple);
    Some(2)
}

fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &d| Some(n << 4 | (d as char).to_digit(16)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What serde_json decodes `contents` to (`None` where it errors).
    fn serde(contents: &[u8]) -> Option<String> {
        let mut literal = b"\"".to_vec();
        literal.extend_from_slice(contents);
        literal.push(b'"');
        serde_json::from_slice(&literal).ok()
    }

    #[test]
    fn decodes_what_serde_json_decodes_and_rejects_what_it_rejects() {
        let mut samples: Vec<Vec<u8>> = [
            "",
            "plain",
            "line\\nbreaks\\r\\nand\\ttabs \\\"quoted\\\" back\\\\slash \\/ \\b\\f",
            "\\u0000\\u001f\\u00e9\\u65e5\\ud83e\\udd80 raw é 日本語 🦀",
            "\\uD83E\\uDD80 upper-case hex",
            // Invalid: each must be refused, as serde_json refuses it.
            "raw \" quote",
            "raw \u{1} control",
            "raw \n newline",
            "bad \\x escape",
            "short \\u12",
            "lone \\ud83e high surrogate",
            "lone \\udd80 low surrogate",
            "high then not low \\ud83e\\u0041",
            "trailing backslash \\",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        samples.push(b"not utf-8 \xff\xfe".to_vec());
        samples.push(b"cut \xc3".to_vec());
        samples.push([&b"x".repeat(40)[..], b"\xff", &b"y".repeat(40)].concat());
        samples.push([&b"x".repeat(40)[..], b"\\n\xe6\x97", &b"y".repeat(40)].concat());
        // Every escape (and invalid byte) at every offset of a 16-byte
        // block, across the boundary into the next block, in the block-wise
        // part (32 bytes or more follow) and in the byte-wise tail.
        for esc in ["\\n", "\\\"", "\\\\", "\\u00e9", "\\ud83e\\udd80", "\\u0001", "\\x", "\\ud83e", "\"", "\u{1}"] {
            for pad in 0..33 {
                for tail in [1, 9, 30] {
                    samples.push(format!("{}{esc}{}", "x".repeat(pad), "é".repeat(tail)).into_bytes());
                    samples.push(format!("{}{esc}\\n{esc}{}", "x".repeat(pad), "é".repeat(tail)).into_bytes());
                }
            }
        }
        // Escape-dense and long.
        samples.push(
            serde_json::to_string(&"a\nb\"c\\d\u{1}é🦀\t".repeat(2000)).unwrap().trim_matches('"').as_bytes().to_vec(),
        );
        for s in samples {
            assert_eq!(unescape_contents(&s), serde(&s), "{}", String::from_utf8_lossy(&s));
        }
    }

    #[test]
    fn round_trips_the_escaper() {
        let text = "crownest-output-benchmark-line\n".repeat(10_000) + "tail \u{7f} ü \"q\" \\";
        let mut literal = String::new();
        assert!(crate::push_bytes_literal(&mut literal, text.as_bytes()));
        let contents = &literal.as_bytes()[1..literal.len() - 1];
        assert_eq!(unescape_contents(contents).as_deref(), Some(text.as_str()));
    }
}
