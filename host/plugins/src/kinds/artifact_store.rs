//! [`ArtifactStore`] on an `artifact-store` component.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use crownest_core::PluginError;
use crownest_core::ports::{ArtifactStore, ByteStream, ObjectInfo, PutRequest};
use wasmtime::Store;

use super::{instantiate, instantiate_with, typed_pre};
use crate::bindings::artifact_store::exports::crownest::artifact_store::store as wit;
use crate::bindings::artifact_store::{ArtifactStore as Bindings, ArtifactStorePre};
use crate::guard::{self, from_wit, is_sha256_hex, malformed};
use crate::loader::LoadedPlugin;
use crate::state::{FsMode, PluginState};
use crate::streams;

/// An artifact store backed by a plugin.
#[derive(Clone)]
pub struct WasmArtifactStore {
    plugin: Arc<LoadedPlugin>,
    pre: ArtifactStorePre<PluginState>,
}

impl WasmArtifactStore {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        let pre = typed_pre(&plugin, ArtifactStorePre::new)?;
        Ok(WasmArtifactStore { plugin, pre })
    }

    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    async fn instance(&self) -> Result<(Store<PluginState>, Bindings), PluginError> {
        instantiate(&self.plugin, async |s| self.pre.instantiate_async(s).await).await
    }

    /// An instance for a call run whole off the runtime's workers
    /// ([`guard::off_runtime`]): its filesystem calls are made in place.
    async fn inline_instance(&self) -> Result<(Store<PluginState>, Bindings), PluginError> {
        instantiate_with(&self.plugin, FsMode::Inline, async |s| self.pre.instantiate_async(s).await).await
    }

    async fn put_inline(&self, req: PutRequest, body: ByteStream) -> Result<ObjectInfo, PluginError> {
        let (mut store, b) = self.inline_instance().await?;
        let g = b.crownest_artifact_store_store();
        let body = store
            .data_mut()
            .table
            .push(streams::input_stream_from(body))
            .map_err(|e| PluginError::internal(format!("cannot pass the body to the plugin: {e}")))?;
        let wit_req = wit::PutRequest {
            key: req.key.clone(),
            size: req.size,
            sha256: req.sha256.clone(),
            content_type: req.content_type.clone(),
            metadata: req.metadata.clone(),
        };
        let info =
            guard::call(&mut store, "put", async |s| g.call_put(s, &wit_req, body).await).await?.map_err(from_wit)?;
        let info = Self::check_info(&store, "put", info)?;
        if info.size != req.size || info.sha256 != req.sha256 {
            return Err(malformed(
                &store,
                "put",
                format!(
                    "it reports {} bytes with sha256 {} for a body of {} bytes with sha256 {}",
                    info.size, info.sha256, req.size, req.sha256
                ),
            ));
        }
        Ok(info)
    }

    fn check_info(store: &Store<PluginState>, what: &str, info: wit::ObjectInfo) -> Result<ObjectInfo, PluginError> {
        if !is_sha256_hex(&info.sha256) {
            return Err(malformed(
                store,
                what,
                format!("sha256 `{}` is not 64 lowercase hex characters", info.sha256.escape_default()),
            ));
        }
        if info.locator.is_empty() || info.locator.len() > 4096 {
            return Err(malformed(store, what, "locator must be 1 to 4096 bytes"));
        }
        Ok(ObjectInfo {
            locator: info.locator,
            size: info.size,
            sha256: info.sha256,
            created_at_ms: info.created_at_ms,
        })
    }
}

#[async_trait]
impl ArtifactStore for WasmArtifactStore {
    async fn check(&self) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_artifact_store_store();
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await?.map_err(from_wit)
    }

    async fn put(&self, req: PutRequest, body: ByteStream) -> Result<ObjectInfo, PluginError> {
        // The call runs whole off the runtime's workers, in a task of its
        // own: the body may be a request body that only the caller's task
        // (the connection) reads from the network.
        let this = self.clone();
        tokio::spawn(async move { guard::off_runtime(this.put_inline(req, body)).await })
            .await
            .map_err(|e| PluginError::internal(format!("the put call failed: {e}")))?
    }

    async fn get(&self, locator: &str) -> Result<ByteStream, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_artifact_store_store();
        let stream = guard::call(&mut store, "get", async |s| g.call_get(s, locator).await).await?.map_err(from_wit)?;
        Ok(streams::read_guest_stream(store, stream))
    }

    async fn stat(&self, locator: &str) -> Result<ObjectInfo, PluginError> {
        guard::off_runtime(async {
            let (mut store, b) = self.inline_instance().await?;
            let g = b.crownest_artifact_store_store();
            let info =
                guard::call(&mut store, "stat", async |s| g.call_stat(s, locator).await).await?.map_err(from_wit)?;
            Self::check_info(&store, "stat", info)
        })
        .await
    }

    async fn delete(&self, locator: &str) -> Result<(), PluginError> {
        guard::off_runtime(async {
            let (mut store, b) = self.inline_instance().await?;
            let g = b.crownest_artifact_store_store();
            guard::call(&mut store, "delete", async |s| g.call_delete(s, locator).await).await?.map_err(from_wit)
        })
        .await
    }

    async fn presign_get(&self, locator: &str, expires: Duration) -> Result<Option<String>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_artifact_store_store();
        let secs = u32::try_from(expires.as_secs()).unwrap_or(u32::MAX);
        guard::call(&mut store, "presign-get", async |s| g.call_presign_get(s, locator, secs).await)
            .await?
            .map_err(from_wit)
    }

    async fn presign_put(&self, key: &str, expires: Duration) -> Result<Option<String>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_artifact_store_store();
        let secs = u32::try_from(expires.as_secs()).unwrap_or(u32::MAX);
        guard::call(&mut store, "presign-put", async |s| g.call_presign_put(s, key, secs).await)
            .await?
            .map_err(from_wit)
    }
}
