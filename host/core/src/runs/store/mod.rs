//! The durable store: SQLite in the data directory, WAL mode,
//! `synchronous=FULL` (a transaction has reached the disk when it returns:
//! state transitions, events and idempotency records are never lost to a
//! crash once acknowledged).
//!
//! One connection behind a mutex; every call runs off the async scheduler
//! (`block_in_place` on the multi-threaded runtime, else the blocking pool).

mod auth;
mod control;
mod events;
mod idempotency;
mod runs;
mod transfers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use auth::{ApiKeyRecord, Bootstrap, FULL_SCOPES};
pub use control::{ApiKeyInfo, AuditEvent, AuditFilter, Project};
pub use events::Finish;
pub use idempotency::{IdempotencyBegin, RecordResponse, StoredResponse};
pub use runs::{ArtifactRecord, ListFilter, Transition};
pub use transfers::Transfer;

/// Store failures callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            other => StoreError::Db(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS orgs (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, name TEXT NOT NULL, created_at INTEGER NOT NULL,
    UNIQUE (org_id, name)
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, project_id TEXT, hash TEXT NOT NULL,
    scopes TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER
);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, org_id TEXT NOT NULL, project_id TEXT NOT NULL, status TEXT NOT NULL,
    spec TEXT NOT NULL, archive TEXT, template_digest TEXT, sandbox_id TEXT,
    exit_code INTEGER, failure_reason TEXT, failure_message TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,
    next_seq INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL, queued_at INTEGER, started_at INTEGER, finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_project ON runs (project_id, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, at INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS artifacts (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, project_id TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL,
    size INTEGER NOT NULL, sha256 TEXT NOT NULL, store TEXT NOT NULL, locator TEXT NOT NULL, created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS artifacts_by_run ON artifacts (run_id, created_at);
CREATE TABLE IF NOT EXISTS evidence (run_id TEXT PRIMARY KEY, bytes BLOB NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    part_size INTEGER NOT NULL, parts TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
    mode TEXT NOT NULL DEFAULT 'server'
);
CREATE TABLE IF NOT EXISTS audit_events (
    id TEXT NOT NULL UNIQUE, at INTEGER NOT NULL, org_id TEXT, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT, project_id TEXT, request_id TEXT, outcome TEXT NOT NULL, detail TEXT
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit_events (at);
CREATE TABLE IF NOT EXISTS run_secrets (run_id TEXT PRIMARY KEY, env TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sandbox_tombstones (
    id TEXT PRIMARY KEY, destroyed_at INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    project_id TEXT NOT NULL, endpoint TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
    state TEXT NOT NULL, status_code INTEGER, body BLOB, created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, endpoint, key)
);
"#;

/// Bring a data directory written by an older build up to the schema.
fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let has_mode: bool = conn.prepare("SELECT 1 FROM pragma_table_info('transfers') WHERE name = 'mode'")?.exists([])?;
    if !has_mode {
        conn.execute_batch("ALTER TABLE transfers ADD COLUMN mode TEXT NOT NULL DEFAULT 'server'")?;
    }
    // Keys bootstrapped before scopes were enforced held `["*"]`.
    conn.execute(
        "UPDATE api_keys SET scopes = ?1 WHERE scopes = '[\"*\"]'",
        [serde_json::to_string(auth::FULL_SCOPES).unwrap()],
    )?;
    Ok(())
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    dir: PathBuf,
    /// API key rows already read, so authenticating a request needs no
    /// database round trip; revocation updates it in the same call.
    keys: Arc<Mutex<std::collections::HashMap<String, auth::CachedKey>>>,
    /// The HMAC key for credentials, once read.
    secret: Arc<std::sync::OnceLock<Vec<u8>>>,
}

impl Store {
    /// Open (or create) `crownest.db` in `dir`.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        let conn = Connection::open(dir.join("crownest.db"))?;
        Self::init(conn, dir)
    }

    fn init(mut conn: Connection, dir: &Path) -> anyhow::Result<Store> {
        // Transactions read (next event seq, current state) before they
        // write, and the plugin kv writes to the same file from its own
        // connection: take the write lock at BEGIN so the busy timeout
        // applies, instead of failing with SQLITE_BUSY_SNAPSHOT when the
        // other connection committed in between.
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        migrate(&conn)?;
        {
            use std::os::unix::fs::PermissionsExt;
            for f in ["crownest.db", "crownest.db-wal", "crownest.db-shm"] {
                let _ = std::fs::set_permissions(dir.join(f), std::fs::Permissions::from_mode(0o600));
            }
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            dir: dir.to_path_buf(),
            keys: Arc::default(),
            secret: Arc::default(),
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Run `f` with the connection, off the async scheduler
    /// ([`crate::blocking::in_place`]: a store call is short).
    pub async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        let call = move || {
            let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        };
        crate::blocking::in_place(call).await.map_err(|e| StoreError::Db(format!("store task failed: {e}")))?
    }

    /// Like [`Store::with`], but the commit does not wait for the disk
    /// (`synchronous=NORMAL` for this call). For records whose loss in a
    /// power failure is harmless: in WAL mode the next full commit makes
    /// them durable too, and a process crash loses nothing either way.
    pub async fn with_relaxed<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.with(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            let out = f(conn);
            conn.pragma_update(None, "synchronous", "FULL")?;
            out
        })
        .await
    }

    /// The same, synchronously (for start-up and tests).
    pub fn with_sync<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut guard = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}
