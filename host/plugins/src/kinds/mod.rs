//! Core's ports implemented by calling plugin exports, one module per kind.
//!
//! Each operation gets a fresh instance from the plugin's `InstancePre`
//! (microseconds with the pooling allocator), so a trap or a blown deadline
//! poisons nothing beyond the one call.

mod artifact_store;
mod auth_scoper;
mod meter;
mod runtime_provider;

pub use artifact_store::WasmArtifactStore;
pub use auth_scoper::WasmAuthScoper;
pub use meter::WasmMeter;
pub use runtime_provider::WasmRuntimeProvider;

use std::sync::Arc;

use crownest_core::{FaultKind, PluginError};
use wasmtime::Store;

use crate::guard;
use crate::loader::LoadedPlugin;
use crate::state::{FsMode, PluginState};

/// A fresh store and the instance's typed bindings.
pub(crate) async fn instantiate<B>(
    plugin: &LoadedPlugin,
    instantiate: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<B>,
) -> Result<(Store<PluginState>, B), PluginError> {
    instantiate_with(plugin, FsMode::Offloaded, instantiate).await
}

/// [`instantiate`] with the filesystem calls made as `mode` says.
pub(crate) async fn instantiate_with<B>(
    plugin: &LoadedPlugin,
    mode: FsMode,
    instantiate: impl AsyncFnOnce(&mut Store<PluginState>) -> wasmtime::Result<B>,
) -> Result<(Store<PluginState>, B), PluginError> {
    let mut store = plugin.new_store_with(mode)?;
    let bindings = guard::call(&mut store, "instantiate", instantiate).await?;
    Ok((store, bindings))
}

/// A typed pre-instance, refusing a component whose exports do not match.
pub(crate) fn typed_pre<P>(
    plugin: &Arc<LoadedPlugin>,
    make: impl FnOnce(wasmtime::component::InstancePre<PluginState>) -> wasmtime::Result<P>,
) -> Result<P, PluginError> {
    make(plugin.pre.clone()).map_err(|e| {
        PluginError::fault(
            FaultKind::Load,
            format!(
                "plugin `{}` exports the {} interface with the wrong shape: {e:#}; rebuild it against this release's `wit/`",
                plugin.info.name, plugin.info.kind
            ),
        )
    })
}
