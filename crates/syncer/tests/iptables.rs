//! iptables mode against the real kernel, in throwaway namespaces: full and partial restores
//! leave exactly the compiled chains, an endpoint change rewrites only its Service's chains,
//! and cleanup removes kproxy's rules but not kube-proxy's.

mod support;

use std::collections::BTreeMap;

use kproxy_compiler::iptables::ir::{Ruleset, TableName};
use kproxy_compiler::iptables::{compile, naming};
use kproxy_model::{IpFamily, ProxyState};
use kproxy_syncer::iptables::{cleanup, IptablesSyncer, SavedTable, Tools, Variant};
use kproxy_testkit::NetNs;

const TABLES: [TableName; 3] = [TableName::Nat, TableName::Filter, TableName::Mangle];

fn rules(state: &ProxyState) -> Ruleset {
    compile(state, &support::options())
}

/// Backends this host has, each tested on its own.
fn variants() -> Vec<Tools> {
    [Variant::Nft, Variant::Legacy]
        .into_iter()
        .map(|variant| Tools { variant })
        .filter(|tools| {
            std::process::Command::new(tools.program(IpFamily::V4, "-save"))
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect()
}

/// The kernel's kproxy chains, per family and table: chain → rules (as iptables-save prints
/// them, so two states compare by what the kernel holds).
type Listing = BTreeMap<(IpFamily, TableName), BTreeMap<String, Vec<Vec<String>>>>;

fn listing(tools: Tools) -> Listing {
    let mut out = Listing::new();
    for family in IpFamily::ALL {
        for table in TABLES {
            let saved = SavedTable::parse(&tools.save(family, table).expect("iptables-save"));
            let mut chains: BTreeMap<String, Vec<Vec<String>>> = saved
                .chains
                .iter()
                .filter(|c| naming::is_kproxy_chain(c))
                .map(|c| (c.clone(), Vec::new()))
                .collect();
            for (chain, args) in saved.user_rules {
                if let Some(rules) = chains.get_mut(&chain) {
                    rules.push(args);
                }
            }
            out.insert((family, table), chains);
        }
    }
    out
}

/// What a fresh namespace holds after a full restore of `rules`.
fn fresh_listing(tools: Tools, rules: &Ruleset) -> Listing {
    let ns = NetNs::new("ipt-fresh");
    ns.exec(|| {
        IptablesSyncer::new(tools).sync(rules).expect("full sync");
        listing(tools)
    })
}

/// The shared steps, plus two that only a partial restore's skipping can tell apart: the
/// same rules again, and a change in IPv6 alone.
fn steps() -> Vec<(&'static str, ProxyState)> {
    let mut steps = support::steps();
    let at = steps
        .iter()
        .position(|(step, _)| *step == "add it back")
        .expect("the shared steps add a Service port back")
        + 1;
    let mut state = steps[at - 1].1.clone();
    let mut extra = vec![("nothing changes", state.clone())];
    let v6 = state
        .ports
        .iter_mut()
        .flat_map(|p| &mut p.families)
        .find(|f| f.family == IpFamily::V6 && f.endpoints.cluster.len() > 1)
        .expect("an IPv6 Service port with two endpoints");
    v6.endpoints.cluster.pop();
    extra.push(("remove an IPv6 endpoint", state));
    steps.splice(at..at, extra);
    steps
}

/// A series of partial syncs leaves exactly what a full restore of the final rules leaves
/// (the kproxy chains' rules as `iptables-save` prints them, counters ignored), and each
/// runs a restore only for a family that changed.
#[test]
fn partial_restores_converge_to_what_a_full_restore_leaves() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    for tools in variants() {
        let ns = NetNs::new("ipt-steps");
        let mut syncer = IptablesSyncer::new(tools);
        let mut first = true;
        for (step, state) in steps() {
            let desired = rules(&state);
            let report = ns.exec(|| syncer.sync(&desired)).unwrap_or_else(|e| {
                panic!("{:?}: sync '{step}': {e}", tools.variant);
            });
            assert!(report.families.iter().all(|f| f.full == first), "{step}");
            let restored: Vec<IpFamily> = report.families.iter().map(|f| f.family).collect();
            match step {
                "nothing changes" => assert!(restored.is_empty(), "{step}: {restored:?}"),
                "remove an IPv6 endpoint" => assert_eq!(restored, [IpFamily::V6], "{step}"),
                _ => {}
            }
            for family in report.families.iter().filter(|f| !f.full) {
                assert!(!family.written.is_empty() || !family.deleted.is_empty());
            }
            first = false;
            let got = ns.exec(|| listing(tools));
            assert_eq!(
                got,
                fresh_listing(tools, &desired),
                "{:?}: after '{step}' the kernel differs from a full restore",
                tools.variant
            );
        }
    }
}

/// The requirement, against the kernel: an endpoint change restores only that
/// Service's chains, in the nat table alone, and no other family at all.
#[test]
fn an_endpoint_change_restores_only_that_services_chains() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let tools = Tools::detect();
    let ns = NetNs::new("ipt-partial");
    let before = kproxy_synthetic::cluster(200, 3);
    let mut after = before.clone();
    support::add_endpoint(&mut after);
    let changed = after
        .ports
        .iter()
        .zip(&before.ports)
        .find(|(a, b)| a != b)
        .map(|(a, _)| a.name.clone())
        .expect("one port changed");
    let svc = naming::cluster_chain(&changed);
    let mut syncer = IptablesSyncer::new(tools);
    ns.exec(|| syncer.sync(&rules(&before)))
        .expect("first sync");
    let report = ns
        .exec(|| syncer.sync(&rules(&after)))
        .expect("second sync");
    let [v4] = report.families.as_slice() else {
        panic!("IPv6 did not change, yet it was restored: {report:#?}");
    };
    assert_eq!(v4.family, IpFamily::V4);
    assert!(!v4.full);
    let new_sep = naming::endpoint_chain(&changed, "10.127.0.1:8080".parse().unwrap());
    assert_eq!(v4.written, [format!("nat/{svc}"), format!("nat/{new_sep}")]);
    assert!(v4.deleted.is_empty());
    let declared: Vec<&str> = v4.input.lines().filter(|l| l.starts_with(':')).collect();
    assert_eq!(declared.len(), 2, "{declared:#?}");
    let tables: Vec<&str> = v4.input.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(tables, ["*nat"]);
}

