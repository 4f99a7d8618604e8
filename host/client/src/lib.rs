//! A small client of the CrowNest API: JSON envelopes in and out, API errors
//! with their code, retries of requests that are safe to repeat (reads, and
//! writes carrying an `Idempotency-Key`), and an SSE event stream that
//! resumes after the last event it delivered.

pub mod base_url;
mod event_json;
mod sse;
pub mod types;

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;

pub use sse::{EventStream, Outage};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error envelope.
    #[error("{code}: {message}")]
    Api { status: u16, code: String, message: String, request_id: Option<String> },
    /// The API could not be reached (after retries): `url` is the server's
    /// base URL, `message` the cause (`connection refused`, `timed out`, …).
    #[error("cannot reach CrowNest at {url}: {message}")]
    Transport { url: String, message: String, refused: bool },
    /// Anything else (unexpected response).
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    /// A transport failure of a request to `base`, described by its
    /// innermost cause (reqwest's own message only says "error sending
    /// request").
    pub(crate) fn transport(base: &str, e: &reqwest::Error) -> ClientError {
        let mut refused = false;
        let mut cause = e.to_string();
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>()
                && io.kind() == std::io::ErrorKind::ConnectionRefused
            {
                refused = true;
            }
            cause = s.to_string();
            source = s.source();
        }
        let message = if refused {
            "connection refused".to_string()
        } else if e.is_timeout() {
            format!("timed out ({cause})")
        } else {
            cause
        };
        ClientError::Transport { url: base.to_string(), message, refused }
    }

    /// Whether the server could not be reached at all (as opposed to
    /// answering with an error).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }

    pub fn code(&self) -> &str {
        match self {
            ClientError::Api { code, .. } => code,
            ClientError::Transport { .. } => "unreachable",
            ClientError::Other(_) => "unexpected_response",
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// `data` (an envelope's content) as `T`.
pub fn typed<T: serde::de::DeserializeOwned>(data: Value) -> Result<T> {
    serde_json::from_value(data).map_err(|e| ClientError::Other(format!("unexpected response: {e}")))
}

/// The API client.
#[derive(Clone)]
pub struct Client {
    base: String,
    key: String,
    http: reqwest::Client,
}

/// A fresh random idempotency key.
pub fn idempotency_key() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

const RETRIES: u32 = 3;

impl Client {
    /// A client of the API at `base` (as [`base_url::normalize`] gives it).
    ///
    /// # Panics
    /// When the HTTP client cannot be built (no TLS backend); callers that
    /// must not panic use [`Client::try_new`].
    pub fn new(base: impl Into<String>, key: impl Into<String>) -> Client {
        Client::try_new(base, key).expect("HTTP client")
    }

    /// [`Client::new`], or why the HTTP client could not be built.
    pub fn try_new(base: impl Into<String>, key: impl Into<String>) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client { base: base.into().trim_end_matches('/').to_string(), key: key.into(), http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn decode(resp: reqwest::Response) -> Result<Value> {
        let status = resp.status();
        let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(String::from);
        let bytes = resp.bytes().await.map_err(|e| ClientError::Other(format!("reading the response failed: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::Other(format!(
                "unexpected {status} response: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })?;
        if status.is_success() {
            return Ok(v["data"].clone());
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            code: v["error"]["code"].as_str().unwrap_or("error").to_string(),
            message: v["error"]["message"].as_str().unwrap_or("").to_string(),
            request_id: v["error"]["requestId"].as_str().map(String::from).or(request_id),
        })
    }

    /// Send a request, retrying transport failures when `repeatable`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        idem: Option<&str>,
        repeatable: bool,
    ) -> Result<reqwest::Response> {
        let url = self.url(path);
        let mut attempt = 0;
        loop {
            let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.key);
            if let Some(k) = idem {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                req = req.header("content-type", "application/json").body(b.clone());
            }
            match req.send().await {
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE && repeatable && attempt < RETRIES => {}
                Ok(r) => return Ok(r),
                Err(e) if !repeatable || attempt >= RETRIES => return Err(ClientError::transport(&self.base, &e)),
                Err(_) => {}
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }

    /// The response if it succeeded, else the API error it carries.
    async fn success(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(Self::decode(resp).await.err().unwrap_or_else(|| ClientError::Other("unexpected success".into())))
    }

    /// A JSON call; returns the envelope's `data`.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>, idem: Option<&str>) -> Result<Value> {
        match body {
            Some(b) => self.call_with(method, path, b, idem).await,
            None => {
                let repeatable = method == Method::GET || idem.is_some();
                Self::decode(self.send(method, path, None, idem, repeatable).await?).await
            }
        }
    }

    /// A JSON call with a typed body; returns the envelope's `data`.
    pub async fn call_with<B: serde::Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
        idem: Option<&str>,
    ) -> Result<Value> {
        let repeatable = method == Method::GET || idem.is_some();
        let body =
            serde_json::to_vec(body).map_err(|e| ClientError::Other(format!("cannot encode the request: {e}")))?;
        Self::decode(self.send(method, path, Some(Bytes::from(body)), idem, repeatable).await?).await
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, None, None).await
    }

    /// Upload raw bytes (an archive or a part) with PUT.
    pub async fn put_bytes(&self, path: &str, body: reqwest::Body, len: u64, idem: Option<&str>) -> Result<Value> {
        let mut req = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.key)
            .header("content-type", "application/gzip")
            .header("content-length", len)
            .body(body);
        if let Some(k) = idem {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.map_err(|e| ClientError::transport(&self.base, &e))?;
        Self::decode(resp).await
    }

    /// Upload bytes to a presigned URL the API handed out (a staged archive
    /// part going straight to object storage): no API key is sent, and
    /// transport failures and 5xx are retried (a part PUT is idempotent).
    pub async fn put_presigned(&self, url: &str, body: Bytes) -> Result<()> {
        let mut attempt = 0;
        loop {
            let sent = self.http.put(url).header("content-length", body.len()).body(body.clone()).send().await;
            match sent {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_server_error() && attempt < RETRIES => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let host = url.split('?').next().unwrap_or(url);
                    return Err(ClientError::Other(format!(
                        "object storage refused the part upload to {host} with {status}: {}",
                        text.chars().take(300).collect::<String>()
                    )));
                }
                Err(e) if attempt >= RETRIES => {
                    let host = url.split('?').next().unwrap_or(url);
                    return Err(ClientError::transport(host, &e));
                }
                Err(_) => {}
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
    }

    /// Raw response bytes of a GET that returns `{ "data": <bytes> }`
    /// unchanged (the Evidence Bundle): the inner bytes, exactly.
    pub async fn get_raw_data(&self, path: &str) -> Result<Vec<u8>> {
        let resp = self.send(Method::GET, path, None, None, true).await?;
        let resp = Self::success(resp).await?;
        let bytes = resp.bytes().await.map_err(|e| ClientError::Other(e.to_string()))?;
        let inner = bytes
            .strip_prefix(b"{\"data\":")
            .and_then(|b| b.strip_suffix(b"}"))
            .ok_or_else(|| ClientError::Other("unexpected evidence envelope".into()))?;
        Ok(inner.to_vec())
    }

    /// A run's Evidence Bundle: the stored bytes, exactly, with the digest
    /// the server sent for them.
    pub async fn evidence(&self, run_id: &str) -> Result<types::Evidence> {
        let resp = self.send(Method::GET, &format!("/v1/workspace-runs/{run_id}/evidence"), None, None, true).await?;
        let resp = Self::success(resp).await?;
        let sha256 = resp.headers().get("x-evidence-sha256").and_then(|v| v.to_str().ok()).map(String::from);
        let bytes = resp.bytes().await.map_err(|e| ClientError::Other(format!("reading the evidence failed: {e}")))?;
        let inner = bytes
            .strip_prefix(b"{\"data\":")
            .and_then(|b| b.strip_suffix(b"}"))
            .ok_or_else(|| ClientError::Other("unexpected evidence envelope".into()))?;
        Ok(types::Evidence { bytes: inner.to_vec(), sha256 })
    }

    /// A streamed GET (artifact content).
    pub async fn download(&self, path: &str) -> Result<reqwest::Response> {
        Self::success(self.send(Method::GET, path, None, None, true).await?).await
    }

    /// Live events of a run after `after_seq`, resuming on disconnect, until
    /// the terminal event.
    pub fn events(&self, run_id: &str, after_seq: u64) -> EventStream {
        EventStream::new(self.clone(), run_id.to_string(), after_seq)
    }

    pub(crate) async fn open_sse(&self, run_id: &str, after: u64) -> Result<reqwest::Response> {
        let path = format!("/v1/workspace-runs/{run_id}/events?afterSeq={after}");
        let resp = self
            .http
            .get(self.url(&path))
            .bearer_auth(&self.key)
            .header("accept", "text/event-stream")
            .send()
            .await
            .map_err(|e| ClientError::transport(&self.base, &e))?;
        Self::success(resp).await
    }
}
