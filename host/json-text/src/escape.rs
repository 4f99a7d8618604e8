//! Writing a string as a JSON literal. Output is usually lines, so there
//! is an escape (`\n`) every few dozen bytes: a clean 16-byte block is
//! stored whole, and a block with escapes is written with fixed-size stores
//! walking its bit mask, so an escape costs a few instructions.

use crate::{scan16, special};

/// How each byte that must be escaped is written: up to six bytes, padded
/// to eight so one unaligned store writes any of them.
const ESCAPES: [(u8, [u8; 8]); 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [(0u8, [0u8; 8]); 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = (6, [b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 0xf], 0, 0]);
        b += 1;
    }
    table[b'\n' as usize] = (2, *b"\\n\0\0\0\0\0\0");
    table[b'\r' as usize] = (2, *b"\\r\0\0\0\0\0\0");
    table[b'\t' as usize] = (2, *b"\\t\0\0\0\0\0\0");
    table[0x08] = (2, *b"\\b\0\0\0\0\0\0");
    table[0x0c] = (2, *b"\\f\0\0\0\0\0\0");
    table[b'"' as usize] = (2, *b"\\\"\0\0\0\0\0\0");
    table[b'\\' as usize] = (2, *b"\\\\\0\0\0\0\0\0");
    table
};

/// The most one 16-byte block can grow to, plus the slack of the fixed-size
/// stores (a 16-byte store of a shorter run, an 8-byte store of an escape).
const BLOCK_ROOM: usize = 16 * 6 + 16;

/// The room [`push_bytes_literal`] reserves for `len` bytes before it
/// starts (more only if escapes outgrow it). A caller building a larger
/// buffer around the literal reserves this much for it up front, so the
/// buffer is not reallocated (and doubled) halfway.
pub fn literal_room(len: usize) -> usize {
    len + len / 8 + BLOCK_ROOM + 2
}

/// Append `bytes` to `out` as a JSON string literal, quotes included, if
/// they are UTF-8; otherwise leave `out` as it was and return `false`.
///
/// The UTF-8 check comes with the escaping: text that is all ASCII (most
/// command output) is known valid from the same 16-byte scans, and only
/// text with other bytes is checked again.
///
/// Each 16-byte block is stored whole when it holds nothing to escape;
/// otherwise its runs and escapes are written with fixed-size stores into
/// room reserved ahead, so an escape costs a few instructions rather than
/// a `memcpy` call for the run before it.
pub fn push_bytes_literal(out: &mut String, bytes: &[u8]) -> bool {
    let start = out.len();
    // SAFETY (for `as_mut_vec`): `out` is cut back to `start` below unless
    // `bytes` are UTF-8; then what was appended is whole runs of them cut
    // only before and after ASCII bytes (so on char boundaries) and ASCII
    // escapes, and `out` stays UTF-8.
    let out = unsafe { out.as_mut_vec() };
    out.reserve(literal_room(bytes.len()));
    out.push(b'"');
    let mut non_ascii = 0;
    let whole = bytes.len() / 16 * 16;
    for i in (0..whole).step_by(16) {
        if out.capacity() - out.len() < BLOCK_ROOM {
            out.reserve(BLOCK_ROOM + whole - i);
        }
        let block: &[u8; 16] = bytes[i..i + 16].try_into().expect("16 bytes");
        let (mut mask, high) = scan16(block);
        non_ascii |= high;
        // SAFETY: `out` has at least BLOCK_ROOM spare bytes, the most this
        // block writes including store slack; every store is unaligned and
        // within that room, and `set_len` covers only bytes written.
        unsafe {
            let mut dst = out.as_mut_ptr().add(out.len());
            if mask == 0 {
                std::ptr::copy_nonoverlapping(block.as_ptr(), dst, 16);
                dst = dst.add(16);
            } else {
                // 16-byte loads at any offset in the block must stay in
                // bounds: read the input itself while 16 bytes follow the
                // block (copying it to a buffer first would stall each
                // load on the copy's store), else a padded copy.
                let mut padded = [0u8; 32];
                let src = if i + 32 <= bytes.len() {
                    bytes.as_ptr().add(i)
                } else {
                    padded[..16].copy_from_slice(block);
                    padded.as_ptr()
                };
                let mut from = 0;
                while mask != 0 {
                    let at = mask.trailing_zeros() as usize;
                    std::ptr::copy_nonoverlapping(src.add(from), dst, 16);
                    dst = dst.add(at - from);
                    let (len, text) = &ESCAPES[usize::from(block[at])];
                    std::ptr::copy_nonoverlapping(text.as_ptr(), dst, 8);
                    dst = dst.add(usize::from(*len));
                    from = at + 1;
                    mask &= mask - 1;
                }
                std::ptr::copy_nonoverlapping(src.add(from), dst, 16);
                dst = dst.add(16 - from);
            }
            let written = dst.offset_from(out.as_ptr()) as usize;
            out.set_len(written);
        }
    }
    for &b in &bytes[whole..] {
        if special(b) {
            let (len, text) = &ESCAPES[usize::from(b)];
            out.extend_from_slice(&text[..usize::from(*len)]);
        } else {
            non_ascii |= u32::from(b >= 0x80);
            out.push(b);
        }
    }
    out.push(b'"');
    if non_ascii != 0 && std::str::from_utf8(bytes).is_err() {
        out.truncate(start);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(s: &str) -> String {
        let mut out = String::new();
        assert!(push_bytes_literal(&mut out, s.as_bytes()), "a str is UTF-8");
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
        // Long inputs that grow past the reserved room: all escapes
        // (six bytes out for each byte in), and a pseudo-random mix.
        samples.push("\u{1}".repeat(5000));
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let mixed: String = (0..100_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ['a', 'b', ' ', '\n', '"', '\\', '\u{1b}', 'é', '🦀', '\t'][(x % 10) as usize]
            })
            .collect();
        samples.push(mixed);
        for s in samples {
            assert_eq!(ours(&s), serde_json::to_string(&s).unwrap(), "{s:?}");
            let mut from_bytes = "kept ".to_string();
            assert!(push_bytes_literal(&mut from_bytes, s.as_bytes()));
            assert_eq!(from_bytes, format!("kept {}", ours(&s)));
            let back: String = serde_json::from_str(&ours(&s)).unwrap();
            assert_eq!(back, s);
        }
    }
}

