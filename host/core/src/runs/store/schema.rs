//! The database schema and its numbered migrations.
//!
//! `PRAGMA user_version` holds the number of the last migration applied.
//! At open, every later migration is applied in order, each in the same
//! transaction as the version it sets; a database whose version is newer
//! than this build knows is refused, with a message, rather than used by
//! code that does not know its tables.
//!
//! Migration 1 is the schema as it stood before versions were recorded:
//! written idempotently (`IF NOT EXISTS`, columns added when missing), so a
//! data directory from any earlier build comes up to it.

use std::path::Path;

use rusqlite::{Connection, Transaction};

/// One step: its number, what it does, and the change.
struct Migration {
    version: u32,
    what: &'static str,
    apply: fn(&Transaction) -> rusqlite::Result<()>,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        what: "baseline: orgs, keys, runs, events, artifacts, evidence, transfers, audit",
        apply: baseline,
    },
    Migration {
        version: 2,
        what: "secret environment variables of runs; readiness probe row",
        apply: secrets_and_probes,
    },
    Migration { version: 3, what: "the client address of audit events", apply: audit_client_ip },
];

/// The schema version this build writes.
pub const LATEST: u32 = 3;

const BASELINE: &str = r#"
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
CREATE TABLE IF NOT EXISTS sandbox_tombstones (
    id TEXT PRIMARY KEY, destroyed_at INTEGER NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    project_id TEXT NOT NULL, endpoint TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL,
    state TEXT NOT NULL, status_code INTEGER, body BLOB, created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, endpoint, key)
);
"#;

fn baseline(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(BASELINE)?;
    let has_mode: bool = tx.prepare("SELECT 1 FROM pragma_table_info('transfers') WHERE name = 'mode'")?.exists([])?;
    if !has_mode {
        tx.execute_batch("ALTER TABLE transfers ADD COLUMN mode TEXT NOT NULL DEFAULT 'server'")?;
    }
    // Keys bootstrapped before scopes were enforced held `["*"]`.
    tx.execute(
        "UPDATE api_keys SET scopes = ?1 WHERE scopes = '[\"*\"]'",
        [serde_json::to_string(super::auth::FULL_SCOPES).expect("scopes serialize")],
    )?;
    Ok(())
}

fn secrets_and_probes(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS run_secrets (run_id TEXT PRIMARY KEY, env TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS probes (name TEXT PRIMARY KEY, at INTEGER NOT NULL);",
    )
}

fn audit_client_ip(tx: &Transaction) -> rusqlite::Result<()> {
    tx.execute_batch("ALTER TABLE audit_events ADD COLUMN client_ip TEXT")
}

/// Bring the database at `path` up to [`LATEST`], or refuse one that is
/// newer than this build.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    debug_assert!(MIGRATIONS.iter().enumerate().all(|(i, m)| m.version as usize == i + 1));
    debug_assert_eq!(MIGRATIONS.last().map(|m| m.version), Some(LATEST));
    let current: u32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > LATEST {
        anyhow::bail!(
            "the database {} has schema version {current}, newer than this crownest {} understands ({LATEST}): \
             it was written by a newer release. Run that release (or newer), or restore a backup taken before the upgrade",
            path.display(),
            env!("CARGO_PKG_VERSION")
        );
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        let tx = conn.transaction()?;
        (m.apply)(&tx).map_err(|e| anyhow::anyhow!("schema migration {} ({}) failed: {e}", m.version, m.what))?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
        if current > 0 {
            tracing::info!(version = m.version, "database migrated: {}", m.what);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_a_second_open_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new("mem")).unwrap();
        assert_eq!(version(&conn), LATEST);
        migrate(&mut conn, Path::new("mem")).unwrap();
        assert_eq!(version(&conn), LATEST);
        conn.execute("INSERT INTO run_secrets (run_id, env) VALUES ('r', '{}')", []).unwrap();
    }

    #[test]
    fn a_database_from_before_versions_comes_up_to_date() {
        let mut conn = Connection::open_in_memory().unwrap();
        // An old build's tables: transfers without `mode`, no version.
        conn.execute_batch(
            "CREATE TABLE transfers (id TEXT PRIMARY KEY, run_id TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL, \
             part_size INTEGER NOT NULL, parts TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL);
             INSERT INTO transfers VALUES ('t', 'r', 1, 'x', 1, '[]', 'open', 0);",
        )
        .unwrap();
        migrate(&mut conn, Path::new("old.db")).unwrap();
        assert_eq!(version(&conn), LATEST);
        let mode: String = conn.query_row("SELECT mode FROM transfers WHERE id = 't'", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "server");
    }

    #[test]
    fn a_newer_database_is_refused_with_a_message() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", LATEST + 1).unwrap();
        let e = migrate(&mut conn, Path::new("/var/lib/crownest/crownest.db")).unwrap_err().to_string();
        assert!(e.contains("newer") && e.contains("crownest.db") && e.contains(&format!("({LATEST})")), "{e}");
    }
}