fn run(ns: &NetNs, program: &str, args: &[&str]) {
    let out = ns.run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn cleanup_removes_kproxys_rules_and_keeps_kube_proxys_unless_asked() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let tools = Tools::detect();
    let iptables = tools.program(IpFamily::V4, "");
    let ns = NetNs::new("ipt-cleanup");
    let desired = rules(&kproxy_synthetic::cluster(30, 2));
    ns.exec(|| IptablesSyncer::new(tools).sync(&desired))
        .expect("sync");
    // A second full sync (a restart) must not duplicate the built-in chain jumps.
    ns.exec(|| IptablesSyncer::new(tools).sync(&desired))
        .expect("second sync");
    let jumps = |ns: &NetNs| {
        ns.exec(|| {
            TABLES
                .iter()
                .map(|&t| {
                    SavedTable::parse(&tools.save(IpFamily::V4, t).unwrap())
                        .builtin_rules
                        .len()
                })
                .sum::<usize>()
        })
    };
    let hooks = desired.families[0].hooks.len();
    assert_eq!(jumps(&ns), hooks);

    // kube-proxy's own jump to the same chain keeps the chains alive.
    run(
        &ns,
        &iptables,
        &[
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-m",
            "comment",
            "--comment",
            "kubernetes service portals",
            "-j",
            "KUBE-SERVICES",
        ],
    );
    let report = ns.exec(|| cleanup(tools, false)).expect("cleanup");
    assert_eq!(report.hooks_deleted, 2 * hooks, "both families");
    assert_eq!(report.kept_for_kube_proxy, ["IPv4/nat"]);
    let left = ns.exec(|| listing(tools));
    assert!(left[&(IpFamily::V4, TableName::Nat)].contains_key("KUBE-SERVICES"));
    assert!(left[&(IpFamily::V4, TableName::Filter)].is_empty());
    assert!(left[&(IpFamily::V6, TableName::Nat)].is_empty());

    let report = ns
        .exec(|| cleanup(tools, true))
        .expect("cleanup --cleanup-kube-proxy");
    assert_eq!(report.hooks_deleted, 1);
    assert!(report.kept_for_kube_proxy.is_empty());
    let left = ns.exec(|| listing(tools));
    assert!(left.values().all(BTreeMap::is_empty), "{left:#?}");
    assert_eq!(jumps(&ns), 0);
}

/// `may_hold_rules` is false in a namespace no iptables backend has used, even with kproxy's
/// nftables table there, and true once either backend has a table.
#[test]
fn may_hold_rules_sees_either_backends_tables_and_nothing_else() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("ipt-may");
    ns.load("table ip kproxy {\n chain c {\n }\n}\n")
        .expect("a kproxy table loads");
    assert!(
        !ns.exec(kproxy_syncer::iptables::may_hold_rules),
        "a fresh namespace holds no iptables rules"
    );
    for tools in variants() {
        let ns = NetNs::new("ipt-may");
        let program = tools.program(IpFamily::V4, "");
        run(&ns, &program, &["-t", "nat", "-N", "KUBE-SERVICES"]);
        assert!(
            ns.exec(kproxy_syncer::iptables::may_hold_rules),
            "{program} made a table"
        );
    }
}
