//! CrowNest's domain core.
//!
//! This crate owns the vocabulary the rest of the host speaks: the plugin
//! kinds and their *ports* (Rust traits that `crownest-plugins` implements
//! with WebAssembly components and that unit tests implement with in-process
//! fakes), the error type every plugin call returns, the configuration file,
//! and the durable stores. It knows nothing of HTTP or wasmtime.

pub mod blocking;
pub mod config;
pub mod error;
pub mod installation;
pub mod ip_ranges;
pub mod kv;
pub mod metrics;
pub mod plugin_kind;
pub mod ports;
pub mod runs;

pub use error::{ErrorKind, FaultKind, PluginError};
pub use plugin_kind::PluginKind;
