//! Archive upload: direct (small archives, one request) or staged (parts
//! uploaded in any order and retried, then completed). Either way the
//! declared `sizeBytes` and `sha256` are verified before the archive is
//! attached to the run, and nothing is attached when they do not match.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crownest_core::ErrorKind;
use crownest_core::ports::{ByteStream, PutRequest};
use crownest_core::runs::ids::{new_id, now_ms};
use crownest_core::runs::model::{ArchiveInfo, Event, Run, RunStatus};
use crownest_core::runs::store::{StoreError, Transfer};
use futures_util::TryStreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use super::{number, runs, visible_run};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::{idempotency, json, views};

fn sha256_arg(s: &str) -> ApiResult<String> {
    let s = s.to_ascii_lowercase();
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s)
    } else {
        Err(ApiError::bad_request("invalid_request", format!("`sha256` must be 64 hex characters, got `{s}`")))
    }
}

fn must_await_archive(run: &Run) -> ApiResult<()> {
    if run.archive.is_some() {
        return Err(ApiError::conflict(
            "archive_already_uploaded",
            format!("workspace run {} already has its archive", run.id),
        ));
    }
    if run.status != RunStatus::AwaitingArchive {
        return Err(ApiError::conflict(
            "run_not_awaiting_archive",
            format!("workspace run {} is {}, not awaiting an archive", run.id, run.status),
        ));
    }
    Ok(())
}

/// Counts and hashes what the store reads, refuses more than `max` bytes,
/// and checks the gzip magic on the way.
struct Verifying<R> {
    inner: R,
    seen: Arc<Mutex<(u64, Sha256, Option<String>)>>,
    max: u64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Verifying<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            let max = self.max;
            let mut s = self.seen.lock().unwrap();
            if s.0 == 0 && !new.is_empty() && new.len() >= 2 && new[..2] != [0x1f, 0x8b] {
                s.2 = Some("archive_not_gzip".into());
                return Poll::Ready(Err(io::Error::other("not a gzip file")));
            }
            s.0 += new.len() as u64;
            s.1.update(new);
            if s.0 > max {
                s.2 = Some("archive_size_mismatch".into());
                return Poll::Ready(Err(io::Error::other("the body is longer than declared")));
            }
        }
        r
    }
}

/// Store the archive body under the run and verify it; returns its locator.
async fn store_archive(
    state: &AppState,
    run: &Run,
    size: u64,
    sha256: &str,
    body: ByteStream,
    source_problem: Option<SourceProblem>,
) -> ApiResult<String> {
    let seen = Arc::new(Mutex::new((0u64, Sha256::new(), None::<String>)));
    let reader = Verifying { inner: body, seen: seen.clone(), max: size };
    let req = PutRequest {
        key: format!("archives/{}.tar.gz", run.id),
        size,
        sha256: sha256.to_string(),
        content_type: Some("application/gzip".into()),
        metadata: vec![("run".into(), run.id.clone())],
    };
    let result = state.artifacts.put(req, Box::new(reader)).await;
    let (count, hash, problem) = {
        let s = seen.lock().unwrap();
        (s.0, hex::encode(s.1.clone().finalize()), s.2.clone())
    };
    let mismatch = |code: &str| -> ApiError {
        match code {
            "archive_not_gzip" => ApiError::unprocessable(
                "archive_not_gzip",
                "the archive is not gzip-compressed: upload a .tar.gz or .tgz file",
            ),
            "archive_size_mismatch" => ApiError::unprocessable(
                "archive_size_mismatch",
                format!("declared sizeBytes {size}, received {}", count.max(size + 1)),
            ),
            _ => ApiError::unprocessable(
                "archive_checksum_mismatch",
                format!("declared sha256 {sha256}, received {hash}"),
            ),
        }
    };
    match result {
        Ok(info) => {
            // Trust, but verify: the store must have seen exactly the declared bytes.
            if count != size || hash != sha256 {
                let _ = state.artifacts.delete(&info.locator).await;
                return Err(if count != size {
                    ApiError::unprocessable(
                        "archive_size_mismatch",
                        format!("declared sizeBytes {size}, received {count}"),
                    )
                } else {
                    mismatch("archive_checksum_mismatch")
                });
            }
            Ok(info.locator)
        }
        Err(e) => Err(match problem {
            _ if source_problem.as_ref().is_some_and(|p| p.lock().unwrap().is_some()) => {
                source_problem.unwrap().lock().unwrap().take().unwrap()
            }
            Some(code) => mismatch(&code),
            None if e.kind == ErrorKind::Invalid && count != size => {
                ApiError::unprocessable("archive_size_mismatch", format!("declared sizeBytes {size}, received {count}"))
            }
            None if e.kind == ErrorKind::Invalid && hash != sha256 => mismatch("archive_checksum_mismatch"),
            None => ApiError::plugin(e),
        }),
    }
}

