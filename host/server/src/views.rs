//! How resources look in API responses (camelCase JSON).

use std::path::Path;

use base64::Engine as _;
use crownest_core::runs::ids::rfc3339;
use crownest_core::runs::model::{Event, Run};
use crownest_core::runs::store::{ArtifactRecord, Transfer};
use crownest_core::runs::{output, output_log};
use serde_json::{Value, json};

fn ts(ms: Option<u64>) -> Value {
    ms.map(|m| Value::String(rfc3339(m))).unwrap_or(Value::Null)
}

pub fn run(r: &Run) -> Value {
    json!({
        "id": r.id,
        "orgId": r.org_id,
        "projectId": r.project_id,
        "status": r.status.as_str(),
        "command": r.spec.command,
        "template": r.spec.template,
        "templateDigest": r.template_digest,
        "sandboxId": r.sandbox_id.clone().or_else(|| r.spec.sandbox_id.clone()),
        "keepSandbox": r.spec.keep_sandbox,
        "autoStart": r.spec.auto_start,
        "timeoutMs": r.spec.timeout_ms,
        "metadata": r.spec.metadata,
        "artifacts": r.spec.artifacts,
        "requireArtifacts": r.spec.require_artifacts,
        "strictArchive": r.spec.strict_archive,
        "env": r.spec.env,
        "secretEnv": r.spec.secret_env,
        "archive": r.archive.as_ref().map(|a| json!({"sizeBytes": a.size_bytes, "sha256": a.sha256, "upload": a.upload, "uploadedAt": rfc3339(a.uploaded_at_ms)})),
        "exitCode": r.exit_code,
        "failureReason": r.failure_reason,
        "failureMessage": r.failure_message,
        "cancelRequested": r.cancel_requested,
        "artifactIds": r.artifact_ids,
        "createdAt": ts(Some(r.created_at_ms)),
        "queuedAt": ts(r.queued_at_ms),
        "startedAt": ts(r.started_at_ms),
        "finishedAt": ts(r.finished_at_ms),
    })
}

/// Where an output event's content lies in the run's output log:
/// `(offset, len)`, or `None` for other events and empty chunks.
pub fn output_span(e: &Event) -> Option<(u64, u64)> {
    let len = e.data["bytes"].as_u64().unwrap_or(0);
    (e.kind.is_output() && len > 0).then(|| (e.data["offset"].as_u64().unwrap_or(0), len))
}

/// The stored content of an output event, read from the log into
/// `scratch` (`None` for other events and empty chunks).
pub fn content<'a>(
    data_dir: &Path,
    run_id: &str,
    e: &Event,
    scratch: &'a mut output_log::ReadBuf,
) -> Option<std::io::Result<&'a [u8]>> {
    let (offset, len) = output_span(e)?;
    Some(output::read_chunk(data_dir, run_id, e.kind.as_str(), offset, len, scratch))
}

/// An event as clients see it: the stored record plus, for output events,
/// the content (`text` when it is valid UTF-8, else `base64`).
pub fn event(data_dir: &Path, run_id: &str, e: &Event) -> Value {
    let mut scratch = output_log::ReadBuf::default();
    let content = content(data_dir, run_id, e, &mut scratch).map(|read| read.map(<[u8]>::to_vec));
    event_with(run_id, e, content)
}

fn event_with(run_id: &str, e: &Event, content: Option<std::io::Result<Vec<u8>>>) -> Value {
    let mut data = e.data.clone();
    match content {
        None => {}
        Some(Ok(bytes)) => match String::from_utf8(bytes) {
            Ok(text) => data["text"] = Value::String(text),
            Err(e) => data["base64"] = Value::String(base64::engine::general_purpose::STANDARD.encode(e.into_bytes())),
        },
        Some(Err(err)) => data["error"] = Value::String(format!("output log unreadable: {err}")),
    }
    json!({ "runId": run_id, "seq": e.seq, "type": e.kind.as_str(), "at": rfc3339(e.at_ms), "data": data })
}

