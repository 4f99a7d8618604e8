//! The run store and the plugin kv share one SQLite file through two
//! connections. Transactions that read before they write on both sides must
//! never fail with "database is locked" when the other side commits in
//! between (seen as a lost stdout capture under 50 concurrent runs).

use crownest_core::kv::{KeyValueStore, SqliteKv};
use crownest_core::runs::store::Store;

#[test]
fn store_and_kv_transactions_interleave_without_busy_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kv = SqliteKv::open(&dir.path().join("crownest.db")).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..300 {
                store
                    .with_sync(|conn| {
                        let tx = conn.transaction()?;
                        let n: i64 = tx.query_row("SELECT count(*) FROM settings", [], |r| r.get(0))?;
                        tx.execute(
                            "INSERT OR REPLACE INTO settings (name, value) VALUES (?1, ?2)",
                            rusqlite::params![format!("k{}", i % 7), n.to_string()],
                        )?;
                        tx.commit()?;
                        Ok(())
                    })
                    .unwrap_or_else(|e| panic!("store transaction {i}: {e}"));
            }
        });
        let counter = s.spawn(|| {
            for i in 0..300 {
                kv.increment("meter", "usage/x", 1).unwrap_or_else(|e| panic!("kv increment {i}: {}", e.message));
            }
        });
        writer.join().unwrap();
        counter.join().unwrap();
    });
    assert_eq!(kv.increment("meter", "usage/x", 0).unwrap(), 300);
}
