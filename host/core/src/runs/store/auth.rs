//! Orgs, projects, API keys and the admin credential.
//!
//! Keys look like `cn_live_<id>_<secret>`; only an HMAC-SHA256 of the
//! secret (keyed with a server secret kept in the data directory) is stored,
//! and comparison is constant-time. Unknown, revoked, expired and
//! wrong-secret keys are indistinguishable to callers.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::{Result, Store, StoreError};
use crate::runs::ids::{new_id, now_ms, random_bytes};

/// A verified key's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub org_id: String,
    pub project_id: Option<String>,
    pub scopes: Vec<String>,
}

/// An API key row as read from the database.
#[derive(Debug, Clone)]
pub(super) struct CachedKey {
    hash: String,
    record: ApiKeyRecord,
    expires_at_ms: Option<u64>,
    revoked: bool,
}

impl CachedKey {
    /// The record, if `presented_hash` matches and the key is live.
    fn check(&self, presented_hash: &str) -> Option<ApiKeyRecord> {
        let live = !self.revoked && self.expires_at_ms.is_none_or(|e| e > now_ms());
        (constant_time_eq(presented_hash.as_bytes(), self.hash.as_bytes()) && live).then(|| self.record.clone())
    }
}

/// What a first start creates.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub org_id: String,
    pub project_id: String,
    pub api_key: String,
    pub admin_token: String,
}

/// The scopes of the first key a fresh installation creates: everything an
/// API key can be granted.
pub const FULL_SCOPES: &[&str] =
    &["workspace_runs:*", "artifacts:*", "sandboxes:*", "usage:*", "audit:*", "projects:*"];

pub(super) fn hmac_of(secret: &[u8], msg: &[u8]) -> String {
    hmac(secret, msg)
}

