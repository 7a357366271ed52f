//! Plans: minimal for small changes. (`netlink.rs` checks them against the kernel.)

mod support;

use kproxy_syncer::{plan, Object, Operation};
use support::{add_endpoint, plain, rules};

#[test]
fn an_unchanged_state_needs_no_operations() {
    let state = kproxy_synthetic::cluster(200, 5);
    let applied = rules(&state);
    assert!(plan(Some(&applied), &rules(&state), &[]).is_empty());
}

#[test]
fn one_endpoint_rewrites_only_map_elements_at_any_cluster_size() {
    let mut counts = Vec::new();
    for services in [100, 1000] {
        let mut state = kproxy_synthetic::cluster(services, 10);
        let before = rules(&state);
        add_endpoint(&mut state);
        let after = rules(&state);
        let plan = plan(Some(&before), &after, &[]);
        // The Service's ranges in its endpoint map are replaced; no rule changes, so the kernel
        // has no table to re-validate.
        assert!(
            matches!(
                plan.operations.as_slice(),
                [
                    Operation::DeleteEndpoints(_, old_map, old),
                    Operation::AddEndpoints(_, new_map, new),
                ] if old_map == new_map && new.len() == old.len() + 1
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
        count(|o| matches!(o, Operation::Add(_, Object::Chain(_)))),
        chains
    );
    assert_eq!(
        count(|o| matches!(o, Operation::FlushChain(..) | Operation::DeleteChain(..))),
        0
    );
}

#[test]
fn a_cold_start_fills_endpoint_maps_after_the_rules_that_read_them() {
    // Adding a rule that reads a map makes the kernel walk the map's elements; an empty map
    // makes that walk free.
    let state = kproxy_synthetic::cluster(50, 3);
    let desired = rules(&state);
    let plan = plan(None, &desired, &[]);
    let ops = &plan.operations;
    let last_rule = ops
        .iter()
        .rposition(|o| matches!(o, Operation::AddRule(..)))
        .expect("rules");
    let mut created = 0;
    for (at, op) in ops.iter().enumerate() {
        match op {
            Operation::Add(_, Object::EndpointMap(map)) => {
                assert!(
                    map.elements.is_empty(),
                    "{} created with its ranges",
                    map.name
                );
                assert!(at < last_rule);
                created += 1;
            }
            Operation::AddEndpoints(_, map, ranges) => {
                assert!(at > last_rule, "ranges of {map} before a rule");
                assert!(!ranges.is_empty());
            }
            _ => {}
        }
    }
    assert!(created > 0);
    let filled = ops
        .iter()
        .filter(|o| matches!(o, Operation::AddEndpoints(..)))
        .count();
    assert_eq!(filled, created, "one element operation per map");
}

#[test]
fn a_cold_start_creates_the_most_named_sets_first() {
    // The kernel finds the set a rule names by walking the table's sets in creation order:
    // the affinity set (two references per affinity endpoint rule) comes first, then the
    // endpoint maps (one per DNAT rule), then the sets and maps few rules name.
    let state = kproxy_synthetic::cluster(200, 3);
    let desired = rules(&state);
    let plan = plan(None, &desired, &[]);
    let mut families = std::collections::BTreeMap::new();
    for op in &plan.operations {
        if let Operation::Add(family, object) = op {
            let rank = match object {
                Object::Set(set) if set.timeout.is_some() => 0,
                Object::EndpointMap(_) => 1,
                Object::Set(_) | Object::Map(_) => 2,
                Object::Chain(_) => continue,
            };
            families.entry(*family).or_insert_with(Vec::new).push(rank);
        }
    }
    assert_eq!(families.len(), 2, "both families have tables");
    for (family, ranks) in families {
        assert_eq!(ranks.iter().filter(|r| **r == 0).count(), 1, "{family:?}");
        assert!(
            ranks.contains(&1) && ranks.contains(&2),
            "{family:?}: {ranks:?}"
        );
        assert!(ranks.is_sorted(), "{family:?} creation order: {ranks:?}");
    }
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
