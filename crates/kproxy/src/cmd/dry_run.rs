//! `kproxy dry-run`: print the ruleset for manifests, touching nothing.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;
use kproxy_manifests::Input;

use super::config;
use crate::cli::{DryRunArgs, OutputFormat};
use crate::{hostname, input};

pub fn run(args: &DryRunArgs) -> anyhow::Result<ExitCode> {
    // Bad flags are fatal even with --keep-going: every rule depends on them.
    let options = match config::options(&args.proxy) {
        Ok(options) => options,
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut problems = Vec::new();
    let node_name = match &args.proxy.hostname_override {
        Some(name) => name.trim().to_lowercase(),
        None => hostname::node_name()?,
    };

    let inputs: Vec<Input> = args
        .files
        .iter()
        .map(|p| Input::parse(&p.to_string_lossy()))
        .collect();
    let (manifests, errors) = kproxy_manifests::load(&inputs);
    problems.extend(errors.iter().map(ToString::to_string));
    let loaded = input::build(&manifests, &node_name);
    problems.extend(loaded.problems);

    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if !problems.is_empty() && !args.keep_going {
        eprintln!("error: {} problem(s) in the input; nothing compiled (use --keep-going to compile the valid objects)", problems.len());
        return Ok(ExitCode::FAILURE);
    }

    let ruleset = kproxy_compiler::compile(&loaded.state, &options);
    let text = match args.output {
        OutputFormat::Text => {
            let mut text = format!(
                "# kproxy ruleset for node {node_name}: {} Service ports. Load with `nft -f`.\n",
                loaded.state.ports.len()
            );
            text.push_str(&kproxy_compiler::render::nft::ruleset(&ruleset));
            text
        }
        OutputFormat::Json => {
            serde_json::to_string_pretty(&ruleset).context("encoding the ruleset as JSON")? + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
