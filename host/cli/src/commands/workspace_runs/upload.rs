//! Archive upload from the CLI: direct for small archives, staged (parts,
//! resumable) for larger ones, with a progress bar on a terminal. An
//! interrupted staged upload, run again, resumes the same transfer and
//! sends only the parts the server is missing (see `transfer_state`).

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use crownest_client::types::{NewTransfer, Transfer};
use crownest_client::{Client, ClientError, idempotency_key, typed};
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::transfer_state::{StateFile, TransferState};
use crate::context::Context;
use crate::errln;
use crate::exit::usage;

/// The largest archive sent in one request; larger ones are staged.
const DIRECT_MAX: u64 = 8 << 20;

/// Refuse (as wrong usage, exit 2) what cannot be an archive to upload.
pub fn check_archive_path(path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if path.is_dir() {
        return Err(usage(format!(
            "{} is a directory: the CLI does not pack directories; create a .tar.gz first (e.g. `tar czf repo.tgz -C dir .`)",
            path.display()
        )));
    }
    if !(name.ends_with(".tgz") || name.ends_with(".tar.gz")) {
        return Err(usage(format!("{} is not a .tgz or .tar.gz archive", path.display())));
    }
    if !path.is_file() {
        return Err(usage(format!("{} does not exist", path.display())));
    }
    Ok(())
}

struct Progress {
    total: u64,
    done: u64,
    on: bool,
    label: &'static str,
}

