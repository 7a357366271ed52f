//! What one DNAT rule replaced costs the kernel on the synthetic cluster.
//!
//! kproxy's endpoint maps are interval maps so that an endpoint change never touches a rule
//! (architecture.md, "Why endpoints live in windows of shared maps"). The layout without
//! intervals, `dnat to numgen random mod N offset W map @m` over single keys, must replace the
//! Service port's DNAT rule whenever N changes. This program measures that replacement alone:
//! the whole synthetic cluster is applied, then, `REPEATS` times, the first DNAT rule of a
//! different Service-address bucket chain (`service-ips-…`) gets modulus `MODULUS - 1` and then
//! its own again, each its own `Syncer::sync_change`, and it prints the median kernel time
//! (`SyncReport::transaction`).
//!
//! ```sh
//! cargo build --release -p kproxy-bench --example rule_change_floor
//! target/release/examples/rule_change_floor 1000
//! target/release/examples/rule_change_floor 50000
//! ```
//!
//! Root only: it works in a throwaway network namespace. docs/benchmarks.md has the results.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use kproxy_compiler::ir::{Action, Chain, Dnat, Ruleset, Table};
use kproxy_compiler::{Incremental, Options, RulesetChange};
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;

const ENDPOINTS: usize = 10;
const REPEATS: usize = 30;

/// The first DNAT-through-a-map rule of `chain`, if it has one.
fn numgen_rule(chain: &Chain) -> Option<usize> {
    chain
        .rules
        .iter()
        .position(|rule| matches!(rule.action, Some(Action::Dnat(Dnat::Numgen { .. }))))
}

/// `table` reduced to `chain`: one side of a [`RulesetChange`].
fn with_chain(table: &Table, chain: Chain) -> Ruleset {
    Ruleset {
        tables: vec![Table {
            family: table.family,
            name: table.name.clone(),
            sets: Vec::new(),
            maps: Vec::new(),
            endpoint_maps: Vec::new(),
            chains: vec![chain],
        }],
    }
}

/// `chain` with the modulus of its rule `rule` lowered by one.
fn replaced(chain: &Chain, rule: usize) -> Chain {
    let mut chain = chain.clone();
    if let Some(Action::Dnat(Dnat::Numgen { modulus, .. })) = &mut chain.rules[rule].action {
        *modulus -= 1;
    }
    chain
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort_unstable();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

fn measure(services: usize) -> anyhow::Result<()> {
    let (specs, slices) = kproxy_synthetic::specs(services, ENDPOINTS);
    let state = kproxy_model::ProxyState::build(kproxy_synthetic::node(), &specs, &slices);
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    let ruleset = Incremental::new(&state, &options).ruleset();
    drop(state);
    let Some(table) = ruleset.tables.first() else {
        bail!("the synthetic cluster compiled to no table");
    };
    let targets: Vec<(&Chain, usize)> = table
        .chains
        .iter()
        .filter(|chain| chain.name.starts_with("service-ips-"))
        .filter_map(|chain| numgen_rule(chain).map(|rule| (chain, rule)))
        .collect();
    if targets.is_empty() {
        bail!("no bucket chain with a DNAT rule");
    }
    NetNs::new("rule-floor").exec(|| -> anyhow::Result<()> {
        let mut syncer = Syncer::default();
        syncer
            .sync(ruleset.clone())
            .context("the first, full sync")?;
        let (mut there, mut back) = (Vec::new(), Vec::new());
        for repetition in 0..REPEATS {
            let (chain, rule) = targets[repetition * 97 % targets.len()];
            let original = with_chain(table, chain.clone());
            let changed = with_chain(table, replaced(chain, rule));
            let change = RulesetChange {
                before: original.clone(),
                after: changed.clone(),
            };
            let report = syncer.sync_change(&change).context("replacing")?;
            there.push(report.transaction);
            let change = RulesetChange {
                before: changed,
                after: original,
            };
            let report = syncer.sync_change(&change).context("restoring")?;
            back.push(report.transaction);
        }
        println!(
            "{services} × {ENDPOINTS}: one DNAT rule replaced, kernel, median of {REPEATS}: \
             {:.2?} there, {:.2?} back",
            median(there),
            median(back)
        );
        Ok(())
    })
}

fn main() -> ExitCode {
    let services = std::env::args().nth(1).and_then(|s| s.parse().ok());
    let Some(services) = services else {
        eprintln!("usage: rule_change_floor SERVICES");
        return ExitCode::FAILURE;
    };
    match measure(services) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rule_change_floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}
