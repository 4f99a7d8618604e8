//! `crownest:host/log`: plugin log lines into the host's tracing log.

use crate::bindings::host::crownest::host::log::{Host, Level};
use crate::state::PluginState;

const MAX_LINE: usize = 4096;

fn truncate(mut s: String) -> String {
    if s.len() > MAX_LINE {
        let mut cut = MAX_LINE;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("…[truncated]");
    }
    s
}

impl Host for PluginState {
    async fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let message = truncate(message);
        let plugin = self.env.ident.name.as_str();
        let kind = self.env.ident.kind.name();
        match level {
            Level::Trace => tracing::trace!(target: "crownest::plugin", plugin, kind, "{message}"),
            Level::Debug => tracing::debug!(target: "crownest::plugin", plugin, kind, "{message}"),
            Level::Info => tracing::info!(target: "crownest::plugin", plugin, kind, "{message}"),
            Level::Warn => tracing::warn!(target: "crownest::plugin", plugin, kind, "{message}"),
            Level::Error => tracing::error!(target: "crownest::plugin", plugin, kind, "{message}"),
        }
        Ok(())
    }
}
