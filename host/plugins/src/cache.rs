//! On-disk cache of compiled components.
//!
//! Compiling a component takes tens of milliseconds; deserializing a cached
//! one takes tens of microseconds. Entries are keyed by the wasm's SHA-256 and
//! the engine fingerprint (wasmtime version and settings), written atomically
//! (temp file + rename) in a directory only we can write, and a failed load is
//! treated as a miss: the component is recompiled and the entry replaced.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::component::Component;

use crate::engine::PluginEngine;

/// Where a component came from this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

pub fn load_component(
    engine: &PluginEngine,
    wasm: &[u8],
    sha256: &str,
    cache_dir: Option<&Path>,
) -> Result<(Component, CacheOutcome)> {
    let Some(dir) = cache_dir else {
        return Ok((Component::new(&engine.engine, wasm)?, CacheOutcome::Disabled));
    };
    let path = entry_path(dir, sha256, &engine.fingerprint());
    if path.exists() {
        // SAFETY: the file was written by `Component::serialize` into our own
        // cache directory (mode 0700) under a key that includes the engine's
        // compatibility hash; wasmtime re-checks the header and version.
        match unsafe { Component::deserialize_file(&engine.engine, &path) } {
            Ok(c) => return Ok((c, CacheOutcome::Hit)),
            Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable compile cache entry: {e:#}"),
        }
    }
    let component = Component::new(&engine.engine, wasm)?;
    if let Err(e) = store(dir, &path, &component) {
        tracing::warn!(dir = %dir.display(), "cannot write compile cache: {e:#}");
    }
    Ok((component, CacheOutcome::Miss))
}

fn entry_path(dir: &Path, sha256: &str, fingerprint: &str) -> PathBuf {
    dir.join(format!("{sha256}-{fingerprint}.cwasm"))
}

fn store(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    create_private_dir(dir)?;
    let bytes = component.serialize()?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).context("create temp file")?;
    std::io::Write::write_all(&mut tmp, &bytes).context("write temp file")?;
    tmp.persist(path).context("rename into place")?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("create {}", dir.display()))
}