impl Progress {
    fn new(label: &'static str, total: u64) -> Progress {
        Progress { total, done: 0, on: std::io::stderr().is_terminal(), label }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        if self.on {
            let pct = (self.done * 100).checked_div(self.total).unwrap_or(100);
            crate::stdio::err(format_args!(
                "\r{} {:>7.1}/{:.1} MiB {pct:>3}%",
                self.label,
                self.done as f64 / 1048576.0,
                self.total as f64 / 1048576.0
            ));
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&self) {
        if self.on {
            errln!();
        }
    }
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Upload `archive` to run `run_id`; returns the run.
pub async fn upload(
    ctx: &Context,
    client: &Client,
    run_id: &str,
    archive: &Path,
    expected: Option<&str>,
) -> Result<Value> {
    check_archive_path(archive)?;
    let path = archive.to_path_buf();
    // A small archive is read once and hashed in memory, right here (the
    // CLI has nothing else to do meanwhile, and a thread to do it on costs
    // more than reading a few KiB); a large one is hashed on the blocking
    // pool and streamed in parts below.
    let len = std::fs::metadata(&path).with_context(|| format!("cannot open {}", path.display()))?.len();
    let (size, sha, small) = if len <= DIRECT_MAX {
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        (bytes.len() as u64, sha, Some(bytes))
    } else {
        let (size, sha) = tokio::task::spawn_blocking(move || sha256_file(&path)).await??;
        (size, sha, None)
    };
    if let Some(e) = expected
        && !e.eq_ignore_ascii_case(&sha)
    {
        bail!("{} has sha256 {sha}, not the expected {e}", archive.display());
    }
    if let Some(bytes) = small {
        let mut p = Progress::new("uploading", size);
        let key = idempotency_key();
        let path = format!("/v1/workspace-runs/{run_id}/archive?sizeBytes={size}&sha256={sha}");
        let r = client.put_bytes(&path, bytes.into(), size, Some(&key)).await?;
        p.add(size);
        p.finish();
        return Ok(r);
    }
    let state = StateFile::for_upload(ctx, client.base(), run_id, &sha);
    staged(client, &state, run_id, archive, size, &sha).await
}

fn transfer_path(run_id: &str, tid: &str) -> String {
    format!("/v1/workspace-runs/{run_id}/archive-transfers/{tid}")
}

/// The transfer an earlier, interrupted upload of this archive left open,
/// if the server still has it. `Err(run)` when that upload got as far as
/// completing it (the archive is attached).
async fn earlier_transfer(
    client: &Client,
    state: &StateFile,
    run_id: &str,
    size: u64,
    sha: &str,
) -> Result<Result<Option<(Transfer, TransferState)>, Value>> {
    let Some(st) = state.load() else { return Ok(Ok(None)) };
    match client.get(&transfer_path(run_id, &st.transfer_id)).await.and_then(typed::<Transfer>) {
        Ok(t) if t.status == "complete" => {
            state.remove();
            Ok(Err(client.get(&format!("/v1/workspace-runs/{run_id}")).await?))
        }
        Ok(t) if t.status == "open" && t.size_bytes == size && t.sha256.eq_ignore_ascii_case(sha) => {
            Ok(Ok(Some((t, st))))
        }
        // Swept by the server, or not this archive after all: start over.
        Ok(_) | Err(ClientError::Api { status: 404, .. }) => {
            state.remove();
            Ok(Ok(None))
        }
        Err(e) => Err(e.into()),
    }
}

async fn staged(
    client: &Client,
    state: &StateFile,
    run_id: &str,
    archive: &Path,
    size: u64,
    sha: &str,
) -> Result<Value> {
    let (t, mut st, resumed) = match earlier_transfer(client, state, run_id, size, sha).await? {
        Err(run) => {
            errln!("crownest: an earlier upload of this archive to {run_id} was already completed");
            return Ok(run);
        }
        Ok(Some((t, st))) => (t, st, true),
        Ok(None) => {
            let body = NewTransfer { size_bytes: size, sha256: sha };
            let path = format!("/v1/workspace-runs/{run_id}/archive-transfers");
            let t: Transfer = typed(client.call_with(Method::POST, &path, &body, None).await?)?;
            let st = TransferState {
                base: client.base().to_string(),
                run_id: run_id.to_string(),
                sha256: sha.to_string(),
                transfer_id: t.id.clone(),
                presigned_done: Vec::new(),
            };
            // Noted before the first part goes, so an interruption at any
            // point can be resumed.
            state.save(&st)?;
            (t, st, false)
        }
    };
    let presigned = t.mode == "presigned";
    let count = t.part_count;
    let part_size = t.part_size_bytes;
    let todo: Vec<u64> = match (&t.missing_parts, presigned) {
        (Some(missing), false) => missing.clone(),
        _ => (0..count).filter(|n| !st.presigned_done.contains(n)).collect(),
    };
    let part_len = |n: u64| if n + 1 < count { part_size } else { size - part_size * (count - 1) };
    let mut p = Progress::new("uploading", size);
    if resumed {
        errln!(
            "crownest: resuming transfer {} of {run_id}: {} of {count} parts already there, {} to send",
            t.id,
            count - todo.len() as u64,
            todo.len()
        );
    }
    p.add((0..count).filter(|n| !todo.contains(n)).map(part_len).sum());
    let mut file = tokio::fs::File::open(archive).await?;
    for n in todo {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let len = part_len(n);
        file.seek(std::io::SeekFrom::Start(n * part_size)).await?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).await?;
        // Straight to object storage when the server handed out URLs.
        if presigned {
            let url =
                t.upload_urls.iter().find(|u| u.part == n).context("the transfer has no upload URL for a part")?;
            client.put_presigned(&url.url, buf.into()).await?;
            st.presigned_done.push(n);
            state.save(&st)?;
            p.add(len);
            continue;
        }
        let path = format!("{}/parts/{n}", transfer_path(run_id, &t.id));
        // A part is idempotent (it replaces any earlier attempt): retry it.
        let mut attempt = 0;
        loop {
            match client.put_bytes(&path, buf.clone().into(), len, None).await {
                Ok(_) => break,
                Err(ClientError::Transport { .. }) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
        p.add(len);
    }
    p.finish();
    let key = idempotency_key();
    let done = client.call(Method::POST, &format!("{}/complete", transfer_path(run_id, &t.id)), None, Some(&key)).await;
    match done {
        Ok(run) => {
            state.remove();
            Ok(run)
        }
        Err(e) => {
            // Parts the store lost (or never got) are sent again next time.
            if presigned && matches!(e.code(), "transfer_incomplete" | "part_size_mismatch") {
                st.presigned_done.clear();
                let _ = state.save(&st);
            }
            Err(e.into())
        }
    }
}
