//! The plugin's configuration (`[plugins.artifact_store.config]`).
//!
//! Credentials come from the config table; to keep them out of the file, set
//! them to `"${env:NAME}"`, which the host replaces with the environment
//! variable at load time. They are never logged, and never appear in events,
//! evidence or error messages.

use std::time::Duration;

use crate::crownest::host::config;
use crate::crownest::host::types::Error;

/// Every key of the store's config table.
pub const KEYS: &[&str] = &[
    "endpoint",
    "region",
    "bucket",
    "prefix",
    "path_style",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "request_timeout_ms",
    "part_size_bytes",
    "max_attempts",
    "presign_downloads",
    "presign_uploads",
    "public_endpoint",
];

/// A boolean setting: `true` or `false` (TOML booleans, or those words),
/// anything else refused rather than read as `false`.
fn flag(key: &str, default: bool) -> Result<bool, Error> {
    match text(key).as_deref() {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(Error::Invalid(format!("s3-artifacts config `{key}` must be true or false, got `{v}`"))),
    }
}

#[derive(Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Prepended to every key (e.g. `crownest/`).
    pub prefix: String,
    pub path_style: bool,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    pub request_timeout: Duration,
    /// Objects larger than this go up in multipart uploads of this size.
    pub part_size: u64,
    pub max_attempts: u32,
    /// Serve artifact downloads as redirects to presigned URLs.
    pub presign_downloads: bool,
    /// Let clients upload staged archive parts straight to the bucket
    /// through presigned URLs.
    pub presign_uploads: bool,
    /// The endpoint clients reach the service at, when it is not
    /// `endpoint` (a reverse proxy, a public name): presigned URLs are made
    /// for it.
    pub public_endpoint: Option<String>,
}

fn text(key: &str) -> Option<String> {
    config::get(key).filter(|v| !v.is_empty())
}

fn number(key: &str, default: u64) -> Result<u64, Error> {
    match text(key) {
        None => Ok(default),
        Some(v) => {
            v.parse().map_err(|_| Error::Invalid(format!("s3-artifacts config `{key}` must be a number, got `{v}`")))
        }
    }
}

fn required(key: &str) -> Result<String, Error> {
    text(key).ok_or_else(|| Error::Invalid(format!("s3-artifacts config `{key}` is required")))
}

impl S3Config {
    pub fn load() -> Result<S3Config, Error> {
        let part_size = number("part_size_bytes", 64 << 20)?;
        if part_size < 5 << 20 {
            return Err(Error::Invalid(
                "s3-artifacts config `part_size_bytes` must be at least 5 MiB (the S3 minimum)".into(),
            ));
        }
        let endpoint = required("endpoint")?;
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "s3-artifacts config `endpoint` must be an http:// or https:// URL, got `{endpoint}`"
            )));
        }
        let mut prefix = text("prefix").unwrap_or_default();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(S3Config {
            endpoint,
            region: text("region").unwrap_or_else(|| "us-east-1".into()),
            bucket: required("bucket")?,
            prefix,
            path_style: flag("path_style", true)?,
            access_key_id: required("access_key_id")?,
            secret_access_key: required("secret_access_key")?,
            session_token: text("session_token"),
            request_timeout: Duration::from_millis(number("request_timeout_ms", 30_000)?),
            part_size,
            max_attempts: number("max_attempts", 4)?.clamp(1, 10) as u32,
            presign_downloads: flag("presign_downloads", false)?,
            presign_uploads: flag("presign_uploads", false)?,
            public_endpoint: match text("public_endpoint") {
                Some(e) if !(e.starts_with("http://") || e.starts_with("https://")) => {
                    return Err(Error::Invalid(format!(
                        "s3-artifacts config `public_endpoint` must be an http:// or https:// URL, got `{e}`"
                    )));
                }
                other => other,
            },
        })
    }
}
