//! `crownest:host/digest`: count and SHA-256 the bytes flowing through a
//! stream at native speed, so a plugin can verify bulk data it only splices.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, InputStream, Pollable, StreamResult};

use crate::bindings::host::crownest::host::digest::{Digest, Host, HostHasher};
use crate::state::PluginState;

#[derive(Default)]
struct Running {
    size: u64,
    sha: Sha256,
}

/// Host side of a `hasher` handle.
pub struct Hasher {
    running: Arc<Mutex<Running>>,
}

/// An input stream that hashes what is read through it.
struct HashingStream {
    inner: DynInputStream,
    running: Arc<Mutex<Running>>,
}

impl HashingStream {
    fn observe(&self, bytes: &Bytes) {
        let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
        r.size += bytes.len() as u64;
        r.sha.update(bytes);
    }
}

#[async_trait::async_trait]
impl Pollable for HashingStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[async_trait::async_trait]
impl InputStream for HashingStream {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let bytes = self.inner.read(size)?;
        self.observe(&bytes);
        Ok(bytes)
    }

    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        let bytes = self.inner.blocking_read(size).await?;
        self.observe(&bytes);
        Ok(bytes)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

impl Host for PluginState {
    async fn hash_stream(
        &mut self,
        source: Resource<DynInputStream>,
    ) -> wasmtime::Result<(Resource<DynInputStream>, Resource<Hasher>)> {
        let inner = self.table.delete(source)?;
        let running = Arc::new(Mutex::new(Running::default()));
        let stream: DynInputStream = Box::new(HashingStream { inner, running: running.clone() });
        let stream = self.table.push(stream)?;
        let hasher = self.table.push(Hasher { running })?;
        Ok((stream, hasher))
    }
}

impl HostHasher for PluginState {
    async fn finish(&mut self, this: Resource<Hasher>) -> wasmtime::Result<Digest> {
        let hasher = self.table.get(&this)?;
        let r = hasher.running.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Digest { size: r.size, sha256: hex::encode(r.sha.clone().finalize()) })
    }

    async fn drop(&mut self, this: Resource<Hasher>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
