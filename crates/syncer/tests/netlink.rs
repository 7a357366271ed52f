//! The syncer against the real kernel, over netlink, in throwaway network namespaces.
//!
//! Each test runs the [`Syncer`] on a thread inside its own namespace and compares what the
//! kernel lists with a fresh `nft -f` load of the same ruleset in another namespace.

mod support;

use kproxy_compiler::ir::{Chain, Rule, Ruleset, Verdict};
use kproxy_compiler::{Incremental, PortChange};
use kproxy_model::ProxyState;
use kproxy_syncer::{Operation, SyncError, Syncer};
use kproxy_testkit::NetNs;
use support::listing::normalized_ruleset;
use support::{add_endpoint, options, rules, steps};

/// The desired ruleset loaded with `nft -f` into a clean namespace, listed.
fn fresh_listing(fresh: &NetNs, desired: &Ruleset) -> String {
    fresh.run("nft", &["flush", "ruleset"]);
    fresh
        .load(&kproxy_compiler::render::nft::ruleset(desired))
        .unwrap_or_else(|e| panic!("loading the full ruleset with nft failed: {e}"));
    normalized_ruleset(fresh, &[])
}

#[test]
fn incremental_syncs_converge_to_a_fresh_load() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("sync-incr");
    let fresh = NetNs::new("sync-fresh");
    let mut syncer = node.exec(|| Syncer::adopt().expect("reading an empty kernel"));
    for (step, state) in steps() {
        let desired = rules(&state);
        let report = node
            .exec(|| syncer.sync(desired.clone()))
            .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert!(report.operations > 0, "{step}: nothing was sent");
        assert_kernel_is(&node, &fresh, &desired, step);
    }
}

/// The kernel of `node` holds `desired`: read back, it plans nothing but the deletion of
/// chains flushed last time, and it lists as a fresh `nft -f` of `desired` in `fresh` does.
fn assert_kernel_is(node: &NetNs, fresh: &NetNs, desired: &Ruleset, step: &str) {
    let stale: Vec<_> = node.exec(|| {
        let adopted = Syncer::adopt().expect("reading the kernel back");
        adopted
            .plan(desired)
            .operations
            .into_iter()
            .map(|op| match op {
                Operation::DeleteChain(family, chain) => (family, chain),
                other => {
                    panic!("{step}: reading the kernel back differs from the ruleset: {other}")
                }
            })
            .collect()
    });
    let got = normalized_ruleset(node, &stale);
    let want = fresh_listing(fresh, desired);
    assert!(
        got == want,
        "{step}: the kernel differs from a fresh load\n--- synced\n{got}\n--- fresh\n{want}"
    );
}

/// The port changes from `old` to `new`: removed names, and every port of `new` (unchanged
/// ones cost the incremental compiler one comparison).
fn port_changes(old: &ProxyState, new: &ProxyState) -> Vec<PortChange> {
    let removed = old
        .ports
        .iter()
        .filter(|p| !new.ports.iter().any(|n| n.name == p.name))
        .map(|p| PortChange::Remove(p.name.clone()));
    removed
        .chain(new.ports.iter().cloned().map(PortChange::Set))
        .collect()
}

#[test]
fn partial_syncs_converge_to_a_fresh_load() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("sync-part");
    let fresh = NetNs::new("sync-pfresh");
    let mut steps = steps().into_iter();
    let (_, first) = steps.next().expect("a first state");
    let mut incremental = Incremental::new(&first, &options());
    let mut syncer = Syncer::default();
    assert!(
        matches!(
            node.exec(|| syncer.sync_change(&Default::default())),
            Err(SyncError::OutOfStep)
        ),
        "a partial sync before any full one is refused"
    );
    node.exec(|| syncer.sync(incremental.ruleset()))
        .expect("the first, full sync");
    let mut previous = first;
    let mut partial = 0;
    for (step, state) in steps {
        let report = match incremental.update(port_changes(&previous, &state)) {
            Some(change) => {
                partial += 1;
                node.exec(|| syncer.sync_change(&change))
            }
            None => node.exec(|| syncer.sync(incremental.ruleset())),
        }
        .unwrap_or_else(|e| panic!("{step}: {e}"));
        assert!(report.operations > 0, "{step}: nothing was sent");
        assert_kernel_is(&node, &fresh, &rules(&state), step);
        previous = state;
    }
    // Every step is partial: even without IPv6 Services the ip6 table stays, for the IPv6
    // cluster CIDR.
    assert_eq!(partial, 9);
}

#[test]
fn one_endpoint_is_two_element_messages_in_a_partial_sync_at_any_size() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let mut sent = Vec::new();
    for services in [100, 2000] {
        let node = NetNs::new("sync-pendpoint");
        let mut state = kproxy_synthetic::cluster(services, 10);
        let mut incremental = Incremental::new(&state, &options());
        let mut syncer = Syncer::default();
        node.exec(|| syncer.sync(incremental.ruleset()))
            .expect("cold sync");
        let before = state.clone();
        add_endpoint(&mut state);
        let change = incremental
            .update(port_changes(&before, &state))
            .expect("a partial change");
        let report = node
            .exec(|| syncer.sync_change(&change))
            .expect("endpoint sync");
        sent.push((report.operations, report.applied.messages));
    }
    assert_eq!(sent, [(2, 2), (2, 2)]);
}

