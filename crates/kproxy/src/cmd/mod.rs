//! One module per subcommand.

mod apply;
mod cleanup;
mod compile;
mod completions;
mod config;
mod dry_run;
mod run;
mod trace;
mod version;

use std::process::ExitCode;

use crate::cli::Command;

/// Runs a subcommand.
pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::DryRun(args) => dry_run::run(&args),
        Command::Apply(args) => apply::run(&args),
        Command::Cleanup(args) => cleanup::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Trace(args) => trace::run(&args),
        Command::Version => version::run(),
        Command::Completions { shell } => completions::run(shell),
    }
}
