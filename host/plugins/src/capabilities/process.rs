//! `crownest:host/process`: a host-owned process tree. A runtime provider
//! hands it back to the host from `exec`; the host then waits and kills
//! directly, never calling the plugin for it.

use std::sync::Arc;

use crownest_sandbox::ProcessTree;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::bindings::host::crownest::host::process::{ExitStatus, Host, HostProcess, Outcome};
use crate::state::PluginState;

/// Host side of a `process` handle.
pub struct ProcessEntry(pub Arc<ProcessTree>);

#[async_trait::async_trait]
impl Pollable for ProcessEntry {
    async fn ready(&mut self) {
        self.0.wait().await;
    }
}

pub fn outcome(o: crownest_sandbox::Outcome) -> Outcome {
    Outcome {
        status: match o.status {
            crownest_sandbox::ExitStatus::Exited(c) => ExitStatus::Exited(c),
            crownest_sandbox::ExitStatus::Signaled(s) => ExitStatus::Signaled(s),
        },
        oom_killed: o.oom_killed,
    }
}

impl Host for PluginState {}

impl HostProcess for PluginState {
    async fn id(&mut self, this: Resource<ProcessEntry>) -> wasmtime::Result<String> {
        Ok(self.table.get(&this)?.0.id().to_string())
    }

    async fn try_wait(&mut self, this: Resource<ProcessEntry>) -> wasmtime::Result<Option<Outcome>> {
        Ok(self.table.get(&this)?.0.try_wait().map(outcome))
    }

    async fn subscribe(&mut self, this: Resource<ProcessEntry>) -> wasmtime::Result<Resource<DynPollable>> {
        wasmtime_wasi::p2::subscribe(&mut self.table, this)
    }

    async fn signal_tree(&mut self, this: Resource<ProcessEntry>, signal: u8) -> wasmtime::Result<()> {
        self.table.get(&this)?.0.signal_tree(i32::from(signal));
        Ok(())
    }

    async fn kill_tree(&mut self, this: Resource<ProcessEntry>) -> wasmtime::Result<()> {
        self.table.get(&this)?.0.kill_tree();
        Ok(())
    }

    async fn drop(&mut self, this: Resource<ProcessEntry>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
