//! Shared helpers of the Workspace Runs end-to-end tests.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use crownest_test_support::server::Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_crownest"))
}

/// A server with a 1 s heartbeat, the shared compile cache and room for
/// many concurrent sandboxes (tests of the default plan set
/// `MAX_CONCURRENT_SANDBOXES` back to 2).
pub fn server(extra: &[(&str, &str)]) -> Server {
    let cache = crownest_test_support::target_dir().join("e2e-compile-cache").display().to_string();
    let mut env = vec![
        ("CROWNEST_RUNS__HEARTBEAT_SECS", "1"),
        ("CROWNEST_ENGINE__CACHE_DIR", cache.as_str()),
        ("CROWNEST_PLUGINS__METER__CONFIG__MAX_CONCURRENT_SANDBOXES", "1000"),
    ];
    env.extend_from_slice(extra);
    Server::start(&exe(), &env)
}

/// Pseudo-random bytes (xorshift from `seed`) that gzip cannot shrink, so
/// an archive of them really is large.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

pub fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A `.tar.gz` of (path, contents, mode).
pub fn targz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(enc);
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// The text a run wrote to `stream` (`stdout` or `stderr`), from its events.
pub fn stream_text(events: &[Value], stream: &str) -> String {
    events.iter().filter(|e| e["type"] == stream).map(|e| e["data"]["text"].as_str().unwrap_or("")).collect()
}

/// A `.tar.gz` with one entry whose name is written raw (hostile names).
pub fn targz_raw_name(name: &[u8], data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    let mut raw = h.as_bytes().to_vec();
    raw.extend_from_slice(data);
    raw.resize(raw.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &raw).unwrap();
    gz.finish().unwrap()
}

pub struct Api {
    pub http: reqwest::Client,
    pub url: String,
    pub key: String,
}

impl Api {
    pub fn new(s: &Server) -> Api {
        Api { http: reqwest::Client::new(), url: s.url.clone(), key: s.api_key.clone() }
    }

    pub fn with_key(&self, key: &str) -> Api {
        Api { http: self.http.clone(), url: self.url.clone(), key: key.into() }
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.bearer_auth(&self.key).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text})))
    }

    /// An authenticated GET to adjust (headers) before sending.
    pub fn get_req(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.key)
    }

    /// The raw body of an authenticated GET.
    pub async fn bytes(&self, path: &str) -> Vec<u8> {
        self.get_req(path).send().await.unwrap().bytes().await.unwrap().to_vec()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.url))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body)).await
    }

    pub async fn create(&self, body: Value) -> Value {
        let (s, v) = self.post("/v1/workspace-runs", body).await;
        assert_eq!(s, 201, "{v}");
        v["data"].clone()
    }

    pub async fn upload(&self, id: &str, archive: &[u8]) -> (u16, Value) {
        let path = format!(
            "{}/v1/workspace-runs/{id}/archive?sizeBytes={}&sha256={}",
            self.url,
            archive.len(),
            sha256(archive)
        );
        self.send(self.http.put(path).body(archive.to_vec())).await
    }

    pub async fn start(&self, id: &str) -> (u16, Value) {
        self.post(&format!("/v1/workspace-runs/{id}/start"), json!({})).await
    }

    /// Poll until the run is terminal.
    pub async fn wait(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let (_, v) = self.get(&format!("/v1/workspace-runs/{id}")).await;
            let st = v["data"]["status"].as_str().unwrap_or("").to_string();
            if ["succeeded", "failed", "canceled"].contains(&st.as_str()) {
                return v["data"].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }

    /// Create, upload, start and wait.
    pub async fn run(&self, body: Value, archive: &[u8]) -> Value {
        let run = self.create(body).await;
        let id = run["id"].as_str().unwrap();
        let (s, v) = self.upload(id, archive).await;
        assert_eq!(s, 200, "{v}");
        let (s, v) = self.start(id).await;
        assert_eq!(s, 202, "{v}");
        self.wait(id).await
    }

    /// The text run `id` wrote to `stream`.
    pub async fn output(&self, id: &str, stream: &str) -> String {
        stream_text(&self.all_events(id).await, stream)
    }

    /// Open a staged transfer of `archive` in 1 MiB parts.
    pub async fn open_transfer(&self, id: &str, archive: &[u8]) -> (u16, Value) {
        self.post(
            &format!("/v1/workspace-runs/{id}/archive-transfers"),
            json!({"sizeBytes": archive.len(), "sha256": sha256(archive), "partSizeBytes": 1 << 20}),
        )
        .await
    }

    /// Every event of a run, by pages.
    pub async fn all_events(&self, id: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let (s, v) = self.get(&format!("/v1/workspace-runs/{id}/events?afterSeq={after}&limit=1000")).await;
            assert_eq!(s, 200, "{v}");
            let items = v["data"]["items"].as_array().unwrap().clone();
            if items.is_empty() {
                return out;
            }
            after = items.last().unwrap()["seq"].as_u64().unwrap();
            out.extend(items);
        }
    }

    pub async fn evidence(&self, id: &str) -> Value {
        let (s, v) = self.get(&format!("/v1/workspace-runs/{id}/evidence")).await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }
}

/// Host processes owned by `uid`.
pub fn processes_of(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(st) = std::fs::read_to_string(e.path().join("status")) else { continue };
        if st
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            == Some(uid)
        {
            out.push(name);
        }
    }
    out
}
