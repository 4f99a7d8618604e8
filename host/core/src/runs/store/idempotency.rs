//! Idempotency keys, scoped per project and endpoint. Same key and same
//! request: the stored response. Same key, different request: refused. A
//! duplicate while the first is still in flight: refused as a conflict.

use rusqlite::{OptionalExtension, params};

use super::{Result, Store};
use crate::runs::ids::now_ms;

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The response to a request with an idempotency key, written in the
/// same transaction as the request's effect: one commit instead of two,
/// and no crash can leave the effect without the record that prevents
/// its repetition.
pub struct RecordResponse {
    pub project: String,
    pub endpoint: String,
    pub key: String,
    /// Renders the response from the run as the transaction left it.
    pub render: Box<dyn FnOnce(&crate::runs::model::Run) -> StoredResponse + Send>,
}

impl RecordResponse {
    /// Write the response rendered from `run` (inside a transaction).
    pub(crate) fn write(self, conn: &rusqlite::Connection, run: &crate::runs::model::Run) -> Result<()> {
        let r = (self.render)(run);
        conn.execute(
            "UPDATE idempotency SET state = 'done', status_code = ?4, body = ?5 WHERE project_id = ?1 AND endpoint = ?2 AND key = ?3",
            params![self.project, self.endpoint, self.key, r.status as i64, r.body],
        )?;
        Ok(())
    }
}

/// What to do with a request carrying an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdempotencyBegin {
    /// First time: go ahead, then `idempotency_finish`.
    Proceed,
    /// Seen with the same request: replay this.
    Replay(StoredResponse),
    /// Seen with a different request.
    Mismatch,
    /// The first request with this key has not finished yet.
    InFlight,
}

impl Store {
    pub async fn idempotency_begin(
        &self,
        project: String,
        endpoint: String,
        key: String,
        hash: String,
    ) -> Result<IdempotencyBegin> {
        // The in-flight marker needs no fsync of its own: the request's
        // effect is a full commit that persists it too, and if the request
        // had no effect yet, losing the marker only lets a retry run again.
        self.with_relaxed(move |conn| {
            let tx = conn.transaction()?;
            let row: Option<(String, String, Option<i64>, Option<Vec<u8>>)> = tx
                .query_row(
                    "SELECT request_hash, state, status_code, body FROM idempotency WHERE project_id = ?1 AND endpoint = ?2 AND key = ?3",
                    params![project, endpoint, key],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let out = match row {
                None => {
                    tx.execute(
                        "INSERT INTO idempotency (project_id, endpoint, key, request_hash, state, created_at) VALUES (?1, ?2, ?3, ?4, 'in_flight', ?5)",
                        params![project, endpoint, key, hash, now_ms() as i64],
                    )?;
                    IdempotencyBegin::Proceed
                }
                Some((h, _, _, _)) if h != hash => IdempotencyBegin::Mismatch,
                Some((_, state, _, _)) if state == "in_flight" => IdempotencyBegin::InFlight,
                Some((_, _, status, body)) => IdempotencyBegin::Replay(StoredResponse {
                    status: status.unwrap_or(200) as u16,
                    body: body.unwrap_or_default(),
                }),
            };
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Keep the response (or, with `None`, forget the key so it can be retried).
    pub async fn idempotency_finish(
        &self,
        project: String,
        endpoint: String,
        key: String,
        response: Option<StoredResponse>,
    ) -> Result<()> {
        self.with(move |conn| {
            match response {
                Some(r) => conn.execute(
                    "UPDATE idempotency SET state = 'done', status_code = ?4, body = ?5 WHERE project_id = ?1 AND endpoint = ?2 AND key = ?3",
                    params![project, endpoint, key, r.status as i64, r.body],
                )?,
                None => conn.execute(
                    "DELETE FROM idempotency WHERE project_id = ?1 AND endpoint = ?2 AND key = ?3",
                    params![project, endpoint, key],
                )?,
            };
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::model::RunSpec;

    fn record(key: &str, body: &'static [u8]) -> RecordResponse {
        RecordResponse {
            project: "prj".into(),
            endpoint: "create".into(),
            key: key.into(),
            render: Box::new(move |run| StoredResponse { status: 201, body: [body, run.id.as_bytes()].concat() }),
        }
    }

    #[tokio::test]
    async fn a_response_recorded_with_its_effect_is_replayed_and_one_without_it_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let begin = |key: &str| store.idempotency_begin("prj".into(), "create".into(), key.into(), "h".into());
        assert_eq!(begin("k1").await.unwrap(), IdempotencyBegin::Proceed);
        let run = store
            .create_run(
                "wsr_a".into(),
                "org".into(),
                "prj".into(),
                RunSpec::default(),
                Default::default(),
                Some(record("k1", b"run ")),
            )
            .await
            .unwrap();
        assert_eq!(run.id, "wsr_a");
        // Rendered from the run the transaction wrote, and committed with it.
        assert_eq!(
            begin("k1").await.unwrap(),
            IdempotencyBegin::Replay(StoredResponse { status: 201, body: b"run wsr_a".to_vec() })
        );
        // The same id again fails the insert: the record of that request is
        // not written either, so its key stays in flight until settled.
        assert_eq!(begin("k2").await.unwrap(), IdempotencyBegin::Proceed);
        let dup = store
            .create_run(
                "wsr_a".into(),
                "org".into(),
                "prj".into(),
                RunSpec::default(),
                Default::default(),
                Some(record("k2", b"x")),
            )
            .await;
        assert!(dup.is_err());
        assert_eq!(begin("k2").await.unwrap(), IdempotencyBegin::InFlight);
    }
}
