//! The S3 operations, each signed with rusty-s3 and sent with `http`.

use std::time::Duration;

use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use crate::config::S3Config;
use crate::crownest::host::types::Error;
use crate::crownest::host::{digest, kv, log};
use crate::errors::{from_response, retryable};
use crate::exports::crownest::artifact_store::store::ObjectInfo;
use crate::http::{self, Response};
use crate::wasi::http::types::Method;
use crate::wasi::io::streams::{InputStream, StreamError};

/// Signed URLs are used right away; this only bounds clock skew.
const SIGN_FOR: Duration = Duration::from_secs(900);

/// What the host hashed while the body streamed through must be what the
/// caller declared, before the object is committed.
fn check_declared(hasher: &digest::Hasher, size: u64, sha256: &str) -> Result<(), Error> {
    let d = hasher.finish();
    if d.size != size {
        return Err(Error::Invalid(format!("size mismatch: declared {size} bytes, received {}", d.size)));
    }
    if d.sha256 != sha256 {
        return Err(Error::Invalid(format!("sha256 mismatch: declared {sha256}, received {}", d.sha256)));
    }
    Ok(())
}

pub struct Store {
    cfg: S3Config,
    bucket: Bucket,
    /// The bucket as clients reach it (`public_endpoint`), for presigning.
    public: Bucket,
    creds: Credentials,
}

fn now_ms() -> u64 {
    let t = crate::wasi::clocks::wall_clock::now();
    t.seconds * 1000 + u64::from(t.nanoseconds) / 1_000_000
}

/// Read up to `n` bytes of `stream` into memory (fewer only at its end).
fn read_up_to(stream: &InputStream, n: u64) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(n as usize);
    while (out.len() as u64) < n {
        let want = (n - out.len() as u64).min(4 << 20);
        match stream.blocking_read(want) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(Error::Unavailable(format!("reading the artifact failed: {}", e.to_debug_string())));
            }
        }
    }
    Ok(out)
}

impl Store {
    pub fn open() -> Result<Store, Error> {
        let cfg = S3Config::load()?;
        let url =
            cfg.endpoint.parse().map_err(|e| Error::Invalid(format!("s3-artifacts `endpoint` is not a URL: {e}")))?;
        let style = if cfg.path_style { UrlStyle::Path } else { UrlStyle::VirtualHost };
        let bucket = Bucket::new(url, style.clone(), cfg.bucket.clone(), cfg.region.clone())
            .map_err(|e| Error::Invalid(format!("s3-artifacts bucket configuration: {e}")))?;
        // Presigned URLs are signed for the host clients use.
        let public = match &cfg.public_endpoint {
            None => bucket.clone(),
            Some(p) => {
                let url = p
                    .parse()
                    .map_err(|e| Error::Invalid(format!("s3-artifacts `public_endpoint` is not a URL: {e}")))?;
                Bucket::new(url, style, cfg.bucket.clone(), cfg.region.clone())
                    .map_err(|e| Error::Invalid(format!("s3-artifacts bucket configuration: {e}")))?
            }
        };
        let creds = match &cfg.session_token {
            Some(t) => Credentials::new_with_token(&cfg.access_key_id, &cfg.secret_access_key, t),
            None => Credentials::new(&cfg.access_key_id, &cfg.secret_access_key),
        };
        Ok(Store { cfg, bucket, public, creds })
    }

    pub fn presign_downloads(&self) -> bool {
        self.cfg.presign_downloads
    }

    pub fn presign_uploads(&self) -> bool {
        self.cfg.presign_uploads
    }

    fn object(&self, key: &str) -> String {
        format!("{}{key}", self.cfg.prefix)
    }

    /// Send with retries on retryable failures (5xx, 429, connection).
    fn send(
        &self,
        what: &str,
        mut build: impl FnMut() -> (Method, String, Vec<(&'static str, String)>),
        body: Option<&[u8]>,
        ok: &[u16],
    ) -> Result<Response, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (method, url, headers) = build();
            let result = http::send(method, &url, &headers, body, self.cfg.request_timeout, what).and_then(|r| {
                if ok.contains(&r.status) {
                    Ok(r)
                } else {
                    let status = r.status;
                    let body = if status == 404 && what.starts_with("HEAD") {
                        Vec::new()
                    } else {
                        r.read_all(64 * 1024).unwrap_or_default()
                    };
                    Err(from_response(status, &body, what))
                }
            });
            match result {
                Err(e) if retryable(&e) && attempt < self.cfg.max_attempts => {
                    log::log(log::Level::Warn, &format!("{what}: attempt {attempt} failed, retrying: {}", message(&e)));
                    http::sleep(Duration::from_millis(200 << attempt.min(5)));
                }
                other => return other,
            }
        }
    }