/// Append [`event`] as JSON text to `out`, for streaming, given the event's
/// `content` (from [`content`], or from memory for a chunk just stored).
/// UTF-8 content is escaped straight into `out`, without an intermediate
/// copy or `Value` (a chunk is up to 4 MiB).
pub fn push_event_text(out: &mut String, run_id: &str, e: &Event, content: Option<std::io::Result<&[u8]>>) {
    let as_value = |out: &mut String, content| {
        out.push_str(&serde_json::to_string(&event_with(run_id, e, content)).unwrap_or_default())
    };
    let bytes = match content {
        None => return as_value(out, None),
        Some(Ok(bytes)) => bytes,
        Some(Err(err)) => return as_value(out, Some(Err(err))),
    };
    let start = out.len();
    let head = json!({ "runId": run_id, "seq": e.seq, "type": e.kind.as_str(), "at": rfc3339(e.at_ms) });
    let head = serde_json::to_string(&head).unwrap_or_default();
    let data = serde_json::to_string(&e.data).unwrap_or_default();
    // Room for the whole event at once, rounded up to 64 KiB and no more: a
    // frame buffer that grew by doubling would be too large to be kept for
    // the next frame (and one a few bytes short would double), and the
    // rounding absorbs the next event's header growing by a digit.
    let need = head.len() + data.len() + crownest_json_text::literal_room(bytes.len()) + 32;
    if out.capacity() - out.len() < need {
        out.reserve_exact((out.len() + need).next_multiple_of(64 << 10) - out.len());
    }
    out.push_str(head.strip_suffix('}').unwrap_or(&head));
    out.push_str(",\"data\":");
    match data.strip_suffix('}') {
        Some(open) if open.len() > 1 => {
            out.push_str(open);
            out.push(',');
        }
        _ => out.push('{'),
    }
    out.push_str("\"text\":");
    // The UTF-8 check is part of the escaping; content that is not UTF-8
    // is sent as base64 instead.
    if !crownest_json_text::push_bytes_literal(out, bytes) {
        out.truncate(start);
        return as_value(out, Some(Ok(bytes.to_vec())));
    }
    out.push_str("}}");
}

pub fn artifact(a: &ArtifactRecord) -> Value {
    json!({
        "id": a.id, "runId": a.run_id, "projectId": a.project_id, "name": a.name, "path": a.path,
        "sizeBytes": a.size, "sha256": a.sha256, "store": a.store, "locator": a.locator,
        "createdAt": rfc3339(a.created_at_ms),
    })
}

/// Presigned upload URLs for the parts of a transfer.
pub struct PartUrls {
    /// `(part, url)` in part order.
    pub urls: Vec<(u64, String)>,
    pub expires_at_ms: u64,
}

/// A staged transfer, with the part upload URLs of a `presigned` one (the
/// server does not see those parts arrive, so it lists none as received).
pub fn transfer(t: &Transfer, urls: Option<&PartUrls>) -> Value {
    let missing: Vec<u64> = (0..t.part_count()).filter(|n| !t.parts.contains(n)).collect();
    let mut v = json!({
        "id": t.id, "runId": t.run_id, "sizeBytes": t.size, "sha256": t.sha256, "partSizeBytes": t.part_size,
        "partCount": t.part_count(), "receivedParts": t.parts, "missingParts": missing, "status": t.status,
        "mode": t.mode, "createdAt": rfc3339(t.created_at_ms),
    });
    if t.mode == "presigned" {
        let o = v.as_object_mut().expect("object");
        o.remove("receivedParts");
        o.remove("missingParts");
    }
    if let Some(p) = urls {
        v["uploadUrls"] = p.urls.iter().map(|(n, url)| json!({"part": n, "url": url})).collect();
        v["uploadUrlsExpireAt"] = json!(rfc3339(p.expires_at_ms));
    }
    v
}

pub fn project(p: &crownest_core::runs::store::Project) -> Value {
    json!({"id": p.id, "orgId": p.org_id, "name": p.name, "createdAt": rfc3339(p.created_at_ms)})
}

/// A key's record: never its secret.
pub fn api_key(k: &crownest_core::runs::store::ApiKeyInfo) -> Value {
    json!({
        "id": k.id, "orgId": k.org_id, "projectId": k.project_id, "scopes": k.scopes,
        "createdAt": rfc3339(k.created_at_ms), "expiresAt": ts(k.expires_at_ms), "revokedAt": ts(k.revoked_at_ms),
        "status": if k.revoked_at_ms.is_some() { "revoked" } else if k.expires_at_ms.is_some_and(|e| e <= crownest_core::runs::ids::now_ms()) { "expired" } else { "active" },
    })
}

