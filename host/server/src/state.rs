//! What every handler shares.

use std::path::PathBuf;
use std::sync::Arc;

use crownest_core::ports::{ArtifactStore, AuthScoper, TemplateInfo};
use crownest_core::runs::Store;
use crownest_core::runs::executor::Executor;

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest direct archive upload.
    pub direct_upload_bytes: u64,
    /// Largest staged archive.
    pub staged_upload_bytes: u64,
    /// Default part size of staged transfers.
    pub part_bytes: u64,
    /// Longest command timeout a run may ask for.
    pub max_timeout_ms: u64,
    /// SSE heartbeat interval.
    pub heartbeat: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            direct_upload_bytes: 8 << 20,
            staged_upload_bytes: 1 << 30,
            part_bytes: 8 << 20,
            max_timeout_ms: 24 * 3600 * 1000,
            heartbeat: std::time::Duration::from_secs(15),
        }
    }
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub executor: Arc<Executor>,
    pub artifacts: Arc<dyn ArtifactStore>,
    /// Decides every request (the auth scoper plugin).
    pub auth: Arc<dyn AuthScoper>,
    /// The meter plugin behind admission checks and usage queries.
    pub metering: Arc<crownest_core::runs::metering::Metering>,
    /// Templates of the runtime provider, read at start-up.
    pub templates: Arc<Vec<TemplateInfo>>,
    pub limits: Limits,
    /// Where staged transfer parts are kept until completion.
    pub transfers_dir: PathBuf,
    /// Proxies whose `X-Forwarded-For` names the client (audit rows).
    pub trusted_proxies: Arc<crownest_core::ip_ranges::IpRanges>,
    /// Becomes `true` when the server stops: event streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}
