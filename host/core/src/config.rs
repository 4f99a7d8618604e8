//! `crownest.toml`: what the host loads and how.
//!
//! The file is optional. Without it every plugin kind uses its embedded
//! default (`builtin:<name>`) with that default's grants. Every key can be
//! overridden from the environment: `CROWNEST_` followed by the key path in
//! upper case with `__` between levels, e.g.
//! `CROWNEST_ENGINE__CALL_TIMEOUT_MS=5000` or
//! `CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ROOT=/srv/artifacts`. Values are
//! read as TOML when they parse (`5000`, `true`, `["a", "b"]`) and as strings
//! otherwise. Only variables whose first level is a top-level key of the
//! file ([`TOP_LEVEL_KEYS`]) are overrides: `CROWNEST_S3_SECRET` is an
//! ordinary variable (for `${env:…}` in a plugin's table), never a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::plugin_kind::PluginKind;

/// The top-level keys of the file: `CROWNEST_<KEY>…` overrides one of
/// these, any other `CROWNEST_*` variable is left alone.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "log_format",
    "trusted_proxies",
    "shutdown_timeout_secs",
    "engine",
    "plugins",
    "sandbox",
    "runs",
    "metrics",
];

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where CrowNest keeps its database, artifacts and caches.
    pub data_dir: Option<PathBuf>,
    /// Address `crownest serve` listens on.
    pub listen: Option<String>,
    /// Proxies (addresses or ranges) whose `X-Forwarded-For` names the
    /// client; everyone else is the client itself.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// How long a stopping server waits for open connections.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// Form of the log lines on stderr: `text` (the default) or `json`, one
    /// object per line for log shippers (`CROWNEST_LOG_FORMAT=json`).
    #[serde(default)]
    pub log_format: LogFormat,
    #[serde(default)]
    pub engine: EngineConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub sandbox: SandboxSettings,
    #[serde(default)]
    pub runs: RunSettings,
    #[serde(default)]
    pub metrics: MetricsSettings,
}

/// Where `GET /metrics` is served (off unless `listen` is set).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// `host:port` of a listener of its own, without authentication: keep
    /// it reachable by the monitoring system only.
    pub listen: Option<String>,
}

fn default_shutdown_timeout_secs() -> u64 {
    10
}

/// Form of the log lines (`log_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Limits and tuning of Workspace Runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Largest archive accepted in one direct upload request.
    pub direct_upload_max_bytes: u64,
    /// Largest archive accepted through a staged transfer.
    pub staged_upload_max_bytes: u64,
    /// Default part size of staged transfers.
    pub part_size_bytes: u64,
    /// Output kept per stream (stdout, stderr) per run.
    pub output_cap_bytes: u64,
    /// Largest artifact kept.
    pub max_artifact_bytes: u64,
    /// Runs executing at once; more wait queued.
    pub max_concurrent_runs: usize,
    /// Longest command timeout a run may ask for.
    pub max_timeout_ms: u64,
    /// SSE heartbeat interval.
    pub heartbeat_secs: u64,
    /// Longest time output waits before it becomes an event.
    pub output_flush_ms: u64,
    /// A staged transfer not completed within this many seconds is
    /// abandoned: its parts (on disk or in the bucket) are deleted.
    pub abandoned_transfer_secs: u64,
    /// A run still waiting for its archive this many seconds after it was
    /// created fails with `archive_missing` (and its transfers' parts go).
    pub archive_wait_secs: u64,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            direct_upload_max_bytes: 8 << 20,
            staged_upload_max_bytes: 1 << 30,
            part_size_bytes: 8 << 20,
            output_cap_bytes: 16 << 20,
            max_artifact_bytes: 1 << 30,
            max_concurrent_runs: 64,
            max_timeout_ms: 24 * 3600 * 1000,
            heartbeat_secs: 15,
            output_flush_ms: 50,
            abandoned_transfer_secs: 48 * 3600,
            archive_wait_secs: 24 * 3600,
        }
    }
}

