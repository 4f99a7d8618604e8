//! The Workspace Run model as stored and as shown by the API.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a run is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    AwaitingArchive,
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl RunStatus {
    pub const ALL: [RunStatus; 6] = [
        RunStatus::AwaitingArchive,
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::AwaitingArchive => "awaiting_archive",
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Canceled => "canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Canceled)
    }

    /// Queued or running: the host is responsible for it.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!(
                "unknown status `{s}`; expected one of: awaiting_archive, queued, running, succeeded, failed, canceled"
            )
        })
    }
}

/// A file the caller wants kept after the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSpec {
    /// Path inside the sandbox (absolute under `/workspace`, or relative to it).
    pub path: String,
    /// Name to keep it under (default: the file name).
    pub name: String,
}

/// The verified archive of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveInfo {
    pub size_bytes: u64,
    pub sha256: String,
    /// `direct` or `staged`.
    pub upload: String,
    /// Where the artifact store keeps it (not shown by the API).
    pub locator: String,
    pub uploaded_at_ms: u64,
}

/// What the creator asked for; fixed at creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSpec {
    pub command: String,
    pub template: String,
    /// Warm sandbox to reuse.
    pub sandbox_id: Option<String>,
    pub keep_sandbox: bool,
    pub timeout_ms: Option<u64>,
    pub metadata: BTreeMap<String, String>,
    pub artifacts: Vec<ArtifactSpec>,
    /// Start as soon as the archive is uploaded and verified (saves the
    /// separate `start` request).
    #[serde(default)]
    pub auto_start: bool,
    /// Environment variables for the command, shown and kept in evidence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Names of secret variables: their values are kept apart (see
    /// `Store::run_secrets`), never shown, logged or put in evidence, and
    /// deleted when the run ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    /// Fail the run (`artifacts_missing`) when a declared artifact cannot
    /// be collected, although the command succeeded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_artifacts: bool,
    /// Refuse the whole archive for a symlink pointing out of the
    /// workspace, instead of leaving that entry out with a warning.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict_archive: bool,
}

/// A Workspace Run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    pub org_id: String,
    pub project_id: String,
    pub status: RunStatus,
    pub spec: RunSpec,
    pub archive: Option<ArchiveInfo>,
    pub template_digest: Option<String>,
    /// The sandbox the run executes (or executed) in.
    pub sandbox_id: Option<String>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<String>,
    pub failure_message: Option<String>,
    pub cancel_requested: bool,
    pub artifact_ids: Vec<String>,
    pub created_at_ms: u64,
    pub queued_at_ms: Option<u64>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
}

/// Event types, in the order of a typical run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Status,
    ArchiveProgress,
    Stdout,
    Stderr,
    ArtifactCollected,
    ArtifactError,
    Heartbeat,
    Terminal,
    Error,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Status => "status",
            EventType::ArchiveProgress => "archive_progress",
            EventType::Stdout => "stdout",
            EventType::Stderr => "stderr",
            EventType::ArtifactCollected => "artifact_collected",
            EventType::ArtifactError => "artifact_error",
            EventType::Heartbeat => "heartbeat",
            EventType::Terminal => "terminal",
            EventType::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<EventType> {
        [
            EventType::Status,
            EventType::ArchiveProgress,
            EventType::Stdout,
            EventType::Stderr,
            EventType::ArtifactCollected,
            EventType::ArtifactError,
            EventType::Heartbeat,
            EventType::Terminal,
            EventType::Error,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    pub fn is_output(self) -> bool {
        matches!(self, EventType::Stdout | EventType::Stderr)
    }
}

/// `data` of an `archive_progress` event reporting an archive entry the
/// extraction left out: `{"warning": {"entry", "reason"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveWarningEvent {
    pub warning: crate::ports::ArchiveWarning,
}

/// A stored event. For output events `data` holds `{offset, bytes, sha256,
/// truncated?}` into the run's output log; readers add the content.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: u64,
    pub kind: EventType,
    pub at_ms: u64,
    pub data: serde_json::Value,
}

impl Event {
    /// The canonical record: exactly what the event chain digest hashes.
    pub fn record(&self) -> serde_json::Value {
        serde_json::json!({
            "seq": self.seq,
            "type": self.kind.as_str(),
            "at": crate::runs::ids::rfc3339(self.at_ms),
            "data": self.data,
        })
    }
}
