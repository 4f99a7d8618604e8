//! `crownest workspace-runs create | upload | start | run-archive | status |
//! list | logs | cancel | evidence`.
//!
//! Exit codes (see `crate::exit`): 0 success; for `run-archive`, the
//! command's own exit code (a signal N → 128+N), 124 when the run timed
//! out, 125 when CrowNest could not run the command (invalid archive,
//! sandbox error, server restart), 130 when canceled, 75 when left running
//! after Ctrl-C; 1 for a refused request (the API's code and message are
//! printed); 2 for wrong usage; 69 when the server cannot be reached.

mod events;
mod evidence;
mod flags;
mod follow;
mod run_archive;
mod show;
mod transfer_state;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::Subcommand;
use crownest_client::{ClientError, idempotency_key};
use reqwest::Method;
use serde_json::Value;

use crate::context::Context;
use crate::credentials::{self, Need};
use crate::display::safe;
use crate::{exit, outln, stdio};
pub use flags::RunFlags;

#[derive(Subcommand)]
pub enum Command {
    /// Create a Workspace Run record (awaiting its archive).
    Create {
        /// Shell command to run after archive extraction.
        #[arg(long)]
        command: String,
        #[command(flatten)]
        flags: RunFlags,
        #[arg(long)]
        json: bool,
    },
    /// Upload an existing .tgz / .tar.gz archive to a run (an interrupted
    /// staged upload resumes where it stopped when run again).
    Upload {
        run_id: String,
        archive: PathBuf,
        /// Expected sha256 of the file (checked before uploading).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Start extraction and command execution.
    Start {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a run, upload the archive, start it, stream its output, and
    /// exit with the command's exit code.
    RunArchive {
        archive: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
        #[arg(long)]
        json: bool,
        /// How long to wait for an unreachable server (it restarts, the
        /// network drops) before giving up with exit 69; 0 gives up at once.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        server_wait: u64,
        /// The command line (everything after `--`).
        #[arg(last = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Show a run's status.
    Status {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// List runs.
    List {
        #[arg(long)]
        project: Option<String>,
        #[arg(long)]
        status: Option<String>,
        /// Most runs to show.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Stream a run's events: stdout to stdout, stderr to stderr.
    Logs {
        run_id: String,
        /// Resume after this event sequence number.
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        #[arg(long)]
        json: bool,
        /// How long to wait for an unreachable server before giving up
        /// with exit 69; 0 gives up at once.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        server_wait: u64,
    },
    /// Cancel an active run (a terminal run is returned unchanged).
    Cancel {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Read the Evidence Bundle: its stored bytes, exactly (pretty-printed
    /// on a terminal or with --pretty).
    Evidence {
        run_id: String,
        /// Write the bundle's exact bytes to this file (their sha256 is the
        /// server's `x-evidence-sha256`).
        #[arg(long)]
        output: Option<PathBuf>,
        /// Pretty-print instead (for reading; the digest is then of other bytes).
        #[arg(long, conflicts_with = "json")]
        pretty: bool,
        /// Print the API's `{ "data": ... }` envelope.
        #[arg(long)]
        json: bool,
    },
}

/// Print an API error and return its exit code (1, or 69 unreachable).
pub fn fail(e: &ClientError) -> ExitCode {
    exit::client_error(e)
}

/// Print any error of a command and return its exit code.
pub fn fail_any(e: anyhow::Error) -> ExitCode {
    exit::error(&e)
}

/// One `{ "data": ... }` line on stdout.
pub fn print_json(v: &Value) {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"data\":");
    if let Err(e) = serde_json::to_writer(&mut line, v) {
        crate::errln!("error: cannot encode the response: {e}");
        return;
    }
    line.extend_from_slice(b"}\n");
    stdio::out_bytes(&mut std::io::stdout().lock(), &line);
}

/// The result of an API call: its `{ "data": … }` envelope with `--json`,
/// else `human`'s rendering; an error prints the API's code and message.
pub fn report(result: std::result::Result<Value, ClientError>, json: bool, human: impl FnOnce(&Value)) -> ExitCode {
    match result {
        Ok(r) => {
            if json {
                print_json(&r)
            } else {
                human(&r)
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

/// A string field of an API object, for people (escaped; `-` when absent).
pub fn text(v: &Value, key: &str) -> String {
    safe(v[key].as_str().unwrap_or("-")).into_owned()
}

fn status_line(r: &Value) {
    outln!("{} {}", text(r, "id"), text(r, "status"));
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    let client = credentials::client(ctx, Need::ApiKey)?;
    Ok(match cmd {
        Command::Create { command, flags, json } => {
            let key = idempotency_key();
            let r =
                client.call_with(Method::POST, "/v1/workspace-runs", &flags.new_run(command, false), Some(&key)).await;
            report(r, json, status_line)
        }
        Command::Upload { run_id, archive, sha256, json } => {
            match upload::upload(ctx, &client, &run_id, &archive, sha256.as_deref()).await {
                Ok(r) => report(Ok(r), json, |r| {
                    outln!(
                        "{}: archive uploaded ({} bytes, sha256 {})",
                        safe(&run_id),
                        r["archive"]["sizeBytes"],
                        text(&r["archive"], "sha256")
                    )
                }),
                Err(e) => fail_any(e),
            }
        }
        Command::Start { run_id, json } => {
            let key = idempotency_key();
            let r = client.call(Method::POST, &format!("/v1/workspace-runs/{run_id}/start"), None, Some(&key)).await;
            report(r, json, status_line)
        }
        Command::RunArchive { archive, flags, json, server_wait, command } => {
            let wait = Duration::from_secs(server_wait);
            run_archive::run(ctx, &client, &archive, &flags, &command, json, wait).await
        }
        Command::Status { run_id, json } => {
            report(client.get(&format!("/v1/workspace-runs/{run_id}")).await, json, show::summary)
        }
        Command::List { project, status, limit, json } => show::list(&client, project, status, limit, json).await,
        Command::Logs { run_id, after_seq, json, server_wait } => {
            let opts = follow::Options { json, server_wait: Duration::from_secs(server_wait), signals: None };
            match follow::follow(&client, &run_id, after_seq, opts).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => follow::unreachable_or(&e, &run_id),
            }
        }
        Command::Cancel { run_id, json } => {
            let r = client.call(Method::POST, &format!("/v1/workspace-runs/{run_id}/cancel"), None, None).await;
            report(r, json, status_line)
        }
        Command::Evidence { run_id, output, pretty, json } => {
            evidence::run(&client, &run_id, output.as_deref(), pretty, json).await
        }
    })
}
