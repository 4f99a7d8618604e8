//! A `runtime-provider` component: loading and its read-only calls.
//!
//! Sandboxes and processes (the rest of the `RuntimeProvider` port) need the
//! host's sandbox mechanisms and arrive with the Linux sandbox.

use std::sync::Arc;

use crownest_core::PluginError;
use crownest_core::ports::{SandboxLimits, TemplateInfo};
use wasmtime::Store;

use super::{instantiate, typed_pre};
use crate::bindings::runtime_provider::exports::crownest::runtime_provider::provider as wit;
use crate::bindings::runtime_provider::{RuntimeProvider as Bindings, RuntimeProviderPre};
use crate::guard::{self, from_wit};
use crate::loader::LoadedPlugin;
use crate::state::PluginState;

/// A runtime provider backed by a plugin.
pub struct WasmRuntimeProvider {
    plugin: Arc<LoadedPlugin>,
    pre: RuntimeProviderPre<PluginState>,
}

pub(crate) fn limits(l: wit::Limits) -> SandboxLimits {
    SandboxLimits {
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        cpu_millicores: l.cpu_millicores,
        disk_bytes: l.disk_bytes,
        open_files: l.open_files,
        timeout_ms: l.timeout_ms,
    }
}

impl WasmRuntimeProvider {
    pub fn new(plugin: Arc<LoadedPlugin>) -> Result<Self, PluginError> {
        let pre = typed_pre(&plugin, RuntimeProviderPre::new)?;
        Ok(WasmRuntimeProvider { plugin, pre })
    }

    pub fn plugin(&self) -> &LoadedPlugin {
        &self.plugin
    }

    async fn instance(&self) -> Result<(Store<PluginState>, Bindings), PluginError> {
        instantiate(&self.plugin, async |s| self.pre.instantiate_async(s).await).await
    }

    pub async fn check(&self) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await?.map_err(from_wit)
    }

    pub async fn list_templates(&self) -> Result<Vec<TemplateInfo>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        let list = guard::call(&mut store, "list-templates", async |s| g.call_list_templates(s).await)
            .await?
            .map_err(from_wit)?;
        Ok(list
            .into_iter()
            .map(|t| TemplateInfo {
                name: t.name,
                description: t.description,
                digest: t.digest,
                compute_units: t.compute_units,
                usable: t.usable,
                unusable_reason: t.unusable_reason,
                default_limits: limits(t.default_limits),
                network_egress: t.network_egress,
            })
            .collect())
    }
}
