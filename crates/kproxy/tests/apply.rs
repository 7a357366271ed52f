//! `kproxy apply` and `kproxy cleanup` against the real kernel, in throwaway namespaces.
//!
//! The netlink encoder and the text renderer must agree exactly: every golden case applied
//! over netlink lists the same as its golden file loaded with `nft -f`.

use std::path::Path;
use std::process::Output;

use kproxy_testkit::listing::normalized_ruleset;
use kproxy_testkit::NetNs;

use crate::support;

/// Runs `kproxy apply -f <case>/input.yaml <flags>` inside `ns`.
fn apply(ns: &NetNs, case: &Path) -> Output {
    let input = case.join("input.yaml");
    let mut args = vec!["apply", "-f", input.to_str().expect("UTF-8 path")];
    let flags = support::flags(case);
    args.extend(flags.iter().map(String::as_str));
    ns.run(env!("CARGO_BIN_EXE_kproxy"), &args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn expect_success(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// The golden ruleset loaded with `nft -f` into `ns` (emptied first), listed.
fn golden_listing(ns: &NetNs, case: &Path) -> String {
    ns.run("nft", &["flush", "ruleset"]);
    let text = std::fs::read_to_string(case.join("expected.nft")).expect("golden file");
    ns.load(&text)
        .unwrap_or_else(|e| panic!("{}: nft -f: {e}", support::name(case)));
    normalized_ruleset(ns, &[])
}

#[test]
fn every_golden_case_applies_over_netlink_exactly_as_nft_loads_it() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let reference = NetNs::new("apply-ref");
    let mut failures = Vec::new();
    for case in support::cases("golden") {
        let name = support::name(&case);
        let node = NetNs::new("apply-golden");
        let first = expect_success(&apply(&node, &case), &format!("{name}: apply"));
        let got = normalized_ruleset(&node, &[]);
        let want = golden_listing(&reference, &case);
        if got != want {
            failures.push(format!(
                "{name}: netlink and nft -f differ\n--- apply\n{got}\n--- nft -f\n{want}"
            ));
            continue;
        }
        // Reading the kernel back gives exactly what was applied: nothing left to send.
        let second = expect_success(&apply(&node, &case), &format!("{name}: second apply"));
        if !second.contains(": 0 operations") {
            failures.push(format!(
                "{name}: a second apply was not empty\nfirst: {first}second: {second}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn apply_converges_from_one_input_to_the_next() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("apply-conv");
    let reference = NetNs::new("apply-conv-ref");
    // A walk that adds and removes Services, families, policies and affinity.
    let walk = [
        "clusterip-basic",
        "mixed-cluster",
        "dual-stack",
        "session-affinity",
        "ipv6-only",
        "loadbalancer-source-ranges",
        "etp-local",
        "clusterip-no-endpoints",
        "mixed-cluster",
    ];
    for name in walk {
        let case = support::testdata().join("golden").join(name);
        expect_success(&apply(&node, &case), name);
        // The second run deletes the chains the first one emptied.
        let second = expect_success(&apply(&node, &case), name);
        let third = expect_success(&apply(&node, &case), name);
        assert!(
            third.contains(": 0 operations"),
            "{name}: not converged after two runs: {second}{third}"
        );
        assert_eq!(
            normalized_ruleset(&node, &[]),
            golden_listing(&reference, &case),
            "{name}: differs from a fresh load"
        );
    }
}

#[test]
fn bad_input_leaves_the_rules_in_force_and_cleanup_removes_them() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("apply-bad");
    let good = support::testdata().join("golden/dual-stack");
    expect_success(&apply(&node, &good), "apply");
    let before = node.run("nft", &["list", "ruleset"]).stdout;

    let bad = support::testdata().join("errors");
    let case = support::cases("errors")
        .into_iter()
        .next()
        .unwrap_or_else(|| bad.join("missing"));
    let out = apply(&node, &case);
    assert!(!out.status.success(), "bad input must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("error:"),
        "the failure is explained"
    );
    assert_eq!(node.run("nft", &["list", "ruleset"]).stdout, before);

    let out = node.run(env!("CARGO_BIN_EXE_kproxy"), &["cleanup"]);
    expect_success(&out, "cleanup");
    let listed = expect_success(&node.run("nft", &["list", "ruleset"]), "nft list");
    assert!(
        listed.trim().is_empty(),
        "tables left after cleanup: {listed}"
    );
    // Cleaning an empty kernel is not an error.
    expect_success(
        &node.run(env!("CARGO_BIN_EXE_kproxy"), &["cleanup"]),
        "second cleanup",
    );
}
