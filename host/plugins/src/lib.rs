//! The CrowNest plugin host.
//!
//! Every backend of CrowNest is a WebAssembly component implementing one of
//! the worlds in `wit/`. This crate loads those components with wasmtime,
//! checks that each implements the right world and imports only what it was
//! granted, gives them the host capabilities (`log`, `config`, `kv`, `digest`,
//! and the gated filesystem, HTTP and sandbox mechanisms), and implements
//! `crownest-core`'s ports by calling their exports, each call under a
//! deadline and a memory cap.
//!
//! Entry points: [`PluginHost::new`] builds the engine, [`PluginHost::load_all`]
//! loads the configured plugin set, [`conformance::run`] is the
//! `crownest plugins check` suite.

#[doc(hidden)]
pub mod bench_support;
pub mod bindings;
mod cache;
pub mod capabilities;
pub mod conformance;
mod engine;
mod guard;
mod imports;
pub mod kinds;
mod loader;
mod source;
pub mod state;
pub mod streams;

pub use engine::{EngineSettings, PluginEngine};
pub use loader::{CacheOutcome, LoadedPlugin, PluginHost, PluginInfo, PluginSet};
pub use source::{PluginSource, builtin_names, resolve};