    pub fn check_bucket(&self) -> Result<(), Error> {
        let what = format!("HEAD bucket {}", self.cfg.bucket);
        let r = self.send(
            &what,
            || (Method::Head, self.bucket.head_bucket(Some(&self.creds)).sign(SIGN_FOR).to_string(), vec![]),
            None,
            &[200],
        );
        match r {
            Ok(_) => Ok(()),
            Err(Error::NotFound(_)) => Err(Error::NotFound(format!(
                "bucket `{}` does not exist at {}; create it or fix `bucket`",
                self.cfg.bucket, self.cfg.endpoint
            ))),
            Err(e) => Err(e),
        }
    }

    pub fn put(&self, key: &str, size: u64, sha256: &str, body: InputStream) -> Result<ObjectInfo, Error> {
        let object = self.object(key);
        let (stream, hasher) = digest::hash_stream(body);
        let created = now_ms().to_string();
        if size <= self.cfg.part_size {
            let data = read_up_to(&stream, size + 1)?;
            drop(stream);
            check_declared(&hasher, size, sha256)?;
            let what = format!("PUT {object}");
            self.send(
                &what,
                || {
                    let mut a = self.bucket.put_object(Some(&self.creds), &object);
                    a.headers_mut().insert("x-amz-content-sha256", sha256.to_string());
                    a.headers_mut().insert("x-amz-meta-sha256", sha256.to_string());
                    a.headers_mut().insert("x-amz-meta-created-ms", created.clone());
                    let url = a.sign(SIGN_FOR).to_string();
                    (
                        Method::Put,
                        url,
                        vec![
                            ("x-amz-content-sha256", sha256.to_string()),
                            ("x-amz-meta-sha256", sha256.to_string()),
                            ("x-amz-meta-created-ms", created.clone()),
                        ],
                    )
                },
                Some(&data),
                &[200],
            )?;
        } else {
            self.multipart(&object, size, sha256, &created, &stream, &hasher)?;
        }
        Ok(ObjectInfo {
            locator: key.to_string(),
            size,
            sha256: sha256.to_string(),
            created_at_ms: created.parse().unwrap_or(0),
        })
    }

    fn multipart(
        &self,
        object: &str,
        size: u64,
        sha256: &str,
        created: &str,
        stream: &InputStream,
        hasher: &digest::Hasher,
    ) -> Result<(), Error> {
        let what = format!("create multipart upload {object}");
        let r = self.send(
            &what,
            || {
                let mut a = self.bucket.create_multipart_upload(Some(&self.creds), object);
                a.headers_mut().insert("x-amz-meta-sha256", sha256.to_string());
                a.headers_mut().insert("x-amz-meta-created-ms", created.to_string());
                (
                    Method::Post,
                    a.sign(SIGN_FOR).to_string(),
                    vec![("x-amz-meta-sha256", sha256.to_string()), ("x-amz-meta-created-ms", created.to_string())],
                )
            },
            None,
            &[200],
        )?;
        let xml = r.read_all(64 * 1024)?;
        let upload_id = CreateMultipartUpload::parse_response(&xml)
            .map_err(|e| Error::Internal(format!("unexpected multipart response: {e}")))?
            .upload_id()
            .to_string();
        // Journal the upload until it is completed or aborted.
        kv::set(&format!("mpu/{upload_id}"), object.as_bytes())?;
        let result = self.upload_parts(object, &upload_id, size, sha256, stream, hasher);
        match &result {
            Ok(()) => {
                let _ = kv::delete(&format!("mpu/{upload_id}"));
            }
            Err(_) => {
                if self.abort(object, &upload_id).is_ok() {
                    let _ = kv::delete(&format!("mpu/{upload_id}"));
                }
            }
        }
        result
    }

    fn upload_parts(
        &self,
        object: &str,
        upload_id: &str,
        size: u64,
        sha256: &str,
        stream: &InputStream,
        hasher: &digest::Hasher,
    ) -> Result<(), Error> {
        let mut etags: Vec<String> = Vec::new();
        let mut sent = 0u64;
        loop {
            let data = read_up_to(stream, self.cfg.part_size)?;
            if data.is_empty() {
                break;
            }
            sent += data.len() as u64;
            if sent > size {
                return Err(Error::Invalid(format!("body is longer than the declared size of {size} bytes")));
            }
            let part = u16::try_from(etags.len() + 1)
                .map_err(|_| Error::Invalid("more than 10000 parts: raise part_size_bytes".into()))?;
            let what = format!("upload part {part} of {object}");
            let r = self.send(
                &what,
                || {
                    (
                        Method::Put,
                        self.bucket.upload_part(Some(&self.creds), object, part, upload_id).sign(SIGN_FOR).to_string(),
                        vec![],
                    )
                },
                Some(&data),
                &[200],
            )?;
            let etag = r
                .header("etag")
                .ok_or_else(|| Error::Internal(format!("{what}: no ETag in the response")))?
                .to_string();
            etags.push(etag);
        }
        check_declared(hasher, size, sha256)?;
        let what = format!("complete multipart upload {object}");
        let r = self.send(
            &what,
            || {
                let a = self.bucket.complete_multipart_upload(
                    Some(&self.creds),
                    object,
                    upload_id,
                    etags.iter().map(String::as_str),
                );
                let url = a.sign(SIGN_FOR).to_string();
                (Method::Post, url, vec![])
            },
            Some(
                self.bucket
                    .complete_multipart_upload(Some(&self.creds), object, upload_id, etags.iter().map(String::as_str))
                    .body()
                    .as_bytes(),
            ),
            &[200],
        )?;
        // S3 can answer 200 with an error document for a failed completion.
        let text = r.read_all(64 * 1024)?;
        if String::from_utf8_lossy(&text).contains("<Error>") {
            return Err(from_response(500, &text, &what));
        }
        Ok(())
    }

