//! Large JSON strings, fast. Output events carry up to a chunk (4 MiB) of
//! a command's output as JSON text: the server escapes each chunk into an
//! SSE frame and the client unescapes it back, and done a byte at a time
//! both were among the largest costs of streaming output. Both sides find
//! the bytes JSON escapes (`"`, `\`, control characters) sixteen at a time.

mod escape;
mod unescape;

pub use escape::{literal_room, push_bytes_literal};
pub use unescape::unescape_contents;

pub(crate) fn special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Two bit masks over the 16 bytes of `chunk`: bit `i` of the first is set
/// when byte `i` must be escaped, of the second when it is not ASCII (so
/// text whose masks never had a bit set needs no UTF-8 check).
#[cfg(target_arch = "x86_64")]
pub(crate) fn scan16(chunk: &[u8; 16]) -> (u32, u32) {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, and the load is an
    // unaligned load of exactly the 16 bytes of `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // Unsigned `v <= 0x1f`: UTF-8 bytes (>= 0x80) never count.
        let control = _mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f));
        let specials = _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32;
        (specials, _mm_movemask_epi8(v) as u32)
    }
}

/// Two bit masks over the 16 bytes of `chunk`: bit `i` of the first is set
/// when byte `i` must be escaped, of the second when it is not ASCII.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn scan16(chunk: &[u8; 16]) -> (u32, u32) {
    chunk.iter().enumerate().fold((0, 0), |(specials, high), (i, &b)| {
        (specials | (u32::from(special(b)) << i), high | (u32::from(b >= 0x80) << i))
    })
}
