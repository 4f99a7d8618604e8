//! Port for artifact stores: keep declared outputs after the sandbox is gone.

use std::time::Duration;

use async_trait::async_trait;

use super::ByteStream;
use crate::error::PluginError;

/// What to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// Where (see the key rules in `wit/artifact-store/store.wit`).
    pub key: String,
    /// Exact size of the body.
    pub size: u64,
    /// Lowercase hex SHA-256 of the body.
    pub sha256: String,
    pub content_type: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// A stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Opaque address for `get`, `stat` and `delete`.
    pub locator: String,
    pub size: u64,
    /// Lowercase hex SHA-256 (validated by the host).
    pub sha256: String,
    pub created_at_ms: u64,
}

/// Durable storage for artifacts and staged archives.
#[async_trait]
pub trait ArtifactStore: Send + Sync {
    /// Verify configuration and backend reachability.
    async fn check(&self) -> Result<(), PluginError>;
    /// Store a body of exactly `req.size` bytes hashing to `req.sha256`.
    async fn put(&self, req: PutRequest, body: ByteStream) -> Result<ObjectInfo, PluginError>;
    /// Read an object.
    async fn get(&self, locator: &str) -> Result<ByteStream, PluginError>;
    /// Size and checksum of an object.
    async fn stat(&self, locator: &str) -> Result<ObjectInfo, PluginError>;
    /// Remove an object; absent is not an error.
    async fn delete(&self, locator: &str) -> Result<(), PluginError>;
    /// A direct download URL, when the store has them.
    async fn presign_get(&self, locator: &str, expires: Duration) -> Result<Option<String>, PluginError>;
    /// A direct upload URL, when the store has them.
    async fn presign_put(&self, key: &str, expires: Duration) -> Result<Option<String>, PluginError>;
}
