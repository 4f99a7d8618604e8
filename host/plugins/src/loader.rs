//! Loading plugins: source → bytes → compiled component (cached) → shape
//! checks → `InstancePre`, and the set of active plugins from the config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::config::{Config, EngineConfig, Grants, PluginConfig};
use crownest_core::kv::KeyValueStore;
use crownest_core::{FaultKind, PluginError, PluginKind};
use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{InstancePre, Linker};

pub use crate::cache::CacheOutcome;
use crate::capabilities::http::AllowList;
use crate::engine::{EngineSettings, PluginEngine};
use crate::kinds::{WasmArtifactStore, WasmAuthScoper, WasmMeter, WasmRuntimeProvider};
use crate::source::{self, PluginSource};
use crate::state::{FsMode, PluginEnv, PluginIdent, PluginState};
use crate::{cache, guard, imports};

/// What `crownest plugins list` shows about a loaded plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub kind: PluginKind,
    /// `builtin:<name>` or the file path.
    pub source: String,
    pub builtin: bool,
    /// Lowercase hex SHA-256 of the component bytes.
    pub sha256: String,
    /// Version of the kind's WIT package the component exports.
    pub wit_version: String,
    pub grants: Grants,
    /// Every interface the component imports.
    pub imports: Vec<String>,
    pub cache: CacheOutcome,
    pub load_time: Duration,
    pub call_timeout: Duration,
    pub memory_limit_mib: u64,
}

/// A plugin ready to be instantiated.
pub struct LoadedPlugin {
    pub info: PluginInfo,
    env: Arc<PluginEnv>,
    /// Keeps the engine and its epoch ticker alive as long as the plugin.
    engine: PluginEngine,
    pub(crate) pre: InstancePre<PluginState>,
}

impl LoadedPlugin {
    /// A fresh store for one instance, with the deadline and memory cap armed.
    pub fn new_store(&self) -> Result<Store<PluginState>, PluginError> {
        self.new_store_with(FsMode::Offloaded)
    }

    /// [`LoadedPlugin::new_store`] with filesystem calls made as `mode` says.
    pub fn new_store_with(&self, mode: FsMode) -> Result<Store<PluginState>, PluginError> {
        let state = PluginState::with_fs_mode(self.env.clone(), mode).map_err(|e| {
            PluginError::fault(FaultKind::Load, format!("cannot prepare plugin `{}`: {e:#}", self.info.name))
        })?;
        let mut store = Store::new(&self.engine.engine, state);
        store.limiter(|s| &mut s.memory);
        guard::install_deadline(&mut store);
        Ok(store)
    }
}

/// The active plugin of each kind.
#[derive(Default)]
pub struct PluginSet {
    pub runtime_provider: Option<WasmRuntimeProvider>,
    pub artifact_store: Option<WasmArtifactStore>,
    pub auth_scoper: Option<WasmAuthScoper>,
    pub meter: Option<WasmMeter>,
}

impl PluginSet {
    /// Infos of every loaded plugin, in kind order.
    pub fn infos(&self) -> Vec<&PluginInfo> {
        let mut out = Vec::new();
        if let Some(p) = &self.runtime_provider {
            out.push(&p.plugin().info);
        }
        if let Some(p) = &self.artifact_store {
            out.push(&p.plugin().info);
        }
        if let Some(p) = &self.auth_scoper {
            out.push(&p.plugin().info);
        }
        if let Some(p) = &self.meter {
            out.push(&p.plugin().info);
        }
        out
    }
}

/// The engine, linker and shared stores every plugin is loaded with.
pub struct PluginHost {
    pub engine: PluginEngine,
    linker: Linker<PluginState>,
    kv: Arc<dyn KeyValueStore>,
    cache_dir: Option<PathBuf>,
    defaults: EngineConfig,
    sandbox: Option<Arc<crownest_sandbox::SandboxHost>>,
}

impl PluginHost {
    /// Build the engine for `config` (sized for its largest memory cap).
    pub fn for_config(config: &Config, kv: Arc<dyn KeyValueStore>) -> anyhow::Result<PluginHost> {
        let largest = PluginKind::ALL
            .iter()
            .filter_map(|k| config.plugins.get(*k).and_then(|p| p.memory_limit_mib))
            .max()
            .unwrap_or(0);
        Self::new(&config.engine, largest, kv, Some(config.cache_dir()))
    }