/// An archive attached by an upload, and what its automatic start did.
struct Attached {
    run: Run,
    /// The `queued` status event, when the upload queued the run.
    queued: Option<Event>,
    /// Why the meter refused the run's `autoStart`: code and message.
    refusal: Option<(String, String)>,
}

/// Attach the stored archive. A run created with `autoStart` is queued in
/// the same transaction when the meter admits it (asked first), and the
/// response is recorded there under `slot`'s key. On failure the stored
/// archive is deleted.
async fn attach(
    state: &AppState,
    caller: &Caller,
    run: &Run,
    info: ArchiveInfo,
    slot: Option<idempotency::Slot>,
) -> ApiResult<Attached> {
    let auto = run.spec.auto_start && !run.cancel_requested && run.status == RunStatus::AwaitingArchive;
    let refusal = if auto { runs::auto_start_refusal(state, caller, run).await } else { None };
    let view_refusal = refusal.clone();
    let respond = slot.map(|s| s.respond(StatusCode::OK, move |r| upload_view(r, view_refusal.as_ref())));
    let locator = info.locator.clone();
    match state.store.attach_archive(run.id.clone(), info, auto && refusal.is_none(), respond).await {
        Ok((run, queued)) => Ok(Attached { run, queued, refusal }),
        Err(e) => {
            let _ = state.artifacts.delete(&locator).await;
            Err(match e {
                StoreError::Conflict(c) if c == "archive_already_uploaded" => ApiError::conflict(
                    "archive_already_uploaded",
                    format!("workspace run {} already has its archive", run.id),
                ),
                StoreError::Conflict(_) => ApiError::conflict(
                    "run_not_awaiting_archive",
                    format!("workspace run {} is not awaiting an archive", run.id),
                ),
                other => ApiError::store(other),
            })
        }
    }
}

impl Attached {
    /// Hand a run the upload queued to the executor; the upload's answer.
    async fn start(self, state: &AppState, caller: &Caller) -> serde_json::Value {
        if let Some(e) = self.queued {
            runs::started(state, caller, &self.run, e).await;
        }
        upload_view(&self.run, self.refusal.as_ref())
    }
}

/// The view an upload answers with: the run, and `autoStartError` when its
/// automatic start was refused.
fn upload_view(run: &Run, refusal: Option<&(String, String)>) -> serde_json::Value {
    let mut v = views::run(run);
    if let Some((code, message)) = refusal {
        v["autoStartError"] = serde_json::json!({"code": code, "message": message});
    }
    v
}

fn body_reader(body: Body) -> ByteStream {
    let stream = body.into_data_stream().map_err(io::Error::other);
    Box::new(tokio_util::io::StreamReader::new(stream))
}

