//! Archive upload from the CLI: direct for small archives, staged (parts,
//! resumable) for larger ones, with a progress bar on a terminal.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use crownest_client::{Client, idempotency_key};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The largest archive sent in one request; larger ones are staged.
const DIRECT_MAX: u64 = 8 << 20;

pub fn check_archive_path(path: &Path) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if path.is_dir() {
        bail!(
            "{} is a directory: the CLI does not pack directories; create a .tar.gz first (e.g. `tar czf repo.tgz -C dir .`)",
            path.display()
        );
    }
    if !(name.ends_with(".tgz") || name.ends_with(".tar.gz")) {
        bail!("{} is not a .tgz or .tar.gz archive", path.display());
    }
    if !path.is_file() {
        bail!("{} does not exist", path.display());
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
            let pct = if self.total == 0 { 100 } else { self.done * 100 / self.total };
            eprint!(
                "\r{} {:>7.1}/{:.1} MiB {pct:>3}%",
                self.label,
                self.done as f64 / 1048576.0,
                self.total as f64 / 1048576.0
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&self) {
        if self.on {
            eprintln!();
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
pub async fn upload(client: &Client, run_id: &str, archive: &Path, expected: Option<&str>) -> Result<Value> {
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
    staged(client, run_id, archive, size, &sha).await
}

async fn staged(client: &Client, run_id: &str, archive: &Path, size: u64, sha: &str) -> Result<Value> {
    let t = client
        .call(
            Method::POST,
            &format!("/v1/workspace-runs/{run_id}/archive-transfers"),
            Some(&json!({"sizeBytes": size, "sha256": sha})),
            None,
        )
        .await?;
    let tid = t["id"].as_str().context("transfer without id")?.to_string();
    let part_size = t["partSizeBytes"].as_u64().context("transfer without part size")?;
    let count = t["partCount"].as_u64().context("transfer without part count")?;
    let mut p = Progress::new("uploading", size);
    let mut file = tokio::fs::File::open(archive).await?;
    for n in 0..count {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let len = if n + 1 < count { part_size } else { size - part_size * (count - 1) };
        file.seek(std::io::SeekFrom::Start(n * part_size)).await?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf).await?;
        // Straight to object storage when the server handed out URLs.
        if let Some(url) = t["uploadUrls"].get(n as usize).and_then(|u| u["url"].as_str()) {
            client.put_presigned(url, buf.into()).await?;
            p.add(len);
            continue;
        }
        let path = format!("/v1/workspace-runs/{run_id}/archive-transfers/{tid}/parts/{n}");
        // A part is idempotent (it replaces any earlier attempt): retry it.
        let mut attempt = 0;
        loop {
            match client.put_bytes(&path, buf.clone().into(), len, None).await {
                Ok(_) => break,
                Err(crownest_client::ClientError::Transport { .. }) if attempt < 3 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
        p.add(len);
    }
    p.finish();
    let key = idempotency_key();
    Ok(client
        .call(Method::POST, &format!("/v1/workspace-runs/{run_id}/archive-transfers/{tid}/complete"), None, Some(&key))
        .await?)
}
