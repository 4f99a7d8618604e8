//! The control plane's records: projects, API key management and the audit
//! trail. Key verification itself lives in `auth.rs`.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::auth::{hmac_of, new_key};
use super::{Result, Store, StoreError};
use crate::runs::ids::{new_id, now_ms};

/// A project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub created_at_ms: u64,
}

/// What is shown about a key (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyInfo {
    /// `key_<id>`.
    pub id: String,
    pub org_id: String,
    pub project_id: Option<String>,
    pub scopes: Vec<String>,
    pub created_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

/// One audit event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditEvent {
    pub id: String,
    pub at_ms: u64,
    pub org_id: Option<String>,
    /// `admin`, `key_<id>`, `anonymous` or `system`.
    pub actor: String,
    /// `resource:action`, e.g. `workspace_runs:create`.
    pub action: String,
    /// The id acted on, when there is one.
    pub target: Option<String>,
    pub project_id: Option<String>,
    pub request_id: Option<String>,
    /// `success`, `denied` or `failed`.
    pub outcome: String,
    pub detail: Option<String>,
    /// The client's address (the peer, or the address a trusted proxy
    /// forwarded for), when a request caused the event.
    pub client_ip: Option<String>,
}

/// Filters of an audit listing; newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only these projects (`None`: any).
    pub project_ids: Option<Vec<String>>,
    pub org_id: Option<String>,
    pub action: Option<String>,
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub target: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
    /// Events older than this cursor (an opaque row number).
    pub before: Option<i64>,
    pub limit: u32,
}