/// `PUT /v1/workspace-runs/{id}/archive?sizeBytes=&sha256=`
pub async fn direct(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let prelude: ApiResult<(Run, u64, String, Option<String>)> = async {
        let run = visible_run(&state, &caller, &id, "workspace_runs:create").await?;
        let size = number(&q, "sizeBytes")?
            .ok_or_else(|| ApiError::bad_request("invalid_request", "`sizeBytes` is required"))?;
        let sha = sha256_arg(
            q.get("sha256").ok_or_else(|| ApiError::bad_request("invalid_request", "`sha256` is required"))?,
        )?;
        let key = idempotency::key(&headers)?;
        Ok((run, size, sha, key))
    }
    .await;
    let (run, size, sha, key) = match prelude {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let hash = idempotency::hash(&[id.as_bytes(), size.to_string().as_bytes(), sha.as_bytes()]);
    let project = run.project_id.clone();
    idempotency::once(&state, &project, "upload", key, hash, async |slot: Option<idempotency::Slot>| {
        let limit = state.limits.direct_upload_bytes;
        if size > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "archive_too_large",
                format!("archives over {} MiB must use a staged transfer (POST /v1/workspace-runs/{id}/archive-transfers); this one is {size} bytes", limit >> 20),
            ));
        }
        if size == 0 {
            return Err(ApiError::unprocessable("archive_size_mismatch", "an archive cannot be empty"));
        }
        must_await_archive(&run)?;
        if let Some(len) = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
            && len != size {
                return Err(ApiError::unprocessable("archive_size_mismatch", format!("declared sizeBytes {size}, but Content-Length is {len}")));
            }
        let locator = store_archive(&state, &run, size, &sha, body_reader(body), None).await?;
        tracing::debug!(run_id = %run.id, "step: archive stored");
        let info = ArchiveInfo { size_bytes: size, sha256: sha.clone(), upload: "direct".into(), locator, uploaded_at_ms: now_ms() };
        let attached = attach(&state, &caller, &run, info, slot).await?;
        tracing::info!(run_id = %run.id, size, "archive uploaded");
        Ok((StatusCode::OK, attached.start(&state, &caller).await))
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, expecting = "a JSON object with `sizeBytes` and `sha256`")]
struct TransferBody {
    size_bytes: u64,
    sha256: String,
    part_size_bytes: Option<u64>,
}

fn transfer_dir(state: &AppState, id: &str) -> std::path::PathBuf {
    state.transfers_dir.join(id)
}

/// How long a presigned part upload URL stays valid; `GET` on the transfer
/// hands out fresh ones.
const PART_URL_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where part `n` of a presigned transfer lives in the artifact store.
fn part_key(transfer: &str, n: u64) -> String {
    format!("transfers/{transfer}/part-{n}")
}

/// Fresh upload URLs for the parts of a presigned transfer (`None` for a
/// transfer through the server).
async fn upload_urls(state: &AppState, t: &Transfer) -> ApiResult<Option<views::PartUrls>> {
    if t.mode != "presigned" || t.status != "open" {
        return Ok(None);
    }
    let expires_at_ms = now_ms() + PART_URL_TTL.as_millis() as u64;
    let mut urls = Vec::with_capacity(t.part_count() as usize);
    for n in 0..t.part_count() {
        match state.artifacts.presign_put(&part_key(&t.id, n), PART_URL_TTL).await.map_err(ApiError::plugin)? {
            Some(url) => urls.push((n, url)),
            None => {
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "presign_unavailable",
                    format!(
                        "transfer {} uploads through presigned URLs, but the artifact store no longer issues them (was `presign_uploads` turned off?); create a new transfer",
                        t.id
                    ),
                ));
            }
        }
    }
    Ok(Some(views::PartUrls { urls, expires_at_ms }))
}

/// The first thing wrong with the parts a concatenation read (a missing
/// part, a part of the wrong size), to report instead of the store's error.
type SourceProblem = Arc<Mutex<Option<ApiError>>>;

