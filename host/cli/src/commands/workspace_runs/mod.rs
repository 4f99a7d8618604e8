//! `crownest workspace-runs create | upload | start | run-archive | status |
//! list | logs | cancel | evidence`.
//!
//! Exit codes: 0 success; for `run-archive`, the command's own exit code
//! (a signal N → 128+N), 124 when the run timed out, 125 when CrowNest could
//! not run the command (invalid archive, sandbox error, server restart),
//! 130 when canceled; 1 for a refused request (the API's code and message
//! are printed); 2 for wrong usage.

mod events;
mod upload;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use crownest_client::{Client, ClientError, idempotency_key};
use reqwest::Method;
use serde_json::{Value, json};

use crate::commands::print_table;
use crate::context::{self, Context};

#[derive(clap::Args, Clone)]
pub struct RunFlags {
    /// Project to create the run in (default: the key's project).
    #[arg(long)]
    project: Option<String>,
    /// Template slug (python-node is the launch default).
    #[arg(long, default_value = "python-node")]
    template: String,
    /// Warm sandbox to reuse.
    #[arg(long)]
    sandbox: Option<String>,
    /// Keep the sandbox after the run.
    #[arg(long)]
    keep_sandbox: bool,
    /// Command timeout in milliseconds.
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Metadata label as key=value (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    metadata: Vec<String>,
    /// A file to keep as an artifact, PATH[=NAME] (repeatable).
    #[arg(long = "artifact", value_name = "PATH[=NAME]")]
    artifacts: Vec<String>,
}

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
    /// Upload an existing .tgz / .tar.gz archive to a run.
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
    },
    /// Cancel an active run (a terminal run is returned unchanged).
    Cancel {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Read the Evidence Bundle.
    Evidence {
        run_id: String,
        /// Write pretty JSON to this file.
        #[arg(long)]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// Print an API error as `error: <code>: <message>` and return exit 1.
pub fn fail(e: &ClientError) -> ExitCode {
    match e {
        ClientError::Api { code, message, request_id, .. } => {
            eprintln!(
                "error: {code}: {message}{}",
                request_id.as_ref().map(|r| format!(" (request {r})")).unwrap_or_default()
            );
        }
        other => eprintln!("error: {other}"),
    }
    ExitCode::FAILURE
}

fn print_json(v: &Value) {
    println!("{}", json!({ "data": v }));
}

fn body(command: &str, f: &RunFlags) -> Result<Value> {
    let mut metadata = serde_json::Map::new();
    for m in &f.metadata {
        let (k, v) = m.split_once('=').ok_or_else(|| anyhow::anyhow!("--metadata `{m}` must be key=value"))?;
        metadata.insert(k.to_string(), Value::String(v.to_string()));
    }
    let artifacts: Vec<Value> = f
        .artifacts
        .iter()
        .map(|a| match a.split_once('=') {
            Some((p, n)) => json!({"path": p, "name": n}),
            None => json!({"path": a}),
        })
        .collect();
    Ok(json!({
        "command": command, "template": f.template, "projectId": f.project, "sandboxId": f.sandbox,
        "keepSandbox": f.keep_sandbox, "timeoutMs": f.timeout_ms, "metadata": metadata, "artifacts": artifacts,
    }))
}

fn summary(r: &Value) {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
    let mut rows = vec![
        vec!["run".into(), s("id")],
        vec!["status".into(), s("status")],
        vec!["command".into(), s("command")],
        vec![
            "template".into(),
            format!(
                "{} {}",
                s("template"),
                r["templateDigest"].as_str().map(|d| format!("({})", &d[..12])).unwrap_or_default()
            ),
        ],
        vec!["project".into(), s("projectId")],
        vec!["created".into(), s("createdAt")],
    ];
    if let Some(a) = r["archive"].as_object() {
        rows.push(vec![
            "archive".into(),
            format!("{} bytes, sha256 {}", a["sizeBytes"], a["sha256"].as_str().unwrap_or("")),
        ]);
    }
    for (label, key) in [("started", "startedAt"), ("finished", "finishedAt")] {
        if let Some(t) = r[key].as_str() {
            rows.push(vec![label.into(), t.into()]);
        }
    }
    if !r["exitCode"].is_null() {
        rows.push(vec!["exit code".into(), r["exitCode"].to_string()]);
    }
    if let Some(reason) = r["failureReason"].as_str() {
        rows.push(vec!["failure".into(), format!("{reason}: {}", r["failureMessage"].as_str().unwrap_or(""))]);
    }
    if let Some(ids) = r["artifactIds"].as_array().filter(|a| !a.is_empty()) {
        rows.push(vec!["artifacts".into(), ids.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")]);
    }
    print_table(&rows);
}

/// The command line from the words after `--`: one word is taken as a
/// command line as it is (`-- "pnpm test && echo ok"`); several are quoted
/// for the shell and joined (`-- python3 main.py "a b"`).
fn shell_join(args: &[String]) -> String {
    if let [one] = args {
        return one.clone();
    }
    args.iter()
        .map(|a| {
            if !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b)) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Print a successful result as `{ "data": ... }` (with `--json`) or for
/// people; print a refusal as the API's code and message.
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

fn status_line(run_id: &str) -> impl FnOnce(&Value) + '_ {
    move |r: &Value| println!("{run_id} {}", r["status"].as_str().unwrap_or(""))
}

pub async fn run(ctx: &Context, cmd: Command) -> Result<ExitCode> {
    let client = context::client(ctx)?;
    Ok(match cmd {
        Command::Create { command, flags, json } => match create(&client, &command, &flags).await {
            Ok(r) => report(Ok(r), json, |r| {
                println!("{} {}", r["id"].as_str().unwrap_or(""), r["status"].as_str().unwrap_or(""))
            }),
            Err(e) => fail_any(e),
        },
        Command::Upload { run_id, archive, sha256, json } => {
            match upload::upload(&client, &run_id, &archive, sha256.as_deref()).await {
                Ok(r) => report(Ok(r), json, |r| {
                    println!(
                        "{run_id}: archive uploaded ({} bytes, sha256 {})",
                        r["archive"]["sizeBytes"],
                        r["archive"]["sha256"].as_str().unwrap_or("")
                    )
                }),
                Err(e) => fail_any(e),
            }
        }
        Command::Start { run_id, json } => {
            let key = idempotency_key();
            let r = client.call(Method::POST, &format!("/v1/workspace-runs/{run_id}/start"), None, Some(&key)).await;
            report(r, json, status_line(&run_id))
        }
        Command::RunArchive { archive, flags, json, command } => {
            run_archive(&client, &archive, &flags, &command, json).await
        }
        Command::Status { run_id, json } => {
            report(client.get(&format!("/v1/workspace-runs/{run_id}")).await, json, summary)
        }
        Command::List { project, status, limit, json } => list(&client, project, status, limit, json).await,
        Command::Logs { run_id, after_seq, json } => match events::stream(&client, &run_id, after_seq, json).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Cancel { run_id, json } => {
            let r = client.call(Method::POST, &format!("/v1/workspace-runs/{run_id}/cancel"), None, None).await;
            report(r, json, status_line(&run_id))
        }
        Command::Evidence { run_id, output, json } => evidence(&client, &run_id, output, json).await,
    })
}

fn fail_any(e: anyhow::Error) -> ExitCode {
    match e.downcast_ref::<ClientError>() {
        Some(c) => fail(c),
        None => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn create(client: &Client, command: &str, flags: &RunFlags) -> Result<Value> {
    create_with(client, command, flags, false).await
}

async fn create_with(client: &Client, command: &str, flags: &RunFlags, auto_start: bool) -> Result<Value> {
    let mut b = body(command, flags)?;
    if auto_start {
        b["autoStart"] = Value::Bool(true);
    }
    let key = idempotency_key();
    Ok(client.call(Method::POST, "/v1/workspace-runs", Some(&b), Some(&key)).await?)
}

async fn list(client: &Client, project: Option<String>, status: Option<String>, limit: u32, json: bool) -> ExitCode {
    let mut q = vec![format!("limit={limit}")];
    if let Some(p) = project {
        q.push(format!("projectId={p}"));
    }
    if let Some(s) = status {
        q.push(format!("status={s}"));
    }
    match client.get(&format!("/v1/workspace-runs?{}", q.join("&"))).await {
        Ok(page) => {
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if json {
                for r in &items {
                    print_json(r);
                }
            } else {
                let mut rows =
                    vec![["RUN", "STATUS", "TEMPLATE", "EXIT", "CREATED", "COMMAND"].map(String::from).to_vec()];
                for r in &items {
                    let mut command = r["command"].as_str().unwrap_or("").replace('\n', " ");
                    if command.chars().count() > 48 {
                        command = format!("{}…", command.chars().take(47).collect::<String>());
                    }
                    rows.push(vec![
                        r["id"].as_str().unwrap_or("").into(),
                        r["status"].as_str().unwrap_or("").into(),
                        r["template"].as_str().unwrap_or("").into(),
                        if r["exitCode"].is_null() { "-".into() } else { r["exitCode"].to_string() },
                        r["createdAt"].as_str().unwrap_or("").into(),
                        command,
                    ]);
                }
                print_table(&rows);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn evidence(client: &Client, run_id: &str, output: Option<PathBuf>, json: bool) -> ExitCode {
    match client.get_raw_data(&format!("/v1/workspace-runs/{run_id}/evidence")).await {
        Ok(bytes) => {
            let v: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("error: the Evidence Bundle is not valid JSON: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(path) = output {
                let pretty = serde_json::to_string_pretty(&v).expect("JSON") + "\n";
                if let Err(e) = std::fs::write(&path, pretty) {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                eprintln!("wrote the Evidence Bundle of {run_id} to {}", path.display());
            } else if json {
                print_json(&v);
            } else {
                println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}

async fn run_archive(
    client: &Client,
    archive: &std::path::Path,
    flags: &RunFlags,
    command: &[String],
    json: bool,
) -> ExitCode {
    let line = shell_join(command);
    let checked = upload::check_archive_path(archive);
    if let Err(e) = checked {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    // The server starts the run as soon as the upload is verified: one
    // request fewer than create, upload, start.
    let run = match create_with(client, &line, flags, true).await {
        Ok(r) => r,
        Err(e) => return fail_any(e),
    };
    let id = run["id"].as_str().unwrap_or_default().to_string();
    if !json {
        eprintln!("crownest: workspace run {id}");
    }
    let uploaded = match upload::upload(client, &id, archive, None).await {
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
    match events::stream(client, &id, 0, json).await {
        Ok(terminal) => events::exit_code(&terminal),
        Err(e) => fail(&e),
    }
}
