//! Plans: minimal for small changes, and correct against the real kernel.
//!
//! The kernel test applies each plan's `nft -f` script in one network namespace and compares
//! the result with a fresh load of the desired ruleset in another: after every step the two
//! must list the same ruleset.

mod listing;

use std::net::IpAddr;

use kproxy_compiler::ir::Ruleset;
use kproxy_compiler::{compile, Options};
use kproxy_model::{Endpoint, ProxyState, SessionAffinity, TrafficPolicy};
use kproxy_syncer::{plan, Operation, Plan};

fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

fn rules(state: &ProxyState) -> Ruleset {
    compile(state, &options())
}

/// A plain ClusterIP Service port with endpoints: its `service-…` chain holds one DNAT rule.
fn plain(port: &kproxy_model::ServicePort) -> bool {
    port.affinity == SessionAffinity::None
        && port.internal_policy == TrafficPolicy::Cluster
        && !port.is_externally_reachable()
        && port.families[0].endpoints.any_usable
}

/// Adds a remote endpoint to the first plain ClusterIP Service port.
fn add_endpoint(state: &mut ProxyState) {
    let port = state
        .ports
        .iter_mut()
        .find(|p| plain(p))
        .expect("a plain ClusterIP port");
    let family = &mut port.families[0];
    let addr: IpAddr = "10.127.0.1".parse().unwrap();
    family.endpoints.cluster.push(Endpoint {
        addr,
        port: 8080,
        local: false,
    });
    family.endpoints.cluster.sort();
}

#[test]
fn an_unchanged_state_needs_no_operations() {
    let state = kproxy_synthetic::cluster(200, 5);
    let applied = rules(&state);
    assert!(plan(Some(&applied), &rules(&state), &[]).is_empty());
}

#[test]
fn one_endpoint_costs_the_same_operations_at_any_cluster_size() {
    let mut counts = Vec::new();
    for services in [100, 1000] {
        let mut state = kproxy_synthetic::cluster(services, 10);
        let before = rules(&state);
        add_endpoint(&mut state);
        let plan = plan(Some(&before), &rules(&state), &[]);
        assert!(
            matches!(
                plan.operations.as_slice(),
                [Operation::FlushChain(..), Operation::AddRule(..)]
            ),
            "{services} Services: {plan}"
        );
        counts.push(plan.operations.len());
    }
    assert_eq!(counts, [2, 2]);
}

#[test]
fn a_cold_start_creates_everything_once() {
    let state = kproxy_synthetic::cluster(50, 3);
    let desired = rules(&state);
    let plan = plan(None, &desired, &[]);
    let chains: usize = desired.tables.iter().map(|t| t.chains.len()).sum();
    let rules: usize = desired
        .tables
        .iter()
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum();
    let count = |f: fn(&Operation) -> bool| plan.operations.iter().filter(|o| f(o)).count();
    assert_eq!(
        count(|o| matches!(o, Operation::AddTable(_))),
        desired.tables.len()
    );
    assert_eq!(count(|o| matches!(o, Operation::AddRule(..))), rules);
    assert_eq!(
        count(|o| matches!(o, Operation::Add(_, kproxy_syncer::Object::Chain(_)))),
        chains
    );
    assert_eq!(
        count(|o| matches!(o, Operation::FlushChain(..) | Operation::DeleteChain(..))),
        0
    );
}

#[test]
fn removed_chains_are_flushed_now_and_deleted_by_the_next_plan() {
    let mut state = kproxy_synthetic::cluster(60, 2);
    let before = rules(&state);
    let index = state
        .ports
        .iter()
        .position(plain)
        .expect("a plain ClusterIP port");
    state.ports.remove(index);
    let after = rules(&state);
    let first = plan(Some(&before), &after, &[]);
    assert!(!first.stale_chains.is_empty());
    assert!(!first
        .operations
        .iter()
        .any(|o| matches!(o, Operation::DeleteChain(..))));
    let second = plan(Some(&after), &after, &first.stale_chains);
    assert_eq!(second.operations.len(), first.stale_chains.len());
    assert!(second
        .operations
        .iter()
        .all(|o| matches!(o, Operation::DeleteChain(..))));
}

/// The state changes the kernel test walks through, each applied to the previous state.
fn steps() -> Vec<(&'static str, ProxyState)> {
    let base = kproxy_synthetic::cluster(60, 3);
    let mut steps = vec![("start", base.clone())];
    let mut state = base;

    add_endpoint(&mut state);
    steps.push(("add an endpoint", state.clone()));

    let port = &mut state.ports[3].families[0].endpoints;
    port.cluster.pop();
    steps.push(("remove an endpoint", state.clone()));

    let index = state
        .ports
        .iter()
        .position(plain)
        .expect("a plain ClusterIP port");
    let gone = state.ports.remove(index);
    steps.push(("remove a Service port", state.clone()));

    state.ports.insert(index, gone);
    steps.push(("add it back", state.clone()));

    for port in state.ports.iter_mut().take(10) {
        port.internal_policy = TrafficPolicy::Local;
        port.external_policy = TrafficPolicy::Local;
    }
    steps.push(("switch traffic policies to Local", state.clone()));

    for port in state.ports.iter_mut().skip(10).take(5) {
        port.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
    }
    steps.push(("turn on session affinity", state.clone()));

    for port in state.ports.iter_mut().skip(10).take(5) {
        port.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 120,
        };
    }
    steps.push(("change the affinity timeout", state.clone()));

    for port in &mut state.ports {
        port.families
            .retain(|f| f.family == kproxy_model::IpFamily::V4);
    }
    steps.push(("drop IPv6", state.clone()));

    for port in state.ports.iter_mut().take(8) {
        for family in &mut port.families {
            family.endpoints.cluster.clear();
            family.endpoints.local.clear();
            family.endpoints.any_usable = false;
        }
    }
    steps.push(("scale Services to zero", state.clone()));
    steps
}

#[test]
fn incremental_plans_converge_to_a_fresh_load_in_the_kernel() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let incremental = kproxy_testkit::NetNs::new("plan-incr");
    let fresh = kproxy_testkit::NetNs::new("plan-fresh");
    let mut applied: Option<Ruleset> = None;
    let mut stale = Vec::new();
    for (step, state) in steps() {
        let desired = rules(&state);
        let plan: Plan = plan(applied.as_ref(), &desired, &stale);
        incremental
            .load(&plan.to_string())
            .unwrap_or_else(|e| panic!("{step}: applying the plan failed: {e}\n{plan}"));
        stale = plan.stale_chains;

        fresh.run("nft", &["flush", "ruleset"]);
        fresh
            .load(&kproxy_compiler::render::nft::ruleset(&desired))
            .unwrap_or_else(|e| panic!("{step}: loading the full ruleset failed: {e}"));
        let got = listing::normalized_ruleset(&incremental, &stale);
        let want = listing::normalized_ruleset(&fresh, &[]);
        assert!(got == want, "{step}: the kernel differs from a fresh load\n--- incremental\n{got}\n--- fresh\n{want}");
        applied = Some(desired);
    }
}
