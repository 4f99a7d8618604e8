//! Runs and their artifacts. Every status change is a compare-and-set.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, Row, params};

use super::{RecordResponse, Result, Store, StoreError};
use crate::runs::ids::now_ms;
use crate::runs::model::{ArchiveInfo, Event, EventType, Run, RunSpec, RunStatus};

/// A kept artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactRecord {
    pub id: String,
    pub run_id: String,
    pub project_id: String,
    pub name: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// Name of the artifact store plugin that holds it.
    pub store: String,
    pub locator: String,
    pub created_at_ms: u64,
}

/// Filters of `list_runs`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub project_ids: Option<Vec<String>>,
    pub status: Option<RunStatus>,
    /// Opaque cursor from the previous page.
    pub cursor: Option<String>,
    pub limit: u32,
}

/// A status change requested by the executor.
#[derive(Debug, Clone)]
pub enum Transition {
    /// `queued` → `running` in `sandbox_id`.
    Running { sandbox_id: String, template_digest: String },
}

const COLUMNS: &str = "id, org_id, project_id, status, spec, archive, template_digest, sandbox_id, exit_code, \
     failure_reason, failure_message, cancel_requested, created_at, queued_at, started_at, finished_at";

fn db<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

pub(crate) fn run_from_row(row: &Row<'_>) -> rusqlite::Result<(Run, String, Option<String>)> {
    let status: String = row.get(3)?;
    let spec: String = row.get(4)?;
    let archive: Option<String> = row.get(5)?;
    let opt = |v: Option<i64>| v.map(|x| x as u64);
    Ok((
        Run {
            id: row.get(0)?,
            org_id: row.get(1)?,
            project_id: row.get(2)?,
            status: status.parse().unwrap_or(RunStatus::Failed),
            spec: serde_json::from_str(&spec).unwrap_or_else(|_| RunSpec::default()),
            archive: None,
            template_digest: row.get(6)?,
            sandbox_id: row.get(7)?,
            exit_code: row.get(8)?,
            failure_reason: row.get(9)?,
            failure_message: row.get(10)?,
            cancel_requested: row.get::<_, i64>(11)? != 0,
            artifact_ids: vec![],
            created_at_ms: row.get::<_, i64>(12)? as u64,
            queued_at_ms: opt(row.get(13)?),
            started_at_ms: opt(row.get(14)?),
            finished_at_ms: opt(row.get(15)?),
        },
        spec,
        archive,
    ))
}

pub(crate) fn load_run(conn: &rusqlite::Connection, id: &str) -> Result<Run> {
    let (mut run, _, archive) =
        conn.query_row(&format!("SELECT {COLUMNS} FROM runs WHERE id = ?1"), params![id], run_from_row)?;
    run.archive = archive.map(|a| serde_json::from_str::<ArchiveInfo>(&a)).transpose().map_err(db)?;
    let mut stmt = conn.prepare_cached("SELECT id FROM artifacts WHERE run_id = ?1 ORDER BY created_at, id")?;
    run.artifact_ids = stmt.query_map(params![id], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
    Ok(run)
}

fn artifact_from_row(r: &Row<'_>) -> rusqlite::Result<ArtifactRecord> {
    Ok(ArtifactRecord {
        id: r.get(0)?,
        run_id: r.get(1)?,
        project_id: r.get(2)?,
        name: r.get(3)?,
        path: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
        sha256: r.get(6)?,
        store: r.get(7)?,
        locator: r.get(8)?,
        created_at_ms: r.get::<_, i64>(9)? as u64,
    })
}

/// `awaiting_archive` (with an archive) → `queued` and its `status` event,
/// inside a transaction; `None` when the run was not in that state.
fn queue_in(tx: &rusqlite::Transaction<'_>, id: &str) -> Result<Option<Event>> {
    let n = tx.execute(
        "UPDATE runs SET status = 'queued', queued_at = ?2 WHERE id = ?1 AND status = 'awaiting_archive' AND archive IS NOT NULL",
        params![id, now_ms() as i64],
    )?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(super::events::insert(tx, id, EventType::Status, &serde_json::json!({"status": "queued"}))?))
}

