//! Typed views of the API responses and request bodies the client works
//! with field by field (the rest stay `serde_json::Value`, printed as they
//! come). Field names are the API's camelCase.

use serde::{Deserialize, Serialize};

/// A staged archive transfer (`POST`/`GET …/archive-transfers[/{tid}]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub id: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub part_size_bytes: u64,
    pub part_count: u64,
    /// Parts the server holds; absent for a presigned transfer (its parts
    /// go straight to object storage, which the server does not watch).
    #[serde(default)]
    pub received_parts: Option<Vec<u64>>,
    #[serde(default)]
    pub missing_parts: Option<Vec<u64>>,
    /// `open` or `complete`.
    pub status: String,
    /// `server` or `presigned`.
    pub mode: String,
    #[serde(default)]
    pub upload_urls: Vec<PartUrl>,
}

/// Where to PUT one part of a presigned transfer.
#[derive(Debug, Clone, Deserialize)]
pub struct PartUrl {
    pub part: u64,
    pub url: String,
}

/// The body of `POST …/archive-transfers`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewTransfer<'a> {
    pub size_bytes: u64,
    pub sha256: &'a str,
}

/// A declared artifact of a new run: a workspace path, optionally named.
#[derive(Debug, Clone, Serialize)]
pub struct ArtifactSpec {
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The body of `POST /workspace-runs`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewRun {
    pub command: String,
    pub template: String,
    pub project_id: Option<String>,
    pub sandbox_id: Option<String>,
    pub keep_sandbox: bool,
    pub timeout_ms: Option<u64>,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub artifacts: Vec<ArtifactSpec>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub auto_start: bool,
}

/// What an `artifact_collected` event says about the artifact it kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectedArtifact {
    pub artifact_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// The stored Evidence Bundle bytes and the digest the server sent with
/// them (`x-evidence-sha256`).
#[derive(Debug, Clone)]
pub struct Evidence {
    pub bytes: Vec<u8>,
    pub sha256: Option<String>,
}
