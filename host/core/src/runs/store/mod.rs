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
mod schema;
mod transfers;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

pub use auth::{ApiKeyRecord, Bootstrap, FULL_SCOPES};
pub use control::{ApiKeyInfo, AuditEvent, AuditFilter, Project};
pub use events::Finish;
pub use idempotency::{IdempotencyBegin, RecordResponse, StoredResponse};
pub use runs::{ArtifactRecord, ListFilter, Transition};
pub use schema::LATEST as SCHEMA_VERSION;
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
        schema::migrate(&mut conn, &dir.join("crownest.db"))?;
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

    /// Whether the database takes a write now (a readiness probe): one
    /// small row replaced.
    pub async fn check_writable(&self) -> Result<()> {
        self.with(|conn| {
            conn.execute(
                "INSERT OR REPLACE INTO probes (name, at) VALUES ('ready', ?1)",
                rusqlite::params![crate::runs::ids::now_ms() as i64],
            )?;
            Ok(())
        })
        .await
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
