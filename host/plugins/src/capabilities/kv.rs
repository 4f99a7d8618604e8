//! `crownest:host/kv`: durable key-value storage, one namespace per plugin
//! kind. SQLite calls run off the async scheduler.

use crownest_core::PluginError;

use crate::bindings::WitError;
use crate::bindings::host::crownest::host::kv::Host;
use crate::capabilities::to_wit_error;
use crate::state::PluginState;

impl PluginState {
    async fn kv_call<T, F>(&mut self, f: F) -> wasmtime::Result<Result<T, WitError>>
    where
        T: Send + 'static,
        F: FnOnce(&dyn crownest_core::kv::KeyValueStore, &str) -> Result<T, PluginError> + Send + 'static,
    {
        let kv = self.env.kv.clone();
        let ns = self.env.ident.kind.config_key();
        let started = std::time::Instant::now();
        // A kv call is short (no fsync of its own): in place, as the run
        // store's calls (a blocking-pool round trip per call made a meter's
        // few calls per run cost a third of a millisecond).
        let result = crownest_core::blocking::in_place(move || f(kv.as_ref(), ns)).await?;
        // Waiting on the disk is not the plugin's fault.
        self.clock.exclude(started.elapsed());
        Ok(result.map_err(to_wit_error))
    }
}

impl Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitError>> {
        self.kv_call(move |kv, ns| kv.get(ns, &key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), WitError>> {
        self.kv_call(move |kv, ns| kv.set(ns, &key, &value)).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, WitError>> {
        self.kv_call(move |kv, ns| kv.delete(ns, &key)).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, WitError>> {
        self.kv_call(move |kv, ns| kv.increment(ns, &key, delta)).await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, WitError>> {
        self.kv_call(move |kv, ns| kv.list_keys(ns, &prefix, after.as_deref(), limit)).await
    }
}