pub fn audit_event(e: &crownest_core::runs::store::AuditEvent) -> Value {
    json!({
        "id": e.id, "at": rfc3339(e.at_ms), "orgId": e.org_id, "actor": e.actor, "action": e.action,
        "target": e.target, "projectId": e.project_id, "requestId": e.request_id, "outcome": e.outcome,
        "detail": e.detail, "clientIp": e.client_ip,
    })
}

/// Amounts in micro-dollars and as a decimal string (no float rounding).
pub fn usage(u: &crownest_core::ports::Usage) -> Value {
    json!({
        "bucket": u.bucket, "pricingVersion": u.pricing_version, "projectId": u.project_id,
        "computeUnitSeconds": u.compute_unit_seconds, "amountMicroUsd": u.amount_micro_usd,
        "amountUsd": usd(u.amount_micro_usd),
    })
}

pub fn usd(micro: u64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crownest_core::runs::model::EventType;

    fn event_text(dir: &Path, run_id: &str, e: &Event, scratch: &mut output_log::ReadBuf) -> String {
        let mut out = String::new();
        push_event_text(&mut out, run_id, e, content(dir, run_id, e, scratch));
        out
    }

    /// The streamed text of an event is the same JSON as its `Value` view.
    #[test]
    fn event_text_is_the_event_view() {
        let dir = tempfile::tempdir().unwrap();
        let log = output::log_path(dir.path(), "wsr_1", "stdout");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        let content = "héllo \"world\"\n\tü\u{1}".repeat(300);
        std::fs::write(&log, format!("skip{content}")).unwrap();
        let e = Event {
            seq: 7,
            kind: EventType::Stdout,
            at_ms: 1_700_000_000_000,
            data: json!({"offset": 4, "bytes": content.len(), "streamSha256": "ab"}),
        };
        let mut scratch = output_log::ReadBuf::default();
        let text: Value = serde_json::from_str(&event_text(dir.path(), "wsr_1", &e, &mut scratch)).unwrap();
        assert_eq!(text, event(dir.path(), "wsr_1", &e));
        assert_eq!(text["data"]["text"], content);
        // The scratch buffer, now holding a longer chunk, serves a shorter one.
        let short = Event { data: json!({"offset": 4, "bytes": 5}), ..e.clone() };
        let text: Value = serde_json::from_str(&event_text(dir.path(), "wsr_1", &short, &mut scratch)).unwrap();
        assert_eq!(text["data"]["text"], "héll");
        // Not UTF-8: the base64 form, as before.
        std::fs::write(&log, b"skip\xff\xfe").unwrap();
        let e = Event { data: json!({"offset": 4, "bytes": 2}), ..e };
        let text: Value = serde_json::from_str(&event_text(dir.path(), "wsr_1", &e, &mut scratch)).unwrap();
        assert_eq!(text["data"]["base64"], "//4=");
        // Other events are their `Value` view.
        let status = Event { kind: EventType::Status, data: json!({"status": "running"}), ..e };
        let text: Value = serde_json::from_str(&event_text(dir.path(), "wsr_1", &status, &mut scratch)).unwrap();
        assert_eq!(text, event(dir.path(), "wsr_1", &status));
    }

    /// A buffer that held one 4 MiB output event holds the next without
    /// growing, even when that event's header is longer (it would double
    /// otherwise, past the size SSE streams keep for reuse).
    #[test]
    fn an_output_event_fits_the_buffer_of_the_one_before() {
        let chunk = "crownest-output-benchmark-line\n".repeat((4 << 20) / 31);
        let event = |seq: u64, offset: u64| Event {
            seq,
            kind: EventType::Stdout,
            at_ms: 1_700_000_000_000,
            data: json!({"offset": offset, "bytes": chunk.len(), "streamSha256": "ab".repeat(32)}),
        };
        let mut out = String::new();
        push_event_text(&mut out, "wsr_1", &event(9, 4 << 20), Some(Ok(chunk.as_bytes())));
        let room = out.capacity();
        assert!(room < 5 << 20, "room for the text and its escapes, not twice that: {room}");
        out.clear();
        push_event_text(&mut out, "wsr_1", &event(10_000, 40 << 30), Some(Ok(chunk.as_bytes())));
        assert_eq!(out.capacity(), room, "the same buffer, not a larger one");
        let text: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(text["data"]["text"], chunk);
    }
}