impl Store {
    /// Insert a new run in `awaiting_archive`.
    /// With `respond`, the idempotency record commits with the run.
    /// Create a run; `secrets` are the values of its secret environment
    /// variables (`spec.secret_env` names them), kept apart from the spec.
    pub async fn create_run(
        &self,
        id: String,
        org_id: String,
        project_id: String,
        spec: RunSpec,
        secrets: BTreeMap<String, String>,
        respond: Option<RecordResponse>,
    ) -> Result<Run> {
        self.with(move |conn| {
            let spec_json = serde_json::to_string(&spec).map_err(db)?;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO runs (id, org_id, project_id, status, spec, created_at) VALUES (?1, ?2, ?3, 'awaiting_archive', ?4, ?5)",
                params![id, org_id, project_id, spec_json, now_ms() as i64],
            )?;
            if !secrets.is_empty() {
                let env = serde_json::to_string(&secrets).map_err(db)?;
                tx.execute("INSERT INTO run_secrets (run_id, env) VALUES (?1, ?2)", params![id, env])?;
            }
            let run = load_run(&tx, &id)?;
            if let Some(r) = respond {
                r.write(&tx, &run)?;
            }
            tx.commit()?;
            Ok(run)
        })
        .await
    }

    /// The values of a run's secret environment variables (empty once the
    /// run has ended: they are deleted with its terminal transition).
    pub async fn run_secrets(&self, run_id: String) -> Result<BTreeMap<String, String>> {
        self.with(move |conn| {
            let env: Option<String> = conn
                .query_row("SELECT env FROM run_secrets WHERE run_id = ?1", params![run_id], |r| r.get(0))
                .optional()?;
            env.map(|e| serde_json::from_str(&e).map_err(db)).transpose().map(Option::unwrap_or_default)
        })
        .await
    }

    pub async fn get_run(&self, id: String) -> Result<Run> {
        self.with(move |conn| load_run(conn, &id)).await
    }

    /// Runs, newest first, with a cursor for the next page.
    pub async fn list_runs(&self, f: ListFilter) -> Result<(Vec<Run>, Option<String>)> {
        self.with(move |conn| {
            let mut sql = format!("SELECT {COLUMNS} FROM runs WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            if let Some(projects) = &f.project_ids {
                let marks: Vec<String> = projects
                    .iter()
                    .map(|p| {
                        args.push(p.clone().into());
                        format!("?{}", args.len())
                    })
                    .collect();
                if marks.is_empty() {
                    return Ok((vec![], None));
                }
                sql.push_str(&format!(" AND project_id IN ({})", marks.join(",")));
            }
            if let Some(s) = f.status {
                args.push(s.as_str().to_string().into());
                sql.push_str(&format!(" AND status = ?{}", args.len()));
            }
            if let Some(c) = &f.cursor {
                let (t, id) = c.split_once(':').ok_or_else(|| StoreError::Conflict("invalid cursor".into()))?;
                let t: i64 = t.parse().map_err(|_| StoreError::Conflict("invalid cursor".into()))?;
                args.push(t.into());
                let ti = args.len();
                args.push(id.to_string().into());
                sql.push_str(&format!(" AND (created_at < ?{ti} OR (created_at = ?{ti} AND id < ?{}))", args.len()));
            }
            let limit = f.limit.clamp(1, 200);
            sql.push_str(&format!(" ORDER BY created_at DESC, id DESC LIMIT {}", limit + 1));
            let mut stmt = conn.prepare(&sql)?;
            let rows: Vec<(Run, String, Option<String>)> =
                stmt.query_map(rusqlite::params_from_iter(args), run_from_row)?.collect::<rusqlite::Result<_>>()?;
            let more = rows.len() > limit as usize;
            let mut runs = Vec::new();
            for (r, _, _) in rows.into_iter().take(limit as usize) {
                runs.push(load_run(conn, &r.id)?);
            }
            let cursor = if more { runs.last().map(|r| format!("{}:{}", r.created_at_ms, r.id)) } else { None };
            Ok((runs, cursor))
        })
        .await
    }

    /// Record the verified archive (refusing a second one); with `queue`,
    /// also queue the run (as [`Store::queue_run`]), and with `respond`,
    /// record the idempotent response: one transaction. Returns the run
    /// and, when it was queued, its `status` event.
    pub async fn attach_archive(
        &self,
        id: String,
        archive: ArchiveInfo,
        queue: bool,
        respond: Option<RecordResponse>,
    ) -> Result<(Run, Option<Event>)> {
        self.with(move |conn| {
            let json = serde_json::to_string(&archive).map_err(db)?;
            let tx = conn.transaction()?;
            let n = tx.execute(
                "UPDATE runs SET archive = ?2 WHERE id = ?1 AND archive IS NULL AND status = 'awaiting_archive'",
                params![id, json],
            )?;
            if n == 0 {
                let run = load_run(&tx, &id)?;
                return Err(StoreError::Conflict(if run.archive.is_some() {
                    "archive_already_uploaded".into()
                } else {
                    "run_not_awaiting_archive".into()
                }));
            }
            let event = if queue { queue_in(&tx, &id)? } else { None };
            let run = load_run(&tx, &id)?;
            if let Some(r) = respond {
                r.write(&tx, &run)?;
            }
            tx.commit()?;
            Ok((run, event))
        })
        .await
    }

    /// `awaiting_archive` (with an archive) → `queued`, with its `status`
    /// event in the same transaction. Returns the run and the event when
    /// this call queued it (`None`: it was already past that point).
    pub async fn queue_run(&self, id: String) -> Result<(Run, Option<Event>)> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let event = queue_in(&tx, &id)?;
            let run = load_run(&tx, &id)?;
            if event.is_none() && run.status == RunStatus::AwaitingArchive {
                return Err(StoreError::Conflict("archive_missing".into()));
            }
            tx.commit()?;
            Ok((run, event))
        })
        .await
    }

    /// Apply an executor transition with compare-and-set, and append its
    /// event in the same transaction.
    pub async fn transition(
        &self,
        id: String,
        t: Transition,
        event: (EventType, serde_json::Value),
    ) -> Result<(Run, Event)> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let n = match &t {
                Transition::Running { sandbox_id, template_digest } => tx.execute(
                    "UPDATE runs SET status = 'running', started_at = ?2, sandbox_id = ?3, template_digest = ?4 WHERE id = ?1 AND status = 'queued'",
                    params![id, now_ms() as i64, sandbox_id, template_digest],
                )?,
            };
            if n == 0 {
                return Err(StoreError::Conflict(format!("run {id} is not in the state this transition needs")));
            }
            let event = super::events::insert(&tx, &id, event.0, &event.1)?;
            let run = load_run(&tx, &id)?;
            tx.commit()?;
            Ok((run, event))
        })
        .await
    }

    /// Ask an active run to stop. Returns the run as it is now.
    pub async fn request_cancel(&self, id: String) -> Result<Run> {
        self.with(move |conn| {
            conn.execute(
                "UPDATE runs SET cancel_requested = 1 WHERE id = ?1 AND status IN ('awaiting_archive', 'queued', 'running')",
                params![id],
            )?;
            load_run(conn, &id)
        })
        .await
    }

    /// Runs the host is responsible for (after a restart: to fail them).
    pub async fn active_runs(&self) -> Result<Vec<Run>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM runs WHERE status IN ('queued', 'running')")?;
            let ids: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids.iter().map(|id| load_run(conn, id)).collect()
        })
        .await
    }

    /// How many runs are in each status (for the metrics).
    pub async fn count_runs_by_status(&self) -> Result<Vec<(String, u64)>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM runs GROUP BY status")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// Runs still waiting for an archive that were created more than
    /// `max_age_ms` ago.
    pub async fn stale_awaiting_runs(&self, max_age_ms: u64) -> Result<Vec<Run>> {
        self.with(move |conn| {
            let cutoff = now_ms().saturating_sub(max_age_ms) as i64;
            let mut stmt = conn.prepare("SELECT id FROM runs WHERE status = 'awaiting_archive' AND created_at < ?1")?;
            let ids: Vec<String> = stmt.query_map(params![cutoff], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids.iter().map(|id| load_run(conn, id)).collect()
        })
        .await
    }

    /// Queued runs of an org: (run id, the kept sandbox it reuses, if any).
    pub async fn queued_runs(&self, org_id: String) -> Result<Vec<(String, Option<String>)>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare("SELECT id, spec FROM runs WHERE status = 'queued' AND org_id = ?1")?;
            let rows: Vec<(String, String)> =
                stmt.query_map(params![org_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            Ok(rows
                .into_iter()
                .map(|(id, spec)| {
                    let reuse = serde_json::from_str::<RunSpec>(&spec).ok().and_then(|s| s.sandbox_id);
                    (id, reuse)
                })
                .collect())
        })
        .await
    }

    /// The org, project and latest run of a sandbox, if a run created or
    /// used it.
    pub async fn sandbox_owner(&self, sandbox_id: String) -> Result<Option<(String, String, String)>> {
        self.with(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT org_id, project_id, id FROM runs WHERE sandbox_id = ?1 ORDER BY created_at DESC LIMIT 1",
                    params![sandbox_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?)
        })
        .await
    }

    /// Record that a kept sandbox was destroyed (kept for good: a run that
    /// names it is refused with a clear error).
    pub async fn tombstone_sandbox(&self, sandbox_id: String, reason: String) -> Result<()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO sandbox_tombstones (id, destroyed_at, reason) VALUES (?1, ?2, ?3)",
                params![sandbox_id, now_ms() as i64, reason],
            )?;
            Ok(())
        })
        .await
    }

    /// Why and when a sandbox was destroyed, if it was.
    pub async fn sandbox_tombstone(&self, sandbox_id: String) -> Result<Option<(u64, String)>> {
        self.with(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT destroyed_at, reason FROM sandbox_tombstones WHERE id = ?1",
                    params![sandbox_id],
                    |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)),
                )
                .optional()?)
        })
        .await
    }

    /// Sandboxes that must survive a restart: kept by a terminal run.
    pub async fn kept_sandboxes(&self) -> Result<Vec<String>> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT sandbox_id, spec FROM runs WHERE sandbox_id IS NOT NULL AND status IN ('succeeded','failed','canceled') AND sandbox_id NOT IN (SELECT id FROM sandbox_tombstones)")?;
            let rows: Vec<(String, String)> = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
            Ok(rows
                .into_iter()
                .filter(|(_, spec)| serde_json::from_str::<RunSpec>(spec).is_ok_and(|s| s.keep_sandbox))
                .map(|(id, _)| id)
                .collect())
        })
        .await
    }

    pub async fn insert_artifact(&self, a: ArtifactRecord) -> Result<()> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO artifacts (id, run_id, project_id, name, path, size, sha256, store, locator, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    a.id,
                    a.run_id,
                    a.project_id,
                    a.name,
                    a.path,
                    a.size as i64,
                    a.sha256,
                    a.store,
                    a.locator,
                    a.created_at_ms as i64
                ],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn get_artifact(&self, id: String) -> Result<ArtifactRecord> {
        self.with(move |conn| {
            Ok(conn.query_row(
                "SELECT id, run_id, project_id, name, path, size, sha256, store, locator, created_at FROM artifacts WHERE id = ?1",
                params![id],
                artifact_from_row,
            )?)
        })
        .await
    }

    pub async fn list_artifacts(&self, run_id: String) -> Result<Vec<ArtifactRecord>> {
        self.with(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT id, run_id, project_id, name, path, size, sha256, store, locator, created_at FROM artifacts WHERE run_id = ?1 ORDER BY created_at, id",
            )?;
            Ok(stmt.query_map(params![run_id], artifact_from_row)?.collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    /// The stored Evidence Bundle bytes, if written.
    pub async fn get_evidence(&self, run_id: String) -> Result<Option<(Vec<u8>, String)>> {
        self.with(move |conn| {
            Ok(conn
                .query_row("SELECT bytes, sha256 FROM evidence WHERE run_id = ?1", params![run_id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?)
        })
        .await
    }
}
