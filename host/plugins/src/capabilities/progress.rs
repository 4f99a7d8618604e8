//! The `progress` resource of `crownest:host/types`: a host-owned sink a
//! plugin reports long-operation progress into.
//!
//! For an archive extraction the sink also carries what the host decided
//! about it (strict or not) and where entries left out are reported: the
//! plugin passes the sink on to `extract-tar-gz`, so both reach the host
//! capability without a WIT change and without the plugin in the loop.

use std::sync::Arc;

use crownest_core::ports::ArchiveWarning;
use wasmtime::component::Resource;

use crate::bindings::host::crownest::host::types::{Host, HostProgress};
use crate::state::PluginState;

/// Receives (bytes, entries) so far.
pub type ProgressCallback = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Receives each archive entry an extraction left out.
pub type WarningCallback = Arc<dyn Fn(ArchiveWarning) + Send + Sync>;

/// Host side of a `progress` handle.
pub struct ProgressSink {
    callback: ProgressCallback,
    last: (u64, u64),
    strict: bool,
    on_warning: WarningCallback,
}

impl ProgressSink {
    /// Progress only: not strict, warnings dropped.
    pub fn new(callback: ProgressCallback) -> Self {
        ProgressSink::for_archive(callback, false, Arc::new(|_| {}))
    }

    /// For an archive extraction: its strictness and where warnings go.
    pub fn for_archive(callback: ProgressCallback, strict: bool, on_warning: WarningCallback) -> Self {
        ProgressSink { callback, last: (0, 0), strict, on_warning }
    }

    /// Whether an extraction reporting here refuses what it would skip.
    pub fn strict(&self) -> bool {
        self.strict
    }

    pub fn on_warning(&self) -> WarningCallback {
        self.on_warning.clone()
    }

    /// A thread-safe reporter with the same monotonic filtering, for work on
    /// the blocking pool.
    pub fn callback(&self) -> ProgressCallback {
        let inner = self.callback.clone();
        let last = std::sync::Mutex::new(self.last);
        Arc::new(move |bytes, entries| {
            let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
            if bytes < l.0 || entries < l.1 || (bytes, entries) == *l {
                return;
            }
            *l = (bytes, entries);
            inner(bytes, entries);
        })
    }

    /// Forward a report unless it goes backwards.
    pub fn report(&mut self, bytes: u64, entries: u64) {
        if bytes < self.last.0 || entries < self.last.1 || (bytes, entries) == self.last {
            return;
        }
        self.last = (bytes, entries);
        (self.callback)(bytes, entries);
    }
}

impl Host for PluginState {}

impl HostProgress for PluginState {
    async fn report(
        &mut self,
        this: Resource<ProgressSink>,
        done_bytes: u64,
        done_entries: u64,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&this)?.report(done_bytes, done_entries);
        Ok(())
    }

    async fn drop(&mut self, this: Resource<ProgressSink>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
