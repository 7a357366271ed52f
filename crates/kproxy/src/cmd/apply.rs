//! `kproxy apply`: program this network namespace once, in the chosen mode, and remove the
//! other mode's leftovers.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use kproxy_compiler::ir::Ruleset;
use kproxy_syncer::iptables::{self, CleanupReport, IptablesSyncer, Tools};
use kproxy_syncer::Syncer;

use super::compile::{compile, Compiled};
use crate::cli::{ApplyArgs, ProxyMode};
use crate::conntrack_targets;

pub fn run(args: &ApplyArgs) -> anyhow::Result<ExitCode> {
    let Ok(mut compiled) = compile(&args.input)? else {
        return Ok(ExitCode::FAILURE);
    };
    let summary = match args.input.proxy.proxy_mode {
        ProxyMode::Nftables => {
            let ruleset = std::mem::take(&mut compiled.ruleset);
            apply_nftables(ruleset, args.cleanup_kube_proxy)?
        }
        ProxyMode::Iptables => apply_iptables(&compiled, args.cleanup_kube_proxy)?,
    };
    // Rules first, then flows: a cleared UDP flow is re-created by its next datagram, which
    // must meet the new rules.
    let cleared =
        kproxy_syncer::conntrack::clear_stale_flows(&conntrack_targets::targets(&compiled.state))
            .context("clearing stale UDP/SCTP conntrack entries (the rules are applied)")?;
    println!(
        "applied {} Service ports for node {}: {summary}; {} stale conntrack entries deleted",
        compiled.service_ports, compiled.node_name, cleared.deleted,
    );
    Ok(if compiled.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn apply_nftables(ruleset: Ruleset, kube_proxy_too: bool) -> anyhow::Result<String> {
    let start = Instant::now();
    let mut syncer = Syncer::adopt().context("reading kproxy's tables from the kernel")?;
    let report = syncer
        .sync(ruleset)
        .context("programming the kernel (the previous rules are unchanged)")?;
    let elapsed = start.elapsed();
    if kube_proxy_too {
        remove_kube_proxy_tables()?;
    }
    let leftovers = iptables::cleanup(Tools::detect(), kube_proxy_too)
        .context("removing iptables mode's leftovers (the nftables rules are applied)")?;
    let mut summary = format!(
        "{} operations ({} netlink messages, {} bytes) in {:.1} ms",
        report.operations,
        report.applied.messages,
        report.applied.bytes,
        elapsed.as_secs_f64() * 1000.0,
    );
    if leftovers.hooks_deleted + leftovers.chains_deleted > 0 {
        summary.push_str(&format!("; {}", describe_iptables_cleanup(&leftovers)));
    }
    Ok(summary)
}

fn apply_iptables(compiled: &Compiled, kube_proxy_too: bool) -> anyhow::Result<String> {
    let rules = kproxy_compiler::iptables::compile(&compiled.state, &compiled.options);
    let tools = Tools::detect();
    if kube_proxy_too {
        let report =
            iptables::cleanup(tools, true).context("removing kube-proxy's iptables rules")?;
        tracing::info!("{}", describe_iptables_cleanup(&report));
        remove_kube_proxy_tables()?;
    }
    let start = Instant::now();
    let report = IptablesSyncer::new(tools)
        .sync(&rules)
        .context("programming iptables (each table is unchanged where its restore failed)")?;
    let elapsed = start.elapsed();
    kproxy_syncer::cleanup()
        .context("removing nftables mode's tables (the iptables rules are applied)")?;
    let written: usize = report.families.iter().map(|f| f.written.len()).sum();
    let deleted: usize = report.families.iter().map(|f| f.deleted.len()).sum();
    Ok(format!(
        "{written} chains written and {deleted} deleted by {} restore(s) ({:?} backend) in {:.1} ms",
        report.families.len(),
        tools.variant,
        elapsed.as_secs_f64() * 1000.0,
    ))
}

/// Deletes kube-proxy's nftables tables (`ip kube-proxy`, `ip6 kube-proxy`) if there are any.
pub fn remove_kube_proxy_tables() -> anyhow::Result<()> {
    kproxy_syncer::cleanup_kube_proxy_tables().context("deleting kube-proxy's nftables tables")?;
    tracing::info!("deleted kube-proxy's nftables tables (ip and ip6), if there were any");
    Ok(())
}

/// One line saying what an iptables cleanup removed.
pub fn describe_iptables_cleanup(report: &CleanupReport) -> String {
    if report.unavailable {
        return "no iptables binaries here: no iptables rules to delete".to_string();
    }
    let mut text = format!(
        "deleted {} built-in chain jumps and {} chains of iptables mode",
        report.hooks_deleted, report.chains_deleted
    );
    if !report.kept_for_kube_proxy.is_empty() {
        text.push_str(&format!(
            " (kept the chains of {}: kube-proxy's rules use them; --cleanup-kube-proxy removes them)",
            report.kept_for_kube_proxy.join(", ")
        ));
    }
    text
}
