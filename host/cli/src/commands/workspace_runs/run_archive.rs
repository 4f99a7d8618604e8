//! `run-archive`: create a run that starts itself once its archive is
//! verified, upload the archive, follow the run to its end, and exit with
//! what happened to the command (see `follow` for signals and outages).

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crownest_client::{Client, idempotency_key};
use reqwest::Method;

use super::flags::{RunFlags, shell_join};
use super::follow::{self, Followed};
use super::{events, fail, fail_any, text, upload};
use crate::context::Context;
use crate::display::safe;
use crate::{errln, exit};

pub async fn run(
    ctx: &Context,
    client: &Client,
    archive: &Path,
    flags: &RunFlags,
    command: &[String],
    json: bool,
    server_wait: Duration,
) -> ExitCode {
    if let Err(e) = upload::check_archive_path(archive) {
        return fail_any(e);
    }
    // The server starts the run as soon as the upload is verified: one
    // request fewer than create, upload, start.
    let key = idempotency_key();
    let body = flags.new_run(shell_join(command), true);
    let run = match client.call_with(Method::POST, "/v1/workspace-runs", &body, Some(&key)).await {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    let Some(id) = run["id"].as_str().map(str::to_string) else {
        errln!("error: the server created a run without an id: {}", safe(&run.to_string()));
        return ExitCode::from(exit::FAILURE);
    };
    if !json {
        errln!("crownest: workspace run {}", text(&run, "id"));
    }
    let uploaded = match upload::upload(ctx, client, &id, archive, None).await {
        Ok(r) => r,
        Err(e) => return fail_any(e),
    };
    if uploaded["status"] == "awaiting_archive" {
        // Not started on upload (a quota, say): ask explicitly, which
        // reports why with the API's code and status.
        let key = idempotency_key();
        if let Err(e) = client.call(Method::POST, &format!("/v1/workspace-runs/{id}/start"), None, Some(&key)).await {
            return fail(&e);
        }
    }
    // Ctrl-C means "ask me" when a person typed it, "cancel" otherwise.
    let interactive = std::io::stdin().is_terminal();
    let opts = follow::Options { json, server_wait, signals: Some(interactive) };
    match follow::follow(client, &id, 0, opts).await {
        Ok(Followed::Ended(r)) => {
            r.print_artifacts();
            events::exit_code(r.terminal.as_ref().unwrap_or(&serde_json::Value::Null))
        }
        Ok(Followed::Left) => ExitCode::from(exit::LEFT_RUNNING),
        Ok(Followed::Interrupted) => ExitCode::from(exit::CANCELED),
        Err(e) => follow::unreachable_or(&e, &id),
    }
}
