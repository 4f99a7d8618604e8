//! What the standby pool of a serving process looks like, written to a file
//! beside the installation's cells so that `crownest doctor` (another
//! process) can show it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::limits::Limits;

/// The file name, in the installation's cells directory.
pub const FILE_NAME: &str = "standby-pool.json";

/// The pool of one serving process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    /// The server process that keeps the pool.
    pub pid: u32,
    pub updated_at_ms: u64,
    /// Standbys kept per shape (`sandbox.warm_standby`).
    pub per_shape: usize,
    pub shapes: Vec<ShapeStatus>,
}

/// One learned shape (a template's mounts, network and limits).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShapeStatus {
    /// The plugin namespace the shape's cells belong to.
    pub owner: String,
    /// The template of the cell that taught the shape, when its runtime
    /// provider labels cells with `crownest.template`.
    pub template: Option<String>,
    pub limits: Limits,
    pub ready: usize,
    pub starting: usize,
    /// Standbys of this shape that died unused, or could not be started,
    /// since the server started.
    pub failures_total: u64,
    /// Failures since a standby of this shape was last used; the back-off
    /// doubles with each.
    pub failures_in_a_row: u32,
    pub last_failure: Option<Failure>,
    /// When the next standby will be started, while backing off.
    pub retry_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    pub at_ms: u64,
    pub reason: String,
}

impl PoolStatus {
    /// Write to `path` atomically (a reader never sees half a file).
    pub(crate) fn write(&self, path: &Path) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let Ok(json) = serde_json::to_vec_pretty(self) else { return };
        let tmp = path.with_extension(format!("tmp-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        if std::fs::write(&tmp, json).is_ok() && std::fs::rename(&tmp, path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// The status in `path`, if a live process wrote it.
    pub fn read_live(path: &Path) -> Option<PoolStatus> {
        let text = std::fs::read_to_string(path).ok()?;
        let status: PoolStatus = serde_json::from_str(&text).ok()?;
        let alive = rustix::process::test_kill_process(rustix::process::Pid::from_raw(status.pid as i32)?).is_ok();
        alive.then_some(status)
    }
}

/// Where the status of the pool keeping cells in `cells_root` is written.
pub fn path(cells_root: &Path) -> PathBuf {
    cells_root.join(FILE_NAME)
}