fn hmac(secret: &[u8], msg: &[u8]) -> String {
    // HMAC-SHA256 (RFC 2104) without another dependency.
    let mut key = [0u8; 64];
    if secret.len() > 64 {
        key[..32].copy_from_slice(&Sha256::digest(secret));
    } else {
        key[..secret.len()].copy_from_slice(secret);
    }
    let mut inner = Sha256::new();
    inner.update(key.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(key.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    hex::encode(outer.finalize())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn secret_token() -> String {
    hex::encode(random_bytes(24))
}

impl Store {
    pub(super) fn server_secret(conn: &rusqlite::Connection) -> Result<Vec<u8>> {
        let existing: Option<String> =
            conn.query_row("SELECT value FROM settings WHERE name = 'hmac_secret'", [], |r| r.get(0)).optional()?;
        let s = match existing {
            Some(s) => s,
            None => {
                let s = hex::encode(random_bytes(32));
                conn.execute("INSERT INTO settings (name, value) VALUES ('hmac_secret', ?1)", params![s])?;
                s
            }
        };
        hex::decode(s).map_err(|e| StoreError::Db(e.to_string()))
    }

    /// On an empty store: org `default`, project `default`, an admin token
    /// and an API key for that project with every scope. `None` when the
    /// store was already initialized.
    pub fn bootstrap(&self) -> Result<Option<Bootstrap>> {
        self.with_sync(|conn| {
            let tx = conn.transaction()?;
            let has_org: Option<String> = tx.query_row("SELECT id FROM orgs LIMIT 1", [], |r| r.get(0)).optional()?;
            if has_org.is_some() {
                return Ok(None);
            }
            let secret = Self::server_secret(&tx)?;
            let now = now_ms() as i64;
            let org_id = new_id("org");
            let project_id = new_id("prj");
            tx.execute("INSERT INTO orgs (id, name, created_at) VALUES (?1, 'default', ?2)", params![org_id, now])?;
            tx.execute(
                "INSERT INTO projects (id, org_id, name, created_at) VALUES (?1, ?2, 'default', ?3)",
                params![project_id, org_id, now],
            )?;
            let admin_token = format!("cn_admin_{}", secret_token());
            tx.execute(
                "INSERT INTO settings (name, value) VALUES ('admin_hash', ?1)",
                params![hmac(&secret, admin_token.as_bytes())],
            )?;
            let (api_key, key_id, key_secret) = new_key();
            tx.execute(
                "INSERT INTO api_keys (id, org_id, project_id, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key_id, org_id, project_id, hmac(&secret, key_secret.as_bytes()), serde_json::to_string(FULL_SCOPES).unwrap(), now],
            )?;
            tx.commit()?;
            Ok(Some(Bootstrap { org_id, project_id, api_key, admin_token }))
        })
    }

    /// Verify a presented API key. `None` for anything that is not a live key.
    pub async fn verify_api_key(&self, presented: String) -> Result<Option<ApiKeyRecord>> {
        let Some((id, secret_part)) = parse_key(&presented) else { return Ok(None) };
        let cached = self.keys.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned();
        if let (Some(secret), Some(row)) = (self.secret.get(), cached) {
            return Ok(row.check(&hmac(secret, secret_part.as_bytes())));
        }
        let (id, secret_part) = (id.to_string(), secret_part.to_string());
        let cache = self.keys.clone();
        let secret_slot = self.secret.clone();
        self.with(move |conn| {
            let secret = secret_slot.get_or_init(|| Self::server_secret(conn).unwrap_or_default()).clone();
            if secret.is_empty() {
                return Err(StoreError::Db("cannot read the credential secret".into()));
            }
            let row: Option<(String, Option<String>, String, String, Option<i64>, Option<i64>)> = conn
                .query_row(
                    "SELECT org_id, project_id, hash, scopes, expires_at, revoked_at FROM api_keys WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            // Compute the hash even for unknown ids so timing says nothing.
            let presented_hash = hmac(&secret, secret_part.as_bytes());
            let Some((org_id, project_id, hash, scopes, expires_at, revoked_at)) = row else { return Ok(None) };
            let scopes: Vec<String> = serde_json::from_str(&scopes).unwrap_or_default();
            let row = CachedKey {
                hash,
                record: ApiKeyRecord { id: id.clone(), org_id, project_id, scopes },
                expires_at_ms: expires_at.map(|e| e as u64),
                revoked: revoked_at.is_some(),
            };
            cache.lock().unwrap_or_else(|e| e.into_inner()).insert(id, row.clone());
            Ok(row.check(&presented_hash))
        })
        .await
    }

    /// Forget a key's cached row (after revoking it).
    pub(super) fn forget_key(&self, id: &str) {
        self.keys.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Whether `presented` is the admin token.
    pub async fn verify_admin(&self, presented: String) -> Result<bool> {
        self.with(move |conn| {
            let secret = Self::server_secret(conn)?;
            let stored: Option<String> =
                conn.query_row("SELECT value FROM settings WHERE name = 'admin_hash'", [], |r| r.get(0)).optional()?;
            let h = hmac(&secret, presented.as_bytes());
            Ok(stored.is_some_and(|s| constant_time_eq(s.as_bytes(), h.as_bytes())))
        })
        .await
    }

    /// The org of a project, if it exists.
    pub async fn project_org(&self, project_id: String) -> Result<Option<String>> {
        self.with(move |conn| {
            Ok(conn
                .query_row("SELECT org_id FROM projects WHERE id = ?1", params![project_id], |r| r.get(0))
                .optional()?)
        })
        .await
    }
}

/// A fresh key: (full key, id, secret).
pub(super) fn new_key() -> (String, String, String) {
    let id = new_id("key").trim_start_matches("key_").to_string();
    let secret = hex::encode(random_bytes(24));
    (format!("cn_live_{id}_{secret}"), id, secret)
}

/// `cn_live_<id>_<secret>` → (id, secret).
fn parse_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("cn_live_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 20 && secret.len() == 48).then_some((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn bootstrap_once_and_verify_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let b = store.bootstrap().unwrap().unwrap();
        assert!(store.bootstrap().unwrap().is_none(), "bootstrap happens once");
        let rec = store.verify_api_key(b.api_key.clone()).await.unwrap().unwrap();
        assert_eq!(rec.project_id.as_deref(), Some(b.project_id.as_str()));
        let mut wrong = b.api_key.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(store.verify_api_key(wrong).await.unwrap().is_none());
        assert!(store.verify_api_key("cn_live_nope".into()).await.unwrap().is_none());
        assert!(store.verify_admin(b.admin_token.clone()).await.unwrap());
        assert!(!store.verify_admin(b.api_key).await.unwrap());
        // Nothing secret is stored in clear.
        let dump = std::fs::read(dir.path().join("crownest.db")).unwrap();
        let secret = b.admin_token.trim_start_matches("cn_admin_");
        assert!(!dump.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    #[tokio::test]
    async fn a_revoked_key_is_refused_even_after_it_was_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let b = store.bootstrap().unwrap().unwrap();
        let (info, key) = store.create_api_key(b.org_id.clone(), None, vec!["usage:read".into()], None).await.unwrap();
        assert!(store.verify_api_key(key.clone()).await.unwrap().is_some());
        assert!(store.verify_api_key(key.clone()).await.unwrap().is_some(), "served from the cache");
        let mut wrong = key.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == '0' { '1' } else { '0' });
        assert!(store.verify_api_key(wrong).await.unwrap().is_none(), "the cache still checks the secret");
        store.revoke_api_key(info.id.clone()).await.unwrap();
        assert!(store.verify_api_key(key).await.unwrap().is_none());
        let expired = store.create_api_key(b.org_id, None, vec!["usage:read".into()], Some(1)).await.unwrap().1;
        assert!(store.verify_api_key(expired).await.unwrap().is_none());
    }
}
