//! `crownest templates list`: the runtime provider's templates and whether
//! each is usable on this host.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Subcommand;
use crownest_core::ports::RuntimeProvider;
use serde_json::json;

use crate::commands::print_table;
use crate::context::Context;
use crate::outln;

#[derive(Subcommand)]
pub enum Command {
    /// List templates with their digest and usability on this host.
    List {
        /// Print `{ "data": [...] }` instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    let Command::List { json } = cmd;
    let config = ctx.config()?;
    let (_host, set) = ctx.load_plugins(&config)?;
    let provider = set.runtime_provider.as_ref().context("no runtime provider is configured")?;
    let list = provider.list_templates().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if json {
        let data: Vec<_> = list
            .iter()
            .map(|t| {
                json!({
                    "name": t.name, "description": t.description, "digest": t.digest,
                    "computeUnits": t.compute_units, "usable": t.usable, "unusableReason": t.unusable_reason,
                    "networkEgress": t.network_egress,
                    "defaultLimits": {
                        "memoryBytes": t.default_limits.memory_bytes, "pids": t.default_limits.pids,
                        "cpuMillicores": t.default_limits.cpu_millicores, "diskBytes": t.default_limits.disk_bytes,
                        "openFiles": t.default_limits.open_files, "timeoutMs": t.default_limits.timeout_ms,
                    },
                })
            })
            .collect();
        outln!("{}", json!({ "data": data }));
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![["TEMPLATE", "USABLE", "CU/S", "NETWORK", "DIGEST", "DESCRIPTION"].map(String::from).to_vec()];
    for t in &list {
        rows.push(vec![
            t.name.clone(),
            match &t.unusable_reason {
                None => "yes".into(),
                Some(why) => format!("no: {why}"),
            },
            t.compute_units.to_string(),
            if t.network_egress { "egress".into() } else { "none".into() },
            crate::commands::prefix(&t.digest, 12).to_string(),
            t.description.clone(),
        ]);
    }
    print_table(&rows);
    Ok(ExitCode::SUCCESS)
}
