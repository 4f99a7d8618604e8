//! `crownest-host`: every `crownest` command, including those that host
//! plugins (`serve`, `plugins`, `doctor`, `templates`), which `crownest`
//! hands to it. It is also the sandbox jail helper when `crownest-jail` is
//! not installed beside it.

use std::process::ExitCode;

use clap::Parser;
use crownest_cli::{Cli, Command, commands, context::Context};

fn main() -> ExitCode {
    // The jail helper: handle it before anything else (no runtime, no
    // logging, no allocation-heavy setup).
    crownest_sandbox::jail::run_if_invoked();
    let cli = Cli::parse();
    // SIGPIPE stays ignored here (a server's sockets and the pipes to its
    // sandboxes must never kill it); output goes through `stdio`, which
    // ends the process quietly on a closed pipe.
    if let Some(code) = crownest_cli::start_logging(cli.config.as_deref()) {
        return code;
    }
    // Commands that host plugins and the store need worker threads; the API
    // client commands do one request at a time.
    let Some(runtime) = crownest_cli::runtime(cli.command.hosts_plugins()) else { return ExitCode::FAILURE };
    let ctx = Context { config_path: cli.config, data_dir: cli.data_dir };
    crownest_cli::finish(runtime, async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(&ctx, args).await,
            Command::Plugins(cmd) => commands::plugins::run(&ctx, cmd).await,
            Command::Doctor(args) => commands::doctor::run(&ctx, args).await,
            Command::Templates(cmd) => commands::templates::run(&ctx, cmd).await,
            other => crownest_cli::run_client_command(&ctx, other).await,
        }
    })
}
