//! UTC calendar arithmetic for billing buckets.

/// `YYYY-MM` of a Unix time in milliseconds (UTC).
pub fn month_bucket(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let (y, m, _) = civil_from_days(days);
    format!("{y:04}-{m:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::month_bucket;

    #[test]
    fn buckets_are_utc_months() {
        assert_eq!(month_bucket(0), "1970-01");
        // 2026-11-23T12:00:00Z
        assert_eq!(month_bucket(1_795_435_200_000), "2026-11");
        // 2024-02-29T23:59:59Z (leap day)
        assert_eq!(month_bucket(1_709_251_199_000), "2024-02");
    }
}
