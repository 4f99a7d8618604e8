//! Probes for orchestrators and load balancers, outside `/v1`, without a
//! key and never audited: `GET /healthz` (the process serves requests) and
//! `GET /readyz` (it can do its job: the database takes writes, the
//! artifact store answers its check; the plugins are loaded or the server
//! would not be serving). A readiness result is reused for a second, so a
//! probe storm costs one check per second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::state::AppState;

/// How long one readiness result is reused.
const REUSE: Duration = Duration::from_secs(1);
/// A check that takes longer than this fails readiness.
const CHECK_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

#[derive(Clone, Serialize)]
struct Readiness {
    status: &'static str,
    checks: Vec<Check>,
}

pub async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"status": "ok"}))).into_response()
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    static LAST: Mutex<Option<(Instant, Readiness)>> = Mutex::new(None);
    let cached = LAST.lock().unwrap_or_else(|e| e.into_inner()).clone().filter(|(at, _)| at.elapsed() < REUSE);
    let r = match cached {
        Some((_, r)) => r,
        None => {
            let r = check(&state).await;
            *LAST.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), r.clone()));
            r
        }
    };
    let status = if r.status == "ready" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, axum::Json(r)).into_response()
}

async fn check(state: &AppState) -> Readiness {
    let deadline = |what: &str| format!("no answer within {} s ({what})", CHECK_DEADLINE.as_secs());
    let db = match tokio::time::timeout(CHECK_DEADLINE, state.store.check_writable()).await {
        Ok(Ok(())) => Check { name: "database", ok: true, detail: "takes writes".into() },
        Ok(Err(e)) => Check { name: "database", ok: false, detail: e.to_string() },
        Err(_) => Check { name: "database", ok: false, detail: deadline("write") },
    };
    let store = state.executor.artifact_store_name().to_string();
    let artifacts = match tokio::time::timeout(CHECK_DEADLINE, state.artifacts.check()).await {
        Ok(Ok(())) => Check { name: "artifact_store", ok: true, detail: format!("{store}: ready") },
        Ok(Err(e)) => Check { name: "artifact_store", ok: false, detail: format!("{store}: {}", e.message) },
        Err(_) => Check { name: "artifact_store", ok: false, detail: deadline(&store) },
    };
    let plugins = Check { name: "plugins", ok: true, detail: "loaded and checked at start-up".into() };
    let checks = vec![db, artifacts, plugins];
    let status = if checks.iter().all(|c| c.ok) { "ready" } else { "not_ready" };
    Readiness { status, checks }
}
