//! `crownest sandboxes kill <sbx_id>`: destroy a sandbox a run kept.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;

use crate::commands::workspace_runs::{report, text};
use crate::context::Context;
use crate::credentials::{self, Need};
use crate::display::safe;
use crate::outln;

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
    let client = credentials::client(ctx, Need::ApiKey)?;
    Ok(report(client.call(Method::POST, &format!("/v1/sandboxes/{sandbox_id}/kill"), None, None).await, json, |v| {
        outln!("{} destroyed ({})", safe(&sandbox_id), text(v, "reason"));
    }))
}
