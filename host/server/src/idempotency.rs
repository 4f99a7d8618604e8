//! `Idempotency-Key` handling for create, upload and start.
//!
//! Keys are scoped per project and endpoint and kept at least 24 hours. The
//! same key with the same request replays the stored response (one run, one
//! upload); the same key with a different request is refused (422); a
//! duplicate arriving while the first is still being handled is a conflict
//! (409). Server errors are not stored, so they can be retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crownest_core::runs::Run;
use crownest_core::runs::store::{IdempotencyBegin, RecordResponse, StoredResponse};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::json;
use crate::state::AppState;

/// The key from the request, validated.
pub fn key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let k =
        v.to_str().map_err(|_| ApiError::bad_request("invalid_request", "Idempotency-Key must be printable ASCII"))?;
    if k.is_empty() || k.len() > 255 {
        return Err(ApiError::bad_request("invalid_request", "Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(k.to_string()))
}

fn stored(r: &ApiResult<(StatusCode, Value)>) -> Option<StoredResponse> {
    match r {
        Ok((s, v)) => Some(StoredResponse { status: s.as_u16(), body: json::envelope_bytes(v) }),
        Err(e) if e.status.is_client_error() => Some(StoredResponse {
            status: e.status.as_u16(),
            body: serde_json::to_vec(&serde_json::json!({"error": {"code": e.code, "message": e.message}})).unwrap(),
        }),
        Err(_) => None,
    }
}

fn replay(r: StoredResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    let mut resp = if status.is_success() {
        json::raw(status, r.body)
    } else {
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        ApiError::new(
            status,
            v["error"]["code"].as_str().unwrap_or("error").to_string(),
            v["error"]["message"].as_str().unwrap_or(""),
        )
        .into_response()
    };
    resp.headers_mut().insert("idempotent-replayed", "true".parse().unwrap());
    resp
}

/// The key of a request being handled, for a store call that writes the
/// response in the same transaction as the request's effect.
#[derive(Clone)]
pub struct Slot {
    project: String,
    endpoint: String,
    key: String,
    recorded: Arc<AtomicBool>,
}

impl Slot {
    /// The record of the response `view` renders from the run as the
    /// transaction leaves it, sent with `status`. The handler must answer
    /// with that same view when the call succeeds.
    pub fn respond(&self, status: StatusCode, view: impl FnOnce(&Run) -> Value + Send + 'static) -> RecordResponse {
        let recorded = self.recorded.clone();
        RecordResponse {
            project: self.project.clone(),
            endpoint: self.endpoint.clone(),
            key: self.key.clone(),
            render: Box::new(move |run| {
                recorded.store(true, Ordering::Release);
                StoredResponse { status: status.as_u16(), body: json::envelope_bytes(&view(run)) }
            }),
        }
    }
}

/// Run `f` once per (project, endpoint, key); without a key, just run it.
/// `f` gets the key's [`Slot`] to record its response along with its
/// effect; a response it did not record that way is recorded after it.
pub async fn once<F>(
    state: &AppState,
    project: &str,
    endpoint: &str,
    key: Option<String>,
    request_hash: String,
    f: F,
) -> Response
where
    F: AsyncFnOnce(Option<Slot>) -> ApiResult<(StatusCode, Value)>,
{
    let respond = |r: ApiResult<(StatusCode, Value)>| match r {
        Ok((s, v)) => json::data(s, v),
        Err(e) => e.into_response(),
    };
    let Some(key) = key else { return respond(f(None).await) };
    let (p, e) = (project.to_string(), endpoint.to_string());
    match state.store.idempotency_begin(p.clone(), e.clone(), key.clone(), request_hash).await {
        Err(err) => ApiError::store(err).into_response(),
        Ok(IdempotencyBegin::Replay(r)) => replay(r),
        Ok(IdempotencyBegin::Mismatch) => ApiError::unprocessable(
            "idempotency_key_reused",
            format!("Idempotency-Key `{key}` was already used with a different request; use a new key"),
        )
        .into_response(),
        Ok(IdempotencyBegin::InFlight) => ApiError::conflict(
            "idempotency_in_progress",
            format!("a request with Idempotency-Key `{key}` is still being handled; retry when it has finished"),
        )
        .into_response(),
        Ok(IdempotencyBegin::Proceed) => {
            let slot = Slot { project: p.clone(), endpoint: e.clone(), key: key.clone(), recorded: Arc::default() };
            let recorded = slot.recorded.clone();
            let r = f(Some(slot)).await;
            // A failure is settled here even if its transaction had
            // rendered a response: that transaction did not commit.
            if r.is_err() || !recorded.load(Ordering::Acquire) {
                let keep = stored(&r);
                if let Err(err) = state.store.idempotency_finish(p, e, key, keep).await {
                    tracing::error!("cannot store idempotency record: {err}");
                }
            }
            respond(r)
        }
    }
}

/// A stable hash of what identifies a request.
pub fn hash(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}
