//! Finding an interrupted staged upload again. Before its first part is
//! sent, the CLI notes the transfer's id in a small file keyed by (server,
//! run, archive sha256) under the user's cache directory
//! (`$XDG_CACHE_HOME/crownest/uploads`, else `~/.cache/crownest/uploads`,
//! else `<data-dir>/uploads`); the same upload run again reads it and asks
//! the server which parts it still misses. The file goes once the transfer
//! is complete. For a presigned transfer (parts go straight to object
//! storage, which the server does not watch) the file also lists the parts
//! already sent.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::context::Context;

/// Notes older than this are dropped: the server sweeps transfers left
/// open for two days (`runs.abandoned_transfer_secs`).
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransferState {
    pub base: String,
    pub run_id: String,
    pub sha256: String,
    pub transfer_id: String,
    /// Parts of a presigned transfer already sent.
    #[serde(default)]
    pub presigned_done: Vec<u64>,
}

/// The note of one (server, run, archive).
pub struct StateFile {
    path: PathBuf,
}

fn dir(ctx: &Context) -> PathBuf {
    let home_cache = || std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".cache"));
    match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(home_cache) {
        Some(cache) => cache.join("crownest/uploads"),
        None => ctx.config().map(|c| c.data_dir()).unwrap_or_else(|_| PathBuf::from("crownest-data")).join("uploads"),
    }
}

impl StateFile {
    pub fn for_upload(ctx: &Context, base: &str, run_id: &str, sha256: &str) -> StateFile {
        let key = Sha256::digest(format!("{base}\0{run_id}\0{sha256}"));
        StateFile { path: dir(ctx).join(format!("{}.json", &hex::encode(key)[..32])) }
    }

    /// The note, if there is a readable one.
    pub fn load(&self) -> Option<TransferState> {
        serde_json::from_slice(&std::fs::read(&self.path).ok()?).ok()
    }

    /// Write the note (whole or not at all), and drop stale ones beside it.
    pub fn save(&self, state: &TransferState) -> Result<()> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(state)?).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).with_context(|| format!("cannot write {}", self.path.display()))?;
        prune(dir);
        Ok(())
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn prune(dir: &std::path::Path) {
    let now = SystemTime::now();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let old =
            e.metadata().and_then(|m| m.modified()).is_ok_and(|t| now.duration_since(t).unwrap_or_default() > KEEP);
        if old {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
