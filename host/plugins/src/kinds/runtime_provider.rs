//! [`RuntimeProvider`] on a `runtime-provider` component.
//!
//! Each sandbox keeps its own plugin instance (its store) for its lifetime;
//! calls into it are short. `exec` returns host-owned handles, which are
//! taken out of the instance's table: the host waits, streams and kills
//! without touching the plugin again.

use std::sync::Arc;

use async_trait::async_trait;
use crownest_core::ports::ExtractProgress;
use crownest_core::ports::runtime::ExtractReport;
use crownest_core::ports::{
    ByteStream, ExecSpec, Execution, ExitStatus, Outcome, ProcessHandle, RuntimeProvider, Sandbox, SandboxInfo,
    SandboxLimits, SandboxSpec, TemplateInfo,
};
use crownest_core::{FaultKind, PluginError};
use crownest_sandbox::ProcessTree;
use wasmtime::Store;
use wasmtime::component::{Resource, ResourceAny};

use super::{instantiate, typed_pre};
use crate::bindings::runtime_provider::exports::crownest::runtime_provider::provider as wit;
use crate::bindings::runtime_provider::{RuntimeProvider as Bindings, RuntimeProviderPre};
use crate::capabilities::process::ProcessEntry;
use crate::capabilities::progress::ProgressSink;
use crate::guard::{self, from_wit, is_sha256_hex, malformed};
use crate::loader::LoadedPlugin;
use crate::state::PluginState;
use crate::streams;

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

fn wit_limits(l: &SandboxLimits) -> wit::Limits {
    wit::Limits {
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

    async fn adopt(
        &self,
        mut store: Store<PluginState>,
        b: Bindings,
        res: ResourceAny,
    ) -> Result<Box<dyn Sandbox>, PluginError> {
        let g = b.crownest_runtime_provider_provider();
        let info = guard::call(&mut store, "sandbox.info", async |s| g.sandbox().call_info(s, res).await).await?;
        if !is_sha256_hex(&info.template_digest) {
            return Err(malformed(
                &store,
                "sandbox.info",
                format!("template digest `{}` is not a sha256", info.template_digest),
            ));
        }
        let info = SandboxInfo {
            id: info.id,
            template: info.template,
            template_digest: info.template_digest,
            compute_units: info.compute_units,
            limits: limits(info.limits),
        };
        Ok(Box::new(WasmSandbox {
            inner: tokio::sync::Mutex::new(Inner { store, bindings: b, sandbox: res, dead: None }),
            info,
        }))
    }
}

#[async_trait]
impl RuntimeProvider for WasmRuntimeProvider {
    async fn check(&self) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await?.map_err(from_wit)
    }

    async fn list_templates(&self) -> Result<Vec<TemplateInfo>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        let list = guard::call(&mut store, "list-templates", async |s| g.call_list_templates(s).await)
            .await?
            .map_err(from_wit)?;
        if let Some(t) = list.iter().find(|t| !is_sha256_hex(&t.digest)) {
            return Err(malformed(
                &store,
                "list-templates",
                format!("template `{}` has digest `{}`", t.name, t.digest),
            ));
        }
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

    async fn create_sandbox(&self, spec: &SandboxSpec) -> Result<Box<dyn Sandbox>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        let wspec = wit::SandboxSpec {
            id: spec.id.clone(),
            template: spec.template.clone(),
            limits: wit_limits(&spec.limits),
            env: spec.env.clone(),
            labels: spec.labels.clone(),
        };
        let res = guard::call(&mut store, "create-sandbox", async |s| g.call_create_sandbox(s, &wspec).await)
            .await?
            .map_err(from_wit)?;
        self.adopt(store, b, res).await
    }

    async fn open_sandbox(&self, id: &str) -> Result<Box<dyn Sandbox>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        let res = guard::call(&mut store, "open-sandbox", async |s| g.call_open_sandbox(s, id).await)
            .await?
            .map_err(from_wit)?;
        self.adopt(store, b, res).await
    }

    async fn list_sandboxes(&self) -> Result<Vec<String>, PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        guard::call(&mut store, "list-sandboxes", async |s| g.call_list_sandboxes(s).await).await?.map_err(from_wit)
    }

    async fn destroy_by_id(&self, id: &str) -> Result<(), PluginError> {
        let (mut store, b) = self.instance().await?;
        let g = b.crownest_runtime_provider_provider();
        guard::call(&mut store, "destroy-by-id", async |s| g.call_destroy_by_id(s, id).await).await?.map_err(from_wit)
    }
}

