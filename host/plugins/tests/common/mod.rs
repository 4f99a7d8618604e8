//! Shared setup for the plugin host's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crownest_core::config::{EngineConfig, Grants, PluginConfig};
use crownest_core::kv::SqliteKv;
use crownest_core::{PluginError, PluginKind};
use crownest_plugins::kinds::WasmArtifactStore;
use crownest_plugins::{LoadedPlugin, PluginHost, PluginSource};

pub fn host_with(timeout_ms: u64, memory_mib: u64, cache: Option<PathBuf>) -> PluginHost {
    let engine = EngineConfig {
        call_timeout_ms: timeout_ms,
        memory_limit_mib: memory_mib,
        max_instances: 64,
        ..EngineConfig::default()
    };
    PluginHost::new(&engine, memory_mib, Arc::new(SqliteKv::in_memory().unwrap()), cache).unwrap()
}

pub fn host() -> PluginHost {
    host_with(5_000, 128, None)
}

pub fn table(pairs: &[(&str, &str)]) -> PluginConfig {
    let mut config = toml::Table::new();
    for (k, v) in pairs {
        config.insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    PluginConfig { config, ..PluginConfig::default() }
}

pub fn load(
    host: &PluginHost,
    kind: PluginKind,
    path: &Path,
    pairs: &[(&str, &str)],
    grants: Grants,
) -> Result<Arc<LoadedPlugin>, PluginError> {
    host.load(kind, PluginSource::Path(path.to_path_buf()), &table(pairs), grants)
}

/// The misbehaving artifact store in `mode`.
pub fn misbehave(host: &PluginHost, mode: &str) -> WasmArtifactStore {
    let plugin = load(
        host,
        PluginKind::ArtifactStore,
        &crownest_test_support::fixture("misbehave"),
        &[("mode", mode)],
        Grants::default(),
    )
    .unwrap();
    WasmArtifactStore::new(plugin).unwrap()
}
