//! The durable key-value store behind the `crownest:host/kv` capability.
//!
//! Each plugin kind gets its own namespace. The SQLite implementation keeps
//! everything in one table of the host database (on its own connection), in WAL mode with
//! `synchronous=NORMAL`: when a call returns, the write survives a crash of
//! the server process; [`KeyValueStore::sync`] (the server calls it every
//! second) makes everything written so far survive a power loss too. That
//! keeps a meter's per-second counters cheap (hundreds of increments a
//! second) while losing at most the last second. Calls are blocking; async
//! callers run them on the blocking pool.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::PluginError;

/// Longest key in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most keys one `list_keys` call returns.
pub const MAX_LIST: u32 = 1000;

/// Durable per-namespace key-value storage with atomic counters.
pub trait KeyValueStore: Send + Sync {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, PluginError>;
    fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), PluginError>;
    fn delete(&self, ns: &str, key: &str) -> Result<bool, PluginError>;
    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, PluginError>;
    fn list_keys(&self, ns: &str, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>, PluginError>;
    /// Make every completed write durable against power loss.
    fn sync(&self) -> Result<(), PluginError> {
        Ok(())
    }
}

/// [`KeyValueStore`] on SQLite.
pub struct SqliteKv {
    conn: Mutex<Connection>,
}

impl SqliteKv {
    /// Open (or create) the store in the database file at `path`.
    pub fn open(path: &Path) -> anyhow::Result<SqliteKv> {
        let conn = Connection::open(path)?;
        Self::init(conn)
    }

    /// A private in-memory store (for `plugins check` and tests).
    pub fn in_memory() -> anyhow::Result<SqliteKv> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(mut conn: Connection) -> anyhow::Result<SqliteKv> {
        // The kv shares its database file with the run store: a transaction
        // that reads before it writes must take the write lock up front, or
        // a commit by the other connection in between fails it at once
        // (SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out).
        conn.set_transaction_behavior(rusqlite::TransactionBehavior::Immediate);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // `value` has no declared type so counters stay SQLite integers while
        // other values stay blobs; `increment` refuses to touch a blob.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS plugin_kv (
                 ns TEXT NOT NULL,
                 key TEXT NOT NULL,
                 value,
                 PRIMARY KEY (ns, key)
             ) WITHOUT ROWID;",
        )?;
        Ok(SqliteKv { conn: Mutex::new(conn) })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent:
        // every statement is atomic on its own.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn check_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(PluginError::invalid(format!("kv key must be 1 to {MAX_KEY_BYTES} bytes, got {}", key.len())));
    }
    Ok(())
}

fn db_error(e: rusqlite::Error) -> PluginError {
    PluginError::unavailable(format!("kv store error: {e}"))
}

