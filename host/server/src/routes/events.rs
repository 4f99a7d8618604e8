//! `GET /v1/workspace-runs/{id}/events`: a bounded JSON page, or with
//! `Accept: text/event-stream` a live SSE stream (`id:` = seq, `event:` =
//! type, JSON data) that resumes after `afterSeq` or `Last-Event-ID`, sends a
//! heartbeat when idle, and closes after the `terminal` event. A cursor
//! beyond the last event is an explicit error, never a silent gap.

use std::collections::HashMap;
use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use crownest_core::runs::ids::{now_ms, rfc3339};
use crownest_core::runs::model::EventType;
use crownest_core::runs::output_log;
use crownest_core::runs::recycle::Recycler;
use futures_util::stream::Stream;
use serde_json::json;

use super::{number, visible_run};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{json, views};

const PAGE: u32 = 256;
/// Output frame buffers kept for reuse, shared by every SSE stream: enough
/// for one stream's frames in the channel to the connection, the one it
/// writes, and the one being built.
const FRAMES_KEPT: usize = 6;
/// The largest frame buffer kept for reuse: a default 4 MiB chunk of text
/// with its escapes fits; a frame of escape-heavy bytes, several times its
/// chunk, is freed.
const KEPT_FRAME_MAX: usize = 8 << 20;

pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let r: ApiResult<Response> = async {
        let run = visible_run(&state, &caller, &id, "workspace_runs:read").await?;
        let sse = headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/event-stream"));
        let last_event_id = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.parse::<u64>().map_err(|_| ApiError::bad_request("invalid_cursor", format!("Last-Event-ID `{v}` is not an event seq"))))
            .transpose()?;
        let after = number(&q, "afterSeq")?.or(last_event_id).unwrap_or(0);
        let last = state.store.last_seq(id.clone()).await.map_err(ApiError::store)?;
        if after > last {
            return Err(ApiError::conflict(
                "cursor_out_of_range",
                format!("afterSeq {after} is beyond the last event ({last}) of workspace run {id}; resume from a seq you received"),
            ));
        }
        if sse {
            let stream = live(state.clone(), id.clone(), after);
            return Ok((
                [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
                Body::from_stream(stream),
            )
                .into_response());
        }
        let limit = number(&q, "limit")?.unwrap_or(100).clamp(1, 1000) as u32;
        let evs = state.store.list_events(id.clone(), after, limit).await.map_err(ApiError::store)?;
        let next = evs.last().map(|e| e.seq).unwrap_or(after);
        let has_more = next < last;
        let (dir, run_id) = (state.store.dir().to_path_buf(), id.clone());
        let items: Vec<_> = tokio::task::spawn_blocking(move || evs.iter().map(|e| views::event(&dir, &run_id, e)).collect())
            .await
            .map_err(|e| ApiError::internal(format!("reading events: {e}")))?;
        Ok(json::data(
            StatusCode::OK,
            json!({"items": items, "nextAfterSeq": next, "hasMore": has_more, "runStatus": run.status.as_str()}),
        ))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The output frame buffers of every SSE stream. Shared, not one per
/// stream: a stream lives as long as one run, and a fresh 4 MiB frame costs
/// ~1 000 page faults as it is written.
fn frame_recycler() -> &'static Recycler<String> {
    static FRAMES: std::sync::OnceLock<Recycler<String>> = std::sync::OnceLock::new();
    FRAMES.get_or_init(|| Recycler::new(FRAMES_KEPT, KEPT_FRAME_MAX))
}

/// One SSE frame: `id:` (when the event has a seq), `event:`, and the
/// event's JSON as a single `data:` line (JSON text never holds a raw
/// newline). `write_json` appends the JSON; the frame is built in one
/// buffer and handed to the connection without another copy.
fn frame(seq: Option<u64>, kind: &str, write_json: impl FnOnce(&mut String)) -> Bytes {
    Bytes::from(frame_into(String::new(), seq, kind, write_json))
}

