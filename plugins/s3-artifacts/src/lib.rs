//! `s3-artifacts`: an artifact store on any S3-compatible service (AWS S3,
//! Garage, MinIO), spoken over `wasi:http` with AWS Signature V4 computed
//! here by `rusty-s3` (sans-IO: it signs, we send).
//!
//! - put: objects up to `part_size_bytes` go up in one PUT, larger ones in a
//!   multipart upload of parts of that size. The host's SHA-256 of the body
//!   is signed as `x-amz-content-sha256`, so the service itself rejects a
//!   body that does not match; the plugin also hashes the whole stream
//!   through `crownest:host/digest` (native speed) and refuses a size or
//!   digest mismatch before completing. At most one part is in memory at a
//!   time (so a failed part can be retried), never the whole artifact.
//! - Every request is retried with backoff on 5xx, 429 and connection
//!   errors. A multipart upload that fails is aborted; if even the abort
//!   fails (the service is down), the upload id stays in `kv` and is aborted
//!   by the next `check` or `put`, so no orphaned parts remain.
//! - get streams the object back; stat, delete; presigned GET URLs when
//!   `presign_downloads = true` (artifact downloads become redirects) and
//!   PUT URLs when `presign_uploads = true` (staged archive parts go
//!   straight to the bucket).

mod config;
mod errors;
mod http;
mod keys;
mod s3;

wit_bindgen::generate!({
    path: "../../wit/artifact-store",
    world: "crownest:artifact-store/artifact-store",
    generate_all,
});

use crownest::host::types::Error;
use exports::crownest::artifact_store::store::{Guest, ObjectInfo, PutRequest};
use wasi::io::streams::InputStream;

struct S3Artifacts;

export!(S3Artifacts);

impl Guest for S3Artifacts {
    fn check() -> Result<(), Error> {
        config_keys::check(&crate::crownest::host::config::get_json(), "s3-artifacts", config::KEYS)
            .map_err(Error::Invalid)?;
        let s = s3::Store::open()?;
        s.sweep_orphans();
        s.check_bucket()
    }

    fn put(req: PutRequest, body: InputStream) -> Result<ObjectInfo, Error> {
        keys::validate(&req.key)?;
        keys::validate_sha256(&req.sha256)?;
        let s = s3::Store::open()?;
        s.sweep_orphans();
        s.put(&req.key, req.size, &req.sha256, body)
    }

    fn get(locator: String) -> Result<InputStream, Error> {
        keys::validate(&locator)?;
        s3::Store::open()?.get(&locator)
    }

    fn stat(locator: String) -> Result<ObjectInfo, Error> {
        keys::validate(&locator)?;
        s3::Store::open()?.stat(&locator)
    }

    fn delete(locator: String) -> Result<(), Error> {
        keys::validate(&locator)?;
        s3::Store::open()?.delete(&locator)
    }

    fn presign_get(locator: String, expires_in_secs: u32) -> Result<Option<String>, Error> {
        keys::validate(&locator)?;
        let s = s3::Store::open()?;
        Ok(s.presign_downloads().then(|| s.presign_get(&locator, expires_in_secs)))
    }

    fn presign_put(key: String, expires_in_secs: u32) -> Result<Option<String>, Error> {
        keys::validate(&key)?;
        let s = s3::Store::open()?;
        Ok(s.presign_uploads().then(|| s.presign_put(&key, expires_in_secs)))
    }
}