/// Host-side settings of the Linux sandbox mechanisms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    /// Where sandbox workspaces live. Must be traversable by the sandbox
    /// uids, so not inside the private data directory. Default:
    /// `/var/lib/crownest-sandboxes` as root, else a directory in
    /// `$XDG_RUNTIME_DIR` or `/tmp`.
    pub root: Option<PathBuf>,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// First host uid given to sandboxes (one per sandbox, when root).
    pub uid_base: u32,
    /// How many uids sandboxes may use.
    pub uid_count: u32,
    /// The host-wide table of uids leased to live sandboxes, shared by
    /// every installation on the host (so it must be the same path for
    /// all of them): no two live sandboxes ever share a uid.
    pub uid_lease_dir: PathBuf,
    /// Grace period between SIGTERM and SIGKILL on timeout or cancel.
    pub kill_grace_ms: u64,
    /// Standby sandboxes kept started per sandbox shape (template), so a
    /// new sandbox's first command skips namespace set-up; 0 turns them off.
    pub warm_standby: usize,
    /// CPU scheduling policy of sandboxed processes (see [`Scheduling`]).
    pub scheduling: Scheduling,
}

/// How sandboxed processes are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduling {
    /// `SCHED_BATCH`: a fair share of CPU, but a waking sandboxed process
    /// never preempts the running task. The server stays responsive under
    /// sandbox load, and a pipeline inside a sandbox does not switch
    /// processes at every pipe buffer.
    #[default]
    Batch,
    /// `SCHED_OTHER`, the usual policy: a waking process may preempt, which
    /// favours latency (an interactive preview on a busy host) over
    /// throughput.
    Normal,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            root: None,
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            uid_base: 2_000_000,
            uid_count: 65_536,
            uid_lease_dir: PathBuf::from("/run/crownest/uid-leases"),
            warm_standby: 1,
            kill_grace_ms: 5_000,
            scheduling: Scheduling::Batch,
        }
    }
}

/// Settings of the WebAssembly engine shared by all plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Default deadline of one plugin call, in milliseconds.
    pub call_timeout_ms: u64,
    /// Default memory cap of one plugin instance, in MiB.
    pub memory_limit_mib: u64,
    /// Most plugin instances alive at once (sizes the pooling allocator).
    pub max_instances: u32,
    /// `auto` (pooling allocator when the host allows it), `on`, or `off`.
    pub pooling: PoolingMode,
    /// Where compiled components are cached (default `<data_dir>/cache/components`).
    pub cache_dir: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            call_timeout_ms: 30_000,
            memory_limit_mib: 256,
            max_instances: 1000,
            pooling: PoolingMode::Auto,
            cache_dir: None,
        }
    }
}

/// Whether to use wasmtime's pooling instance allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolingMode {
    Auto,
    On,
    Off,
}

/// One optional table per plugin kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    pub runtime_provider: Option<PluginConfig>,
    pub artifact_store: Option<PluginConfig>,
    pub auth_scoper: Option<PluginConfig>,
    pub meter: Option<PluginConfig>,
}

impl PluginsConfig {
    pub fn get(&self, kind: PluginKind) -> Option<&PluginConfig> {
        match kind {
            PluginKind::RuntimeProvider => self.runtime_provider.as_ref(),
            PluginKind::ArtifactStore => self.artifact_store.as_ref(),
            PluginKind::AuthScoper => self.auth_scoper.as_ref(),
            PluginKind::Meter => self.meter.as_ref(),
        }
    }
}

/// `[plugins.<kind>]`: which component implements the kind and what it may do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// `builtin:<name>` or a path to a `.wasm` component. Default: the
    /// kind's embedded default.
    pub source: Option<String>,
    /// Deadline of one call, overriding `engine.call_timeout_ms`.
    pub call_timeout_ms: Option<u64>,
    /// Memory cap, overriding `engine.memory_limit_mib`.
    pub memory_limit_mib: Option<u64>,
    /// The plugin's own settings, visible to it through `crownest:host/config`.
    #[serde(default)]
    pub config: toml::Table,
    /// Gated capabilities. When absent and the source is a builtin, the
    /// builtin's default grants apply; otherwise nothing is granted.
    pub grants: Option<Grants>,
}

