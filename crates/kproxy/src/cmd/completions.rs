//! `kproxy completions <shell>`: a completion script generated from the flag definitions.

use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::cli::Cli;

pub fn run(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut command = Cli::command();
    clap_complete::generate(shell, &mut command, "kproxy", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
