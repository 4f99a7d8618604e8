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

/// Unix milliseconds from RFC 3339 (`2026-11-23T12:00:00.123Z`, an offset
/// such as `+02:00`, or a bare date `2026-11-23` as its midnight UTC).
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let num =
        |t: &str| -> Option<i64> { (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())).then(|| t.parse().ok())? };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if date.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days-from-civil.
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut ms = days * 86_400_000;
    if let Some(t) = time {
        let (clock, offset_min) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else {
            let at = t.rfind(['+', '-'])?;
            let (c, off) = t.split_at(at);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            (c, sign * (num(oh)? * 60 + num(om)?))
        };
        let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
        let mut p = hms.splitn(3, ':');
        let (h, mi, sec) = (num(p.next()?)?, num(p.next()?)?, num(p.next()?)?);
        if h > 23 || mi > 59 || sec > 60 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let frac_ms = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
        ms += ((h * 60 + mi) * 60 + sec) * 1000 + frac_ms - offset_min * 60_000;
    }
    u64::try_from(ms).ok()
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
    fn rfc3339_parses_back() {
        for ms in [0, 1_795_435_200_123, 951_782_400_000 /* 2000-02-29 */] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(parse_rfc3339("2026-11-23"), Some(1_795_392_000_000));
        assert_eq!(parse_rfc3339("2026-11-23T14:00:00+02:00"), Some(1_795_435_200_000));
        for bad in ["2026-13-01", "yesterday", "2026-11-23T25:00:00Z", "2026-1-1", "2026-11-23T12:00:00"] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_795_435_200_123), "2026-11-23T12:00:00.123Z");
    }
}
