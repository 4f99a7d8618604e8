//! `crownest:host/config`: the plugin's own config table.

use crate::bindings::host::crownest::host::config::Host;
use crate::state::PluginState;

impl Host for PluginState {
    async fn get_json(&mut self) -> wasmtime::Result<String> {
        Ok(self.env.config_text.to_string())
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.env.config_json.get(&key).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }))
    }
}
