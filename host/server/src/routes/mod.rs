//! The `/v1` routes and the middleware around them.

mod archive;
mod artifacts;
mod control;
mod events;
mod metrics;
mod probes;
mod runs;
mod sandboxes;

use std::collections::HashMap;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use crownest_core::runs::ids::new_id;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, with_request_id};
use crate::state::AppState;

pub use archive::sweep_abandoned_transfers;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/workspace-runs", post(runs::create).get(runs::list))
        .route("/v1/workspace-runs/{id}", get(runs::get))
        .route("/v1/workspace-runs/{id}/start", post(runs::start))
        .route("/v1/workspace-runs/{id}/cancel", post(runs::cancel))
        .route("/v1/workspace-runs/{id}/evidence", get(runs::evidence))
        .route("/v1/workspace-runs/{id}/events", get(events::events))
        .route("/v1/workspace-runs/{id}/artifacts", get(artifacts::list_for_run))
        .route("/v1/workspace-runs/{id}/archive", put(archive::direct))
        .route("/v1/workspace-runs/{id}/archive-transfers", post(archive::create_transfer))
        .route("/v1/workspace-runs/{id}/archive-transfers/{tid}", get(archive::get_transfer))
        .route("/v1/workspace-runs/{id}/archive-transfers/{tid}/parts/{n}", put(archive::put_part))
        .route("/v1/workspace-runs/{id}/archive-transfers/{tid}/complete", post(archive::complete_transfer))
        .route("/v1/artifacts/{id}", get(artifacts::get))
        .route("/v1/artifacts/{id}/content", get(artifacts::content))
        .route("/v1/projects", post(control::create_project).get(control::list_projects))
        .route("/v1/keys", post(control::create_key).get(control::list_keys))
        .route("/v1/keys/{id}", axum::routing::delete(control::revoke_key))
        .route("/v1/keys/{id}/revoke", post(control::revoke_key))
        .route("/v1/sandboxes/{id}/kill", post(sandboxes::kill))
        .route("/v1/usage", get(control::usage))
        .route("/v1/audit-events", get(control::audit_events))
        .route("/v1/health", get(health))
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

/// The metrics listener's router: `GET /metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new().route("/metrics", get(metrics::metrics)).with_state(state)
}

async fn request_id(mut req: Request, next: Next) -> Response {
    let id = new_id("req");
    req.extensions_mut().insert(crate::auth::RequestId(id.clone()));
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let resp = next.run(req).await;
    let resp = crate::error::envelope_foreign(resp).await;
    tracing::debug!(request_id = %id, %method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    with_request_id(resp, &id)
}

async fn not_found() -> Response {
    ApiError::not_found("endpoint").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not accept that method")
        .into_response()
}

async fn health(_caller: Caller) -> Response {
    // Any valid credential may ask; no scope needed.
    crate::json::data(StatusCode::OK, serde_json::json!({"status": "ok"}))
}

/// A run the caller may do `action` on: 404 when it does not exist for the
/// caller (another org, or a project the key is not restricted to), 403
/// naming the scope when the key lacks it.
async fn visible_run(state: &AppState, caller: &Caller, id: &str, action: &str) -> ApiResult<crownest_core::runs::Run> {
    let what = format!("workspace run {id}");
    let run = state.store.get_run(id.to_string()).await.map_err(|e| match e {
        crownest_core::runs::store::StoreError::NotFound => ApiError::not_found(&what),
        other => ApiError::store(other),
    })?;
    if !caller.same_org(&run.org_id) {
        return Err(ApiError::not_found(&what));
    }
    caller.authorize(state, action, Some(&run.project_id), &what).await?;
    Ok(run)
}

/// The projects a listing may cover: `projectId` if given (and allowed),
/// the key's project when restricted, its org's projects otherwise, `None`
/// (everything) for the admin.
pub(super) async fn scope_projects(
    state: &AppState,
    caller: &Caller,
    action: &str,
    requested: Option<&String>,
) -> ApiResult<Option<Vec<String>>> {
    match (requested, caller.restricted_to()) {
        (Some(p), _) => {
            let p = caller.project(state, Some(p)).await?.0;
            caller.authorize(state, action, Some(&p), &format!("project {p}")).await?;
            Ok(Some(vec![p]))
        }
        (None, Some(p)) => {
            caller.authorize(state, action, Some(p), &format!("project {p}")).await?;
            Ok(Some(vec![p.to_string()]))
        }
        (None, None) => {
            caller.authorize(state, action, None, "projects").await?;
            Ok(match caller.org() {
                None => None,
                Some(org) => Some(
                    state
                        .store
                        .list_projects(Some(org.to_string()))
                        .await
                        .map_err(ApiError::store)?
                        .into_iter()
                        .map(|p| p.id)
                        .collect(),
                ),
            })
        }
    }
}

/// Parse an optional numeric query parameter.
fn number(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    q.get(name)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ApiError::bad_request("invalid_request", format!("`{name}` must be a non-negative integer, got `{v}`"))
            })
        })
        .transpose()
}
