//! Staged archive transfers: a declared size and sha256, parts uploaded in
//! any order (and retried), completed once every part is there.

use rusqlite::params;

use super::{Result, Store, StoreError};
use crate::runs::ids::now_ms;

/// A staged transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: String,
    pub run_id: String,
    pub size: u64,
    pub sha256: String,
    pub part_size: u64,
    /// Parts received so far (0-based indexes).
    pub parts: Vec<u64>,
    /// `open` or `complete`.
    pub status: String,
    /// `server` (parts are PUT to the API) or `presigned` (parts go straight
    /// to the artifact store through presigned URLs).
    pub mode: String,
    pub created_at_ms: u64,
}

impl Transfer {
    pub fn part_count(&self) -> u64 {
        self.size.div_ceil(self.part_size).max(1)
    }

    /// Exact size of part `n`.
    pub fn part_len(&self, n: u64) -> u64 {
        if n + 1 < self.part_count() { self.part_size } else { self.size - self.part_size * (self.part_count() - 1) }
    }
}

fn load(conn: &rusqlite::Connection, id: &str) -> Result<Transfer> {
    Ok(conn.query_row(
        "SELECT id, run_id, size, sha256, part_size, parts, status, created_at, mode FROM transfers WHERE id = ?1",
        params![id],
        |r| {
            let parts: String = r.get(5)?;
            Ok(Transfer {
                id: r.get(0)?,
                run_id: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                sha256: r.get(3)?,
                part_size: r.get::<_, i64>(4)? as u64,
                parts: serde_json::from_str(&parts).unwrap_or_default(),
                status: r.get(6)?,
                created_at_ms: r.get::<_, i64>(7)? as u64,
                mode: r.get(8)?,
            })
        },
    )?)
}

impl Store {
    pub async fn create_transfer(&self, t: Transfer) -> Result<Transfer> {
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO transfers (id, run_id, size, sha256, part_size, parts, status, created_at, mode) VALUES (?1, ?2, ?3, ?4, ?5, '[]', 'open', ?6, ?7)",
                params![t.id, t.run_id, t.size as i64, t.sha256, t.part_size as i64, now_ms() as i64, t.mode],
            )?;
            load(conn, &t.id)
        })
        .await
    }

    pub async fn get_transfer(&self, id: String) -> Result<Transfer> {
        self.with(move |conn| load(conn, &id)).await
    }

    /// Record that part `n` arrived (idempotent).
    pub async fn mark_part(&self, id: String, n: u64) -> Result<Transfer> {
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let mut t = load(&tx, &id)?;
            if t.status != "open" {
                return Err(StoreError::Conflict("transfer_complete".into()));
            }
            if !t.parts.contains(&n) {
                t.parts.push(n);
                t.parts.sort_unstable();
                tx.execute(
                    "UPDATE transfers SET parts = ?2 WHERE id = ?1",
                    params![id, serde_json::to_string(&t.parts).unwrap()],
                )?;
            }
            tx.commit()?;
            Ok(t)
        })
        .await
    }

    /// Open transfers created more than `max_age_ms` ago.
    pub async fn abandoned_transfers(&self, max_age_ms: u64) -> Result<Vec<Transfer>> {
        self.with(move |conn| {
            let cutoff = now_ms().saturating_sub(max_age_ms) as i64;
            // Also every open transfer of a run that ended (expired waiting
            // for its archive, canceled): nobody will complete it.
            let mut st = conn.prepare(
                "SELECT id FROM transfers WHERE status = 'open' AND (created_at < ?1 OR run_id IN \
                 (SELECT id FROM runs WHERE status IN ('succeeded', 'failed', 'canceled')))",
            )?;
            let ids: Vec<String> = st.query_map(params![cutoff], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            ids.iter().map(|id| load(conn, id)).collect()
        })
        .await
    }

    /// Forget a transfer whose parts are gone.
    pub async fn delete_transfer(&self, id: String) -> Result<()> {
        self.with(move |conn| {
            conn.execute("DELETE FROM transfers WHERE id = ?1 AND status = 'open'", params![id])?;
            Ok(())
        })
        .await
    }

    pub async fn complete_transfer(&self, id: String) -> Result<()> {
        self.with(move |conn| {
            conn.execute("UPDATE transfers SET status = 'complete' WHERE id = ?1", params![id])?;
            Ok(())
        })
        .await
    }
}
