//! The control plane: projects, API keys (admin only: keys can't mint
//! keys), usage and the audit trail.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use crownest_core::ports::UsageQuery;
use crownest_core::runs::ids::now_ms;
use crownest_core::runs::store::{AuditFilter, StoreError};
use serde::Deserialize;
use serde_json::json;

use super::{number, scope_projects};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{json, views};

fn respond(r: ApiResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

fn body<T: serde::de::DeserializeOwned>(b: Result<json::RequestBody, ApiError>) -> ApiResult<T> {
    let b = b?.0;
    json::parse(&b)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a JSON object with `name`")]
struct ProjectBody {
    name: String,
}

/// `POST /v1/projects` (admin).
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    b: Result<json::RequestBody, ApiError>,
) -> Response {
    respond(
        async {
            caller.require_admin(&state, "projects:create").await?;
            let b: ProjectBody = body(b)?;
            let name = b.name.trim().to_string();
            if name.is_empty()
                || name.len() > 64
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "`name` must be 1-64 characters of letters, digits, `-`, `_` or `.`",
                ));
            }
            let org = state.store.list_projects(None).await.map_err(ApiError::store)?;
            let org = org.first().map(|p| p.org_id.clone()).ok_or_else(|| ApiError::internal("no organization"))?;
            let p = state.store.create_project(org, name.clone()).await.map_err(|e| match e {
                StoreError::Conflict(_) => {
                    ApiError::conflict("project_exists", format!("a project named `{name}` already exists"))
                }
                other => ApiError::store(other),
            })?;
            caller.audit(&state, "projects:create", Some(&p.id), Some(&p.id), "success", Some(name)).await;
            Ok(json::data(StatusCode::CREATED, views::project(&p)))
        }
        .await,
    )
}

