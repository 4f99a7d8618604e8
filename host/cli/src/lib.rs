//! The `crownest` command line, shared by its two executables.
//!
//! - `crownest` is the front door: it runs the API client commands
//!   (`workspace-runs`, `artifacts`, `keys`, …) itself, and hands the
//!   commands that host plugins (`serve`, `plugins`, `doctor`, `templates`)
//!   to `crownest-host` by `exec`.
//! - `crownest-host` runs every command.
//!
//! Why two: an agent or CI job starts `crownest` once per call, and a
//! process's start-up grows with its executable. The host brings wasmtime,
//! Cranelift, SQLite and the server: 24 MB of code against the client's 4.6
//! MB, 54 000 relocations applied before `main` against 12 000, and 1.7 ms
//! per start here against 1.2 ms (see BENCHMARKS.md, run overhead).

pub mod commands;
pub mod context;
pub mod credentials;
pub mod display;
pub mod exit;
pub mod local_server;
pub mod logging;
pub mod stdio;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The command line of both executables.
#[derive(Parser)]
#[command(name = "crownest", version, about = "Self-hostable execution service for coding agents and CI")]
pub struct Cli {
    /// Configuration file (default: none; embedded defaults are used).
    #[arg(long, global = true, env = "CROWNEST_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides `data_dir` in the config).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Every command; [`Command::hosts_plugins`] says which executable runs it.
#[derive(Subcommand)]
pub enum Command {
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

impl Command {
    /// Whether the command hosts plugins (and so runs in `crownest-host`):
    /// it needs the engine, the store or the sandbox mechanisms.
    pub fn hosts_plugins(&self) -> bool {
        matches!(self, Command::Serve(_) | Command::Plugins(_) | Command::Doctor(_) | Command::Templates(_))
    }
}

/// Install the stderr logger in the form the config asks for
/// (`log_format`, `CROWNEST_LOG_FORMAT`), filtered by `CROWNEST_LOG`. An
/// invalid `CROWNEST_LOG` is wrong usage: it is printed and its exit code
/// returned.
pub fn start_logging(config_path: Option<&Path>) -> Option<ExitCode> {
    // Read leniently: a broken config is reported by the command that
    // loads it, in whatever form the logger has by then.
    let format = crownest_core::config::Config::load(config_path).map(|c| c.log_format).unwrap_or_default();
    match logging::init(format) {
        Ok(()) => None,
        Err(e) => {
            errln!("error: {e}");
            Some(ExitCode::from(exit::USAGE))
        }
    }
}

/// Run a command on `runtime`, turning an error into a message and its
/// exit code (see [`exit`]).
pub fn finish(runtime: tokio::runtime::Runtime, work: impl Future<Output = anyhow::Result<ExitCode>>) -> ExitCode {
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => exit::error(&e),
    }
}

/// Build a runtime, or say why not.
pub fn runtime(multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Run an API client command (every command that does not host plugins).
pub async fn run_client_command(ctx: &context::Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::WorkspaceRuns(cmd) => commands::workspace_runs::run(ctx, cmd).await,
        Command::Artifacts(cmd) => commands::artifacts::run(ctx, cmd).await,
        Command::Keys(cmd) => commands::control::keys(ctx, cmd).await,
        Command::Projects(cmd) => commands::control::projects(ctx, cmd).await,
        Command::Usage { project, from, to, json } => commands::control::usage(ctx, project, from, to, json).await,
        Command::Audit(cmd) => commands::control::audit(ctx, cmd).await,
        Command::Sandboxes(cmd) => commands::sandboxes::run(ctx, cmd).await,
        Command::Serve(_) | Command::Plugins(_) | Command::Doctor(_) | Command::Templates(_) => {
            anyhow::bail!("this command hosts plugins: run it with crownest-host")
        }
    }
}

/// Replace this process with `crownest-host` and the same arguments; it
/// returns only if that fails.
pub fn exec_host() -> ExitCode {
    use std::os::unix::process::CommandExt;
    let host = match std::env::current_exe() {
        Ok(exe) => exe.with_file_name("crownest-host"),
        Err(e) => {
            errln!("error: cannot locate the crownest executable (to find crownest-host beside it): {e}");
            return ExitCode::FAILURE;
        }
    };
    let err = std::process::Command::new(&host).arg0("crownest").args(std::env::args_os().skip(1)).exec();
    errln!(
        "error: cannot start {} ({err}): `serve`, `plugins`, `doctor` and `templates` run in crownest-host, \
         which is installed next to crownest",
        host.display()
    );
    ExitCode::FAILURE
}
