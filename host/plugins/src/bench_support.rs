//! Measurement hooks for `benches/plugin_host.rs`. Not part of the API.

use std::time::{Duration, Instant};

use crate::bindings::auth_scoper::AuthScoperPre;
use crate::guard;
use crate::loader::LoadedPlugin;

fn pre(plugin: &LoadedPlugin) -> AuthScoperPre<crate::state::PluginState> {
    AuthScoperPre::new(plugin.pre.clone()).expect("an auth-scoper plugin")
}

/// Mean time of `n` calls of the trivial `check` export on one instance:
/// raw (as wasmtime does it) and through the host's deadline guard.
pub async fn trivial_calls(plugin: &LoadedPlugin, n: u32) -> (Duration, Duration) {
    let pre = pre(plugin);
    let mut store = plugin.new_store().unwrap();
    let bindings = pre.instantiate_async(&mut store).await.unwrap();
    let g = bindings.crownest_auth_scoper_scoper();
    for _ in 0..1000 {
        g.call_check(&mut store).await.unwrap().unwrap();
    }
    let started = Instant::now();
    for _ in 0..n {
        g.call_check(&mut store).await.unwrap().unwrap();
    }
    let raw = started.elapsed() / n;
    let started = Instant::now();
    for _ in 0..n {
        guard::call(&mut store, "check", async |s| g.call_check(s).await).await.unwrap().unwrap();
    }
    (raw, started.elapsed() / n)
}

/// `n` samples of store creation + instantiation from the `InstancePre`.
pub async fn instantiations(plugin: &LoadedPlugin, n: u32) -> Vec<Duration> {
    let pre = pre(plugin);
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let started = Instant::now();
        let mut store = plugin.new_store().unwrap();
        let b = pre.instantiate_async(&mut store).await.unwrap();
        samples.push(started.elapsed());
        drop(b);
        drop(store);
    }
    samples
}
