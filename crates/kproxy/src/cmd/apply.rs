//! `kproxy apply`: program this network namespace once, sending only the difference.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use kproxy_syncer::Syncer;

use super::compile::compile;
use crate::cli::InputArgs;
use crate::conntrack_targets;

pub fn run(args: &InputArgs) -> anyhow::Result<ExitCode> {
    let Ok(compiled) = compile(args)? else {
        return Ok(ExitCode::FAILURE);
    };
    let start = Instant::now();
    let mut syncer = Syncer::adopt().context("reading kproxy's tables from the kernel")?;
    let report = syncer
        .sync(compiled.ruleset)
        .context("programming the kernel (the previous rules are unchanged)")?;
    let elapsed = start.elapsed();
    // Rules first, then flows: a cleared UDP flow is re-created by its next datagram, which
    // must meet the new rules.
    let cleared =
        kproxy_syncer::conntrack::clear_stale_flows(&conntrack_targets::targets(&compiled.state))
            .context("clearing stale UDP/SCTP conntrack entries (the rules are applied)")?;
    println!(
        "applied {} Service ports for node {}: {} operations ({} netlink messages, {} bytes) in {:.1} ms; {} stale conntrack entries deleted",
        compiled.service_ports,
        compiled.node_name,
        report.operations,
        report.applied.messages,
        report.applied.bytes,
        elapsed.as_secs_f64() * 1000.0,
        cleared.deleted,
    );
    Ok(if compiled.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
