//! The Evidence Bundle: written once, at terminalization, as exact bytes
//! that are stored and served unchanged (never re-serialized), so a digest
//! or signature over them stays valid.
//!
//! The bundle commits to the whole event log with a hash chain:
//! `d0 = 32 zero bytes`, `d_i = sha256(d_{i-1} || sha256(record_i))`, where
//! `record_i` is the compact JSON of event `i` as the API returns it without
//! output content (`{"at","data","seq","type"}`, keys sorted). Output events
//! carry the sha256 of their content, so the chain commits to the output too.

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::runs::ids::rfc3339;
use crate::runs::model::{Event, Run};

/// Schema of the bundle; bump on incompatible change.
pub const SCHEMA_VERSION: &str = "crownest.evidence/v1";
/// Name of the chain algorithm above.
pub const CHAIN_ALGORITHM: &str = "sha256-chain-v1";

/// Totals of one output stream, over every byte the command wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStats {
    /// Bytes the command wrote.
    pub bytes: u64,
    /// Bytes kept in events (≤ the cap).
    pub stored_bytes: u64,
    /// Lowercase hex SHA-256 of all `bytes`.
    pub sha256: String,
    /// Whether the cap cut the stored copy short.
    pub truncated: bool,
}

pub struct EvidenceInput<'a> {
    pub run: &'a Run,
    pub events: &'a [Event],
    pub artifacts: Vec<Value>,
    pub artifact_errors: Vec<Value>,
    pub streams: Vec<(String, StreamStats)>,
    pub extract: Option<Value>,
    pub metering: Option<Value>,
}

/// The chain digest over `events`, lowercase hex.
pub fn chain_digest(events: &[Event]) -> String {
    let mut d = [0u8; 32];
    for e in events {
        let record = serde_json::to_vec(&e.record()).expect("event records serialize");
        let mut h = Sha256::new();
        h.update(d);
        h.update(Sha256::digest(&record));
        d = h.finalize().into();
    }
    hex::encode(d)
}

fn ts(ms: Option<u64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

fn diff(a: Option<u64>, b: Option<u64>) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => json!(b - a),
        _ => Value::Null,
    }
}

/// Build the bundle: (exact bytes, lowercase hex sha256 of them).
pub fn build(i: &EvidenceInput<'_>) -> (Vec<u8>, String) {
    let r = i.run;
    let terminal = i.events.last().map(Event::record);
    let streams: serde_json::Map<String, Value> =
        i.streams.iter().map(|(name, s)| (name.clone(), serde_json::to_value(s).expect("stats serialize"))).collect();
    let bundle = json!({
        "schemaVersion": SCHEMA_VERSION,
        "runId": r.id,
        "orgId": r.org_id,
        "projectId": r.project_id,
        "status": r.status.as_str(),
        "exitCode": r.exit_code,
        "failureReason": r.failure_reason,
        "failureMessage": r.failure_message,
        "command": r.spec.command,
        "template": { "name": r.spec.template, "digest": r.template_digest },
        "sandbox": { "id": r.sandbox_id, "kept": r.spec.keep_sandbox },
        "timeoutMs": r.spec.timeout_ms,
        "env": r.spec.env,
        "secretEnv": r.spec.secret_env,
        "timestamps": {
            "createdAt": ts(Some(r.created_at_ms)),
            "queuedAt": ts(r.queued_at_ms),
            "startedAt": ts(r.started_at_ms),
            "finishedAt": ts(r.finished_at_ms),
        },
        "durationsMs": {
            "queued": diff(r.queued_at_ms, r.started_at_ms),
            "running": diff(r.started_at_ms, r.finished_at_ms),
            "total": diff(Some(r.created_at_ms), r.finished_at_ms),
        },
        "source": { "metadata": r.spec.metadata },
        "archive": r.archive.as_ref().map(|a| json!({ "sizeBytes": a.size_bytes, "sha256": a.sha256, "upload": a.upload })),
        "extraction": i.extract,
        "streams": streams,
        "artifacts": i.artifacts,
        "artifactErrors": i.artifact_errors,
        "metering": i.metering,
        "terminalEvent": terminal,
        "events": { "count": i.events.len(), "algorithm": CHAIN_ALGORITHM, "chainDigest": chain_digest(i.events) },
    });
    let bytes = serde_json::to_vec(&bundle).expect("bundle serializes");
    let sha = hex::encode(Sha256::digest(&bytes));
    (bytes, sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::model::EventType;

    fn ev(seq: u64, kind: EventType) -> Event {
        Event { seq, kind, at_ms: 1_000 * seq, data: json!({"n": seq}) }
    }

    #[test]
    fn the_chain_commits_to_every_event_and_their_order() {
        let a = vec![ev(1, EventType::Status), ev(2, EventType::Terminal)];
        let mut b = a.clone();
        b[0].data = json!({"n": 99});
        let mut c = a.clone();
        c.swap(0, 1);
        assert_ne!(chain_digest(&a), chain_digest(&b));
        assert_ne!(chain_digest(&a), chain_digest(&c));
        assert_eq!(chain_digest(&a), chain_digest(&a.clone()));
        assert_eq!(chain_digest(&[]), "0".repeat(64));
    }
}
