//! `kproxy apply` and `kproxy cleanup` against the real kernel, in throwaway namespaces (both
//! proxy modes; iptables mode's restores are tested in the syncer and the traffic suite).
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

    let case = support::cases("errors")
        .into_iter()
        .next()
        .expect("an error case under testdata/errors");
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

/// `kproxy apply` in one mode removes the other mode's rules; `cleanup` removes both.
#[test]
fn switching_modes_removes_the_other_modes_rules() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("apply-modes");
    let case = support::testdata().join("golden/mixed-cluster");
    let apply_in = |mode: &str| {
        let input = case.join("input.yaml");
        let mut args = vec!["apply", "-f", input.to_str().expect("UTF-8 path")];
        let flags = support::flags(&case);
        args.extend(flags.iter().map(String::as_str));
        args.extend(["--proxy-mode", mode]);
        expect_success(
            &node.run(env!("CARGO_BIN_EXE_kproxy"), &args),
            &format!("apply --proxy-mode {mode}"),
        )
    };
    // A fresh namespace has no rules in either backend, so kproxy picks nf_tables.
    let kube_chains = || {
        ["iptables-nft-save", "ip6tables-nft-save"]
            .iter()
            .map(|save| {
                stdout(&node.run(save, &[]))
                    .lines()
                    .filter(|l| l.starts_with(":KUBE-"))
                    .count()
            })
            .sum::<usize>()
    };
    let kproxy_tables = || {
        stdout(&node.run("nft", &["list", "tables"]))
            .lines()
            .filter(|l| l.ends_with(" kproxy"))
            .count()
    };

    let said = apply_in("iptables");
    assert!(said.contains("chains written"), "{said}");
    let chains = kube_chains();
    assert!(chains > 50, "{chains} KUBE- chains");
    assert_eq!(kproxy_tables(), 0);
    // A second apply rewrites in place: same chains, no duplicate jumps.
    let jumps = stdout(&node.run("iptables-nft-save", &[]))
        .lines()
        .filter(|l| l.contains("\"kproxy "))
        .count();
    apply_in("iptables");
    assert_eq!(kube_chains(), chains);
    let again = stdout(&node.run("iptables-nft-save", &[]))
        .lines()
        .filter(|l| l.contains("\"kproxy "))
        .count();
    assert_eq!(again, jumps);

    let said = apply_in("nftables");
    assert!(
        said.contains(&format!("and {chains} chains of iptables mode")),
        "{said}"
    );
    assert_eq!(kube_chains(), 0);
    assert_eq!(kproxy_tables(), 2);

    apply_in("iptables");
    assert_eq!(kproxy_tables(), 0);
    expect_success(
        &node.run(env!("CARGO_BIN_EXE_kproxy"), &["cleanup"]),
        "cleanup",
    );
    assert_eq!(kube_chains(), 0);
    assert_eq!(kproxy_tables(), 0);
}

/// Inserts a conntrack entry `client → service`, answered by `reply` (the DNAT target).
fn insert_flow(ns: &NetNs, proto: &str, client: &str, service: &str, reply: &str) {
    let (client_ip, client_port) = client.split_once(':').expect("ip:port");
    let (service_ip, service_port) = service.split_once(':').expect("ip:port");
    let (reply_ip, reply_port) = reply.split_once(':').expect("ip:port");
    let mut args = vec![
        "-I",
        "-p",
        proto,
        "-t",
        "120",
        "-s",
        client_ip,
        "-d",
        service_ip,
        "--sport",
        client_port,
        "--dport",
        service_port,
        "-r",
        reply_ip,
        "-q",
        client_ip,
        "--reply-port-src",
        reply_port,
        "--reply-port-dst",
        client_port,
    ];
    if proto == "tcp" {
        args.extend(["--state", "ESTABLISHED"]);
    }
    let out = ns.run("conntrack", &args);
    assert!(
        out.status.success(),
        "conntrack -I: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn apply_deletes_udp_flows_to_endpoints_that_no_longer_serve() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("apply-ct");
    let case = support::testdata().join("golden/udp-dns");
    expect_success(&apply(&node, &case), "apply");
    // 10.244.1.2 serves kube-dns; 10.244.7.7 used to.
    insert_flow(
        &node,
        "udp",
        "10.244.1.9:40001",
        "10.96.0.10:53",
        "10.244.7.7:53",
    );
    insert_flow(
        &node,
        "udp",
        "10.244.1.9:40002",
        "10.96.0.10:53",
        "10.244.1.2:53",
    );
    insert_flow(
        &node,
        "tcp",
        "10.244.1.9:40003",
        "10.96.0.10:53",
        "10.244.7.7:53",
    );
    insert_flow(
        &node,
        "udp",
        "10.244.1.9:40004",
        "10.96.9.9:53",
        "10.244.7.7:53",
    );

    let out = expect_success(&apply(&node, &case), "second apply");
    assert!(
        out.contains("; 1 stale conntrack entries deleted"),
        "exactly the stale UDP flow is deleted: {out}"
    );
    let listed = expect_success(&node.run("conntrack", &["-L"]), "conntrack -L");
    for kept in ["sport=40002", "sport=40003", "sport=40004"] {
        assert!(listed.contains(kept), "{kept} must be kept:\n{listed}");
    }
    assert!(
        !listed.contains("sport=40001"),
        "the flow to the dead endpoint must be gone:\n{listed}"
    );
}

/// Taking over a node from kube-proxy's nftables mode: its tables stay unless
/// `--cleanup-kube-proxy` is given, to `apply` or to `cleanup`; other tables always stay.
#[test]
fn cleanup_kube_proxy_deletes_kube_proxys_nftables_tables_and_nothing_else() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let node = NetNs::new("apply-kp");
    let kube_proxy = "table ip kube-proxy {\n chain services {\n  type nat hook prerouting priority dstnat; policy accept;\n }\n}\n\
                      table ip6 kube-proxy {\n chain services {\n  type nat hook prerouting priority dstnat; policy accept;\n }\n}\n\
                      table inet other {\n chain c {\n }\n}\n";
    let tables = |ns: &NetNs| {
        let out = expect_success(&ns.run("nft", &["list", "tables"]), "nft list tables");
        let mut tables: Vec<String> = out.lines().map(str::to_string).collect();
        tables.sort();
        tables
    };
    node.load(kube_proxy).expect("kube-proxy's tables load");
    let case = support::testdata().join("golden/clusterip-basic");
    expect_success(&apply(&node, &case), "apply");
    assert_eq!(
        tables(&node),
        [
            "table inet other",
            "table ip kproxy",
            "table ip kube-proxy",
            "table ip6 kube-proxy"
        ],
        "without the flag kube-proxy's tables stay"
    );

    let input = case.join("input.yaml");
    let mut args = vec!["apply", "-f", input.to_str().expect("UTF-8 path")];
    let flags = support::flags(&case);
    args.extend(flags.iter().map(String::as_str));
    args.push("--cleanup-kube-proxy");
    expect_success(
        &node.run(env!("CARGO_BIN_EXE_kproxy"), &args),
        "apply --cleanup-kube-proxy",
    );
    assert_eq!(tables(&node), ["table inet other", "table ip kproxy"]);

    node.load(kube_proxy)
        .expect("kube-proxy's tables load again");
    expect_success(
        &node.run(
            env!("CARGO_BIN_EXE_kproxy"),
            &["cleanup", "--cleanup-kube-proxy"],
        ),
        "cleanup --cleanup-kube-proxy",
    );
    assert_eq!(tables(&node), ["table inet other"]);
}
