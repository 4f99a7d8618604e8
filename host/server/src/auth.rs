//! Who is calling: every request carries `Authorization: Bearer <token>`,
//! an API key (`cn_live_…`) or the admin token. Anything else is a 401 that
//! says the same thing for unknown, revoked, expired and wrong keys.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use crownest_core::runs::store::ApiKeyRecord;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone)]
pub enum Caller {
    Admin,
    Key(ApiKeyRecord),
}

impl Caller {
    /// Whether the caller may see `project_id`. A key restricted to another
    /// project gets `not_found`, as if the target did not exist.
    pub fn can_see(&self, project_id: &str) -> bool {
        match self {
            Caller::Admin => true,
            Caller::Key(k) => k.project_id.as_deref().is_none_or(|p| p == project_id),
        }
    }

    /// The project a request without `projectId` refers to.
    pub async fn default_project(&self, state: &AppState) -> ApiResult<(String, String)> {
        match self {
            Caller::Key(k) if k.project_id.is_some() => Ok((k.project_id.clone().unwrap(), k.org_id.clone())),
            _ => state
                .store
                .default_project()
                .await
                .map_err(ApiError::store)?
                .ok_or_else(|| ApiError::bad_request("invalid_request", "no project exists; pass projectId")),
        }
    }

    /// Resolve an explicit or default project the caller may use: (project, org).
    pub async fn project(&self, state: &AppState, requested: Option<&str>) -> ApiResult<(String, String)> {
        let Some(p) = requested else { return self.default_project(state).await };
        if !self.can_see(p) {
            return Err(ApiError::not_found(format!("project {p}")));
        }
        let org = state.store.project_org(p.to_string()).await.map_err(ApiError::store)?;
        match (org, self) {
            (Some(org), Caller::Key(k)) if k.org_id != org => Err(ApiError::not_found(format!("project {p}"))),
            (Some(org), _) => Ok((p.to_string(), org)),
            (None, _) => Err(ApiError::not_found(format!("project {p}"))),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "missing or invalid API key: send `Authorization: Bearer <key>` with a valid key (CROWNEST_API_KEY)",
    )
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).ok_or_else(unauthorized)?;
        if token.starts_with("cn_admin_") {
            return if state.store.verify_admin(token.to_string()).await.map_err(ApiError::store)? {
                Ok(Caller::Admin)
            } else {
                Err(unauthorized())
            };
        }
        match state.store.verify_api_key(token.to_string()).await.map_err(ApiError::store)? {
            Some(k) => Ok(Caller::Key(k)),
            None => Err(unauthorized()),
        }
    }
}
