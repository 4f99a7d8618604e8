//! `crownest plugins check <kind> <file.wasm>`: the conformance suite for
//! plugin authors.
//!
//! It loads the component the way the server would (but with a fresh temp
//! directory as its filesystem grant, an in-memory `kv`, no compile cache and
//! no network unless allowed), then exercises the contract of its world: the
//! exports exist, valid calls succeed, invalid input comes back as the WIT
//! error variant instead of a trap, streams are read to their end, and every
//! call finishes within the deadline. Each check prints one pass/fail line.

mod artifact_store;
mod auth_scoper;
mod meter;
mod runtime_provider;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crownest_core::config::{EngineConfig, Grants, PluginConfig, PoolingMode};
use crownest_core::kv::SqliteKv;
use crownest_core::{ErrorKind, PluginError, PluginKind};

use crate::kinds::{WasmArtifactStore, WasmAuthScoper, WasmMeter, WasmRuntimeProvider};
use crate::loader::{LoadedPlugin, PluginHost};
use crate::source::PluginSource;

/// How to run the suite.
#[derive(Clone)]
pub struct CheckOptions {
    /// The plugin's own config table.
    pub plugin_config: toml::Table,
    /// `host:port` authorities the plugin may reach over HTTP.
    pub allow_http: Vec<String>,
    /// Deadline of each call.
    pub call_timeout: Duration,
    /// Memory cap of each instance.
    pub memory_limit_mib: u64,
    /// Sandbox mechanisms to grant a runtime provider (its sandbox checks
    /// are skipped, and reported as such, without them).
    pub sandbox: Option<Arc<crownest_sandbox::SandboxHost>>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            plugin_config: toml::Table::new(),
            allow_http: Vec::new(),
            call_timeout: Duration::from_secs(10),
            memory_limit_mib: 256,
            sandbox: None,
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub elapsed: Duration,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    pub kind: PluginKind,
    /// What was checked (`builtin:<name>` or a path).
    pub source: String,
    pub checks: Vec<CheckResult>,
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// Collects results while a suite runs.
pub(crate) struct Suite {
    checks: Vec<CheckResult>,
    deadline: Duration,
}

impl Suite {
    /// Run one check: `Ok(detail)` passes, `Err(detail)` fails.
    pub(crate) async fn check(&mut self, name: &str, f: impl AsyncFnOnce() -> Result<String, String>) {
        let started = Instant::now();
        let outcome = f().await;
        let elapsed = started.elapsed();
        let (passed, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(CheckResult { name: name.to_string(), passed, detail, elapsed });
    }

    pub(crate) fn record(&mut self, name: &str, passed: bool, detail: String) {
        self.checks.push(CheckResult { name: name.to_string(), passed, detail, elapsed: Duration::ZERO });
    }

    fn finish_deadline_check(&mut self) {
        let slowest = self.checks.iter().max_by_key(|c| c.elapsed).cloned();
        let over: Vec<_> = self.checks.iter().filter(|c| c.elapsed > self.deadline).map(|c| c.name.clone()).collect();
        let detail = match slowest {
            Some(s) => format!(
                "every check finished within the {} ms deadline (slowest: `{}` in {} ms)",
                self.deadline.as_millis(),
                s.name,
                s.elapsed.as_millis()
            ),
            None => "no calls were made".into(),
        };
        if over.is_empty() {
            self.record("deadline", true, detail);
        } else {
            self.record("deadline", false, format!("checks over the deadline: {}", over.join(", ")));
        }
    }
}

/// Describe an unexpected error, calling out traps and other faults.
pub(crate) fn describe(e: &PluginError) -> String {
    match e.kind {
        ErrorKind::Fault(_) => format!("the plugin failed instead of answering: {}", e.message),
        _ => format!("returned error {e}"),
    }
}

/// Expect an error of `want` kind from `result`.
pub(crate) fn expect_error<T: std::fmt::Debug>(
    result: Result<T, PluginError>,
    want: &[ErrorKind],
) -> Result<String, String> {
    match result {
        Err(e) if want.contains(&e.kind) => Ok(format!("returned the error variant: {e}")),
        Err(e) => Err(format!(
            "expected {}; {}",
            want.iter().map(|k| k.code()).collect::<Vec<_>>().join(" or "),
            describe(&e)
        )),
        Ok(v) => Err(format!("expected an error, got success: {v:?}")),
    }
}

/// Run the suite for `kind` against the component at `source`.
pub async fn run(kind: PluginKind, source: &PluginSource, opts: CheckOptions) -> Report {
    let mut suite = Suite { checks: Vec::new(), deadline: opts.call_timeout };
    let report = |suite: Suite| Report { kind, source: source.to_string(), checks: suite.checks };

    let scratch = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            suite.record("setup", false, format!("cannot create a temp directory: {e}"));
            return report(suite);
        }
    };
    let plugin = match load(kind, source, &opts, scratch.path()) {
        Ok(p) => p,
        Err(e) => {
            suite.record("load", false, e);
            return report(suite);
        }
    };
    let info = &plugin.info;
    suite.record("component", true, format!("valid component, sha256 {}", info.sha256));
    suite.record(
        "world",
        true,
        format!("exports {}/{}@{}", kind.wit_package(), kind.export_interface(), info.wit_version),
    );
    suite.record("imports", true, format!("{} imports, all provided and granted", info.imports.len()));