/// `POST /v1/workspace-runs/{id}/archive-transfers`
pub async fn create_transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<json::RequestBody, ApiError>,
) -> Response {
    let r: ApiResult<Response> = async {
        let run = visible_run(&state, &caller, &id, "workspace_runs:create").await?;
        let body = body?.0;
        let b: TransferBody = json::parse(&body)?;
        let sha = sha256_arg(&b.sha256)?;
        if b.size_bytes == 0 {
            return Err(ApiError::unprocessable("archive_size_mismatch", "an archive cannot be empty"));
        }
        if b.size_bytes > state.limits.staged_upload_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "archive_too_large",
                format!(
                    "archives are limited to {} MiB on this server; this one is {} bytes",
                    state.limits.staged_upload_bytes >> 20,
                    b.size_bytes
                ),
            ));
        }
        let part = b.part_size_bytes.unwrap_or(state.limits.part_bytes);
        if !(1 << 20..=64 << 20).contains(&part) {
            return Err(ApiError::bad_request("invalid_request", "`partSizeBytes` must be between 1 MiB and 64 MiB"));
        }
        must_await_archive(&run)?;
        let id = new_id("xfr");
        // Parts go straight to the store when it hands out upload URLs (the
        // operator enabled it in the store's config), else through us.
        let presigned = match state.artifacts.presign_put(&part_key(&id, 0), PART_URL_TTL).await {
            Ok(url) => url.is_some(),
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "the artifact store could not presign an upload; parts go through the server");
                false
            }
        };
        let t = Transfer {
            id,
            run_id: run.id.clone(),
            size: b.size_bytes,
            sha256: sha,
            part_size: part,
            parts: vec![],
            status: "open".into(),
            created_at_ms: 0,
            mode: if presigned { "presigned" } else { "server" }.into(),
        };
        if !presigned {
            std::fs::create_dir_all(transfer_dir(&state, &t.id))
                .map_err(|e| ApiError::internal(format!("cannot prepare the transfer: {e}")))?;
        }
        let t = state.store.create_transfer(t).await.map_err(ApiError::store)?;
        let urls = upload_urls(&state, &t).await?;
        Ok(json::data(StatusCode::CREATED, views::transfer(&t, urls.as_ref())))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

async fn visible_transfer(state: &AppState, caller: &Caller, run_id: &str, tid: &str) -> ApiResult<(Run, Transfer)> {
    let run = visible_run(state, caller, run_id, "workspace_runs:create").await?;
    let t = state.store.get_transfer(tid.to_string()).await.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!("transfer {tid}")),
        other => ApiError::store(other),
    })?;
    if t.run_id != run.id {
        return Err(ApiError::not_found(format!("transfer {tid}")));
    }
    Ok((run, t))
}

/// Delete the parts and records of transfers left open longer than
/// `max_age`: part files of transfers through the server, part objects of
/// presigned ones. Returns how many were swept.
pub async fn sweep_abandoned_transfers(state: &AppState, max_age: std::time::Duration) -> usize {
    let Ok(list) = state.store.abandoned_transfers(max_age.as_millis() as u64).await else { return 0 };
    let mut swept = 0;
    for t in list {
        if t.mode == "presigned" {
            let mut all = true;
            for n in 0..t.part_count() {
                if let Err(e) = state.artifacts.delete(&part_key(&t.id, n)).await {
                    tracing::warn!(transfer = %t.id, part = n, "cannot delete an abandoned part (retried later): {e}");
                    all = false;
                }
            }
            if !all {
                continue;
            }
        } else {
            let _ = tokio::fs::remove_dir_all(transfer_dir(state, &t.id)).await;
        }
        if state.store.delete_transfer(t.id.clone()).await.is_ok() {
            tracing::info!(run_id = %t.run_id, transfer = %t.id, "swept an abandoned staged transfer");
            swept += 1;
        }
    }
    swept
}