/// `GET /v1/projects`: the admin sees all; a key its org's (or its one
/// project, when restricted).
pub async fn list_projects(State(state): State<AppState>, caller: Caller) -> Response {
    respond(
        async {
            caller.authorize(&state, "projects:read", caller.restricted_to(), "projects").await?;
            let mut list = state.store.list_projects(caller.org().map(String::from)).await.map_err(ApiError::store)?;
            if let Some(p) = caller.restricted_to() {
                list.retain(|x| x.id == p);
            }
            let items: Vec<_> = list.iter().map(views::project).collect();
            Ok(json::data(StatusCode::OK, json!({"items": items})))
        }
        .await,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a JSON object with `scopes`")]
struct KeyBody {
    /// Restrict the key to this project (id or name).
    project_id: Option<String>,
    scopes: Vec<String>,
    /// Lifetime in seconds.
    expires_in_secs: Option<u64>,
}

/// `POST /v1/keys` (admin): the full key is in this response only.
pub async fn create_key(
    State(state): State<AppState>,
    caller: Caller,
    b: Result<json::RequestBody, ApiError>,
) -> Response {
    respond(
        async {
            caller.require_admin(&state, "keys:create").await?;
            let b: KeyBody = body(b)?;
            if b.scopes.is_empty() {
                return Err(ApiError::unprocessable("invalid_scope", "a key needs at least one scope"));
            }
            for s in &b.scopes {
                state.auth.validate_scope(s).await.map_err(|e| ApiError::unprocessable("invalid_scope", e.message))?;
            }
            let (project, org) = match &b.project_id {
                Some(p) => {
                    let found = state.store.find_project(p.clone()).await.map_err(ApiError::store)?;
                    let found = found.ok_or_else(|| ApiError::not_found(format!("project {p}")))?;
                    (Some(found.id), found.org_id)
                }
                None => (None, caller.default_project(&state).await?.1),
            };
            let expires = match b.expires_in_secs {
                Some(s) if s == 0 || s > MAX_KEY_LIFETIME_SECS => {
                    return Err(ApiError::bad_request(
                        "invalid_request",
                        format!(
                            "`expiresInSecs` must be 1 to {MAX_KEY_LIFETIME_SECS} (10 years); omit it for a key that does not expire"
                        ),
                    ));
                }
                Some(s) => Some(now_ms().saturating_add(s * 1000)),
                None => None,
            };
            let mut scopes = b.scopes.clone();
            scopes.sort();
            scopes.dedup();
            let (info, full) = state
                .store
                .create_api_key(org, project.clone(), scopes.clone(), expires)
                .await
                .map_err(ApiError::store)?;
            caller
                .audit(&state, "keys:create", Some(&info.id), project.as_deref(), "success", Some(scopes.join(" ")))
                .await;
            let mut v = views::api_key(&info);
            v["key"] = json!(full);
            Ok(json::data(StatusCode::CREATED, v))
        }
        .await,
    )
}

/// `GET /v1/keys` (admin): records only, revoked ones included.
pub async fn list_keys(State(state): State<AppState>, caller: Caller) -> Response {
    respond(
        async {
            caller.require_admin(&state, "keys:read").await?;
            let keys = state.store.list_api_keys().await.map_err(ApiError::store)?;
            let items: Vec<_> = keys.iter().map(views::api_key).collect();
            Ok(json::data(StatusCode::OK, json!({"items": items})))
        }
        .await,
    )
}

/// `POST /v1/keys/{id}/revoke` or `DELETE /v1/keys/{id}` (admin): effective
/// for the very next request; the record stays as a tombstone.
pub async fn revoke_key(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    respond(
        async {
            caller.require_admin(&state, "keys:revoke").await?;
            let info = state.store.revoke_api_key(id.clone()).await.map_err(|e| match e {
                StoreError::NotFound => ApiError::not_found(format!("API key {id}")),
                other => ApiError::store(other),
            })?;
            caller.audit(&state, "keys:revoke", Some(&info.id), info.project_id.as_deref(), "success", None).await;
            Ok(json::data(StatusCode::OK, views::api_key(&info)))
        }
        .await,
    )
}

/// The longest a key may be created to live.
const MAX_KEY_LIFETIME_SECS: u64 = 10 * 365 * 24 * 3600;

/// The actions audit rows carry (besides `METHOD /path` for refused
/// anonymous requests).
const AUDIT_ACTIONS: &[&str] = &[
    "workspace_runs:create",
    "workspace_runs:read",
    "workspace_runs:start",
    "workspace_runs:cancel",
    "artifacts:read",
    "sandboxes:create",
    "sandboxes:read",
    "sandboxes:exec",
    "sandboxes:kill",
    "sandboxes:destroy",
    "usage:read",
    "audit:read",
    "projects:create",
    "projects:read",
    "keys:create",
    "keys:read",
    "keys:revoke",
];

/// An `action` filter: one the server records, or a refused anonymous
/// request's `METHOD /path`.
fn audit_action(q: &HashMap<String, String>) -> ApiResult<Option<String>> {
    let Some(a) = q.get("action") else { return Ok(None) };
    let anonymous =
        a.split_once(' ').is_some_and(|(m, p)| m.bytes().all(|b| b.is_ascii_uppercase()) && p.starts_with('/'));
    if anonymous || AUDIT_ACTIONS.contains(&a.as_str()) {
        return Ok(Some(a.clone()));
    }
    Err(ApiError::bad_request(
        "invalid_request",
        format!(
            "`action` `{a}` is not an action the server records; one of: {} (or `METHOD /path`)",
            AUDIT_ACTIONS.join(", ")
        ),
    ))
}

/// `since`/`until`: RFC 3339 (`2026-12-04T10:00:00Z`, or a date) or Unix
/// milliseconds.
fn time_arg(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<u64>> {
    let Some(v) = q.get(name) else { return Ok(None) };
    if let Ok(ms) = v.parse::<u64>() {
        return Ok(Some(ms));
    }
    crownest_core::runs::ids::parse_rfc3339(v).map(Some).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_request",
            format!("`{name}` must be an RFC 3339 time (2026-12-04T10:00:00Z, or 2026-12-04) or Unix milliseconds, got `{v}`"),
        )
    })
}

