//! Create, read, list, start, cancel, evidence.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crownest_core::runs::ids::new_id;
use crownest_core::runs::model::{ArtifactSpec, Event, RunSpec, RunStatus};
use crownest_core::runs::store::ListFilter;
use serde::Deserialize;
use serde_json::json;

use super::{number, scope_projects, visible_run};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{idempotency, json, views};

#[derive(Deserialize, Clone)]
#[serde(untagged, expecting = "an artifact: a path string, or an object {\"path\", \"name\"?}")]
enum ArtifactArg {
    Path(String),
    Spec { path: String, name: Option<String> },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a JSON object with at least `command`")]
struct CreateBody {
    command: String,
    template: Option<String>,
    project_id: Option<String>,
    sandbox_id: Option<String>,
    #[serde(default)]
    keep_sandbox: bool,
    timeout_ms: Option<u64>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
    #[serde(default)]
    artifacts: Vec<ArtifactArg>,
    #[serde(default)]
    auto_start: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Values never shown, logged or kept in evidence.
    #[serde(default)]
    secret_env: BTreeMap<String, String>,
    #[serde(default)]
    require_artifacts: bool,
    #[serde(default)]
    strict_archive: bool,
}

const DEFAULT_TEMPLATE: &str = "python-node";
/// Environment variables a run may set, in all (plain and secret).
const MAX_ENV_VARS: usize = 128;
/// Bytes of names and values together.
const MAX_ENV_BYTES: usize = 256 * 1024;

/// Environment variables must be names a shell can export, of reasonable
/// size, with no NUL; `CROWNEST_*` is the host's own; a name is plain or
/// secret, not both.
fn validate_env(env: &BTreeMap<String, String>, secret: &BTreeMap<String, String>) -> ApiResult<()> {
    if env.len() + secret.len() > MAX_ENV_VARS {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("at most {MAX_ENV_VARS} environment variables (`env` and `secretEnv` together)"),
        ));
    }
    let total: usize = env.iter().chain(secret.iter()).map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_ENV_BYTES {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("environment variables take {total} bytes; at most {MAX_ENV_BYTES}"),
        ));
    }
    for (field, map) in [("env", env), ("secretEnv", secret)] {
        for (k, v) in map {
            let mut b = k.bytes();
            let shell_name = matches!(b.next(), Some(c) if c == b'_' || c.is_ascii_alphabetic())
                && b.all(|c| c == b'_' || c.is_ascii_alphanumeric());
            if !shell_name || k.len() > 128 {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!(
                        "`{field}`: `{}` is not a variable name ([A-Za-z_][A-Za-z0-9_]*, up to 128 bytes)",
                        k.escape_debug()
                    ),
                ));
            }
            if k.starts_with("CROWNEST_") {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("`{field}`: `{k}`: names starting with CROWNEST_ are set by CrowNest itself"),
                ));
            }
            if v.contains('\0') {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    format!("`{field}`: the value of `{k}` contains a NUL byte"),
                ));
            }
        }
    }
    if let Some(k) = env.keys().find(|k| secret.contains_key(*k)) {
        return Err(ApiError::bad_request(
            "invalid_request",
            format!("`{k}` is in both `env` and `secretEnv`; give it once"),
        ));
    }
    Ok(())
}