    fn abort(&self, object: &str, upload_id: &str) -> Result<(), Error> {
        let what = format!("abort multipart upload {object}");
        match self.send(
            &what,
            || {
                (
                    Method::Delete,
                    self.bucket.abort_multipart_upload(Some(&self.creds), object, upload_id).sign(SIGN_FOR).to_string(),
                    vec![],
                )
            },
            None,
            &[204, 200],
        ) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => {
                log::log(log::Level::Warn, &format!("{what} failed; it will be retried: {}", message(&e)));
                Err(e)
            }
        }
    }

    /// Abort multipart uploads an earlier failure could not abort.
    pub fn sweep_orphans(&self) {
        let Ok(keys) = kv::list_keys("mpu/", None, 100) else { return };
        for k in keys {
            let Some(upload_id) = k.strip_prefix("mpu/") else { continue };
            let Ok(Some(object)) = kv::get(&k) else { continue };
            let object = String::from_utf8_lossy(&object).into_owned();
            if self.abort(&object, upload_id).is_ok() {
                let _ = kv::delete(&k);
                log::log(log::Level::Info, &format!("aborted the orphaned multipart upload of {object}"));
            }
        }
    }

    pub fn get(&self, key: &str) -> Result<InputStream, Error> {
        let object = self.object(key);
        let what = format!("GET {object}");
        let r = self.send(
            &what,
            || (Method::Get, self.bucket.get_object(Some(&self.creds), &object).sign(SIGN_FOR).to_string(), vec![]),
            None,
            &[200],
        )?;
        r.into_stream()
    }

    pub fn stat(&self, key: &str) -> Result<ObjectInfo, Error> {
        let object = self.object(key);
        let what = format!("HEAD {object}");
        let r = self
            .send(
                &what,
                || {
                    (
                        Method::Head,
                        self.bucket.head_object(Some(&self.creds), &object).sign(SIGN_FOR).to_string(),
                        vec![],
                    )
                },
                None,
                &[200],
            )
            .map_err(|e| match e {
                Error::NotFound(_) => Error::NotFound(format!("no object at `{key}`")),
                other => other,
            })?;
        let size = r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let sha256 = r.header("x-amz-meta-sha256").unwrap_or("").to_string();
        let created = r.header("x-amz-meta-created-ms").and_then(|v| v.parse().ok()).unwrap_or(0);
        if sha256.len() != 64 {
            return Err(Error::Internal(format!("object `{key}` was not stored by s3-artifacts (no sha256 metadata)")));
        }
        Ok(ObjectInfo { locator: key.to_string(), size, sha256, created_at_ms: created })
    }

    pub fn delete(&self, key: &str) -> Result<(), Error> {
        let object = self.object(key);
        let what = format!("DELETE {object}");
        match self.send(
            &what,
            || {
                (
                    Method::Delete,
                    self.bucket.delete_object(Some(&self.creds), &object).sign(SIGN_FOR).to_string(),
                    vec![],
                )
            },
            None,
            &[204, 200],
        ) {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn presign_get(&self, key: &str, secs: u32) -> String {
        let object = self.object(key);
        self.public.get_object(Some(&self.creds), &object).sign(Duration::from_secs(u64::from(secs))).to_string()
    }

    pub fn presign_put(&self, key: &str, secs: u32) -> String {
        let object = self.object(key);
        self.public.put_object(Some(&self.creds), &object).sign(Duration::from_secs(u64::from(secs))).to_string()
    }
}

fn message(e: &Error) -> &str {
    match e {
        Error::Invalid(m)
        | Error::NotFound(m)
        | Error::Denied(m)
        | Error::QuotaExceeded(m)
        | Error::Unavailable(m)
        | Error::Internal(m) => m,
    }
}