impl KeyValueStore for SqliteKv {
    fn sync(&self) -> Result<(), PluginError> {
        // A passive checkpoint fsyncs the WAL (and copies what it can into
        // the database) without waiting for readers.
        let conn = self.conn();
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(db_error)
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, PluginError> {
        check_key(key)?;
        let conn = self.conn();
        let value: Option<rusqlite::types::Value> = conn
            .prepare_cached("SELECT value FROM plugin_kv WHERE ns = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![ns, key], |r| r.get(0)).optional())
            .map_err(db_error)?;
        Ok(value.map(|v| match v {
            rusqlite::types::Value::Integer(i) => i.to_string().into_bytes(),
            rusqlite::types::Value::Blob(b) => b,
            rusqlite::types::Value::Text(t) => t.into_bytes(),
            rusqlite::types::Value::Real(r) => r.to_string().into_bytes(),
            rusqlite::types::Value::Null => Vec::new(),
        }))
    }

    fn set(&self, ns: &str, key: &str, value: &[u8]) -> Result<(), PluginError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(PluginError::invalid(format!(
                "kv value for `{key}` is {} bytes; the limit is {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        self.conn()
            .execute(
                "INSERT INTO plugin_kv (ns, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
                params![ns, key, value],
            )
            .map_err(db_error)?;
        Ok(())
    }

    fn delete(&self, ns: &str, key: &str) -> Result<bool, PluginError> {
        check_key(key)?;
        let n = self
            .conn()
            .execute("DELETE FROM plugin_kv WHERE ns = ?1 AND key = ?2", params![ns, key])
            .map_err(db_error)?;
        Ok(n > 0)
    }

    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, PluginError> {
        check_key(key)?;
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(db_error)?;
        let current: Option<rusqlite::types::Value> = tx
            .prepare_cached("SELECT value FROM plugin_kv WHERE ns = ?1 AND key = ?2")
            .and_then(|mut st| st.query_row(params![ns, key], |r| r.get(0)).optional())
            .map_err(db_error)?;
        let base = match current {
            None => 0,
            Some(rusqlite::types::Value::Integer(i)) => i,
            Some(_) => {
                return Err(PluginError::invalid(format!(
                    "kv key `{key}` holds a value written by `set`, not a counter"
                )));
            }
        };
        let next = base
            .checked_add(delta)
            .ok_or_else(|| PluginError::invalid(format!("kv counter `{key}` would overflow")))?;
        tx.prepare_cached(
            "INSERT INTO plugin_kv (ns, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
        )
        .and_then(|mut st| st.execute(params![ns, key, next]))
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(next)
    }

    fn list_keys(&self, ns: &str, prefix: &str, after: Option<&str>, limit: u32) -> Result<Vec<String>, PluginError> {
        let limit = limit.min(MAX_LIST);
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT key FROM plugin_kv
                 WHERE ns = ?1 AND substr(key, 1, length(?2)) = ?2 AND key > ?3
                 ORDER BY key LIMIT ?4",
            )
            .map_err(db_error)?;
        let rows = stmt
            .query_map(params![ns, prefix, after.unwrap_or(""), limit], |r| r.get::<_, String>(0))
            .map_err(db_error)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn values_and_counters_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.db");
        {
            let kv = SqliteKv::open(&path).unwrap();
            kv.set("meter", "a", b"hello").unwrap();
            assert_eq!(kv.increment("meter", "n", 5).unwrap(), 5);
            assert_eq!(kv.increment("meter", "n", -2).unwrap(), 3);
        }
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.get("meter", "a").unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(kv.get("meter", "n").unwrap().as_deref(), Some(&b"3"[..]));
        assert_eq!(kv.get("other", "a").unwrap(), None, "namespaces are separate");
    }

    #[test]
    fn increment_refuses_blobs_and_overflow() {
        let kv = SqliteKv::in_memory().unwrap();
        kv.set("ns", "blob", b"x").unwrap();
        assert_eq!(kv.increment("ns", "blob", 1).unwrap_err().kind, ErrorKind::Invalid);
        kv.increment("ns", "big", i64::MAX).unwrap();
        assert_eq!(kv.increment("ns", "big", 1).unwrap_err().kind, ErrorKind::Invalid);
    }

    #[test]
    fn list_keys_pages_by_prefix() {
        let kv = SqliteKv::in_memory().unwrap();
        for k in ["a/1", "a/2", "a/3", "b/1"] {
            kv.set("ns", k, b"").unwrap();
        }
        assert_eq!(kv.list_keys("ns", "a/", None, 2).unwrap(), vec!["a/1", "a/2"]);
        assert_eq!(kv.list_keys("ns", "a/", Some("a/2"), 10).unwrap(), vec!["a/3"]);
        assert!(kv.delete("ns", "a/1").unwrap());
        assert!(!kv.delete("ns", "a/1").unwrap());
    }

    #[test]
    fn key_and_value_limits() {
        let kv = SqliteKv::in_memory().unwrap();
        assert_eq!(kv.set("ns", "", b"").unwrap_err().kind, ErrorKind::Invalid);
        let big = vec![0u8; MAX_VALUE_BYTES + 1];
        assert_eq!(kv.set("ns", "k", &big).unwrap_err().kind, ErrorKind::Invalid);
    }
}
