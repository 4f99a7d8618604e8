//! Kept sandboxes: `POST /v1/sandboxes/{id}/kill` destroys one a run kept
//! (`keepSandbox`), settles its metering and leaves a tombstone.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crownest_core::runs::executor::KillOutcome;
use serde_json::json;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json;
use crate::state::AppState;

pub async fn kill(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let r: ApiResult<Response> = async {
        let what = format!("sandbox {id}");
        let owner = state.store.sandbox_owner(id.clone()).await.map_err(ApiError::store)?;
        let Some((org, project, run)) = owner.filter(|(org, _, _)| caller.same_org(org)) else {
            return Err(ApiError::not_found(&what));
        };
        let _ = org;
        caller.authorize(&state, "sandboxes:kill", Some(&project), &what).await?;
        if let Some((at, reason)) = state.store.sandbox_tombstone(id.clone()).await.map_err(ApiError::store)? {
            let at = crownest_core::runs::ids::rfc3339(at);
            return Ok(json::data(
                StatusCode::OK,
                json!({"id": id, "status": "destroyed", "destroyedAt": at, "reason": reason}),
            ));
        }
        let reason = format!("killed by {}", caller.actor());
        match state.executor.kill_kept(&id, &reason).await.map_err(ApiError::plugin)? {
            KillOutcome::Killed => {
                caller
                    .audit(
                        &state,
                        "sandboxes:kill",
                        Some(&id),
                        Some(&project),
                        "success",
                        Some(format!("kept by run {run}")),
                    )
                    .await;
                tracing::info!(sandbox_id = %id, "kept sandbox killed");
                Ok(json::data(StatusCode::OK, json!({"id": id, "status": "destroyed", "reason": reason})))
            }
            KillOutcome::Busy => Err(ApiError::conflict(
                "sandbox_busy",
                format!("sandbox {id} is running a workspace run right now; cancel that run, then kill the sandbox"),
            )),
            KillOutcome::Gone => Err(ApiError::conflict(
                "sandbox_not_kept",
                format!("sandbox {id} was not kept by its run (it is destroyed when the run ends)"),
            )),
        }
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}
