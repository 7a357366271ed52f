//! `kproxy dry-run`: print the ruleset for manifests, touching nothing.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context;

use super::compile::{compile, Compiled};
use crate::cli::{DryRunArgs, OutputFormat};

pub fn run(args: &DryRunArgs) -> anyhow::Result<ExitCode> {
    let Ok(compiled) = compile(&args.input)? else {
        return Ok(ExitCode::FAILURE);
    };
    let Compiled {
        ruleset,
        node_name,
        service_ports,
        problems,
        ..
    } = compiled;
    let text = match args.output {
        OutputFormat::Text => {
            let mut text = format!(
                "# kproxy ruleset for node {node_name}: {service_ports} Service ports. Load with `nft -f`.\n",
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