/// [`frame`], built in `out` (an empty buffer, perhaps with room).
fn frame_into(mut out: String, seq: Option<u64>, kind: &str, write_json: impl FnOnce(&mut String)) -> String {
    if let Some(seq) = seq {
        out.push_str("id: ");
        out.push_str(&seq.to_string());
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\ndata: ");
    write_json(&mut out);
    out.push_str("\n\n");
    out
}

fn live(state: AppState, run_id: String, mut after: u64) -> impl Stream<Item = Result<Bytes, Infallible>> {
    async_stream(move |tx| async move {
        let heartbeat = state.limits.heartbeat;
        let current = state.store.last_seq(run_id.clone()).await.unwrap_or(after);
        // Subscribe before reading, so no notification falls in between.
        let mut watch = state.executor.hub().subscribe(&run_id, current);
        // Output chunks are read into this buffer, one after another.
        let mut scratch = output_log::ReadBuf::default();
        // Output frames are megabytes each: they are built in buffers a
        // connection has finished writing (a fresh one costs a page fault
        // per 4 KiB).
        let frames = frame_recycler();
        let lender = frames.lender();
        let mut stopping = state.shutdown.clone();
        crownest_core::metrics::record::sse_clients(1);
        let _open = OpenStream;
        loop {
            let batch = match state.store.list_events(run_id.clone(), after, PAGE).await {
                Ok(b) => b,
                Err(e) => {
                    let body = json!({"code": "internal", "message": e.to_string()}).to_string();
                    let _ = tx.send(frame(None, "error", |out| out.push_str(&body))).await;
                    return;
                }
            };
            let mut ended = false;
            for e in batch.iter() {
                let (kind, seq) = (e.kind.as_str(), Some(e.seq));
                let bytes = if let Some((offset, len)) = views::output_span(e) {
                    // A chunk just stored is still in memory (a reader
                    // following live); else it is read from the log.
                    let cached = state.executor.hub().cached_chunk(&run_id, kind, offset, len);
                    // Reading the chunk from the log and escaping it is file
                    // and CPU work: keep it off the runtime threads.
                    let (dir, id, ev) = (state.store.dir().to_path_buf(), run_id.clone(), e.clone());
                    let mut buf = std::mem::take(&mut scratch);
                    let (room, lender) = (frames.spare().unwrap_or_default(), lender.clone());
                    match tokio::task::spawn_blocking(move || {
                        let content = match &cached {
                            Some(bytes) => Some(Ok(&bytes[..])),
                            None => views::content(&dir, &id, &ev, &mut buf),
                        };
                        let out = frame_into(room, seq, kind, |out| views::push_event_text(out, &id, &ev, content));
                        (lender.lend(out), buf)
                    })
                    .await
                    {
                        Ok((bytes, buf)) => {
                            scratch = buf;
                            bytes
                        }
                        Err(_) => return,
                    }
                } else {
                    frame(seq, kind, |out| views::push_event_text(out, &run_id, e, None))
                };
                if tx.send(bytes).await.is_err() {
                    return;
                }
                after = e.seq;
                if e.kind == EventType::Terminal {
                    tracing::debug!(run_id = %run_id, "step: terminal handed to the connection");
                    ended = true;
                }
            }
            if ended {
                return;
            }
            if batch.len() as u32 == PAGE {
                continue;
            }
            // Nothing new: a terminal run has nothing more to send (the
            // cursor is at its end, past `terminal`), so the client has
            // everything and the stream ends now instead of idling.
            if batch.is_empty() && run_is_terminal(&state, &run_id).await {
                return;
            }
            tokio::select! {
                _ = stopped(&mut stopping) => {
                    // The server is stopping: a last comment, and the client
                    // resumes from the last id it got (here or elsewhere).
                    let note = format!(": the server is shutting down; resume with Last-Event-ID: {after}\n\n");
                    let _ = tx.send(Bytes::from(note)).await;
                    return;
                }
                changed = watch.changed() => {
                    if changed.is_err() {
                        // The hub let go of the run: it is terminal; drain and stop.
                        watch = state.executor.hub().subscribe(&run_id, after);
                    }
                }
                _ = tokio::time::sleep(heartbeat) => {
                    // Idle: the run may stay quiet for long; let the spare
                    // frame buffers go (a busy stream makes new ones).
                    frames.release_spares();
                    let body = json!({"at": rfc3339(now_ms()), "afterSeq": after}).to_string();
                    if tx.send(frame(None, EventType::Heartbeat.as_str(), |out| out.push_str(&body))).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Resolves once the server is stopping (never, if its sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *rx.borrow_and_update() {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Counts an open SSE stream for the metrics while it lives.
struct OpenStream;

impl Drop for OpenStream {
    fn drop(&mut self) {
        crownest_core::metrics::record::sse_clients(-1);
    }
}

/// Whether the run has reached a terminal state (its terminal event is
/// committed with the status, so every event is readable by then).
async fn run_is_terminal(state: &AppState, run_id: &str) -> bool {
    state.store.get_run(run_id.to_string()).await.is_ok_and(|r| r.status.is_terminal())
}

/// A stream fed by an async task through a bounded channel.
fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Result<Bytes, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    // A few events in flight: output events hold up to a chunk each, and
    // a slow client must not make the server buffer a run's whole output.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) })
}
