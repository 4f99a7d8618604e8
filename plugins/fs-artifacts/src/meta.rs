//! The one-line metadata file kept beside each object.

use crate::crownest::host::types::Error;
use crate::exports::crownest::artifact_store::store::ObjectInfo;

pub fn validate_sha256(sha: &str) -> Result<(), Error> {
    if sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err(Error::Invalid(format!("sha256 must be 64 lowercase hex characters, got `{}`", sha.escape_default())))
    }
}

/// `v1 <size> <sha256> <created-at-ms>`
pub fn encode(info: &ObjectInfo) -> String {
    format!("v1 {} {} {}\n", info.size, info.sha256, info.created_at_ms)
}

pub fn decode(locator: &str, text: &str) -> Result<ObjectInfo, Error> {
    let corrupt = || Error::Internal(format!("metadata of `{locator}` is corrupt"));
    let mut parts = text.split_whitespace();
    if parts.next() != Some("v1") {
        return Err(corrupt());
    }
    let size = parts.next().and_then(|s| s.parse().ok()).ok_or_else(corrupt)?;
    let sha256 = parts.next().ok_or_else(corrupt)?.to_string();
    let created_at_ms = parts.next().and_then(|s| s.parse().ok()).ok_or_else(corrupt)?;
    Ok(ObjectInfo { locator: locator.to_string(), size, sha256, created_at_ms })
}
