//! Process-wide metrics for operators, rendered in the Prometheus text
//! format (version 0.0.4) by whoever serves them.
//!
//! A small registry of its own rather than a metrics crate: counters,
//! gauges and fixed-bucket histograms with a few labels are all the server
//! needs, recording is a relaxed atomic add on a handle found once per label
//! set, and rendering is a walk over a map at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Label values, in the order of the family's label names.
type LabelValues = Vec<String>;

/// Upper bounds (seconds) of latency histograms: 1 ms to 10 min.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];
/// Upper bounds (seconds) of run durations: 10 ms to a day.
pub const DURATION_BUCKETS: &[f64] =
    &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4.0 * 3600.0, 86400.0];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One histogram series: per-bucket counts, total count and sum (µs).
pub struct HistogramCell {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl HistogramCell {
    fn new(bounds: &'static [f64]) -> HistogramCell {
        HistogramCell {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Record one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

enum Cell {
    Counter(Arc<AtomicU64>),
    Gauge(Arc<AtomicI64>),
    Histogram(Arc<HistogramCell>),
}

struct Family {
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    series: BTreeMap<LabelValues, Cell>,
}

/// The registry.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// The process's registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

impl Registry {
    fn cell(
        &self,
        name: &'static str,
        help: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        values: &[&str],
    ) -> Cell {
        debug_assert_eq!(labels.len(), values.len(), "{name}: label values");
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let family =
            families.entry(name).or_insert_with(|| Family { help, kind, labels, buckets, series: BTreeMap::new() });
        debug_assert!(family.kind == kind, "{name} registered as two kinds");
        let key: LabelValues = values.iter().map(|v| v.to_string()).collect();
        let cell = family.series.entry(key).or_insert_with(|| match kind {
            Kind::Counter => Cell::Counter(Arc::default()),
            Kind::Gauge => Cell::Gauge(Arc::default()),
            Kind::Histogram => Cell::Histogram(Arc::new(HistogramCell::new(buckets))),
        });
        match cell {
            Cell::Counter(c) => Cell::Counter(c.clone()),
            Cell::Gauge(g) => Cell::Gauge(g.clone()),
            Cell::Histogram(h) => Cell::Histogram(h.clone()),
        }
    }

    /// A counter series (created at 0 the first time).
    pub fn counter(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        values: &[&str],
    ) -> Arc<AtomicU64> {
        match self.cell(name, help, Kind::Counter, labels, &[], values) {
            Cell::Counter(c) => c,
            _ => unreachable!("a counter cell"),
        }
    }

    /// A gauge series.
    pub fn gauge(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        values: &[&str],
    ) -> Arc<AtomicI64> {
        match self.cell(name, help, Kind::Gauge, labels, &[], values) {
            Cell::Gauge(g) => g,
            _ => unreachable!("a gauge cell"),
        }
    }

    /// A histogram series with `buckets` (seconds).
    pub fn histogram(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
        values: &[&str],
    ) -> Arc<HistogramCell> {
        match self.cell(name, help, Kind::Histogram, labels, buckets, values) {
            Cell::Histogram(h) => h,
            _ => unreachable!("a histogram cell"),
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (values, cell) in &f.series {
                let labels = label_text(f.labels, values, None);
                match cell {
                    Cell::Counter(c) => {
                        let _ = writeln!(out, "{name}{labels} {}", c.load(Ordering::Relaxed));
                    }
                    Cell::Gauge(g) => {
                        let _ = writeln!(out, "{name}{labels} {}", g.load(Ordering::Relaxed));
                    }
                    Cell::Histogram(h) => {
                        let mut cumulative = 0;
                        for (bound, n) in f.buckets.iter().zip(&h.buckets) {
                            cumulative += n.load(Ordering::Relaxed);
                            let le = label_text(f.labels, values, Some(&bound.to_string()));
                            let _ = writeln!(out, "{name}_bucket{le} {cumulative}");
                        }
                        let count = h.count.load(Ordering::Relaxed);
                        let inf = label_text(f.labels, values, Some("+Inf"));
                        let _ = writeln!(out, "{name}_bucket{inf} {count}");
                        let sum = h.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
                        let _ = writeln!(out, "{name}_sum{labels} {sum}");
                        let _ = writeln!(out, "{name}_count{labels} {count}");
                    }
                }
            }
        }
        out
    }
}

/// `{a="x",b="y"}` (with `le` for a histogram bucket), or nothing.
fn label_text(names: &[&str], values: &[String], le: Option<&str>) -> String {
    let mut parts: Vec<String> = names.iter().zip(values).map(|(n, v)| format!("{n}=\"{}\"", escape(v))).collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The metrics CrowNest records, one function each, so names and help live
/// in one place.
pub mod record {
    use super::*;

    /// A run reached a terminal state.
    pub fn run_finished(status: &str, reason: Option<&str>, running: Option<Duration>, overhead: Option<Duration>) {
        let r = registry();
        r.counter(
            "crownest_runs_finished_total",
            "Workspace runs that reached a terminal state, by status and failure reason.",
            &["status", "reason"],
            &[status, reason.unwrap_or("")],
        )
        .fetch_add(1, Ordering::Relaxed);
        if let Some(d) = running {
            r.histogram(
                "crownest_run_duration_seconds",
                "Time from a run's command starting to its terminal state.",
                &[],
                DURATION_BUCKETS,
                &[],
            )
            .observe(d);
        }
        if let Some(d) = overhead {
            r.histogram(
                "crownest_run_overhead_seconds",
                "Time from a run being queued to it running (queue wait and sandbox start).",
                &[],
                LATENCY_BUCKETS,
                &[],
            )
            .observe(d);
        }
    }

    /// One append of events to the store.
    pub fn event_append(d: Duration) {
        registry()
            .histogram(
                "crownest_event_append_seconds",
                "Latency of one durable (fsynced) event append.",
                &[],
                LATENCY_BUCKETS,
                &[],
            )
            .observe(d);
    }

    /// SSE clients connected right now (+1 on open, -1 on close).
    pub fn sse_clients(delta: i64) {
        registry()
            .gauge("crownest_sse_clients", "Event streams open right now.", &[], &[])
            .fetch_add(delta, Ordering::Relaxed);
    }

    /// One plugin export call, and its fault if it had one.
    pub fn plugin_call(plugin: &str, call: &str, d: Duration, fault: Option<&str>) {
        let r = registry();
        r.histogram(
            "crownest_plugin_call_seconds",
            "Latency of plugin export calls, by plugin and call.",
            &["plugin", "call"],
            LATENCY_BUCKETS,
            &[plugin, call],
        )
        .observe(d);
        if let Some(kind) = fault {
            r.counter(
                "crownest_plugin_faults_total",
                "Plugin calls that trapped, ran out of time or memory, or returned malformed values.",
                &["plugin", "kind"],
                &[plugin, kind],
            )
            .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An artifact store operation failed.
    pub fn artifact_store_error(op: &str) {
        registry()
            .counter(
                "crownest_artifact_store_errors_total",
                "Artifact store operations that failed, by operation.",
                &["op"],
                &[op],
            )
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The meter stopped a sandbox.
    pub fn meter_stop(reason: &str) {
        registry()
            .counter("crownest_meter_stops_total", "Sandboxes the meter stopped, by reason.", &["reason"], &[reason])
            .fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_types_labels_and_cumulative_buckets() {
        let r = Registry::default();
        r.counter("t_total", "A counter.", &["k"], &["a\"b"]).fetch_add(3, Ordering::Relaxed);
        r.gauge("t_gauge", "A gauge.", &[], &[]).fetch_add(-2, Ordering::Relaxed);
        let h = r.histogram("t_seconds", "A histogram.", &[], &[0.1, 1.0], &[]);
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_millis(500));
        h.observe(Duration::from_secs(5));
        let text = r.render();
        assert!(text.contains("# TYPE t_total counter\nt_total{k=\"a\\\"b\"} 3\n"), "{text}");
        assert!(text.contains("t_gauge -2\n"), "{text}");
        assert!(
            text.contains(
                "t_seconds_bucket{le=\"0.1\"} 1\nt_seconds_bucket{le=\"1\"} 2\nt_seconds_bucket{le=\"+Inf\"} 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("t_seconds_sum 5.55\nt_seconds_count 3\n"), "{text}");
    }
}
