//! Port for runtime providers: sandboxes, commands and their processes.
//!
//! A started command comes back as an [`Execution`]: a [`ProcessHandle`] the
//! host waits on and kills directly, plus its output streams. The provider is
//! only consulted for short operations.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::ByteStream;
use crate::error::PluginError;

/// Limits of a sandbox; `None` in a request means the template's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxLimits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u32>,
    pub cpu_millicores: Option<u32>,
    pub disk_bytes: Option<u64>,
    pub open_files: Option<u32>,
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    pub name: String,
    pub description: String,
    /// Lowercase hex SHA-256 of what the template is.
    pub digest: String,
    pub compute_units: u32,
    pub usable: bool,
    pub unusable_reason: Option<String>,
    pub default_limits: SandboxLimits,
    pub network_egress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    pub id: String,
    pub template: String,
    pub limits: SandboxLimits,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    pub template_digest: String,
    pub compute_units: u32,
    pub limits: SandboxLimits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub command: String,
    pub env: Vec<(String, String)>,
    pub cwd: String,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(u8),
    Signaled(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: ExitStatus,
    pub oom_killed: bool,
}

/// A running process tree, controlled by the host without the plugin.
#[async_trait]
pub trait ProcessHandle: Send + Sync {
    /// Wait until the process has ended.
    async fn wait(&self) -> Outcome;
    /// The outcome if already ended.
    fn try_wait(&self) -> Option<Outcome>;
    /// Signal every process of the tree.
    fn signal_tree(&self, signal: u8);
    /// SIGKILL every process of the tree, daemons included.
    fn kill_tree(&self);
}

/// A started command.
pub struct Execution {
    pub process: Box<dyn ProcessHandle>,
    pub stdout: ByteStream,
    pub stderr: ByteStream,
}

/// An archive entry an extraction left out, and why (a symlink pointing
/// outside the workspace, in a non-strict extraction).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveWarning {
    pub entry: String,
    pub reason: String,
}

/// What an extraction reports while it runs, and how strict it is.
pub struct ExtractProgress {
    /// (content bytes, entries) so far.
    pub on_progress: Box<dyn Fn(u64, u64) + Send + Sync>,
    /// Each entry left out.
    pub on_warning: Box<dyn Fn(ArchiveWarning) + Send + Sync>,
    /// Refuse the archive instead of leaving an entry out.
    pub strict: bool,
}

impl ExtractProgress {
    /// Progress to `on_progress`, warnings dropped, not strict.
    pub fn new(on_progress: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        ExtractProgress { on_progress: Box::new(on_progress), on_warning: Box::new(|_| {}), strict: false }
    }
}

impl Default for ExtractProgress {
    fn default() -> Self {
        ExtractProgress::new(|_, _| {})
    }
}

/// Totals of an extraction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractReport {
    pub archive_bytes: u64,
    pub content_bytes: u64,
    pub entries: u64,
}

/// One sandbox.
#[async_trait]
pub trait Sandbox: Send + Sync {
    fn info(&self) -> &SandboxInfo;
    async fn extract_archive(
        &self,
        archive: ByteStream,
        path: &str,
        progress: ExtractProgress,
    ) -> Result<ExtractReport, PluginError>;
    async fn exec(&self, spec: &ExecSpec) -> Result<Execution, PluginError>;
    /// Open a file for export: (content, size).
    async fn open_file(&self, path: &str, max_bytes: u64) -> Result<(ByteStream, u64), PluginError>;
    async fn write_file(&self, path: &str, contents: ByteStream) -> Result<u64, PluginError>;
    async fn destroy(&self) -> Result<(), PluginError>;
}

#[async_trait]
pub trait RuntimeProvider: Send + Sync {
    async fn check(&self) -> Result<(), PluginError>;
    async fn list_templates(&self) -> Result<Vec<TemplateInfo>, PluginError>;
    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, PluginError>;
    async fn open_sandbox(&self, id: &str) -> Result<Box<dyn Sandbox>, PluginError>;
    async fn list_sandboxes(&self) -> Result<Vec<String>, PluginError>;
    async fn destroy_by_id(&self, id: &str) -> Result<(), PluginError>;
}

/// SIGTERM the tree, wait up to `grace`, then SIGKILL everything left.
pub async fn terminate(process: &dyn ProcessHandle, grace: std::time::Duration) -> Outcome {
    process.signal_tree(15);
    if let Ok(o) = tokio::time::timeout(grace, process.wait()).await {
        return o;
    }
    process.kill_tree();
    process.wait().await
}
