//! Resource ids: a type prefix and 20 random base32 characters (100 bits),
//! e.g. `wsr_3kq…`. Random, so ids never reveal counts or order.

const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// Random bytes from the kernel's CSPRNG (`getrandom(2)`: no file to open
/// per id, and it never blocks once the pool was initialized at boot).
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom writes at most `n - filled` bytes into the
        // unfilled tail of `buf`.
        let got = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        match got {
            g if g > 0 => filled += g as usize,
            _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => panic!("getrandom failed: {}", std::io::Error::last_os_error()),
        }
    }
    buf
}

/// `<prefix>_<20 base32 chars>`.
pub fn new_id(prefix: &str) -> String {
    let bytes = random_bytes(20);
    let s: String = bytes.iter().map(|b| ALPHABET[(*b & 31) as usize] as char).collect();
    format!("{prefix}_{s}")
}

/// Whether `id` looks like an id with this prefix.
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r.len() == 20 && r.bytes().all(|b| ALPHABET.contains(&b)))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds, from Unix milliseconds.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, ms % 1000)
}

/// The id of the sandbox a run creates (`wsr_X` → `sbx_X`).
pub fn sandbox_id_for_run(run_id: &str) -> String {
    format!("sbx_{}", run_id.trim_start_matches("wsr_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_length() {
        let id = new_id("wsr");
        assert!(is_id(&id, "wsr"), "{id}");
        assert!(!is_id(&id, "art"));
        assert_ne!(id, new_id("wsr"));
    }

    #[test]
    fn random_bytes_fill_the_whole_buffer() {
        assert!(random_bytes(0).is_empty());
        let (a, b) = (random_bytes(4096), random_bytes(4096));
        assert_eq!(a.len(), 4096);
        assert_ne!(a, b);
        // A tail left unfilled would stay zero.
        assert!(a[4000..].iter().any(|&x| x != 0));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_435_200_123), "2026-11-23T12:00:00.123Z");
    }
}
