//! `crownest`: the API client commands, and the front door for the commands
//! that host plugins, which it hands to `crownest-host` (see the library's
//! docs for why there are two executables).

use std::process::ExitCode;

use clap::Parser;
use crownest_cli::{Cli, context::Context};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.hosts_plugins() {
        return crownest_cli::exec_host();
    }
    // A closed stdout (`| head`) ends this process as it ends `cat`.
    crownest_cli::stdio::restore_sigpipe();
    if let Some(code) = crownest_cli::start_logging(cli.config.as_deref()) {
        return code;
    }
    // One request at a time: a single-threaded runtime starts faster (no
    // worker threads to spawn and wake).
    let Some(runtime) = crownest_cli::runtime(false) else { return ExitCode::FAILURE };
    let ctx = Context { config_path: cli.config, data_dir: cli.data_dir };
    crownest_cli::finish(runtime, async move { crownest_cli::run_client_command(&ctx, cli.command).await })
}
