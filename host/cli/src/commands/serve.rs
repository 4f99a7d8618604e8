//! `crownest serve`: load the configured plugins, verify them, and run until
//! stopped.

use std::process::ExitCode;

use anyhow::Result;
use crownest_core::ports::{ArtifactStore, AuthScoper, Meter, RuntimeProvider};

use crate::context::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (overrides `listen` in the config).
    #[arg(long)]
    listen: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> Result<ExitCode> {
    let config = ctx.config()?;
    let listen = args.listen.or(config.listen.clone()).unwrap_or_else(|| "127.0.0.1:7878".into());
    let (host, set) = ctx.load_plugins(&config)?;
    eprintln!("crownest: data directory {}", config.data_dir().display());
    eprintln!(
        "crownest: wasmtime engine ready (pooling allocator: {})",
        if host.engine.pooling { "on" } else { "off" }
    );
    if let Some(sbx) = host.sandbox() {
        let r = sbx.report();
        eprintln!("crownest: sandbox: cgroups {}, bubblewrap {}", r.cgroup_mode, r.bwrap_version);
        for e in &r.enforcement {
            let state = if e.enforced { "enforced" } else { "NOT ENFORCED" };
            eprintln!("crownest:   {:<11} {state}: {}", e.name, e.detail);
        }
    }
    for p in set.infos() {
        eprintln!("crownest: {:<16} {} ({}, sha256 {})", p.kind.name(), p.name, p.source, &p.sha256[..12]);
    }
    if let Some(s) = &set.artifact_store {
        s.check().await.map_err(|e| anyhow::anyhow!("artifact store check failed: {}", e.message))?;
    }
    if let Some(s) = &set.auth_scoper {
        s.check().await.map_err(|e| anyhow::anyhow!("auth scoper check failed: {}", e.message))?;
    }
    if let Some(r) = &set.runtime_provider {
        r.check().await.map_err(|e| anyhow::anyhow!("runtime provider check failed: {}", e.message))?;
    }
    if let Some(m) = &set.meter {
        m.check().await.map_err(|e| anyhow::anyhow!("meter check failed: {}", e.message))?;
    }
    eprintln!("crownest: all plugins loaded and checked; the HTTP API ({listen}) is not part of this build yet");
    eprintln!("crownest: running; press Ctrl-C to stop");
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}
