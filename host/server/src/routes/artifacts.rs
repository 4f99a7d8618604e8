//! Artifact metadata and content.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use crownest_core::runs::store::{ArtifactRecord, StoreError};

use super::visible_run;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{json, views};

async fn visible_artifact(state: &AppState, caller: &Caller, id: &str) -> ApiResult<ArtifactRecord> {
    let a = state.store.get_artifact(id.to_string()).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!("artifact {id}")),
        other => ApiError::store(other),
    })?;
    let what = format!("artifact {id}");
    let org = state.store.project_org(a.project_id.clone()).await.map_err(ApiError::store)?;
    if !org.is_some_and(|o| caller.same_org(&o)) {
        return Err(ApiError::not_found(&what));
    }
    caller.authorize(state, "artifacts:read", Some(&a.project_id), &what).await?;
    Ok(a)
}

pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match visible_artifact(&state, &caller, &id).await {
        Ok(a) => json::data(StatusCode::OK, views::artifact(&a)),
        Err(e) => e.into_response(),
    }
}

pub async fn list_for_run(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let r: ApiResult<Response> = async {
        visible_run(&state, &caller, &id, "artifacts:read").await?;
        let list = state.store.list_artifacts(id).await.map_err(ApiError::store)?;
        let items: Vec<_> = list.iter().map(views::artifact).collect();
        Ok(json::data(StatusCode::OK, serde_json::json!({"items": items})))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The bytes: a redirect to a presigned URL when the store has them, else
/// streamed through the server.
pub async fn content(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let r: ApiResult<Response> = async {
        let a = visible_artifact(&state, &caller, &id).await?;
        let active = state.executor.artifact_store_name();
        if a.store != active {
            return Err(ApiError::new(
                StatusCode::GONE,
                "artifact_in_other_store",
                format!(
                    "artifact {id} is kept by the `{}` artifact store, but this server now uses `{active}`; configure `{}` again to read it",
                    a.store, a.store
                ),
            ));
        }
        if let Ok(Some(url)) = state.artifacts.presign_get(&a.locator, std::time::Duration::from_secs(300)).await {
            return Ok((StatusCode::FOUND, [(header::LOCATION, url)]).into_response());
        }
        let reader = state.artifacts.get(&a.locator).await.map_err(ApiError::plugin)?;
        let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20));
        let disposition = content_disposition(&a.name);
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, a.size.to_string()),
                (header::CONTENT_DISPOSITION, disposition),
                (header::HeaderName::from_static("x-artifact-sha256"), a.sha256.clone()),
            ],
            body,
        )
            .into_response())
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `attachment` with the artifact's name: an ASCII fallback (`filename`)
/// and the exact name percent-encoded as UTF-8 (`filename*`, RFC 6266), so
/// any printable name survives and none can break the header.
fn content_disposition(name: &str) -> String {
    let fallback: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn names_with_quotes_and_unicode_make_a_valid_header() {
        let h = content_disposition("a \"b\" résumé.pdf");
        assert_eq!(h, "attachment; filename=\"a _b_ r_sum_.pdf\"; filename*=UTF-8''a%20%22b%22%20r%C3%A9sum%C3%A9.pdf");
        assert!(axum::http::HeaderValue::from_str(&h).is_ok());
    }
}
