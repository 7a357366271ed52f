//! `kproxy apply`: program this network namespace once, sending only the difference.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use kproxy_syncer::Syncer;

use super::compile::compile;
use crate::cli::InputArgs;

pub fn run(args: &InputArgs) -> anyhow::Result<ExitCode> {
    let Ok(compiled) = compile(args)? else {
        return Ok(ExitCode::FAILURE);
    };
    let start = Instant::now();
    let mut syncer = Syncer::adopt().context("reading kproxy's tables from the kernel")?;
    let report = syncer
        .sync(&compiled.ruleset)
        .context("programming the kernel (the previous rules are unchanged)")?;
    println!(
        "applied {} Service ports for node {}: {} operations ({} netlink messages, {} bytes) in {:.1} ms",
        compiled.service_ports,
        compiled.node_name,
        report.operations,
        report.applied.messages,
        report.applied.bytes,
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(if compiled.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