/// Capabilities a plugin may use beyond the ungated host imports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// A host directory preopened at `/data` inside the plugin. `${data_dir}`
    /// expands to the data directory.
    pub filesystem: Option<String>,
    /// `host:port` authorities the plugin may send HTTP requests to.
    #[serde(default)]
    pub http: Vec<String>,
    /// The Linux sandbox mechanisms (`crownest:host/sandbox`).
    #[serde(default)]
    pub sandbox: bool,
}

impl Grants {
    /// Names of the granted capabilities, for listings.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(dir) = &self.filesystem {
            out.push(format!("filesystem={dir}"));
        }
        if !self.http.is_empty() {
            out.push(format!("http={}", self.http.join(",")));
        }
        if self.sandbox {
            out.push("sandbox".to_string());
        }
        out
    }
}

impl Config {
    /// Load the configuration: the file at `path` (or `CROWNEST_CONFIG`) if
    /// any, then the `CROWNEST_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| vars.iter().find(|(k, _)| k == "CROWNEST_CONFIG").map(|(_, v)| PathBuf::from(v)));
        let text = match &path {
            Some(p) => {
                Some(std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?)
            }
            None => None,
        };
        Self::from_parts(text.as_deref(), &vars).with_context(|| match &path {
            Some(p) => format!("invalid configuration in {} (or its CROWNEST_* overrides)", p.display()),
            None => "invalid configuration from CROWNEST_* environment variables".to_string(),
        })
    }

    /// Parse `text` (TOML) and apply the `CROWNEST_*` overrides from `vars`.
    pub fn from_parts(text: Option<&str>, vars: &[(String, String)]) -> Result<Config> {
        let mut table: toml::Table = match text {
            Some(t) => toml::from_str(t).context("not valid TOML")?,
            None => toml::Table::new(),
        };
        let mut applied = Vec::new();
        for (name, value) in vars {
            let Some(path) = env_key_path(name) else { continue };
            set_path(&mut table, &path, parse_env_value(value))
                .with_context(|| format!("cannot apply environment variable {name}"))?;
            applied.push(name.clone());
        }
        let config: Config = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| {
            if applied.is_empty() {
                anyhow::anyhow!("{e}")
            } else {
                anyhow::anyhow!("{e} (environment overrides applied: {})", applied.join(", "))
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        if self.engine.call_timeout_ms == 0 {
            bail!("engine.call_timeout_ms must be at least 1");
        }
        for (key, listen) in [("listen", &self.listen), ("metrics.listen", &self.metrics.listen)] {
            let Some(listen) = listen else { continue };
            let port = listen.rsplit_once(':').and_then(|(host, p)| (!host.is_empty()).then_some(p));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                bail!("{key} = {listen:?} must be host:port, e.g. \"127.0.0.1:7878\" or \"[::1]:7878\"");
            }
        }
        crate::ip_ranges::IpRanges::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("trusted_proxies: {e}"))?;
        let r = &self.runs;
        let ranges: [(&str, u64, u64, u64); 12] = [
            ("shutdown_timeout_secs", self.shutdown_timeout_secs, 0, 3600),
            ("engine.max_instances", u64::from(self.engine.max_instances), 1, 1_000_000),
            ("runs.direct_upload_max_bytes", r.direct_upload_max_bytes, 1, 1 << 30),
            ("runs.staged_upload_max_bytes", r.staged_upload_max_bytes, 1, 1 << 40),
            ("runs.part_size_bytes", r.part_size_bytes, 1024, r.staged_upload_max_bytes.max(1024)),
            ("runs.max_artifact_bytes", r.max_artifact_bytes, 1, 1 << 40),
            ("runs.max_concurrent_runs", r.max_concurrent_runs as u64, 1, 100_000),
            ("runs.max_timeout_ms", r.max_timeout_ms, 1, 30 * 24 * 3600 * 1000),
            ("runs.heartbeat_secs", r.heartbeat_secs, 1, 3600),
            ("runs.output_flush_ms", r.output_flush_ms, 1, 60_000),
            ("runs.abandoned_transfer_secs", r.abandoned_transfer_secs, 1, 365 * 24 * 3600),
            ("runs.archive_wait_secs", r.archive_wait_secs, 1, 365 * 24 * 3600),
        ];
        for (key, value, min, max) in ranges {
            if value < min || value > max {
                bail!("{key} = {value} is out of range: it must be {min} to {max}");
            }
        }
        if self.sandbox.kill_grace_ms > 3_600_000 {
            bail!("sandbox.kill_grace_ms = {} is out of range: it must be 0 to 3600000", self.sandbox.kill_grace_ms);
        }
        if self.sandbox.warm_standby > 64 {
            bail!("sandbox.warm_standby = {} is out of range: it must be 0 to 64", self.sandbox.warm_standby);
        }
        if self.sandbox.uid_base < 1000 || self.sandbox.uid_count == 0 {
            bail!("sandbox.uid_base must be at least 1000 and sandbox.uid_count at least 1");
        }
        if self.sandbox.uid_base.checked_add(self.sandbox.uid_count - 1).is_none() {
            bail!(
                "sandbox.uid_base ({}) + sandbox.uid_count ({}) passes the largest uid, 4294967295: \
                 lower one of them",
                self.sandbox.uid_base,
                self.sandbox.uid_count
            );
        }
        if self.engine.memory_limit_mib == 0 {
            bail!("engine.memory_limit_mib must be at least 1");
        }
        for kind in PluginKind::ALL {
            if let Some(p) = self.plugins.get(kind) {
                if p.call_timeout_ms == Some(0) {
                    bail!("plugins.{}.call_timeout_ms must be at least 1", kind.config_key());
                }
                if p.memory_limit_mib == Some(0) {
                    bail!("plugins.{}.memory_limit_mib must be at least 1", kind.config_key());
                }
            }
        }
        Ok(())
    }

    /// The data directory: configured, else `$XDG_DATA_HOME/crownest`, else
    /// `$HOME/.local/share/crownest`, else `./crownest-data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(x).join("crownest");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(h).join(".local/share/crownest");
        }
        PathBuf::from("crownest-data")
    }

    /// Where compiled components are cached.
    pub fn cache_dir(&self) -> PathBuf {
        self.engine.cache_dir.clone().unwrap_or_else(|| self.data_dir().join("cache/components"))
    }

    /// Expand `${data_dir}` in a configured path.
    pub fn expand(&self, value: &str) -> String {
        value.replace("${data_dir}", &self.data_dir().to_string_lossy())
    }
}

