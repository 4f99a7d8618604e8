//! Who is calling and what they may do.
//!
//! Every request carries `Authorization: Bearer <token>`: an API key
//! (`cn_live_…`) or the admin token. The host verifies the credential (keyed
//! hash, constant-time comparison, revocation, expiry) and loads its record;
//! unknown, revoked, expired and wrong keys all get the same 401. Whether the
//! caller may do an action on a project is the auth scoper plugin's decision
//! (`allow`, `deny` → 403 naming the scope, `conceal` → 404). Key management
//! is the host's own rule on top: only the admin credential manages keys,
//! whatever a plugin says.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use crownest_core::ports::{AuthRequest, Decision, Principal, PrincipalKind};
use crownest_core::runs::store::{ApiKeyRecord, AuditEvent};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The request id the middleware assigned (also in every error body).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The kind of credential.
#[derive(Debug, Clone)]
pub enum Who {
    Admin,
    Key(ApiKeyRecord),
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: Who,
    pub request_id: String,
    /// The client's address, as audit rows record it.
    pub client_ip: Option<String>,
}

impl Caller {
    /// `admin` or `key_<id>`: how audit events name the caller.
    pub fn actor(&self) -> String {
        match &self.who {
            Who::Admin => "admin".into(),
            Who::Key(k) => format!("key_{}", k.id),
        }
    }

    /// The caller's organization (`None` for the admin, who spans them).
    pub fn org(&self) -> Option<&str> {
        match &self.who {
            Who::Admin => None,
            Who::Key(k) => Some(&k.org_id),
        }
    }

    /// The project a key is restricted to.
    pub fn restricted_to(&self) -> Option<&str> {
        match &self.who {
            Who::Admin => None,
            Who::Key(k) => k.project_id.as_deref(),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.who, Who::Admin)
    }

    fn principal(&self) -> Principal {
        match &self.who {
            Who::Admin => Principal {
                kind: PrincipalKind::Admin,
                id: "admin".into(),
                org_id: String::new(),
                project_id: None,
                scopes: vec![],
            },
            Who::Key(k) => Principal {
                kind: PrincipalKind::ApiKey,
                id: format!("key_{}", k.id),
                org_id: k.org_id.clone(),
                project_id: k.project_id.clone(),
                scopes: k.scopes.clone(),
            },
        }
    }

