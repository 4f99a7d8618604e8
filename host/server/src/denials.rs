//! Aggregating repeated anonymous refusals for the audit trail: a load
//! balancer probing with no key, or a scanner, would otherwise write one
//! row per request, kept forever. The first refusal of a kind (the same
//! `METHOD /path` and the same claimed key) writes a row; repeats within
//! the next minute are counted, and the count goes into the next row
//! written for that kind.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long repeats are folded into one row.
const WINDOW: Duration = Duration::from_secs(60);
/// Kinds remembered at most (a scanner trying many paths).
const MAX_KINDS: usize = 10_000;

struct Seen {
    /// When the last row for this kind was written.
    written: Instant,
    /// Refusals since, not written.
    folded: u64,
}

fn table() -> &'static Mutex<HashMap<String, Seen>> {
    static TABLE: std::sync::OnceLock<Mutex<HashMap<String, Seen>>> = std::sync::OnceLock::new();
    TABLE.get_or_init(Default::default)
}

/// Whether to write a row for this refusal now: `Some(folded)` with how
/// many like it were not written since the last row, or `None` (counted).
pub fn admit(action: &str, detail: &str) -> Option<u64> {
    admit_at(&mut table().lock().unwrap_or_else(|e| e.into_inner()), action, detail, Instant::now())
}

fn admit_at(seen: &mut HashMap<String, Seen>, action: &str, detail: &str, now: Instant) -> Option<u64> {
    let kind = format!("{action}\n{detail}");
    if let Some(s) = seen.get_mut(&kind) {
        if now.duration_since(s.written) < WINDOW {
            s.folded += 1;
            return None;
        }
        let folded = s.folded;
        *s = Seen { written: now, folded: 0 };
        return Some(folded);
    }
    if seen.len() >= MAX_KINDS {
        seen.retain(|_, s| now.duration_since(s.written) < WINDOW);
    }
    seen.insert(kind, Seen { written: now, folded: 0 });
    Some(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_a_minute_fold_into_the_next_row() {
        let mut seen = HashMap::new();
        let t0 = Instant::now();
        assert_eq!(admit_at(&mut seen, "GET /v1/health", "unauthorized", t0), Some(0));
        for i in 1..=5 {
            assert_eq!(admit_at(&mut seen, "GET /v1/health", "unauthorized", t0 + Duration::from_secs(i)), None);
        }
        // Another kind is its own.
        assert_eq!(admit_at(&mut seen, "GET /v1/keys", "unauthorized", t0), Some(0));
        assert_eq!(admit_at(&mut seen, "GET /v1/health", "unauthorized", t0 + WINDOW), Some(5));
        assert_eq!(admit_at(&mut seen, "GET /v1/health", "unauthorized", t0 + WINDOW * 3), Some(0));
    }
}
