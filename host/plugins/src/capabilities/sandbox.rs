//! `crownest:host/sandbox` (gated by `grants.sandbox`): the Linux isolation
//! mechanisms of `crownest-sandbox`, offered to a runtime-provider plugin.
//! Cells are namespaced by plugin kind, so a plugin only sees its own.

use std::sync::Arc;
use std::time::Instant;

use crownest_core::ports::ArchiveWarning;
use crownest_sandbox::{Budgets, Cell, CellError, ExtractError, ExtractOptions, Limits, Mount, Network, SpawnSpec};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream};

use crate::bindings::WitError;
use crate::bindings::host::crownest::host::sandbox as wit;
use crate::capabilities::process::ProcessEntry;
use crate::capabilities::progress::ProgressSink;
use crate::state::PluginState;
use crate::streams::{self, BlockingStreamReader};

/// Host side of a `cell` handle.
pub struct CellEntry(pub Arc<Cell>);

fn to_wit(e: CellError) -> WitError {
    use crownest_sandbox::export::ExportError;
    match e {
        CellError::Invalid(m) => WitError::Invalid(m),
        CellError::NotFound(m) => WitError::NotFound(m),
        CellError::Unavailable(m) => WitError::Unavailable(m),
        CellError::Spec(e) => WitError::Invalid(e.to_string()),
        CellError::Extract(e @ ExtractError::Io(_)) => WitError::Unavailable(e.to_string()),
        CellError::Extract(e) => WitError::Invalid(e.to_string()),
        CellError::Export(e @ (ExportError::NotFound(_) | ExportError::Outside(_))) => {
            WitError::NotFound(e.to_string())
        }
        CellError::Export(e @ ExportError::Io { .. }) => WitError::Unavailable(e.to_string()),
        CellError::Export(e) => WitError::Invalid(e.to_string()),
    }
}

fn limits(l: &wit::Limits) -> Limits {
    Limits {
        memory_bytes: l.memory_bytes,
        pids: l.pids,
        cpu_millicores: l.cpu_millicores,
        disk_bytes: l.disk_bytes,
        open_files: l.open_files,
    }
}

fn mount(m: wit::Mount) -> Mount {
    match m {
        wit::Mount::RoBind(b) => Mount::RoBind { source: b.source, target: b.target, optional: b.optional },
        wit::Mount::Workspace(target) => Mount::Workspace { target },
        wit::Mount::Tmpfs((target, size_bytes)) => Mount::Tmpfs { target, size_bytes },
        wit::Mount::Proc(target) => Mount::Proc { target },
        wit::Mount::Dev(target) => Mount::Dev { target },
        wit::Mount::Dir(target) => Mount::Dir { target },
        wit::Mount::Symlink((target, link)) => Mount::Symlink { target, link },
        wit::Mount::File((target, contents)) => Mount::File { target, contents },
    }
}

impl PluginState {
    fn sandbox_host(&self) -> wasmtime::Result<&Arc<crownest_sandbox::SandboxHost>> {
        // The import check refuses ungranted plugins at load time; this is
        // a second line for a host built without the mechanisms.
        self.env.sandbox.as_ref().ok_or_else(|| wasmtime::format_err!("the sandbox mechanisms are not available"))
    }

    fn owner(&self) -> &'static str {
        self.env.ident.kind.config_key()
    }

    /// Run blocking cell work without stalling the async scheduler, not
    /// charging the wait to the plugin's deadline. In place
    /// ([`crownest_core::blocking::in_place`]): most cell work is a handful
    /// of syscalls, less than a blocking-pool round trip.
    async fn blocking<T: Send + 'static>(&mut self, f: impl FnOnce() -> T + Send + 'static) -> wasmtime::Result<T> {
        let started = Instant::now();
        let out = crownest_core::blocking::in_place(f).await?;
        self.clock.exclude(started.elapsed());
        Ok(out)
    }

    fn cell(&self, this: &Resource<CellEntry>) -> wasmtime::Result<Arc<Cell>> {
        Ok(self.table.get(this)?.0.clone())
    }
}