fn validate_artifacts(args: Vec<ArtifactArg>) -> ApiResult<Vec<ArtifactSpec>> {
    if args.len() > 64 {
        return Err(ApiError::bad_request("invalid_request", "at most 64 artifacts may be declared"));
    }
    let mut out: Vec<ArtifactSpec> = Vec::new();
    for a in args {
        let (path, name) = match a {
            ArtifactArg::Path(p) => (p, None),
            ArtifactArg::Spec { path, name } => (path, name),
        };
        let rel = path.strip_prefix("/workspace/").unwrap_or(&path);
        if path.is_empty() || rel.starts_with('/') || rel.split('/').any(|c| c == "..") || path.contains('\0') {
            return Err(ApiError::unprocessable(
                "invalid_artifact_path",
                format!(
                    "artifact path `{path}` must be inside /workspace (absolute under it, or relative) without `..`"
                ),
            ));
        }
        let name = name.unwrap_or_else(|| rel.rsplit('/').next().unwrap_or(rel).to_string());
        // Names are labels (stores key artifacts by id): any printable
        // text, so `test report.html` or `résumé.pdf` are fine.
        if name.is_empty()
            || name.len() > 255
            || name == "."
            || name == ".."
            || name.chars().any(|c| c.is_control() || c == '/')
        {
            return Err(ApiError::unprocessable(
                "invalid_artifact_name",
                format!(
                    "artifact name `{}` must be 1 to 255 bytes of printable characters without `/`, and not `.` or `..`",
                    name.escape_debug()
                ),
            ));
        }
        if out.iter().any(|o| o.name == name) {
            return Err(ApiError::unprocessable(
                "invalid_artifact_name",
                format!("artifact name `{name}` is declared twice"),
            ));
        }
        out.push(ArtifactSpec { path: format!("/workspace/{rel}"), name });
    }
    Ok(out)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<json::RequestBody, ApiError>,
) -> Response {
    let body = match body {
        Ok(b) => b.0,
        Err(e) => return e.into_response(),
    };
    let parsed: CreateBody = match json::parse(&body) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (project, org) = match caller.project(&state, parsed.project_id.as_deref()).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if let Err(e) =
        caller.authorize(&state, "workspace_runs:create", Some(&project), &format!("project {project}")).await
    {
        return e.into_response();
    }
    let key = match idempotency::key(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    // The same request in another key order or spacing is the same request.
    let hash = idempotency::hash(&[&json::canonical(&body)]);
    let artifacts = validate_artifacts(parsed.artifacts);
    idempotency::once(&state, &project, "create", key, hash, async |slot: Option<idempotency::Slot>| {
        let command = parsed.command.trim();
        if command.is_empty() {
            return Err(ApiError::bad_request("invalid_request", "`command` must not be empty"));
        }
        if parsed.command.contains('\0') {
            return Err(ApiError::bad_request("invalid_request", "`command` must not contain NUL bytes"));
        }
        if parsed.command.len() > 64 * 1024 {
            return Err(ApiError::bad_request("invalid_request", "`command` is longer than 64 KiB"));
        }
        let template = parsed.template.clone().unwrap_or_else(|| DEFAULT_TEMPLATE.into());
        match state.templates.iter().find(|t| t.name == template) {
            None => {
                let names: Vec<&str> = state.templates.iter().map(|t| t.name.as_str()).collect();
                return Err(ApiError::unprocessable(
                    "unknown_template",
                    format!("unknown template `{template}`; available: {}", names.join(", ")),
                ));
            }
            Some(t) if !t.usable => {
                return Err(ApiError::unprocessable(
                    "template_unavailable",
                    format!(
                        "template `{template}` is not usable on this server: {}",
                        t.unusable_reason.clone().unwrap_or_default()
                    ),
                ));
            }
            Some(_) => {}
        }
        if let Some(sbx) = &parsed.sandbox_id {
            reusable_sandbox(&state, sbx, &project).await?;
        }
        if let Some(t) = parsed.timeout_ms
            && (t == 0 || t > state.limits.max_timeout_ms)
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("`timeoutMs` must be 1 to {}", state.limits.max_timeout_ms),
            ));
        }
        if parsed.metadata.len() > 64
            || parsed.metadata.iter().any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
        {
            return Err(ApiError::bad_request(
                "invalid_request",
                "`metadata`: at most 64 entries, keys 1-128 bytes, values up to 1024 bytes",
            ));
        }
        validate_env(&parsed.env, &parsed.secret_env)?;
        let spec = RunSpec {
            env: parsed.env.clone(),
            secret_env: parsed.secret_env.keys().cloned().collect(),
            require_artifacts: parsed.require_artifacts,
            strict_archive: parsed.strict_archive,
            command: parsed.command.clone(),
            template,
            sandbox_id: parsed.sandbox_id.clone(),
            keep_sandbox: parsed.keep_sandbox,
            timeout_ms: parsed.timeout_ms,
            metadata: parsed.metadata.clone(),
            artifacts: artifacts.clone()?,
            auto_start: parsed.auto_start,
        };
        let respond = slot.map(|s| s.respond(StatusCode::CREATED, views::run));
        let run = state
            .store
            .create_run(new_id("wsr"), org.clone(), project.clone(), spec, parsed.secret_env.clone(), respond)
            .await
            .map_err(ApiError::store)?;
        tracing::info!(run_id = %run.id, project_id = %run.project_id, "run created");
        caller.audit(&state, "workspace_runs:create", Some(&run.id), Some(&run.project_id), "success", None).await;
        Ok((StatusCode::CREATED, views::run(&run)))
    })
    .await
}

