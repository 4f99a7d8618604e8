//! Writing large strings as JSON text quickly: output events carry up to a
//! chunk (4 MiB) of a command's output, and escaping it byte by byte was a
//! tenth of the server's CPU while streaming output. Sixteen bytes are
//! checked at once for anything JSON must escape (`"`, `\`, control
//! characters), each one found is escaped from a bit mask, and the clean
//! runs between are copied whole. Output is usually lines, so there is an
//! escape (`\n`) every few dozen bytes: finding each one cheaply matters
//! as much as skipping clean bytes fast.

fn special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Bit `i` is set when byte `i` of `chunk` must be escaped.
#[cfg(target_arch = "x86_64")]
fn specials16(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, and the load is an
    // unaligned load of exactly the 16 bytes of `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `v <= 0x1f`: UTF-8 bytes (>= 0x80) never count.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// Bit `i` is set when byte `i` of `chunk` must be escaped.
#[cfg(not(target_arch = "x86_64"))]
fn specials16(chunk: &[u8; 16]) -> u32 {
    chunk.iter().enumerate().fold(0, |mask, (i, &b)| mask | (u32::from(special(b)) << i))
}

fn escape_byte(out: &mut Vec<u8>, b: u8) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// Append `s` to `out` as a JSON string literal, quotes included.
pub fn push_str_literal(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    // SAFETY: what is appended is whole runs of `s` cut only before and
    // after ASCII bytes (so on char boundaries) and ASCII escapes: `out`
    // stays UTF-8.
    let out = unsafe { out.as_mut_vec() };
    out.reserve(bytes.len() + bytes.len() / 8 + 2);
    out.push(b'"');
    let mut clean = 0; // start of the run not yet copied
    let mut i = 0;
    while i + 16 <= bytes.len() {
        let mut mask = specials16(bytes[i..i + 16].try_into().expect("16 bytes"));
        while mask != 0 {
            let at = i + mask.trailing_zeros() as usize;
            out.extend_from_slice(&bytes[clean..at]);
            escape_byte(out, bytes[at]);
            clean = at + 1;
            mask &= mask - 1;
        }
        i += 16;
    }
    for at in i..bytes.len() {
        if special(bytes[at]) {
            out.extend_from_slice(&bytes[clean..at]);
            escape_byte(out, bytes[at]);
            clean = at + 1;
        }
    }
    out.extend_from_slice(&bytes[clean..]);
    out.push(b'"');
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
            "a\nb\nc\nd\ne\"f\\g\u{1}h\ti\rj\nk\nl\nm\nn\no\np\nq\n".repeat(3),
            "日本語\n🦀\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\n".repeat(5),
        ];
        // Every escapable byte at every offset of a 16-byte block, and
        // several escapes in one block.
        for b in (0u8..0x20).chain([b'"', b'\\']) {
            for pad in 0..33 {
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