    pub fn new(
        engine_config: &EngineConfig,
        largest_cap_mib: u64,
        kv: Arc<dyn KeyValueStore>,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<PluginHost> {
        let engine = PluginEngine::new(&EngineSettings::from_config(engine_config, largest_cap_mib))?;
        let mut linker = Linker::new(&engine.engine);
        crate::capabilities::add_to_linker(&mut linker)?;
        Ok(PluginHost { engine, linker, kv, cache_dir, defaults: engine_config.clone(), sandbox: None })
    }

    /// Offer the Linux sandbox mechanisms to plugins granted `sandbox`.
    pub fn with_sandbox(mut self, sandbox: Arc<crownest_sandbox::SandboxHost>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// The key-value store behind every plugin's `kv`.
    pub fn kv(&self) -> &Arc<dyn KeyValueStore> {
        &self.kv
    }

    pub fn sandbox(&self) -> Option<&Arc<crownest_sandbox::SandboxHost>> {
        self.sandbox.as_ref()
    }

    /// Load every kind the config selects (or has a builtin default for).
    pub fn load_all(&self, config: &Config) -> Result<PluginSet, PluginError> {
        let mut set = PluginSet::default();
        for kind in PluginKind::ALL {
            let Some((source, table, grants)) = source::resolve(config, kind) else { continue };
            let plugin = self.load(kind, source, &table, grants)?;
            match kind {
                PluginKind::RuntimeProvider => set.runtime_provider = Some(WasmRuntimeProvider::new(plugin)?),
                PluginKind::ArtifactStore => set.artifact_store = Some(WasmArtifactStore::new(plugin)?),
                PluginKind::AuthScoper => set.auth_scoper = Some(WasmAuthScoper::new(plugin)?),
                PluginKind::Meter => set.meter = Some(WasmMeter::new(plugin)?),
            }
        }
        Ok(set)
    }

    /// Load one plugin. Every failure is a `Fault(Load)` naming the plugin.
    pub fn load(
        &self,
        kind: PluginKind,
        source: PluginSource,
        table: &PluginConfig,
        grants: Grants,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let started = Instant::now();
        let name = source.plugin_name();
        let load_err = |m: String| PluginError::fault(FaultKind::Load, m);
        let bytes = source.read(kind).map_err(load_err)?;
        imports::check_binary(&bytes, &name)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (component, cache) = cache::load_component(&self.engine, &bytes, &sha256, self.cache_dir.as_deref())
            .map_err(|e| load_err(format!("plugin `{name}` is not a valid component: {e:#}")))?;
        let wit_version = imports::check_world(&component, &self.engine.engine, kind, &name)?;
        if let Some(problem) = source::default_grant_problem(&source, table) {
            return Err(load_err(problem));
        }
        let imports = imports::check_imports(&component, &self.engine.engine, kind, &grants, &name)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| load_err(format!("plugin `{name}` cannot be linked against this host: {e:#}")))?;

        if grants.sandbox && self.sandbox.is_none() {
            return Err(load_err(format!(
                "plugin `{name}` is granted the sandbox mechanisms, but they are not available in this process"
            )));
        }
        if let Some(dir) = &grants.filesystem {
            std::fs::create_dir_all(dir).map_err(|e| {
                load_err(format!("cannot create the filesystem grant directory {dir} of plugin `{name}`: {e}"))
            })?;
        }
        let mut config_json = serde_json::to_value(&table.config)
            .map_err(|e| load_err(format!("config of plugin `{name}` is not representable as JSON: {e}")))?;
        expand_env(&mut config_json).map_err(|var| {
            load_err(format!("config of plugin `{name}` refers to the environment variable {var}, which is not set"))
        })?;
        let call_timeout = Duration::from_millis(table.call_timeout_ms.unwrap_or(self.defaults.call_timeout_ms));
        let memory_limit_mib = table.memory_limit_mib.unwrap_or(self.defaults.memory_limit_mib);
        let env = PluginEnv {
            ident: PluginIdent { name: name.clone(), kind },
            kv: self.kv.clone(),
            config_text: config_json.to_string().into(),
            config_json: Arc::new(config_json),
            http: AllowList::new(&grants.http),
            filesystem: grants.filesystem.as_ref().map(PathBuf::from),
            sandbox: if grants.sandbox { self.sandbox.clone() } else { None },
            memory_limit: usize::try_from(memory_limit_mib * 1024 * 1024).unwrap_or(usize::MAX),
            call_timeout,
        };
        let info = PluginInfo {
            name,
            kind,
            builtin: matches!(source, PluginSource::Builtin(_)),
            source: source.to_string(),
            sha256,
            wit_version,
            grants,
            imports,
            cache,
            load_time: started.elapsed(),
            call_timeout,
            memory_limit_mib,
        };
        tracing::debug!(plugin = %info.name, kind = %kind, cache = ?info.cache, elapsed = ?info.load_time, "plugin loaded");
        Ok(Arc::new(LoadedPlugin { info, env: Arc::new(env), engine: self.engine.clone(), pre }))
    }
}

/// Replace string values of the form `${env:NAME}` with that environment
/// variable (so secrets need not be written in the config file). Returns the
/// name of a missing variable.
fn expand_env(v: &mut serde_json::Value) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) => {
            if let Some(name) = s.strip_prefix("${env:").and_then(|r| r.strip_suffix('}')) {
                *s = std::env::var(name).map_err(|_| name.to_string())?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter_mut().try_for_each(expand_env),
        serde_json::Value::Object(map) => map.values_mut().try_for_each(expand_env),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn env_references_expand_and_missing_ones_are_named() {
        // PATH is always set in a test process.
        let mut v = serde_json::json!({"a": "${env:PATH}", "b": ["x", "${env:PATH}"], "c": 1});
        expand_env(&mut v).unwrap();
        assert_eq!(v["a"], std::env::var("PATH").unwrap());
        assert_eq!(v["b"][1], std::env::var("PATH").unwrap());
        let mut v = serde_json::json!({"k": "${env:CROWNEST_SURELY_UNSET_VAR}"});
        assert_eq!(expand_env(&mut v).unwrap_err(), "CROWNEST_SURELY_UNSET_VAR");
    }
}