/// `GET …/archive-transfers/{tid}`: which parts arrived (to resume).
pub async fn get_transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tid)): Path<(String, String)>,
) -> Response {
    let r: ApiResult<Response> = async {
        let (_, t) = visible_transfer(&state, &caller, &id, &tid).await?;
        let urls = upload_urls(&state, &t).await?;
        Ok(json::data(StatusCode::OK, views::transfer(&t, urls.as_ref())))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// `PUT …/archive-transfers/{tid}/parts/{n}`: exactly the part's bytes; a
/// retried part replaces the earlier attempt.
pub async fn put_part(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tid, n)): Path<(String, String, String)>,
    body: Body,
) -> Response {
    let r: ApiResult<Response> = async {
        let n: u64 = n.parse().map_err(|_| {
            ApiError::bad_request("invalid_request", format!("part number `{n}` is not a non-negative integer"))
        })?;
        let (_, t) = visible_transfer(&state, &caller, &id, &tid).await?;
        if t.status != "open" {
            return Err(ApiError::conflict("transfer_complete", format!("transfer {tid} is already complete")));
        }
        if t.mode == "presigned" {
            return Err(ApiError::conflict(
                "transfer_is_presigned",
                format!(
                    "transfer {tid} takes its parts at the presigned `uploadUrls` of the transfer, not through the API"
                ),
            ));
        }
        if n >= t.part_count() {
            return Err(ApiError::bad_request(
                "invalid_request",
                format!("part {n} does not exist: this transfer has parts 0 to {}", t.part_count() - 1),
            ));
        }
        let want = t.part_len(n);
        let dir = transfer_dir(&state, &tid);
        let tmp = dir.join(format!("part-{n}.{}", new_id("tmp")));
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ApiError::internal(format!("cannot store the part: {e}")))?;
        let mut stream = body.into_data_stream();
        let mut got = 0u64;
        use futures_util::StreamExt;
        use tokio::io::AsyncWriteExt;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::bad_request("invalid_request", format!("the upload broke off: {e}")))?;
            got += chunk.len() as u64;
            if got > want {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(ApiError::unprocessable(
                    "part_size_mismatch",
                    format!("part {n} must be exactly {want} bytes; received more"),
                ));
            }
            file.write_all(&chunk).await.map_err(|e| ApiError::internal(format!("cannot store the part: {e}")))?;
        }
        if got != want {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(ApiError::unprocessable(
                "part_size_mismatch",
                format!("part {n} must be exactly {want} bytes; received {got}"),
            ));
        }
        file.sync_all().await.map_err(|e| ApiError::internal(e.to_string()))?;
        tokio::fs::rename(&tmp, dir.join(format!("part-{n}"))).await.map_err(|e| ApiError::internal(e.to_string()))?;
        let t = state.store.mark_part(tid.clone(), n).await.map_err(ApiError::store)?;
        Ok(json::data(StatusCode::OK, views::transfer(&t, None)))
    }
    .await;
    r.unwrap_or_else(IntoResponse::into_response)
}

/// Where the parts of a transfer are read from.
#[derive(Clone)]
enum PartSource {
    /// Files the server received (`part-<n>` in the transfer's directory).
    Dir(std::path::PathBuf),
    /// Objects clients uploaded to the artifact store with presigned URLs.
    Store(AppState, String),
}

impl PartSource {
    async fn open(&self, n: u64) -> Result<ByteStream, ApiError> {
        match self {
            PartSource::Dir(dir) => match tokio::fs::File::open(dir.join(format!("part-{n}"))).await {
                Ok(f) => Ok(Box::new(f) as ByteStream),
                Err(e) => Err(ApiError::internal(format!("cannot read part {n} of the transfer: {e}"))),
            },
            PartSource::Store(state, tid) => state.artifacts.get(&part_key(tid, n)).await.map_err(|e| {
                if e.kind == ErrorKind::NotFound {
                    ApiError::conflict(
                        "transfer_incomplete",
                        format!("part {n} of transfer {tid} has not been uploaded; PUT it to its upload URL and complete again"),
                    )
                } else {
                    ApiError::plugin(e)
                }
            }),
        }
    }
}