/// `CROWNEST_PLUGINS__ARTIFACT_STORE__SOURCE` → `["plugins", "artifact_store", "source"]`.
fn env_key_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("CROWNEST_")?;
    let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
    if parts.iter().any(String::is_empty) || !TOP_LEVEL_KEYS.contains(&parts[0].as_str()) {
        return None;
    }
    Some(parts)
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML assignment; fall back to a string.
    let doc = format!("v = {raw}");
    match toml::from_str::<BTreeMap<String, toml::Value>>(&doc) {
        Ok(mut m) => m.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    let (last, parents) = path.split_last().expect("env key paths are never empty");
    let mut cur = table;
    for key in parents {
        let entry = cur.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = match entry {
            toml::Value::Table(t) => t,
            other => bail!("`{key}` is a {} in the config file, not a table", other.type_str()),
        };
    }
    cur.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn empty_config_uses_defaults() {
        let c = Config::from_parts(None, &[]).unwrap();
        assert_eq!(c.engine.call_timeout_ms, 30_000);
        assert!(c.plugins.artifact_store.is_none());
    }

    #[test]
    fn file_then_env_overrides_nested_keys() {
        let text = r#"
            [engine]
            call_timeout_ms = 1000
            [plugins.artifact_store]
            source = "/tmp/a.wasm"
            config = { root = "/data", depth = 2 }
        "#;
        let env = vars(&[
            ("CROWNEST_ENGINE__CALL_TIMEOUT_MS", "2500"),
            ("CROWNEST_PLUGINS__ARTIFACT_STORE__CONFIG__ROOT", "/srv/x"),
            ("CROWNEST_PLUGINS__METER__GRANTS__HTTP", r#"["127.0.0.1:9000"]"#),
            ("CROWNEST_API_KEY", "cn_live_not_a_config_key"),
            ("PATH", "/usr/bin"),
        ]);
        let c = Config::from_parts(Some(text), &env).unwrap();
        assert_eq!(c.engine.call_timeout_ms, 2500);
        let store = c.plugins.artifact_store.unwrap();
        assert_eq!(store.source.as_deref(), Some("/tmp/a.wasm"));
        assert_eq!(store.config["root"].as_str(), Some("/srv/x"));
        assert_eq!(store.config["depth"].as_integer(), Some(2));
        let meter = c.plugins.meter.unwrap();
        assert_eq!(meter.grants.unwrap().http, vec!["127.0.0.1:9000".to_string()]);
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key_and_the_variable() {
        let err = Config::from_parts(Some("[engine]\ncall_timeout = 5\n"), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("call_timeout"), "{err:#}");

        let err = Config::from_parts(None, &vars(&[("CROWNEST_ENGINE__BOGUS", "1")])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bogus") && msg.contains("CROWNEST_ENGINE__BOGUS"), "{msg}");
    }

    #[test]
    fn sandbox_scheduling_is_batch_unless_set_to_normal() {
        assert_eq!(Config::from_parts(None, &[]).unwrap().sandbox.scheduling, Scheduling::Batch);
        let c = Config::from_parts(None, &vars(&[("CROWNEST_SANDBOX__SCHEDULING", "normal")])).unwrap();
        assert_eq!(c.sandbox.scheduling, Scheduling::Normal);
        let err = Config::from_parts(Some("[sandbox]\nscheduling = \"fifo\"\n"), &[]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("fifo") && msg.contains("batch") && msg.contains("normal"), "{msg}");
    }

    #[test]
    fn log_format_is_text_unless_json() {
        assert_eq!(Config::from_parts(None, &[]).unwrap().log_format, LogFormat::Text);
        let c = Config::from_parts(None, &vars(&[("CROWNEST_LOG_FORMAT", "json")])).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(Config::from_parts(Some("log_format = \"xml\"\n"), &[]).is_err());
    }

    #[test]
    fn zero_timeouts_are_rejected() {
        let err = Config::from_parts(Some("[plugins.meter]\ncall_timeout_ms = 0\n"), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("plugins.meter.call_timeout_ms"), "{err:#}");
    }

    #[test]
    fn only_variables_naming_a_top_level_key_are_overrides() {
        // The README's S3 example keeps its secret in CROWNEST_S3_SECRET.
        let env = vars(&[("CROWNEST_S3_SECRET", "xyz"), ("CROWNEST_API_KEY", "k"), ("CROWNEST_LISTEN", "127.0.0.1:9")]);
        let c = Config::from_parts(None, &env).unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:9"));
        assert_eq!(env_key_path("CROWNEST_DATA_DIR"), Some(vec!["data_dir".to_string()]));
        assert_eq!(env_key_path("CROWNEST_S3_SECRET"), None);
        assert_eq!(env_key_path("CROWNEST_RUNS____X"), None);
    }

    #[test]
    fn settings_out_of_range_are_refused_naming_the_key_and_range() {
        for (text, key) in [
            ("[runs]\npart_size_bytes = 0\n", "runs.part_size_bytes = 0"),
            ("[sandbox]\nuid_base = 4294967000\n", "sandbox.uid_base"),
            ("listen = \"localhost\"\n", "host:port"),
            ("[runs]\nheartbeat_secs = 0\n", "runs.heartbeat_secs"),
        ] {
            let err = format!("{:#}", Config::from_parts(Some(text), &[]).unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
        assert!(Config::from_parts(Some("listen = \"[::1]:7878\"\n"), &[]).is_ok());
    }

    #[test]
    fn env_value_that_is_not_toml_is_a_string() {
        assert_eq!(parse_env_value("/a/b c"), toml::Value::String("/a/b c".into()));
        assert_eq!(parse_env_value("true"), toml::Value::Boolean(true));
    }

    #[test]
    fn data_dir_placeholder_expands() {
        let c = Config::from_parts(Some("data_dir = \"/var/lib/cn\"\n"), &[]).unwrap();
        assert_eq!(c.expand("${data_dir}/artifacts"), "/var/lib/cn/artifacts");
    }
}
