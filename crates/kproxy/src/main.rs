//! `kproxy`: a Kubernetes Service proxy. This binary is glue: it parses flags, reads input,
//! and calls the model and compiler crates, which hold all the logic.

mod cli;
mod cmd;
mod conntrack_targets;
mod hostname;
mod input;
mod local_routes;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::parse();
    // The daemon logs what it does (info) by default; the one-shot commands only problems.
    let daemon = matches!(cli.command, cli::Command::Run(_));
    init_logging(cli.verbose + u8::from(daemon));
    match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that stdout carries only the ruleset. `-v` is info, `-vv` debug,
/// `-vvv` trace (`run` starts one step up, at info); `RUST_LOG` overrides.
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only on a terminal: logs written to files and journals stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
