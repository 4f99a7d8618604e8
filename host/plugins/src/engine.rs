//! The one wasmtime `Engine` every plugin runs on, and its epoch ticker.
//!
//! Epoch interruption gives every call a deadline: a ticker thread bumps the
//! epoch every [`TICK`], and each store checks its own call clock when the
//! epoch passes its deadline (see `guard`). The pooling allocator makes
//! instantiation cheap; where the host cannot reserve its address space (small
//! VMs, strict overcommit) we fall back to on-demand allocation and say so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use crownest_core::config::{EngineConfig, PoolingMode};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// Epoch tick interval: the resolution of call deadlines.
pub const TICK: Duration = Duration::from_millis(10);

/// Engine-wide settings derived from the config file.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub pooling: PoolingMode,
    /// Most instances alive at once.
    pub max_instances: u32,
    /// Largest memory any plugin may have (the pool's slot size).
    pub max_memory_bytes: u64,
}

impl EngineSettings {
    pub fn from_config(engine: &EngineConfig, largest_plugin_cap_mib: u64) -> Self {
        EngineSettings {
            pooling: engine.pooling,
            max_instances: engine.max_instances.max(1),
            max_memory_bytes: largest_plugin_cap_mib.max(engine.memory_limit_mib) * 1024 * 1024,
        }
    }
}

/// The engine plus the facts about how it was built.
#[derive(Clone)]
pub struct PluginEngine {
    pub engine: Engine,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    /// Why pooling is off, when it was wanted but unavailable.
    pub pooling_note: Option<String>,
    _ticker: Arc<Ticker>,
}

struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn base_config() -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.wasm_component_model(true);
    // We never use the component-model async ABI; turning concurrency off
    // makes each export call ~5x cheaper.
    config.concurrency_support(false);
    config
}

impl PluginEngine {
    pub fn new(settings: &EngineSettings) -> Result<PluginEngine> {
        let (engine, pooling, pooling_note) = match settings.pooling {
            PoolingMode::Off => (Engine::new(&base_config())?, false, None),
            PoolingMode::On => {
                (Self::pooled(settings).context("pooling allocator requested but unavailable")?, true, None)
            }
            PoolingMode::Auto => match Self::pooled(settings) {
                Ok(e) => (e, true, None),
                Err(e) => {
                    let note = format!("pooling allocator unavailable, using on-demand allocation: {e:#}");
                    tracing::warn!("{note}");
                    (Engine::new(&base_config())?, false, Some(note))
                }
            },
        };
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.clone();
        let ticker_stop = stop.clone();
        std::thread::Builder::new()
            .name("crownest-epoch".into())
            .spawn(move || {
                while !ticker_stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    ticker_engine.increment_epoch();
                }
            })
            .context("cannot start the epoch ticker thread")?;
        Ok(PluginEngine { engine, pooling, pooling_note, _ticker: Arc::new(Ticker { stop }) })
    }

    fn pooled(settings: &EngineSettings) -> Result<Engine> {
        let mut pool = PoolingAllocationConfig::default();
        let n = settings.max_instances;
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(4))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(4))
            .max_memory_size(usize::try_from(settings.max_memory_bytes).unwrap_or(usize::MAX))
            .max_memories_per_component(4)
            .max_tables_per_component(8)
            .max_core_instances_per_component(8);
        let mut config = base_config();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        Ok(Engine::new(&config)?)
    }

    /// A string naming the engine build and settings, for cache keys.
    pub fn fingerprint(&self) -> String {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime{}-{:016x}", wasmtime_version(), h.finish())
    }
}

/// The wasmtime version compiled in.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
