//! The data every plugin store carries: WASI and HTTP contexts, the resource
//! table, the memory limiter and the call clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::PluginKind;
use crownest_core::kv::KeyValueStore;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::capabilities::http::AllowList;

/// Who a store belongs to, for logs and error messages.
#[derive(Debug, Clone)]
pub struct PluginIdent {
    pub name: String,
    pub kind: PluginKind,
}

/// What the plugin may reach, shared by all of its instances.
pub struct PluginEnv {
    pub ident: PluginIdent,
    pub kv: Arc<dyn KeyValueStore>,
    /// The plugin's config table as JSON.
    pub config_json: Arc<serde_json::Value>,
    pub config_text: Arc<str>,
    pub http: AllowList,
    pub filesystem: Option<std::path::PathBuf>,
    /// The sandbox mechanisms, when granted.
    pub sandbox: Option<Arc<crownest_sandbox::SandboxHost>>,
    pub memory_limit: usize,
    pub call_timeout: Duration,
}

/// Caps memory growth and remembers whether it refused one.
pub struct MemoryCap {
    pub limit: usize,
    pub refused: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit || maximum.is_some_and(|m| desired > m) {
            self.refused = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Wall-clock budget of the current call. Time the host spends inside long
/// mechanisms on the plugin's behalf (extracting an archive) is excluded.
pub struct CallClock {
    started: Option<Instant>,
    pub timeout: Duration,
    excluded: Duration,
}

impl CallClock {
    pub fn start(&mut self) {
        self.started = Some(Instant::now());
        self.excluded = Duration::ZERO;
    }

    pub fn stop(&mut self) {
        self.started = None;
    }

    pub fn exclude(&mut self, d: Duration) {
        self.excluded += d;
    }

    /// Time charged to the plugin so far in this call.
    pub fn charged(&self) -> Duration {
        self.started.map(|s| s.elapsed().saturating_sub(self.excluded)).unwrap_or_default()
    }

    pub fn expired(&self) -> bool {
        self.started.is_some() && self.charged() > self.timeout
    }
}

/// How a plugin's `wasi:filesystem` calls reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsMode {
    /// Each operation on the blocking pool (wasmtime-wasi's default): the
    /// polling thread never blocks, at the price of a thread hand-off per
    /// operation. For instances whose streams outlive the call and are
    /// read from runtime threads.
    Offloaded,
    /// Each operation on the polling thread. Only for calls run whole off
    /// the runtime's workers ([`crate::guard::off_runtime`]): an
    /// artifact put makes a dozen small filesystem calls, and a hand-off
    /// each (~50-100 µs on a VM) made it the slowest step of an upload.
    Inline,
}

/// `T` of every plugin `Store<T>`.
pub struct PluginState {
    pub env: Arc<PluginEnv>,
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub http_ctx: WasiHttpCtx,
    pub http_hooks: AllowList,
    pub memory: MemoryCap,
    pub clock: CallClock,
    /// Host readers pushed as `wasi:io` streams that the host may take back
    /// when the plugin returns them unread, by resource rep.
    pub reclaimable: std::collections::HashMap<u32, crate::streams::ReaderSlot>,
}

impl PluginState {
    pub fn new(env: Arc<PluginEnv>) -> anyhow::Result<PluginState> {
        Self::with_fs_mode(env, FsMode::Offloaded)
    }

    /// A state whose filesystem calls run as `mode` says.
    pub fn with_fs_mode(env: Arc<PluginEnv>, mode: FsMode) -> anyhow::Result<PluginState> {
        let mut wasi = WasiCtx::builder();
        // Set before the preopen: each descriptor keeps the mode it was opened with.
        wasi.allow_blocking_current_thread(mode == FsMode::Inline);
        if let Some(dir) = &env.filesystem {
            wasi.preopened_dir(dir, "/data", wasmtime_wasi::FsPerms::ReadWrite)?;
        }
        Ok(PluginState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http_ctx: WasiHttpCtx::new(),
            http_hooks: env.http.clone(),
            memory: MemoryCap { limit: env.memory_limit, refused: false },
            clock: CallClock { started: None, timeout: env.call_timeout, excluded: Duration::ZERO },
            reclaimable: Default::default(),
            env,
        })
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http_ctx, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}