    let typed = match kind {
        PluginKind::ArtifactStore => WasmArtifactStore::new(plugin).map(|p| Typed::Store(Arc::new(p))),
        PluginKind::AuthScoper => WasmAuthScoper::new(plugin).map(Typed::Scoper),
        PluginKind::Meter => WasmMeter::new(plugin).map(Typed::Meter),
        PluginKind::RuntimeProvider => WasmRuntimeProvider::new(plugin).map(Typed::Runtime),
    };
    match typed {
        Err(e) => suite.record("exports", false, e.message),
        Ok(Typed::Store(p)) => artifact_store::run(&mut suite, p).await,
        Ok(Typed::Scoper(p)) => auth_scoper::run(&mut suite, &p).await,
        Ok(Typed::Meter(p)) => meter::run(&mut suite, &p).await,
        Ok(Typed::Runtime(p)) => runtime_provider::run(&mut suite, &p, opts.sandbox.is_some()).await,
    }
    suite.finish_deadline_check();
    report(suite)
}

enum Typed {
    Store(Arc<WasmArtifactStore>),
    Scoper(WasmAuthScoper),
    Meter(WasmMeter),
    Runtime(WasmRuntimeProvider),
}

fn load(
    kind: PluginKind,
    source: &PluginSource,
    opts: &CheckOptions,
    scratch: &std::path::Path,
) -> Result<Arc<LoadedPlugin>, String> {
    let kv = SqliteKv::in_memory().map_err(|e| format!("cannot create the in-memory kv store: {e:#}"))?;
    let engine = EngineConfig {
        call_timeout_ms: u64::try_from(opts.call_timeout.as_millis()).unwrap_or(u64::MAX),
        memory_limit_mib: opts.memory_limit_mib,
        max_instances: 64,
        pooling: PoolingMode::Auto,
        cache_dir: None,
    };
    let mut host = PluginHost::new(&engine, opts.memory_limit_mib, Arc::new(kv), None)
        .map_err(|e| format!("cannot start the plugin engine: {e:#}"))?;
    let sandbox = kind == PluginKind::RuntimeProvider && opts.sandbox.is_some();
    if let (true, Some(s)) = (sandbox, &opts.sandbox) {
        host = host.with_sandbox(s.clone());
    }
    let data = scratch.join("data");
    // Without --allow-http, a plugin configured with an `endpoint` may reach
    // exactly that endpoint (what the server grants builtin:s3-artifacts).
    let allow_http = if opts.allow_http.is_empty() {
        opts.plugin_config
            .get("endpoint")
            .and_then(|v| v.as_str())
            .and_then(crate::source::authority_of)
            .into_iter()
            .collect()
    } else {
        opts.allow_http.clone()
    };
    let grants = Grants { filesystem: Some(data.to_string_lossy().into_owned()), http: allow_http, sandbox };
    let table = PluginConfig { config: opts.plugin_config.clone(), ..PluginConfig::default() };
    host.load(kind, source.clone(), &table, grants).map_err(|e| e.message)
}