fn key_info(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKeyInfo> {
    let scopes: String = r.get(3)?;
    Ok(ApiKeyInfo {
        id: format!("key_{}", r.get::<_, String>(0)?),
        org_id: r.get(1)?,
        project_id: r.get(2)?,
        scopes: serde_json::from_str(&scopes).unwrap_or_default(),
        created_at_ms: r.get::<_, i64>(4)? as u64,
        expires_at_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
        revoked_at_ms: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
    })
}

const KEY_COLUMNS: &str = "id, org_id, project_id, scopes, created_at, expires_at, revoked_at";

impl Store {
    /// Create a project in `org_id`; `Conflict("project_exists")` when the
    /// name is taken.
    pub async fn create_project(&self, org_id: String, name: String) -> Result<Project> {
        self.with(move |conn| {
            let p = Project { id: new_id("prj"), org_id, name, created_at_ms: now_ms() };
            match conn.execute(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![p.id, p.org_id, p.name, p.created_at_ms as i64],
            ) {
                Ok(_) => Ok(p),
                Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => {
                    Err(StoreError::Conflict("project_exists".into()))
                }
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// Projects, oldest first; only `org_id`'s when given.
    pub async fn list_projects(&self, org_id: Option<String>) -> Result<Vec<Project>> {
        self.with(move |conn| {
            let mut st = conn.prepare(
                "SELECT id, org_id, name, created_at FROM projects WHERE ?1 IS NULL OR org_id = ?1 ORDER BY created_at, id",
            )?;
            let rows = st.query_map(params![org_id], |r| {
                Ok(Project { id: r.get(0)?, org_id: r.get(1)?, name: r.get(2)?, created_at_ms: r.get::<_, i64>(3)? as u64 })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// The project with this id or name (ids win).
    pub async fn find_project(&self, id_or_name: String) -> Result<Option<Project>> {
        self.find_project_in(None, id_or_name).await
    }

    /// A project by id or name, within `org` when given (names are unique
    /// per organization, not across them).
    pub async fn find_project_in(&self, org: Option<String>, id_or_name: String) -> Result<Option<Project>> {
        self.with(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT id, org_id, name, created_at FROM projects WHERE (id = ?1 OR name = ?1) \
                     AND (?2 IS NULL OR org_id = ?2) ORDER BY id = ?1 DESC LIMIT 1",
                    params![id_or_name, org],
                    |r| {
                        Ok(Project {
                            id: r.get(0)?,
                            org_id: r.get(1)?,
                            name: r.get(2)?,
                            created_at_ms: r.get::<_, i64>(3)? as u64,
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    /// Create an API key; returns its record and the full key, which is not
    /// stored anywhere (only a keyed hash of its secret is).
    pub async fn create_api_key(
        &self,
        org_id: String,
        project_id: Option<String>,
        scopes: Vec<String>,
        expires_at_ms: Option<u64>,
    ) -> Result<(ApiKeyInfo, String)> {
        self.with(move |conn| {
            let secret = Store::server_secret(conn)?;
            let (full, id, key_secret) = new_key();
            conn.execute(
                "INSERT INTO api_keys (id, org_id, project_id, hash, scopes, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    org_id,
                    project_id,
                    hmac_of(&secret, key_secret.as_bytes()),
                    serde_json::to_string(&scopes).unwrap(),
                    now_ms() as i64,
                    expires_at_ms.map(|v| v as i64)
                ],
            )?;
            let info = conn.query_row(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                params![id],
                key_info,
            )?;
            Ok((info, full))
        })
        .await
    }

    /// Every key, newest first (revoked ones included: they are tombstones).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKeyInfo>> {
        self.with(|conn| {
            let mut st = conn.prepare(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at DESC, id"))?;
            let rows = st.query_map([], key_info)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    /// Revoke a key (`key_<id>`); revoking a revoked key keeps its first
    /// revocation time. The record stays as a tombstone.
    pub async fn revoke_api_key(&self, key_id: String) -> Result<ApiKeyInfo> {
        let raw = key_id.strip_prefix("key_").unwrap_or(&key_id).to_string();
        let store = self.clone();
        let forget = raw.clone();
        let info = self
            .with(move |conn| {
                let n = conn.execute(
                    "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
                    params![raw, now_ms() as i64],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound);
                }
                Ok(conn.query_row(
                    &format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
                    params![raw],
                    key_info,
                )?)
            })
            .await;
        // Under the same call: the very next request with the key is refused.
        store.forget_key(&forget);
        info
    }

    /// Append an audit event (never updated or deleted afterwards). Its
    /// commit does not wait for the disk: the next full commit (a state
    /// change, an event) carries it there, WAL being sequential; only a
    /// power failure before that could lose it, never a process crash.
    pub async fn audit(&self, mut e: AuditEvent) -> Result<AuditEvent> {
        self.with_relaxed(move |conn| {
            if e.id.is_empty() {
                e.id = new_id("aud");
            }
            if e.at_ms == 0 {
                e.at_ms = now_ms();
            }
            conn.execute(
                "INSERT INTO audit_events (id, at, org_id, actor, action, target, project_id, request_id, outcome, detail, client_ip) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![e.id, e.at_ms as i64, e.org_id, e.actor, e.action, e.target, e.project_id, e.request_id, e.outcome, e.detail, e.client_ip],
            )?;
            Ok(e)
        })
        .await
    }

    /// A page of audit events, newest first, and the cursor of the next page.
    pub async fn list_audit(&self, f: AuditFilter) -> Result<(Vec<AuditEvent>, Option<i64>)> {
        self.with(move |conn| {
            let mut sql = String::from(
                "SELECT rowid, id, at, org_id, actor, action, target, project_id, request_id, outcome, detail, client_ip FROM audit_events WHERE 1=1",
            );
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut add = |cond: &str, v: rusqlite::types::Value| {
                args.push(v);
                sql.push_str(&format!(" AND {cond} ?{}", args.len()));
            };
            use rusqlite::types::Value as V;
            if let Some(o) = f.org_id {
                add("org_id =", V::Text(o));
            }
            if let Some(a) = f.action {
                add("action =", V::Text(a));
            }
            if let Some(a) = f.actor {
                add("actor =", V::Text(a));
            }
            if let Some(o) = f.outcome {
                add("outcome =", V::Text(o));
            }
            if let Some(t) = f.target {
                add("target =", V::Text(t));
            }
            if let Some(s) = f.since_ms {
                add("at >=", V::Integer(s as i64));
            }
            if let Some(u) = f.until_ms {
                add("at <", V::Integer(u as i64));
            }
            if let Some(b) = f.before {
                add("rowid <", V::Integer(b));
            }
            if let Some(ps) = &f.project_ids {
                let marks: Vec<String> = (1..=ps.len()).map(|i| format!("?{}", args.len() + i)).collect();
                args.extend(ps.iter().cloned().map(V::Text));
                let list = if marks.is_empty() { "NULL".to_string() } else { marks.join(",") };
                sql.push_str(&format!(" AND project_id IN ({list})"));
            }
            let limit = f.limit.clamp(1, 1000);
            sql.push_str(&format!(" ORDER BY rowid DESC LIMIT {}", limit + 1));
            let mut st = conn.prepare(&sql)?;
            let mut rows: Vec<(i64, AuditEvent)> = st
                .query_map(rusqlite::params_from_iter(args), |r| {
                    Ok((
                        r.get(0)?,
                        AuditEvent {
                            id: r.get(1)?,
                            at_ms: r.get::<_, i64>(2)? as u64,
                            org_id: r.get(3)?,
                            actor: r.get(4)?,
                            action: r.get(5)?,
                            target: r.get(6)?,
                            project_id: r.get(7)?,
                            request_id: r.get(8)?,
                            outcome: r.get(9)?,
                            detail: r.get(10)?,
                            client_ip: r.get(11)?,
                        },
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let next = if rows.len() > limit as usize {
                rows.truncate(limit as usize);
                rows.last().map(|(rowid, _)| *rowid)
            } else {
                None
            };
            Ok((rows.into_iter().map(|(_, e)| e).collect(), next))
        })
        .await
    }
}
