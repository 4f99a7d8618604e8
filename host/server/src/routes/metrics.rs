//! `GET /metrics`: the Prometheus text format, on a listener of its own
//! (`[metrics] listen`), without a key: keep it on an address only the
//! monitoring system reaches. Counters and histograms are recorded where
//! things happen (`crownest_core::metrics`); gauges of state (runs by
//! status, queue depth, live sandboxes) are read at scrape time.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crownest_core::runs::model::RunStatus;

use crate::state::AppState;

pub async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = crownest_core::metrics::registry().render();
    let counts = match state.store.count_runs_by_status().await {
        Ok(c) => c,
        Err(e) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("# the database is unavailable: {e}\n")).into_response();
        }
    };
    let count = |s: RunStatus| counts.iter().find(|(k, _)| k == s.as_str()).map_or(0, |(_, n)| *n);
    let _ = writeln!(text, "# HELP crownest_runs Workspace runs by status.\n# TYPE crownest_runs gauge");
    for s in RunStatus::ALL {
        let _ = writeln!(text, "crownest_runs{{status=\"{}\"}} {}", s.as_str(), count(s));
    }
    let _ = writeln!(
        text,
        "# HELP crownest_queue_depth Runs queued and waiting for a slot.\n# TYPE crownest_queue_depth gauge"
    );
    let _ = writeln!(text, "crownest_queue_depth {}", count(RunStatus::Queued));
    let _ = writeln!(
        text,
        "# HELP crownest_sandboxes_live Sandboxes that exist now (runs' and kept ones; metered).\n# TYPE crownest_sandboxes_live gauge"
    );
    let _ = writeln!(text, "crownest_sandboxes_live {}", state.metering.active());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}