    /// May the caller do `action` (on `project`, when the target has one)?
    /// `what` names the target for a concealing 404. A refusal is audited.
    pub async fn authorize(&self, state: &AppState, action: &str, project: Option<&str>, what: &str) -> ApiResult<()> {
        let request =
            AuthRequest { principal: self.principal(), action: action.into(), project_id: project.map(String::from) };
        let decision = state.auth.authorize(&request).await.map_err(|e| {
            tracing::error!(request_id = %self.request_id, action, "auth scoper failed: {}", e.message);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "authorization_unavailable",
                format!("the auth scoper plugin could not decide this request: {}", e.message),
            )
        })?;
        let refusal = match decision {
            Decision::Allow => return Ok(()),
            Decision::Deny(reason) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", reason),
            Decision::Conceal(_) => ApiError::not_found(what),
        };
        self.audit_denied(state, action, project, &refusal).await;
        Err(refusal)
    }

    /// Only the admin credential may do this (key management): no API key,
    /// whatever its scopes, and whatever the auth plugin would say.
    pub async fn require_admin(&self, state: &AppState, action: &str) -> ApiResult<()> {
        if self.is_admin() {
            return Ok(());
        }
        let refusal = ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("`{action}` needs the admin credential; API keys cannot manage keys or projects"),
        );
        self.audit_denied(state, action, None, &refusal).await;
        Err(refusal)
    }

    async fn audit_denied(&self, state: &AppState, action: &str, project: Option<&str>, refusal: &ApiError) {
        self.audit(state, action, None, project, "denied", Some(format!("{}: {}", refusal.code, refusal.message)))
            .await;
    }

    /// Record an audit event for this caller.
    pub async fn audit(
        &self,
        state: &AppState,
        action: &str,
        target: Option<&str>,
        project: Option<&str>,
        outcome: &str,
        detail: Option<String>,
    ) {
        let e = AuditEvent {
            org_id: self.org().map(String::from),
            actor: self.actor(),
            action: action.into(),
            target: target.map(String::from),
            project_id: project.map(String::from),
            request_id: Some(self.request_id.clone()),
            outcome: outcome.into(),
            detail,
            client_ip: self.client_ip.clone(),
            ..AuditEvent::default()
        };
        if let Err(e) = state.store.audit(e).await {
            tracing::error!(request_id = %self.request_id, action, "cannot write an audit event: {e}");
        }
    }

    /// The project a request without `projectId` refers to: the key's own,
    /// else the first project of the caller's org.
    pub async fn default_project(&self, state: &AppState) -> ApiResult<(String, String)> {
        if let Who::Key(k) = &self.who
            && let Some(p) = &k.project_id
        {
            return Ok((p.clone(), k.org_id.clone()));
        }
        let projects = state.store.list_projects(self.org().map(String::from)).await.map_err(ApiError::store)?;
        projects
            .first()
            .map(|p| (p.id.clone(), p.org_id.clone()))
            .ok_or_else(|| ApiError::bad_request("invalid_request", "no project exists; pass projectId"))
    }

    /// Resolve an explicit or default project inside the caller's org:
    /// (project, org). Another org's project is a 404.
    pub async fn project(&self, state: &AppState, requested: Option<&str>) -> ApiResult<(String, String)> {
        let Some(p) = requested else { return self.default_project(state).await };
        // An id or, as `keys create --project` takes, a name.
        let found = state.store.find_project_in(self.org().map(String::from), p.to_string()).await;
        match found.map_err(ApiError::store)? {
            Some(project) => Ok((project.id, project.org_id)),
            None => Err(ApiError::not_found(format!("project {p}"))),
        }
    }

    /// Whether a target in `org` exists for this caller (other orgs are
    /// invisible, before any scope question).
    pub fn same_org(&self, org: &str) -> bool {
        self.org().is_none_or(|o| o == org)
    }
}

/// The client's address: the connection's peer, or, when the peer is a
/// trusted proxy, the address it forwarded for.
fn client_ip(parts: &Parts, state: &AppState) -> Option<String> {
    let peer = parts.extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()?.0.ip();
    let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    Some(state.trusted_proxies.client(peer, forwarded).to_string())
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
        let request_id = parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default();
        let client_ip = client_ip(parts, state);
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim);
        let who = match token {
            Some(t) if t.starts_with("cn_admin_") => {
                state.store.verify_admin(t.to_string()).await.map_err(ApiError::store)?.then_some(Who::Admin)
            }
            Some(t) => state.store.verify_api_key(t.to_string()).await.map_err(ApiError::store)?.map(Who::Key),
            None => None,
        };
        match who {
            Some(who) => Ok(Caller { who, request_id, client_ip }),
            None => {
                // Audited without the token: only which key id it claimed.
                let claimed = token
                    .and_then(|t| t.strip_prefix("cn_live_"))
                    .and_then(|rest| rest.split_once('_'))
                    .map(|(id, _)| format!("claimed key_{}", id.chars().take(32).collect::<String>()));
                let action = format!("{} {}", parts.method, parts.uri.path());
                let detail = format!("unauthorized{}", claimed.map(|c| format!(" ({c})")).unwrap_or_default());
                // A probe or a scanner repeats itself: one row per minute
                // for the same refusal, counting the ones in between.
                if let Some(repeats) = crate::denials::admit(&action, &detail) {
                    let detail = if repeats > 0 {
                        format!("{detail}; {repeats} more like it in the minute before")
                    } else {
                        detail
                    };
                    let e = AuditEvent {
                        actor: "anonymous".into(),
                        action,
                        request_id: Some(request_id),
                        outcome: "denied".into(),
                        detail: Some(detail),
                        client_ip,
                        ..AuditEvent::default()
                    };
                    let _ = state.store.audit(e).await;
                }
                Err(unauthorized())
            }
        }
    }
}
