//! `crownest`: run the server, manage and check plugins, diagnose the host.

mod commands;
mod context;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "crownest", version, about = "Self-hostable execution service for coding agents and CI")]
struct Cli {
    /// Configuration file (default: none; embedded defaults are used).
    #[arg(long, global = true, env = "CROWNEST_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start CrowNest: load the configured plugins and serve.
    Serve(commands::serve::Args),
    /// Inspect and test plugins.
    #[command(subcommand)]
    Plugins(commands::plugins::Command),
    /// Check this host: engine, sandbox enforcement, plugins, storage round trip.
    Doctor(commands::doctor::Args),
    /// Sandbox templates.
    #[command(subcommand)]
    Templates(commands::templates::Command),
    /// Artifacts kept by runs.
    #[command(subcommand)]
    Artifacts(commands::artifacts::Command),
    /// Workspace Runs: run an archive in a sandbox and keep the evidence.
    #[command(subcommand, name = "workspace-runs")]
    WorkspaceRuns(commands::workspace_runs::Command),
    /// API keys (admin credential).
    #[command(subcommand)]
    Keys(commands::control::KeysCommand),
    /// Projects.
    #[command(subcommand)]
    Projects(commands::control::ProjectsCommand),
    /// Metered usage: compute_unit_seconds and amounts by billing bucket.
    Usage {
        #[arg(long)]
        project: Option<String>,
        /// First billing month (`YYYY-MM`).
        #[arg(long)]
        from: Option<String>,
        /// Last billing month (`YYYY-MM`).
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(commands::control::AuditCommand),
    /// Sandboxes kept by runs.
    #[command(subcommand)]
    Sandboxes(commands::sandboxes::Command),
}

fn main() -> ExitCode {
    // The sandbox jail helper is this same executable: handle it before
    // anything else (no runtime, no logging, no allocation-heavy setup).
    crownest_sandbox::jail::run_if_invoked();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CROWNEST_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,crownest=info")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Commands that host plugins and the store need worker threads; the API
    // client commands do one request at a time, and a single-threaded
    // runtime starts faster (no worker threads to spawn and wake).
    let hosts_plugins =
        matches!(cli.command, Command::Serve(_) | Command::Plugins(_) | Command::Doctor(_) | Command::Templates(_));
    let mut builder = if hosts_plugins {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = context::Context { config_path: cli.config, data_dir: cli.data_dir };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(&ctx, args).await,
            Command::Plugins(cmd) => commands::plugins::run(&ctx, cmd).await,
            Command::Doctor(args) => commands::doctor::run(&ctx, args).await,
            Command::Templates(cmd) => commands::templates::run(&ctx, cmd).await,
            Command::WorkspaceRuns(cmd) => commands::workspace_runs::run(&ctx, cmd).await,
            Command::Artifacts(cmd) => commands::artifacts::run(&ctx, cmd).await,
            Command::Keys(cmd) => commands::control::keys(&ctx, cmd).await,
            Command::Projects(cmd) => commands::control::projects(&ctx, cmd).await,
            Command::Usage { project, from, to, json } => commands::control::usage(&ctx, project, from, to, json).await,
            Command::Audit(cmd) => commands::control::audit(&ctx, cmd).await,
            Command::Sandboxes(cmd) => commands::sandboxes::run(&ctx, cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
