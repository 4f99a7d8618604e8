//! Events: a per-run sequence 1..n without gaps, assigned in the same
//! transaction that stores the event. The terminal event, the final status
//! and the Evidence Bundle are written in one transaction.

use rusqlite::{OptionalExtension, params};

use super::runs::load_run;
use super::{Result, Store, StoreError};
use crate::runs::evidence::{self, EvidenceInput, StreamStats};
use crate::runs::ids::now_ms;
use crate::runs::model::{Event, EventType, RunStatus};

pub(super) fn insert(
    tx: &rusqlite::Transaction<'_>,
    run_id: &str,
    kind: EventType,
    data: &serde_json::Value,
) -> Result<Event> {
    let seq: i64 = tx.query_row("SELECT next_seq FROM runs WHERE id = ?1", params![run_id], |r| r.get(0))?;
    tx.execute("UPDATE runs SET next_seq = next_seq + 1 WHERE id = ?1", params![run_id])?;
    let at = now_ms();
    tx.execute(
        "INSERT INTO events (run_id, seq, type, at, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![run_id, seq, kind.as_str(), at as i64, data.to_string()],
    )?;
    Ok(Event { seq: seq as u64, kind, at_ms: at, data: data.clone() })
}

fn load_events(conn: &rusqlite::Connection, run_id: &str, after: u64, limit: u32) -> Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, type, at, data FROM events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![run_id, after as i64, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, String>(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, kind, at, data) = row?;
        out.push(Event {
            seq: seq as u64,
            kind: EventType::parse(&kind).unwrap_or(EventType::Error),
            at_ms: at as u64,
            data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
        });
    }
    Ok(out)
}

/// How a run ends.
#[derive(Debug, Clone)]
pub struct Finish {
    pub status: RunStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub streams: Vec<(String, StreamStats)>,
    pub extract: Option<serde_json::Value>,
    pub metering: Option<serde_json::Value>,
    pub artifact_errors: Vec<serde_json::Value>,
}

impl Store {
    /// Append events in order, atomically; returns them with their seqs.
    pub async fn append_events(
        &self,
        run_id: String,
        events: Vec<(EventType, serde_json::Value)>,
    ) -> Result<Vec<Event>> {
        let started = std::time::Instant::now();
        let r = self
            .with(move |conn| {
                let tx = conn.transaction()?;
                let mut out = Vec::with_capacity(events.len());
                for (kind, data) in &events {
                    out.push(insert(&tx, &run_id, *kind, data)?);
                }
                tx.commit()?;
                Ok(out)
            })
            .await;
        crate::metrics::record::event_append(started.elapsed());
        r
    }

    /// Events with `seq > after`, at most `limit`.
    pub async fn list_events(&self, run_id: String, after: u64, limit: u32) -> Result<Vec<Event>> {
        self.with(move |conn| load_events(conn, &run_id, after, limit)).await
    }

    /// The highest seq written so far (0 when none).
    pub async fn last_seq(&self, run_id: String) -> Result<u64> {
        self.with(move |conn| {
            let n: i64 = conn.query_row("SELECT next_seq FROM runs WHERE id = ?1", params![run_id], |r| r.get(0))?;
            Ok((n - 1) as u64)
        })
        .await
    }

    /// Move a non-terminal run to its final status: append the `terminal`
    /// event and store the Evidence Bundle, all in one transaction. Returns
    /// `None` if the run was already terminal (nothing changes).
    pub async fn finish_run(&self, run_id: String, f: Finish) -> Result<Option<(Event, Vec<u8>)>> {
        assert!(f.status.is_terminal(), "finish_run needs a terminal status");
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let now = now_ms() as i64;
            let n = tx.execute(
                "UPDATE runs SET status = ?2, exit_code = ?3, failure_reason = ?4, failure_message = ?5, finished_at = ?6 \
                 WHERE id = ?1 AND status IN ('awaiting_archive', 'queued', 'running')",
                params![run_id, f.status.as_str(), f.exit_code, f.failure_reason, f.failure_message, now],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let run = load_run(&tx, &run_id)?;
            let terminal_data = serde_json::json!({
                "status": run.status.as_str(),
                "exitCode": run.exit_code,
                "failureReason": run.failure_reason,
                "failureMessage": run.failure_message,
                "artifactIds": run.artifact_ids,
            });
            let terminal = insert(&tx, &run_id, EventType::Terminal, &terminal_data)?;
            let events = load_events(&tx, &run_id, 0, u32::MAX)?;
            let artifacts = {
                let mut stmt = tx.prepare(
                    "SELECT id, name, path, size, sha256, store FROM artifacts WHERE run_id = ?1 ORDER BY created_at, id",
                )?;
                stmt.query_map(params![run_id], |r| {
                    Ok(serde_json::json!({
                        "id": r.get::<_, String>(0)?, "name": r.get::<_, String>(1)?, "path": r.get::<_, String>(2)?,
                        "sizeBytes": r.get::<_, i64>(3)?, "sha256": r.get::<_, String>(4)?, "store": r.get::<_, String>(5)?,
                    }))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            let (bytes, sha) = evidence::build(&EvidenceInput {
                run: &run,
                events: &events,
                artifacts,
                artifact_errors: f.artifact_errors.clone(),
                streams: f.streams.clone(),
                extract: f.extract.clone(),
                metering: f.metering.clone(),
            });
            tx.execute("INSERT INTO evidence (run_id, bytes, sha256) VALUES (?1, ?2, ?3)", params![run_id, bytes, sha])?;
            // Secrets live no longer than the run that needs them.
            tx.execute("DELETE FROM run_secrets WHERE run_id = ?1", params![run_id])?;
            tx.commit()?;
            Ok(Some((terminal, bytes)))
        })
        .await
    }

    /// Delete idempotency records older than `max_age_ms`.
    pub async fn purge_older_than(&self, max_age_ms: u64) -> Result<usize> {
        self.with(move |conn| {
            let cutoff = now_ms().saturating_sub(max_age_ms) as i64;
            Ok(conn.execute("DELETE FROM idempotency WHERE created_at < ?1", params![cutoff])?)
        })
        .await
    }

    /// Whether the run exists and its project, for access checks.
    pub async fn run_project(&self, run_id: String) -> Result<Option<String>> {
        self.with(move |conn| {
            Ok(conn.query_row("SELECT project_id FROM runs WHERE id = ?1", params![run_id], |r| r.get(0)).optional()?)
        })
        .await
        .map_err(|e| match e {
            StoreError::NotFound => StoreError::NotFound,
            other => other,
        })
    }
}
