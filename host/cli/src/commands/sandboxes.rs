//! `crownest sandboxes kill <sbx_id>`: destroy a sandbox a run kept.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

use crate::commands::workspace_runs::report;
use crate::context::{self, Context};

#[derive(Subcommand)]
pub enum Command {
    /// Destroy a kept sandbox (`--keep-sandbox`); its metering stops.
    Kill {
        sandbox_id: String,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    let Command::Kill { sandbox_id, json } = cmd;
    let client = context::client(ctx)?;
    Ok(report(client.call(Method::POST, &format!("/v1/sandboxes/{sandbox_id}/kill"), None, None).await, json, |v| {
        println!("{} destroyed ({})", sandbox_id, v["reason"].as_str().unwrap_or(""));
    }))
}