struct Inner {
    store: Store<PluginState>,
    bindings: Bindings,
    sandbox: ResourceAny,
    /// Set after a fault: the instance is poisoned and refuses further calls.
    dead: Option<PluginError>,
}

/// A sandbox and the plugin instance that created it.
struct WasmSandbox {
    inner: tokio::sync::Mutex<Inner>,
    info: SandboxInfo,
}

fn take<T: 'static>(store: &mut Store<PluginState>, r: Resource<T>) -> Result<T, PluginError> {
    store.data_mut().table.delete(r).map_err(|e| PluginError::internal(format!("plugin handle vanished: {e}")))
}

/// A stream the plugin returned, as a reader: the host's own reader when
/// the stream is one the host handed out and the plugin never read (no
/// copy, no task per chunk), else read through the stream.
fn take_reader(
    store: &mut Store<PluginState>,
    r: Resource<wasmtime_wasi::p2::DynInputStream>,
) -> Result<ByteStream, PluginError> {
    let slot = store.data_mut().reclaimable.remove(&r.rep());
    let stream = take(store, r)?;
    match slot.as_ref().and_then(streams::reclaim) {
        Some(reader) => Ok(reader),
        None => Ok(streams::reader_from_stream(stream)),
    }
}

impl Inner {
    /// Refuse calls into a poisoned instance; remember faults.
    fn check_alive(&self) -> Result<(), PluginError> {
        match &self.dead {
            Some(e) => Err(PluginError::fault(
                FaultKind::Trap,
                format!("this sandbox's plugin instance failed earlier: {}", e.message),
            )),
            None => Ok(()),
        }
    }

    fn note<T>(&mut self, r: Result<T, PluginError>) -> Result<T, PluginError> {
        if let Err(e) = &r
            && e.is_fault()
        {
            self.dead = Some(e.clone());
        }
        r
    }
}

/// A process tree as core sees it.
struct TreeHandle(Arc<ProcessTree>);

fn outcome(o: crownest_sandbox::Outcome) -> Outcome {
    Outcome {
        status: match o.status {
            crownest_sandbox::ExitStatus::Exited(c) => ExitStatus::Exited(c),
            crownest_sandbox::ExitStatus::Signaled(s) => ExitStatus::Signaled(s),
        },
        oom_killed: o.oom_killed,
    }
}

#[async_trait]
impl ProcessHandle for TreeHandle {
    async fn wait(&self) -> Outcome {
        outcome(self.0.wait().await)
    }

    fn try_wait(&self) -> Option<Outcome> {
        self.0.try_wait().map(outcome)
    }

    fn signal_tree(&self, signal: u8) {
        self.0.signal_tree(i32::from(signal));
    }

    fn kill_tree(&self) {
        self.0.kill_tree();
    }
}

#[async_trait]
impl Sandbox for WasmSandbox {
    fn info(&self) -> &SandboxInfo {
        &self.info
    }