/// The parts of a transfer as one stream, in order, each checked for its
/// exact length; the first problem is left in `problem`.
fn concatenated(source: PartSource, t: &Transfer, problem: SourceProblem) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    let lens: Vec<u64> = (0..t.part_count()).map(|n| t.part_len(n)).collect();
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let fail = async |e: ApiError| {
            let msg = e.message.clone();
            *problem.lock().unwrap() = Some(e);
            let _ = tx.send(Err(io::Error::other(msg))).await;
        };
        for (n, want) in lens.into_iter().enumerate() {
            let n = n as u64;
            let mut part = match source.open(n).await {
                Ok(p) => p,
                Err(e) => return fail(e).await,
            };
            let mut got = 0u64;
            loop {
                let mut buf = vec![0u8; 1 << 20];
                match part.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => {
                        got += k as u64;
                        if got > want {
                            break;
                        }
                        buf.truncate(k);
                        if tx.send(Ok(Bytes::from(buf))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => return fail(ApiError::internal(format!("reading part {n} failed: {e}"))).await,
                }
            }
            if got != want {
                return fail(ApiError::unprocessable(
                    "part_size_mismatch",
                    format!(
                        "part {n} must be exactly {want} bytes; the uploaded part has {}{got}",
                        if got > want { "more than " } else { "" }
                    ),
                ))
                .await;
            }
        }
    });
    let stream = Box::pin(tokio_stream_from(rx));
    Box::new(tokio_util::io::StreamReader::new(stream))
}

fn tokio_stream_from(
    rx: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures_util::Stream<Item = io::Result<Bytes>> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

/// `POST …/archive-transfers/{tid}/complete`: verify and attach.
pub async fn complete_transfer(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, tid)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (run, t) = match visible_transfer(&state, &caller, &id, &tid).await {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let key = match idempotency::key(&headers) {
        Ok(k) => k,
        Err(e) => return e.into_response(),
    };
    let hash = idempotency::hash(&[id.as_bytes(), tid.as_bytes()]);
    idempotency::once(&state, &run.project_id.clone(), "upload", key, hash, async |_| {
        let missing: Vec<u64> = (0..t.part_count()).filter(|n| !t.parts.contains(n)).collect();
        if t.mode != "presigned" && !missing.is_empty() {
            return Err(ApiError::conflict(
                "transfer_incomplete",
                format!("transfer {tid} is missing parts {missing:?}; upload them and complete again"),
            ));
        }
        must_await_archive(&run)?;
        let dir = transfer_dir(&state, &tid);
        let source =
            if t.mode == "presigned" { PartSource::Store(state.clone(), tid.clone()) } else { PartSource::Dir(dir.clone()) };
        let problem = SourceProblem::default();
        let body = concatenated(source, &t, problem.clone());
        let locator = store_archive(&state, &run, t.size, &t.sha256, body, Some(problem)).await?;
        let info = ArchiveInfo {
            size_bytes: t.size,
            sha256: t.sha256.clone(),
            upload: "staged".into(),
            locator,
            uploaded_at_ms: now_ms(),
        };
        // A run queued with its archive goes to the executor at once,
        // whatever happens to the transfer's bookkeeping below.
        let view = attach(&state, &caller, &run, info, None).await?.start(&state, &caller).await;
        state.store.complete_transfer(tid.clone()).await.map_err(ApiError::store)?;
        if t.mode == "presigned" {
            for n in 0..t.part_count() {
                if let Err(e) = state.artifacts.delete(&part_key(&tid, n)).await {
                    tracing::warn!(run_id = %run.id, part = n, error = %e, "could not delete a transfer part from the store");
                }
            }
        } else {
            let _ = tokio::fs::remove_dir_all(&dir).await;
        }
        tracing::info!(run_id = %run.id, size = t.size, mode = %t.mode, "staged archive completed");
        Ok((StatusCode::OK, view))
    })
    .await
}