/// A run may name a sandbox a run of its project kept, and no other: a
/// destroyed one is 409 `sandbox_destroyed`, one its run does not keep is
/// 409 `sandbox_not_kept`, one that does not exist (or is another
/// project's) is 404, all at create rather than when the run starts.
async fn reusable_sandbox(state: &AppState, sbx: &str, project: &str) -> ApiResult<()> {
    if let Some((_, reason)) = state.store.sandbox_tombstone(sbx.to_string()).await.map_err(ApiError::store)? {
        return Err(ApiError::conflict(
            "sandbox_destroyed",
            format!("sandbox {sbx} was destroyed ({reason}); create the run without `sandboxId` to get a new one"),
        ));
    }
    let owner = state.store.sandbox_owner(sbx.to_string()).await.map_err(ApiError::store)?;
    let Some((_, owner_project, owner_run)) = owner.filter(|(_, p, _)| p == project) else {
        return Err(ApiError::not_found(format!("sandbox {sbx}")));
    };
    let run = state.store.get_run(owner_run.clone()).await.map_err(ApiError::store)?;
    if !run.spec.keep_sandbox {
        return Err(ApiError::conflict(
            "sandbox_not_kept",
            format!(
                "sandbox {sbx} belongs to run {owner_run} (project {owner_project}), which does not keep it: \
                 it is destroyed when that run ends. Runs that want to reuse a sandbox create it with `keepSandbox`"
            ),
        ));
    }
    Ok(())
}

pub async fn get(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    match visible_run(&state, &caller, &id, "workspace_runs:read").await {
        Ok(run) => json::data(StatusCode::OK, views::run(&run)),
        Err(e) => e.into_response(),
    }
}