    async fn extract_archive(
        &self,
        archive: ByteStream,
        path: &str,
        progress: ExtractProgress,
    ) -> Result<ExtractReport, PluginError> {
        let mut guard_ = self.inner.lock().await;
        let inner = &mut *guard_;
        inner.check_alive()?;
        let g = inner.bindings.crownest_runtime_provider_provider();
        let table = &mut inner.store.data_mut().table;
        let archive =
            table.push(streams::input_stream_from(archive)).map_err(|e| PluginError::internal(e.to_string()))?;
        let ExtractProgress { on_progress, on_warning, strict } = progress;
        let sink = ProgressSink::for_archive(Arc::from(on_progress), strict, Arc::from(on_warning));
        let sink = table.push(sink).map_err(|e| PluginError::internal(e.to_string()))?;
        let sink_borrow = Resource::new_borrow(sink.rep());
        let res = inner.sandbox;
        let r = guard::call(&mut inner.store, "sandbox.extract-archive", async |s| {
            g.sandbox().call_extract_archive(s, res, archive, path, sink_borrow).await
        })
        .await;
        let _ = inner.store.data_mut().table.delete(sink);
        let r = inner.note(r)?.map_err(from_wit)?;
        Ok(ExtractReport { archive_bytes: r.archive_bytes, content_bytes: r.content_bytes, entries: r.entries })
    }

    async fn exec(&self, spec: &ExecSpec) -> Result<Execution, PluginError> {
        let mut guard_ = self.inner.lock().await;
        let inner = &mut *guard_;
        inner.check_alive()?;
        let g = inner.bindings.crownest_runtime_provider_provider();
        let wspec = wit::ExecSpec { command: spec.command.clone(), env: spec.env.clone(), cwd: spec.cwd.clone() };
        let res = inner.sandbox;
        let r =
            guard::call(&mut inner.store, "sandbox.exec", async |s| g.sandbox().call_exec(s, res, &wspec).await).await;
        let ex = inner.note(r)?.map_err(from_wit)?;
        let process: ProcessEntry = take(&mut inner.store, ex.process)?;
        let stdout = take_reader(&mut inner.store, ex.stdout)?;
        let stderr = take_reader(&mut inner.store, ex.stderr)?;
        Ok(Execution { process: Box::new(TreeHandle(process.0)), stdout, stderr })
    }

    async fn open_file(&self, path: &str, max_bytes: u64) -> Result<(ByteStream, u64), PluginError> {
        let mut guard_ = self.inner.lock().await;
        let inner = &mut *guard_;
        inner.check_alive()?;
        let g = inner.bindings.crownest_runtime_provider_provider();
        let res = inner.sandbox;
        let r = guard::call(&mut inner.store, "sandbox.open-file", async |s| {
            g.sandbox().call_open_file(s, res, path, max_bytes).await
        })
        .await;
        let f = inner.note(r)?.map_err(from_wit)?;
        let contents = take(&mut inner.store, f.contents)?;
        Ok((streams::reader_from_stream(contents), f.size))
    }

    async fn write_file(&self, path: &str, contents: ByteStream) -> Result<u64, PluginError> {
        let mut guard_ = self.inner.lock().await;
        let inner = &mut *guard_;
        inner.check_alive()?;
        let g = inner.bindings.crownest_runtime_provider_provider();
        let stream = inner
            .store
            .data_mut()
            .table
            .push(streams::input_stream_from(contents))
            .map_err(|e| PluginError::internal(e.to_string()))?;
        let res = inner.sandbox;
        let r = guard::call(&mut inner.store, "sandbox.write-file", async |s| {
            g.sandbox().call_write_file(s, res, path, stream).await
        })
        .await;
        inner.note(r)?.map_err(from_wit)
    }

    async fn destroy(&self) -> Result<(), PluginError> {
        let mut guard_ = self.inner.lock().await;
        let inner = &mut *guard_;
        inner.check_alive()?;
        let g = inner.bindings.crownest_runtime_provider_provider();
        let res = inner.sandbox;
        let r =
            guard::call(&mut inner.store, "sandbox.destroy", async |s| g.sandbox().call_destroy(s, res).await).await;
        inner.note(r)?.map_err(from_wit)
    }
}
