//! `crownest plugins list | check`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use crownest_core::PluginKind;
use crownest_plugins::conformance::{self, CheckOptions};
use crownest_plugins::{PluginInfo, PluginSource, builtin_names};
use serde_json::json;

use crate::commands::print_table;
use crate::context::Context;
use crate::outln;

#[derive(Subcommand)]
pub enum Command {
    /// List the active plugin of each kind.
    List {
        /// Print `{ "data": [...] }` instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run the conformance suite of a world against a component.
    Check {
        /// runtime-provider, artifact-store, auth-scoper or meter.
        kind: PluginKind,
        /// The component: a `.wasm` file built for wasm32-wasip2, or `builtin:<name>`.
        file: String,
        /// A TOML file whose table is given to the plugin as its config.
        #[arg(long)]
        plugin_config: Option<PathBuf>,
        /// Allow outgoing HTTP to this `host:port` (repeatable).
        #[arg(long = "allow-http")]
        allow_http: Vec<String>,
        /// Deadline of each call, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        timeout_ms: u64,
        /// Print `{ "data": ... }` instead of lines.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::List { json } => list(ctx, json),
        Command::Check { kind, file, plugin_config, allow_http, timeout_ms, json } => {
            let plugin_config = match plugin_config {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read plugin config {}", path.display()))?;
                    toml::from_str(&text)
                        .with_context(|| format!("plugin config {} is not valid TOML", path.display()))?
                }
                None => toml::Table::new(),
            };
            let sandbox = if kind == PluginKind::RuntimeProvider {
                let config = ctx.config()?;
                Some(crate::context::sandbox_host(&config, false)?)
            } else {
                None
            };
            let opts = CheckOptions {
                plugin_config,
                allow_http,
                call_timeout: Duration::from_millis(timeout_ms.max(1)),
                sandbox,
                ..CheckOptions::default()
            };
            check(kind, file, opts, json).await
        }
    }
}

fn info_json(p: &PluginInfo) -> serde_json::Value {
    json!({
        "kind": p.kind.name(),
        "name": p.name,
        "source": p.source,
        "builtin": p.builtin,
        "sha256": p.sha256,
        "witVersion": p.wit_version,
        "grants": p.grants.describe(),
        "imports": p.imports,
        "callTimeoutMs": p.call_timeout.as_millis() as u64,
        "memoryLimitMib": p.memory_limit_mib,
    })
}

fn list(ctx: &Context, json: bool) -> Result<ExitCode> {
    let config = ctx.config()?;
    let (_host, set) = ctx.load_plugins(&config)?;
    let infos = set.infos();
    if json {
        let data: Vec<_> = infos.iter().map(|p| info_json(p)).collect();
        outln!("{}", json!({ "data": data }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["KIND", "NAME", "SOURCE", "WIT", "SHA256", "GRANTS"].map(String::from).to_vec()];
    for kind in PluginKind::ALL {
        match infos.iter().find(|p| p.kind == kind) {
            Some(p) => {
                let grants = p.grants.describe();
                rows.push(vec![
                    kind.name().into(),
                    p.name.clone(),
                    p.source.clone(),
                    p.wit_version.clone(),
                    p.sha256.clone(),
                    if grants.is_empty() { "-".into() } else { grants.join(" ") },
                ]);
            }
            None => {
                let note =
                    if builtin_names(kind).is_empty() { "(no builtin yet; configure one)" } else { "(not configured)" };
                rows.push(vec![kind.name().into(), "-".into(), note.into(), "-".into(), "-".into(), "-".into()]);
            }
        }
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}

async fn check(kind: PluginKind, file: String, opts: CheckOptions, json: bool) -> Result<ExitCode> {
    let report = conformance::run(kind, &PluginSource::parse(&file), opts).await;
    if json {
        let checks: Vec<_> = report
            .checks
            .iter()
            .map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail, "elapsedMs": c.elapsed.as_secs_f64() * 1000.0}))
            .collect();
        outln!("{}", json!({"data": {"kind": kind.name(), "file": file, "passed": report.passed(), "checks": checks}}));
    } else {
        outln!("conformance: {} world, {}", kind, report.source);
        let width = report.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &report.checks {
            let status = if c.passed { "PASS" } else { "FAIL" };
            outln!("{status}  {:width$}  {}", c.name, c.detail);
        }
        let failed = report.checks.iter().filter(|c| !c.passed).count();
        outln!("{} passed, {} failed", report.checks.len() - failed, failed);
    }
    Ok(if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