pub async fn list(State(state): State<AppState>, caller: Caller, Query(q): Query<HashMap<String, String>>) -> Response {
    let r: ApiResult<Response> = async {
        let status = q
            .get("status")
            .map(|s| s.parse::<RunStatus>().map_err(|e| ApiError::bad_request("invalid_request", e)))
            .transpose()?;
        let limit = number(&q, "limit")?.unwrap_or(50).clamp(1, 200) as u32;
        let project_ids = scope_projects(&state, &caller, "workspace_runs:read", q.get("projectId")).await?;
        let (runs, next) = state
            .store
            .list_runs(ListFilter { project_ids, status, cursor: q.get("cursor").cloned(), limit })
            .await
            .map_err(|e| match e {
                crownest_core::runs::store::StoreError::Conflict(m) => ApiError::bad_request("invalid_cursor", m),
                other => ApiError::store(other),
            })?;
        let items: Vec<_> = runs.iter().map(views::run).collect();
        Ok(json::data(StatusCode::OK, json!({"items": items, "nextCursor": next})))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Would the meter admit this run's sandbox now (plan limits, caps)? A
/// refusal is audited as a denied start.
async fn admission_precheck(state: &AppState, caller: &Caller, run: &crownest_core::runs::Run) -> ApiResult<()> {
    let r = meter_admits(state, run).await;
    if let Err(e) = &r {
        caller
            .audit(
                state,
                "workspace_runs:start",
                Some(&run.id),
                Some(&run.project_id),
                "denied",
                Some(e.message.clone()),
            )
            .await;
    }
    r
}

async fn meter_admits(state: &AppState, run: &crownest_core::runs::Run) -> ApiResult<()> {
    let m = &state.metering;
    if !m.enabled() {
        return Ok(());
    }
    if run.spec.sandbox_id.as_ref().is_some_and(|s| m.lease(s).is_some()) {
        return Ok(()); // reuses a sandbox that already exists
    }
    let queued = state.store.queued_runs(run.org_id.clone()).await.map_err(ApiError::store)?;
    let pending = queued
        .iter()
        .filter(|(id, reuse)| {
            id != &run.id && reuse.is_none() && m.lease(&crownest_core::runs::ids::sandbox_id_for_run(id)).is_none()
        })
        .count() as u32;
    m.precheck(&run.org_id, &run.project_id, &run.spec.template, pending).await.map_err(|e| {
        if e.kind == crownest_core::ErrorKind::QuotaExceeded {
            ApiError::new(StatusCode::TOO_MANY_REQUESTS, "quota_exceeded", e.message)
        } else {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "metering_unavailable",
                format!("the meter could not admit this run: {}", e.message),
            )
        }
    })
}

pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let run = match visible_run(&state, &caller, &id, "workspace_runs:create").await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let key = match idempotency::key(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    // Refused before anything starts, and not remembered under the
    // idempotency key: the same request may succeed once there is room.
    if run.status == RunStatus::AwaitingArchive
        && run.archive.is_some()
        && !run.cancel_requested
        && let Err(e) = admission_precheck(&state, &caller, &run).await
    {
        return e.into_response();
    }
    let hash = idempotency::hash(&[id.as_bytes()]);
    idempotency::once(&state, &run.project_id.clone(), "start", key, hash, async |_| {
        if run.cancel_requested || run.status.is_terminal() {
            return Ok((StatusCode::OK, views::run(&run)));
        }
        let (run, queued_now) = queue(&state, &caller, &id).await?;
        Ok((if queued_now { StatusCode::ACCEPTED } else { StatusCode::OK }, views::run(&run)))
    })
    .await
}

/// Queue a run whose archive is in place and hand it to the executor;
/// `false` when it was already queued or further along.
async fn queue(state: &AppState, caller: &Caller, id: &str) -> ApiResult<(crownest_core::runs::Run, bool)> {
    let (run, queued) = state.store.queue_run(id.to_string()).await.map_err(|e| match e {
        crownest_core::runs::store::StoreError::Conflict(_) => ApiError::conflict(
            "archive_missing",
            format!("workspace run {id} has no archive yet: upload one (directly or through a staged transfer) before starting it"),
        ),
        other => ApiError::store(other),
    })?;
    let queued_now = queued.is_some();
    if let Some(e) = queued {
        started(state, caller, &run, e).await;
    }
    Ok((run, queued_now))
}

/// After the transaction that queued `run` (its `status` event `e`): hand
/// it to the executor.
pub(crate) async fn started(state: &AppState, caller: &Caller, run: &crownest_core::runs::Run, e: Event) {
    tracing::debug!(run_id = %run.id, "step: queued");
    state.executor.hub().notify(&run.id, e.seq);
    state.executor.spawn(run.id.clone());
    caller.audit(state, "workspace_runs:start", Some(&run.id), Some(&run.project_id), "success", None).await;
}

/// Why the meter would refuse to start `run` now, as `autoStartError`'s
/// code and message; `None` when it may start.
pub(crate) async fn auto_start_refusal(
    state: &AppState,
    caller: &Caller,
    run: &crownest_core::runs::Run,
) -> Option<(String, String)> {
    let refusal = admission_precheck(state, caller, run).await.err().map(|e| (e.code, e.message));
    tracing::debug!(run_id = %run.id, "step: admission checked");
    refusal
}

pub async fn cancel(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let r: ApiResult<Response> = async {
        let run = visible_run(&state, &caller, &id, "workspace_runs:cancel").await?;
        if run.status.is_terminal() {
            return Ok(json::data(StatusCode::OK, views::run(&run)));
        }
        let run = state.store.request_cancel(id.clone()).await.map_err(ApiError::store)?;
        caller.audit(&state, "workspace_runs:cancel", Some(&id), Some(&run.project_id), "success", None).await;
        state.executor.cancel(&run).await;
        // Give a running command its chance to stop before answering.
        for _ in 0..20 {
            let now = state.store.get_run(id.clone()).await.map_err(ApiError::store)?;
            if now.status.is_terminal() || now.status == RunStatus::Running {
                return Ok(json::data(StatusCode::ACCEPTED, views::run(&now)));
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        let now = state.store.get_run(id.clone()).await.map_err(ApiError::store)?;
        Ok(json::data(StatusCode::ACCEPTED, views::run(&now)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

pub async fn evidence(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Response {
    let r: ApiResult<Response> = async {
        let run = visible_run(&state, &caller, &id, "workspace_runs:read").await?;
        let Some((bytes, sha)) = state.store.get_evidence(id.clone()).await.map_err(ApiError::store)? else {
            return Err(ApiError::conflict(
                "evidence_not_ready",
                format!(
                    "workspace run {id} is {}; its Evidence Bundle is written when it reaches a terminal state",
                    run.status
                ),
            ));
        };
        // The stored bytes go out unchanged inside the envelope.
        let mut body = Vec::with_capacity(bytes.len() + 10);
        body.extend_from_slice(b"{\"data\":");
        body.extend_from_slice(&bytes);
        body.push(b'}');
        let mut resp = json::raw(StatusCode::OK, body);
        resp.headers_mut().insert("x-evidence-sha256", sha.parse().map_err(|_| ApiError::internal("bad digest"))?);
        Ok(resp)
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}