#[cfg(test)]
mod not_utf8 {
    use super::push_bytes_literal;

    /// Bytes that are not UTF-8 are refused wherever the bad byte is (in a
    /// 16-byte block or the tail, after ASCII or not), and nothing is
    /// appended.
    #[test]
    fn is_refused_and_leaves_the_output_alone() {
        for pad in [0, 5, 15, 16, 17, 40] {
            for bad in [&b"\xff"[..], b"\xc3", b"\xe6\x97", b"\xed\xa0\x80", b"\xc3\n"] {
                for tail in [&b""[..], b"abc\n", "é".repeat(20).as_bytes()] {
                    let mut bytes = "é".repeat(pad / 2).into_bytes();
                    bytes.extend_from_slice(bad);
                    bytes.extend_from_slice(tail);
                    let mut out = "kept".to_string();
                    assert!(!push_bytes_literal(&mut out, &bytes), "{bytes:?}");
                    assert_eq!(out, "kept");
                }
            }
        }
    }
}

#[cfg(test)]
mod speed {
    /// Not a test: `cargo test --release -p crownest-json-text speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn escape_speed() {
        let line = "crownest-output-benchmark-line\n";
        let text = line.repeat((4 << 20) / line.len());
        for _ in 0..3 {
            let t = std::time::Instant::now();
            let mut total = 0;
            for _ in 0..50 {
                let mut out = String::with_capacity(text.len() * 9 / 8 + 256);
                super::push_bytes_literal(&mut out, text.as_bytes());
                total += out.len();
            }
            println!("escape 50 x 4 MiB: {:?} ({total} bytes)", t.elapsed());
            let mut literal = String::new();
            super::push_bytes_literal(&mut literal, text.as_bytes());
            let t = std::time::Instant::now();
            for _ in 0..50 {
                let back = crate::unescape_contents(&literal.as_bytes()[1..literal.len() - 1]).unwrap();
                assert_eq!(back.len(), text.len());
            }
            println!("unescape 50 x 4 MiB: {:?}", t.elapsed());
            let t = std::time::Instant::now();
            for _ in 0..50 {
                let back: String = serde_json::from_str(&literal).unwrap();
                assert_eq!(back.len(), text.len());
            }
            println!("serde_json 50 x 4 MiB: {:?}", t.elapsed());
        }
    }
}
