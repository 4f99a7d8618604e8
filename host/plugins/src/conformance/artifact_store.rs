//! Conformance checks for the `artifact-store` world.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crownest_core::ErrorKind;
use crownest_core::ports::{ArtifactStore, ByteStream, PutRequest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use super::{Suite, describe, expect_error};
use crate::kinds::WasmArtifactStore;

const SMALL: &[u8] = b"hello from crownest plugins check\n";
const LARGE_SIZE: u64 = 16 * 1024 * 1024;

/// Deterministic bytes generated on the fly, counting what was read.
struct Pattern {
    remaining: u64,
    counter: Arc<AtomicU64>,
    state: u64,
}

impl Pattern {
    fn new(size: u64) -> (Pattern, Arc<AtomicU64>) {
        let counter = Arc::new(AtomicU64::new(0));
        (Pattern { remaining: size, counter: counter.clone(), state: 0x9e37_79b9_7f4a_7c15 }, counter)
    }

    fn digest(size: u64) -> String {
        let (mut p, _) = Pattern::new(size);
        let mut sha = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = p.fill(&mut buf);
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
        }
        hex::encode(sha.finalize())
    }

    fn fill(&mut self, out: &mut [u8]) -> usize {
        let n = (out.len() as u64).min(self.remaining) as usize;
        for b in &mut out[..n] {
            // xorshift64: cheap, deterministic, incompressible enough.
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            *b = self.state as u8;
        }
        self.remaining -= n as u64;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        n
    }
}

impl AsyncRead for Pattern {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let n = self.fill(buf.initialize_unfilled());
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn request(key: &str, size: u64, sha256: String) -> PutRequest {
    PutRequest { key: key.into(), size, sha256, content_type: None, metadata: vec![("name".into(), "check".into())] }
}

fn body(bytes: &'static [u8]) -> ByteStream {
    Box::new(bytes)
}

async fn read_all(mut s: ByteStream) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| format!("reading the stream failed: {e}"))?;
    Ok(out)
}

async fn hash_stream(mut s: ByteStream) -> Result<(u64, String), String> {
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("reading the stream failed: {e}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        sha.update(&buf[..n]);
    }
    Ok((total, hex::encode(sha.finalize())))
}

pub(crate) async fn run(suite: &mut Suite, store: Arc<WasmArtifactStore>) {
    let s = store.as_ref();
    suite.check("check", async || s.check().await.map(|_| "backend ready".into()).map_err(|e| describe(&e))).await;

    let small_key = "conformance/small.txt";
    let mut locator = None;
    suite
        .check("put", async || {
            let info = s
                .put(request(small_key, SMALL.len() as u64, sha256_hex(SMALL)), body(SMALL))
                .await
                .map_err(|e| describe(&e))?;
            locator = Some(info.locator.clone());
            Ok(format!("stored {} bytes at locator `{}`", info.size, info.locator))
        })
        .await;
    let locator = locator.unwrap_or_else(|| small_key.to_string());

    suite
        .check("get", async || {
            let bytes = read_all(s.get(&locator).await.map_err(|e| describe(&e))?).await?;
            if bytes == SMALL {
                Ok("read back the same bytes, stream read to its end".into())
            } else {
                Err(format!("read back {} bytes that differ from the {} stored", bytes.len(), SMALL.len()))
            }
        })
        .await;

    suite
        .check("stat", async || {
            let info = s.stat(&locator).await.map_err(|e| describe(&e))?;
            if info.size == SMALL.len() as u64 && info.sha256 == sha256_hex(SMALL) {
                Ok("size and sha256 match".into())
            } else {
                Err(format!(
                    "stat says {} bytes / {}; expected {} / {}",
                    info.size,
                    info.sha256,
                    SMALL.len(),
                    sha256_hex(SMALL)
                ))
            }
        })
        .await;

    suite
        .check("put-large-streamed", async || {
            let expected = Pattern::digest(LARGE_SIZE);
            let (pattern, counter) = Pattern::new(LARGE_SIZE);
            let info = s
                .put(request("conformance/large.bin", LARGE_SIZE, expected.clone()), Box::new(pattern))
                .await
                .map_err(|e| describe(&e))?;
            let consumed = counter.load(Ordering::Relaxed);
            if consumed != LARGE_SIZE {
                return Err(format!(
                    "the plugin read {consumed} of {LARGE_SIZE} body bytes; a put must read the stream to its end"
                ));
            }
            let (size, sha) = hash_stream(s.get(&info.locator).await.map_err(|e| describe(&e))?).await?;
            if size != LARGE_SIZE || sha != expected {
                return Err(format!("read back {size} bytes with sha256 {sha}; expected {LARGE_SIZE} / {expected}"));
            }
            Ok(format!("{} MiB streamed in and out intact", LARGE_SIZE >> 20))
        })
        .await;

    // A refused put must not clobber the object already stored at the key.
    let intact = async |verdict: String| -> Result<String, String> {
        let bytes =
            read_all(s.get(&locator).await.map_err(|e| format!("{verdict}, but then get failed: {}", describe(&e)))?)
                .await?;
        if bytes == SMALL {
            Ok(format!("{verdict}; the previous object is intact"))
        } else {
            Err(format!("{verdict}, but the object previously stored at the key changed"))
        }
    };

    suite
        .check("put-sha256-mismatch", async || {
            let other: &'static [u8] = b"a different body of other bytes!!!";
            let result =
                s.put(request(small_key, other.len() as u64, sha256_hex(b"something else")), body(other)).await;
            intact(expect_error(result, &[ErrorKind::Invalid])?).await
        })
        .await;

    suite
        .check("put-size-mismatch", async || {
            let other: &'static [u8] = b"short";
            let result = s.put(request(small_key, other.len() as u64 + 10, sha256_hex(other)), body(other)).await;
            intact(expect_error(result, &[ErrorKind::Invalid])?).await
        })
        .await;

    suite
        .check("get-unknown-locator", async || {
            expect_error(
                s.get("conformance/does-not-exist").await.map(|_| ()),
                &[ErrorKind::NotFound, ErrorKind::Invalid],
            )
        })
        .await;

    for (name, key) in [("key-traversal", "../escape"), ("key-absolute", "/etc/passwd"), ("key-empty-segment", "a//b")]
    {
        suite
            .check(name, async || {
                expect_error(
                    s.put(request(key, SMALL.len() as u64, sha256_hex(SMALL)), body(SMALL)).await,
                    &[ErrorKind::Invalid],
                )
            })
            .await;
    }

    suite
        .check("delete", async || {
            s.delete(&locator).await.map_err(|e| describe(&e))?;
            match s.stat(&locator).await {
                Err(e) if e.kind == ErrorKind::NotFound => {}
                other => return Err(format!("after delete, stat should say not-found, got {other:?}")),
            }
            s.delete(&locator)
                .await
                .map_err(|e| format!("deleting an absent object must succeed; {}", describe(&e)))?;
            Ok("deleted; deleting again is not an error".into())
        })
        .await;

    suite.check("get-deleted", async || expect_error(s.get(&locator).await.map(|_| ()), &[ErrorKind::NotFound])).await;

    suite
        .check("presign", async || {
            let url = s
                .presign_get("conformance/large.bin", std::time::Duration::from_secs(60))
                .await
                .map_err(|e| describe(&e))?;
            Ok(match url {
                Some(_) => "presigned GET URLs supported".into(),
                None => "no presigned URLs (the host streams downloads itself)".into(),
            })
        })
        .await;
}
