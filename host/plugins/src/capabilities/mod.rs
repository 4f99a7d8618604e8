//! Host capabilities: the `crownest:host` interfaces a plugin imports, each
//! in its own module, plus the gated `wasi:http` allow-list.
//!
//! Ungated: `types` (the `progress` resource), `log`, `config`, `kv`,
//! `digest`. Gated: `http` (by `grants.http`) and, with the Linux sandbox,
//! `sandbox` (by `grants.sandbox`).

pub mod config;
pub mod digest;
pub mod http;
pub mod kv;
pub mod log;
pub mod process;
pub mod progress;
pub mod sandbox;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::host::crownest::host as wit;
use crate::state::PluginState;

/// Add WASI, `wasi:http` and every `crownest:host` interface. Gated ones
/// are linked too; the load-time import check refuses ungranted plugins.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    wit::types::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::log::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::config::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::kv::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::digest::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::process::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    wit::sandbox::add_to_linker::<_, HasSelf<_>>(linker, |s| s)?;
    Ok(())
}

/// A core error as the WIT error variant (faults become `internal`).
pub fn to_wit_error(e: crownest_core::PluginError) -> crate::bindings::WitError {
    use crate::bindings::WitError;
    use crownest_core::ErrorKind;
    match e.kind {
        ErrorKind::Invalid => WitError::Invalid(e.message),
        ErrorKind::NotFound => WitError::NotFound(e.message),
        ErrorKind::Denied => WitError::Denied(e.message),
        ErrorKind::QuotaExceeded => WitError::QuotaExceeded(e.message),
        ErrorKind::Unavailable => WitError::Unavailable(e.message),
        ErrorKind::Internal | ErrorKind::Fault(_) => WitError::Internal(e.message),
    }
}