impl wit::Host for PluginState {
    async fn create_cell(
        &mut self,
        id: String,
        l: wit::Limits,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Resource<CellEntry>, WitError>> {
        let host = self.sandbox_host()?.clone();
        let owner = self.owner();
        let cell = self.blocking(move || host.create_cell(owner, &id, limits(&l), labels)).await?;
        match cell {
            Ok(c) => Ok(Ok(self.table.push(CellEntry(Arc::new(c)))?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn open_cell(&mut self, id: String) -> wasmtime::Result<Result<Resource<CellEntry>, WitError>> {
        let host = self.sandbox_host()?.clone();
        let owner = self.owner();
        match self.blocking(move || host.open_cell(owner, &id)).await? {
            Ok(c) => Ok(Ok(self.table.push(CellEntry(Arc::new(c)))?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn list_cells(&mut self) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        let host = self.sandbox_host()?.clone();
        let owner = self.owner();
        Ok(Ok(self.blocking(move || host.list_cells(owner)).await?))
    }

    async fn describe_host(&mut self) -> wasmtime::Result<wit::HostReport> {
        let r = self.sandbox_host()?.report();
        Ok(wit::HostReport {
            cgroup_mode: r.cgroup_mode.clone(),
            bwrap_version: r.bwrap_version.clone(),
            enforcement: r
                .enforcement
                .iter()
                .map(|e| wit::Enforcement { name: e.name.clone(), enforced: e.enforced, detail: e.detail.clone() })
                .collect(),
        })
    }

    async fn probe_paths(&mut self, paths: Vec<String>) -> wasmtime::Result<Vec<bool>> {
        let host = self.sandbox_host()?.clone();
        self.blocking(move || host.probe_paths(&paths)).await
    }
}

impl wit::HostCell for PluginState {
    async fn id(&mut self, this: Resource<CellEntry>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.0.id().to_string())
    }

    async fn labels(&mut self, this: Resource<CellEntry>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.table.get(&this)?.0.record().labels.clone())
    }

    async fn extract_tar_gz(
        &mut self,
        this: Resource<CellEntry>,
        archive: Resource<DynInputStream>,
        dest: String,
        b: wit::ExtractBudgets,
        progress: Resource<ProgressSink>,
    ) -> wasmtime::Result<Result<wit::ExtractReport, WitError>> {
        let cell = self.cell(&this)?;
        let reader = BlockingStreamReader::new(self.table.delete(archive)?);
        let sink = self.table.get(&progress)?;
        let (on_warning, options) = (sink.on_warning(), ExtractOptions { strict: sink.strict() });
        let sink = sink.callback();
        let budgets = Budgets {
            max_total_bytes: b.max_total_bytes,
            max_entries: b.max_entries,
            max_depth: b.max_depth,
            max_path_bytes: b.max_path_bytes,
            max_compression_ratio: b.max_compression_ratio,
        };
        let result = self
            .blocking(move || {
                let mut progress = |bytes, entries| sink(bytes, entries);
                cell.extract(reader, &dest, budgets, options, &mut progress)
            })
            .await?;
        if let Ok(r) = &result {
            for s in &r.skipped {
                on_warning(ArchiveWarning { entry: s.entry.clone(), reason: s.reason.clone() });
            }
        }
        Ok(result
            .map(|r| wit::ExtractReport {
                archive_bytes: r.archive_bytes,
                content_bytes: r.content_bytes,
                entries: r.entries,
                masked_modes: r.masked_modes,
            })
            .map_err(to_wit))
    }

    async fn open_export(
        &mut self,
        this: Resource<CellEntry>,
        path: String,
        max_bytes: u64,
    ) -> wasmtime::Result<Result<wit::ExportFile, WitError>> {
        let cell = self.cell(&this)?;
        match self.blocking(move || cell.open_export(&path, max_bytes)).await? {
            Ok((file, size)) => {
                let file = tokio::fs::File::from_std(file.into_std());
                let contents = self.table.push(streams::input_stream_from(Box::new(file)))?;
                Ok(Ok(wit::ExportFile { contents, size }))
            }
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn write_file(
        &mut self,
        this: Resource<CellEntry>,
        path: String,
        contents: Resource<DynInputStream>,
        mode: u32,
    ) -> wasmtime::Result<Result<u64, WitError>> {
        let cell = self.cell(&this)?;
        let reader = BlockingStreamReader::new(self.table.delete(contents)?);
        Ok(self.blocking(move || cell.write_file(&path, reader, mode)).await?.map_err(to_wit))
    }

    async fn spawn(
        &mut self,
        this: Resource<CellEntry>,
        spec: wit::SpawnSpec,
    ) -> wasmtime::Result<Result<wit::Spawned, WitError>> {
        let cell = self.cell(&this)?;
        let spec = SpawnSpec {
            argv: spec.argv,
            env: spec.env,
            cwd: spec.cwd,
            mounts: spec.mounts.into_iter().map(mount).collect(),
            network: match spec.network {
                wit::Network::None => Network::None,
                wit::Network::Host => Network::Host,
            },
            hostname: spec.hostname,
            open_files: spec.limits.open_files,
        };
        let spawned = match cell.spawn(&spec) {
            Ok(s) => s,
            Err(e) => return Ok(Err(to_wit(e))),
        };
        let stdin: DynOutputStream = Box::new(wasmtime_wasi::p2::pipe::AsyncWriteStream::new(1 << 16, spawned.stdin));
        // Slots of earlier spawns are either taken or started by now; their
        // reps may be reused by the table.
        self.reclaimable.clear();
        let (stdout, out_slot) = streams::input_stream_reclaimable(Box::new(spawned.stdout));
        let (stderr, err_slot) = streams::input_stream_reclaimable(Box::new(spawned.stderr));
        let stdout = self.table.push(stdout)?;
        let stderr = self.table.push(stderr)?;
        self.reclaimable.insert(stdout.rep(), out_slot);
        self.reclaimable.insert(stderr.rep(), err_slot);
        Ok(Ok(wit::Spawned {
            process: self.table.push(ProcessEntry(Arc::new(spawned.tree)))?,
            stdout,
            stderr,
            stdin: self.table.push(stdin)?,
        }))
    }

    async fn kill_all(&mut self, this: Resource<CellEntry>) -> wasmtime::Result<()> {
        let cell = self.cell(&this)?;
        self.blocking(move || cell.kill_all()).await
    }

    async fn destroy(&mut self, this: Resource<CellEntry>) -> wasmtime::Result<Result<(), WitError>> {
        let cell = self.cell(&this)?;
        Ok(self.blocking(move || cell.destroy()).await?.map_err(to_wit))
    }

    async fn drop(&mut self, this: Resource<CellEntry>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