/// `YYYY-MM` (a `YYYY-MM-DD` date is taken as its month).
fn bucket_arg(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<String>> {
    let Some(v) = q.get(name) else { return Ok(None) };
    let month = v.get(..7).unwrap_or("");
    let ok = month.len() == 7
        && month.as_bytes()[4] == b'-'
        && month[..4].bytes().all(|b| b.is_ascii_digit())
        && matches!(month[5..].parse::<u32>(), Ok(1..=12))
        && (v.len() == 7 || (v.len() == 10 && v.as_bytes()[7] == b'-'));
    if !ok {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{name}` must be a billing month `YYYY-MM` (or a date `YYYY-MM-DD`), got `{v}`"),
        ));
    }
    Ok(Some(month.to_string()))
}

/// `GET /v1/usage?projectId=&from=&to=`: totals by bucket, pricing version
/// and project.
pub async fn usage(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let projects = scope_projects(&state, &caller, "usage:read", q.get("projectId")).await?;
            let (from, to) = (bucket_arg(&q, "from")?, bucket_arg(&q, "to")?);
            let only = projects.as_ref().filter(|p| p.len() == 1).map(|p| p[0].clone());
            let query = UsageQuery { project_id: only, from_bucket: from, to_bucket: to };
            let usage = state.metering.usage(&query).await.map_err(ApiError::plugin)?;
            let metered = usage.is_some();
            let mut rows = usage.unwrap_or_default();
            if let Some(ps) = &projects {
                rows.retain(|u| ps.contains(&u.project_id));
            }
            rows.sort_by(|a, b| (&a.bucket, &a.pricing_version, &a.project_id).cmp(&(&b.bucket, &b.pricing_version, &b.project_id)));
            let cus: u64 = rows.iter().map(|u| u.compute_unit_seconds).sum();
            let micro: u64 = rows.iter().map(|u| u.amount_micro_usd).sum();
            let items: Vec<_> = rows.iter().map(views::usage).collect();
            Ok(json::data(
                StatusCode::OK,
                json!({"items": items, "totals": {"computeUnitSeconds": cus, "amountMicroUsd": micro, "amountUsd": views::usd(micro)}, "metered": metered}),
            ))
        }
        .await,
    )
}

/// `GET /v1/audit-events?projectId=&action=&actor=&outcome=&target=&since=&until=&limit=&cursor=`
/// (newest first; `since`/`until` as RFC 3339 or Unix milliseconds).
pub async fn audit_events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    respond(
        async {
            let projects = scope_projects(&state, &caller, "audit:read", q.get("projectId")).await?;
            let before = match q.get("cursor") {
                None => None,
                Some(c) => Some(c.parse::<i64>().map_err(|_| {
                    ApiError::bad_request("invalid_cursor", format!("`cursor` `{c}` is not a cursor this API returned"))
                })?),
            };
            let filter = AuditFilter {
                // The admin and unrestricted keys also see org-level events
                // (no project), restricted keys only their project's.
                project_ids: if caller.restricted_to().is_some() || q.contains_key("projectId") {
                    projects
                } else {
                    None
                },
                org_id: caller.org().map(String::from),
                action: audit_action(&q)?,
                actor: q.get("actor").cloned(),
                outcome: q.get("outcome").cloned(),
                target: q.get("target").cloned(),
                since_ms: time_arg(&q, "since")?,
                until_ms: time_arg(&q, "until")?,
                before,
                limit: number(&q, "limit")?.unwrap_or(100).clamp(1, 1000) as u32,
            };
            let (events, next) = state.store.list_audit(filter).await.map_err(ApiError::store)?;
            let items: Vec<_> = events.iter().map(views::audit_event).collect();
            Ok(json::data(StatusCode::OK, json!({"items": items, "nextCursor": next.map(|n| n.to_string())})))
        }
        .await,
    )
}