#[test]
fn one_endpoint_is_two_element_messages_at_any_cluster_size() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let mut sent = Vec::new();
    for services in [100, 1000] {
        let node = NetNs::new("sync-endpoint");
        let mut state = kproxy_synthetic::cluster(services, 10);
        let mut syncer = Syncer::default();
        node.exec(|| syncer.sync(rules(&state))).expect("cold sync");
        add_endpoint(&mut state);
        let report = node
            .exec(|| syncer.sync(rules(&state)))
            .expect("endpoint sync");
        sent.push((report.operations, report.applied.messages));
    }
    // Delete the Service's old ranges and add the new ones: one element message each, no rule.
    assert_eq!(sent, [(2, 2), (2, 2)]);
}

#[test]
fn a_rejected_transaction_leaves_the_rules_untouched() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("sync-reject");
    let state = kproxy_synthetic::cluster(30, 3);
    let good = rules(&state);
    let mut syncer = Syncer::default();
    node.exec(|| syncer.sync(good.clone())).expect("first sync");
    let before = node.run("nft", &["list", "ruleset"]).stdout;

    // A rule that jumps to a chain that does not exist, after many valid changes.
    let mut bad = rules(&kproxy_synthetic::cluster(40, 4));
    bad.tables[0].chains.push(Chain {
        name: "broken".to_string(),
        hook: None,
        comment: None,
        rules: vec![Rule::verdict(Verdict::Jump("no-such-chain".to_string()))],
    });
    let error = node
        .exec(|| syncer.sync(bad.clone()))
        .expect_err("the kernel must refuse a jump to a missing chain");
    let message = error.to_string();
    assert!(
        matches!(error, SyncError::Apply(_)) && message.contains("jump no-such-chain"),
        "the error names the failing rule: {message}"
    );
    let after = node.run("nft", &["list", "ruleset"]).stdout;
    assert!(
        before == after,
        "the ruleset changed after a rejected transaction"
    );

    // The next sync reads the kernel back and succeeds.
    let report = node
        .exec(|| syncer.sync(good.clone()))
        .expect("recovery sync");
    assert!(report.full, "a sync after a failure reads the kernel back");
    assert_eq!(
        report.operations, 0,
        "the kernel still holds the good rules"
    );
}

#[test]
fn a_full_resync_repairs_drift() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("sync-drift");
    let fresh = NetNs::new("sync-drift-fresh");
    let desired = rules(&kproxy_synthetic::cluster(30, 3));
    let want = fresh_listing(&fresh, &desired);
    let mut syncer = Syncer::default();
    node.exec(|| syncer.sync(desired.clone()))
        .expect("first sync");

    // Someone empties a chain and deletes a dispatch element: the diff repairs both.
    let flush = node.run("nft", &["flush", "chain", "ip", "kproxy", "services"]);
    assert!(flush.status.success());
    node.exec(|| syncer.resync());
    let report = node.exec(|| syncer.sync(desired.clone())).expect("resync");
    assert!(report.full && report.operations > 0);
    assert_eq!(normalized_ruleset(&node, &[]), want);

    // Someone adds a rule kproxy never writes: the table is replaced whole, atomically.
    let add = node.run(
        "nft",
        &["add", "rule", "ip", "kproxy", "services", "counter"],
    );
    assert!(add.status.success());
    node.exec(|| syncer.resync());
    node.exec(|| syncer.sync(desired.clone())).expect("resync");
    assert_eq!(normalized_ruleset(&node, &[]), want);
}

#[test]
fn adopting_a_table_keeps_session_affinity_state() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("sync-adopt");
    let mut state = kproxy_synthetic::cluster(20, 2);
    for port in state.ports.iter_mut().take(3) {
        port.affinity = kproxy_model::SessionAffinity::ClientIp {
            timeout_seconds: 600,
        };
    }
    let desired = rules(&state);
    let affinity_set = desired.tables[0]
        .sets
        .iter()
        .find(|s| s.timeout.is_some())
        .map(|s| s.name.clone())
        .expect("an affinity set");
    node.exec(|| Syncer::default().sync(desired.clone()))
        .expect("first run");
    let add = node.run(
        "nft",
        &[
            "add",
            "element",
            "ip",
            "kproxy",
            &affinity_set,
            "{ 10.9.9.9 . 1 . 2 }",
        ],
    );
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    // A restarted kproxy adopts the table: nothing to send, the client stays pinned.
    let report = node
        .exec(|| Syncer::adopt().and_then(|mut s| s.sync(desired.clone())))
        .expect("second run");
    assert_eq!(report.operations, 0);
    let listed = node.run("nft", &["list", "set", "ip", "kproxy", &affinity_set]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("10.9.9.9"),
        "the affinity entry survived the restart"
    );
}
