//! Unit tests of iptables mode on hand-built states and synthetic clusters.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use kproxy_model::{
    Endpoint, EndpointSets, FamilyPort, IpFamily, NodeInfo, Protocol, ProxyState, ServicePort,
    ServicePortName, SessionAffinity, TrafficPolicy,
};

use super::ir::{ChainKind, FamilyRules, Match, RejectWith, TableName, Target};
use super::render::rule_line;
use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn ep(addr: &str, local: bool) -> Endpoint {
    Endpoint {
        addr: ip(addr),
        port: 8080,
        local,
    }
}

fn port(name: &str, cluster_ip: &str, endpoints: Vec<Endpoint>) -> ServicePort {
    let local = endpoints.iter().filter(|e| e.local).copied().collect();
    ServicePort {
        name: ServicePortName {
            namespace: "default".into(),
            service: name.into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        port: 80,
        node_port: None,
        health_check_node_port: None,
        internal_policy: TrafficPolicy::Cluster,
        external_policy: TrafficPolicy::Cluster,
        affinity: SessionAffinity::None,
        families: vec![FamilyPort {
            family: IpFamily::V4,
            cluster_ip: ip(cluster_ip),
            outside: None,
            endpoints: EndpointSets {
                any_usable: !endpoints.is_empty(),
                cluster: endpoints,
                local,
            },
        }],
    }
}

fn state(ports: Vec<ServicePort>) -> ProxyState {
    ProxyState {
        node: NodeInfo {
            name: "node-a".into(),
            zone: None,
            primary_ips: vec![ip("192.168.0.2")],
            seen: true,
        },
        ports,
    }
}

fn options() -> Options {
    Options {
        cluster_cidrs: vec!["10.244.0.0/16".parse().expect("a CIDR")],
        ..Options::default()
    }
}

fn v4(state: &ProxyState, options: &Options) -> FamilyRules {
    compile_family(state, options, IpFamily::V4)
}

/// The rules of `table/chain` as restore lines.
fn lines(rules: &FamilyRules, table: TableName, chain: &str) -> Vec<String> {
    rules
        .table(table)
        .and_then(|t| t.chain(chain))
        .unwrap_or_else(|| panic!("no chain {chain}"))
        .rules
        .iter()
        .map(|r| rule_line(chain, r))
        .collect()
}

fn port_name(service: &str) -> ServicePortName {
    ServicePortName {
        namespace: "default".into(),
        service: service.into(),
        port: "http".into(),
        protocol: Protocol::Tcp,
    }
}

#[test]
fn clusterip_picks_each_endpoint_with_kube_proxys_cascade() {
    let eps = vec![
        ep("10.244.1.1", true),
        ep("10.244.2.1", false),
        ep("10.244.3.1", false),
    ];
    let rules = v4(&state(vec![port("web", "10.96.0.10", eps)]), &options());
    let name = port_name("web");
    let svc = naming::cluster_chain(&name);
    assert_eq!(
        lines(&rules, TableName::Nat, naming::SERVICES)[0],
        format!("-A KUBE-SERVICES -m comment --comment \"default/web:http cluster IP\" -d 10.96.0.10 -m tcp -p tcp --dport 80 -j {svc}")
    );
    let sep = |a: &str| naming::endpoint_chain(&name, format!("{a}:8080").parse().unwrap());
    assert_eq!(
        lines(&rules, TableName::Nat, &svc),
        [
            format!("-A {svc} -m comment --comment \"default/web:http cluster IP\" -d 10.96.0.10 -m tcp -p tcp --dport 80 ! -s 10.244.0.0/16 -j KUBE-MARK-MASQ"),
            format!("-A {svc} -m comment --comment \"default/web:http -> 10.244.1.1:8080\" -m statistic --mode random --probability 0.3333333333 -j {}", sep("10.244.1.1")),
            format!("-A {svc} -m comment --comment \"default/web:http -> 10.244.2.1:8080\" -m statistic --mode random --probability 0.5000000000 -j {}", sep("10.244.2.1")),
            format!("-A {svc} -m comment --comment \"default/web:http -> 10.244.3.1:8080\" -j {}", sep("10.244.3.1")),
        ]
    );
    let first = sep("10.244.1.1");
    assert_eq!(
        lines(&rules, TableName::Nat, &first),
        [
            format!("-A {first} -m comment --comment default/web:http -s 10.244.1.1 -j KUBE-MARK-MASQ"),
            format!("-A {first} -m comment --comment default/web:http -m tcp -p tcp -j DNAT --to-destination 10.244.1.1:8080"),
        ]
    );
    // Undefined ports of the ClusterIP are rejected after the Service's own rules.
    let filter = lines(&rules, TableName::Filter, naming::SERVICES);
    assert_eq!(filter.len(), 2, "{filter:#?}");
    assert!(filter[0].ends_with("-d 10.96.0.10 -m tcp -p tcp -j REJECT --reject-with tcp-reset"));
    assert!(filter[1].ends_with("-d 10.96.0.10 -j REJECT"));
}

#[test]
fn a_port_without_endpoints_is_only_rejected() {
    let mut empty = port("empty", "10.96.0.30", Vec::new());
    empty.node_port = Some(30030);
    empty.name.protocol = Protocol::Udp;
    let rules = v4(&state(vec![empty]), &options());
    let nat = rules.table(TableName::Nat).unwrap();
    assert!(
        nat.chains.iter().all(|c| c.kind == ChainKind::TopLevel),
        "no per-Service chain: {:?}",
        nat.chains.iter().map(|c| &c.name).collect::<Vec<_>>()
    );
    assert!(lines(&rules, TableName::Nat, naming::SERVICES)
        .iter()
        .all(|l| l.contains("KUBE-NODEPORTS")));
    let filter = rules.table(TableName::Filter).unwrap();
    let first = &filter.chain(naming::SERVICES).unwrap().rules[0];
    assert_eq!(first.target, Target::Reject(RejectWith::PortUnreachable));
    assert_eq!(
        lines(&rules, TableName::Filter, naming::NODEPORTS),
        ["-A KUBE-NODEPORTS -m comment --comment \"default/empty:http has no endpoints\" -m udp -p udp --dport 30030 -j REJECT"]
    );
    assert_eq!(
        lines(&rules, TableName::Filter, naming::EXTERNAL_SERVICES),
        ["-A KUBE-EXTERNAL-SERVICES -m comment --comment \"NodePorts without (local) endpoints\" -d 192.168.0.2 -j KUBE-NODEPORTS"]
    );
}

#[test]
fn affinity_returns_known_clients_before_picking() {
    let mut sticky = port(
        "sticky",
        "10.96.0.40",
        vec![ep("10.244.1.1", false), ep("10.244.2.1", false)],
    );
    sticky.affinity = SessionAffinity::ClientIp {
        timeout_seconds: 600,
    };
    let rules = v4(&state(vec![sticky]), &Options::default());
    let name = port_name("sticky");
    let svc = naming::cluster_chain(&name);
    let sep = naming::endpoint_chain(&name, "10.244.1.1:8080".parse().unwrap());
    let svc_lines = lines(&rules, TableName::Nat, &svc);
    assert_eq!(
        svc_lines.len(),
        4,
        "no masquerade rule without a cluster CIDR: {svc_lines:#?}"
    );
    assert!(svc_lines[0].ends_with(&format!(
        "-m recent --name {sep} --rcheck --seconds 600 --reap -j {sep}"
    )));
    assert!(svc_lines[2].contains("--probability 0.5000000000"));
    assert!(lines(&rules, TableName::Nat, &sep)[1].contains(&format!(
        "-m recent --name {sep} --set -m tcp -p tcp -j DNAT"
    )));
}

#[test]
fn external_local_without_local_endpoints_short_circuits_and_drops_the_rest() {
    let mut web = port("web", "10.96.0.50", vec![ep("10.244.2.1", false)]);
    web.external_policy = TrafficPolicy::Local;
    web.node_port = Some(30050);
    web.families[0].outside_mut().load_balancer_ips = vec![ip("203.0.113.50")];
    let rules = v4(&state(vec![web]), &options());
    let name = port_name("web");
    let ext = naming::external_chain(&name);
    let svc = naming::cluster_chain(&name);
    let ext_rules = &rules
        .table(TableName::Nat)
        .unwrap()
        .chain(&ext)
        .unwrap()
        .rules;
    let targets: Vec<&Target> = ext_rules.iter().map(|r| &r.target).collect();
    assert_eq!(
        targets,
        [
            &Target::Jump(naming::MARK_MASQ.into()),
            &Target::Jump(svc.clone()),
            &Target::Jump(svc),
        ],
        "no KUBE-SVL chain to go to"
    );
    assert_eq!(
        ext_rules[2].matches,
        [Match::source("10.244.0.0/16".parse().unwrap())]
    );
    assert!(rules
        .table(TableName::Nat)
        .unwrap()
        .chain(&naming::local_chain(&name))
        .is_none());
    let drops = lines(&rules, TableName::Filter, naming::EXTERNAL_SERVICES);
    assert!(
        drops[0].ends_with("-d 203.0.113.50 -m tcp -p tcp --dport 80 -j DROP"),
        "{drops:#?}"
    );
    assert!(
        lines(&rules, TableName::Filter, naming::NODEPORTS)[0].ends_with("--dport 30050 -j DROP")
    );
}

#[test]
fn source_ranges_drop_other_sources_in_mangle_before_dnat() {
    let mut lb = port("lb", "10.96.0.60", vec![ep("10.244.2.1", false)]);
    lb.node_port = Some(30060);
    lb.families[0].outside_mut().load_balancer_ips = vec![ip("203.0.113.60")];
    lb.families[0].outside_mut().source_ranges = vec!["192.0.2.0/24".parse().unwrap()];
    let rules = v4(&state(vec![lb]), &options());
    let name = port_name("lb");
    let fw = naming::firewall_chain(&name);
    let ext = naming::external_chain(&name);
    assert!(lines(&rules, TableName::Nat, naming::SERVICES)
        .iter()
        .any(|l| l.ends_with(&format!(
            "-d 203.0.113.60 -m tcp -p tcp --dport 80 -j {ext}"
        ))));
    assert_eq!(
        lines(&rules, TableName::Mangle, naming::PROXY_FIREWALL),
        [format!("-A KUBE-PROXY-FIREWALL -m comment --comment \"default/lb:http loadbalancer IP\" -d 203.0.113.60 -m tcp -p tcp --dport 80 -j {fw}")]
    );
    assert_eq!(
        lines(&rules, TableName::Mangle, &fw),
        [
            format!("-A {fw} -s 192.0.2.0/24 -j RETURN"),
            format!("-A {fw} -m comment --comment \"default/lb:http traffic not accepted by loadBalancerSourceRanges\" -j DROP"),
        ]
    );
    let firewall_hooks: Vec<_> = rules
        .hooks
        .iter()
        .filter(|h| h.rule.target == Target::Jump(naming::PROXY_FIREWALL.into()))
        .map(|h| (h.table, h.chain))
        .collect();
    use super::ir::BuiltinChain::{Output, Prerouting};
    assert_eq!(
        firewall_hooks,
        [(TableName::Mangle, Prerouting), (TableName::Mangle, Output)]
    );
}

/// Every jump goes to a chain of the same table or a built-in target, every name fits the
/// kernel's limit, and no chain is declared twice, for every kind of synthetic Service.
#[test]
fn synthetic_clusters_are_self_consistent() {
    let state = kproxy_synthetic::cluster(1000, 3);
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    let ruleset = compile(&state, &options);
    assert_eq!(ruleset.families.len(), 2);
    for family in &ruleset.families {
        for table in &family.tables {
            let names: BTreeSet<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
            assert_eq!(names.len(), table.chains.len(), "a chain declared twice");
            for chain in &table.chains {
                assert!(chain.name.len() <= 28, "{}", chain.name);
                for rule in &chain.rules {
                    if let Target::Jump(to) = &rule.target {
                        assert!(
                            names.contains(to.as_str()),
                            "{} jumps to missing {to}",
                            chain.name
                        );
                    }
                    let in_nat = table.name == TableName::Nat;
                    if table.name == TableName::Mangle {
                        assert!(!matches!(rule.target, Target::Dnat(_) | Target::Reject(_)));
                    }
                    let filtering = matches!(rule.target, Target::Drop | Target::Reject(_));
                    assert!(!(in_nat && filtering), "DROP/REJECT in nat: {rule:?}");
                    assert!(rule.comment.as_ref().is_none_or(|c| c.len() <= 255));
                }
            }
        }
        for hook in &family.hooks {
            let Target::Jump(to) = &hook.rule.target else {
                panic!("a hook that is not a jump: {hook:?}");
            };
            assert!(family.table(hook.table).unwrap().chain(to).is_some());
        }
    }
}

/// The nf_tables backend of `iptables-restore` inserts each declared chain into a list sorted
/// by name, walking from the smallest: only descending declarations keep a restore linear in
/// the number of chains (render.rs). Full and partial inputs, every table, stale chains too.
#[test]
fn restores_declare_chains_in_descending_name_order() {
    fn assert_descending(text: &str) {
        let mut declared = 0;
        for table in text.split("COMMIT\n").filter(|t| !t.is_empty()) {
            let names: Vec<&str> = table
                .lines()
                .filter_map(|line| line.strip_prefix(':'))
                .filter_map(|line| line.split(' ').next())
                .collect();
            assert!(
                names.windows(2).all(|pair| pair[0] > pair[1]),
                "not strictly descending: {names:?}"
            );
            declared += names.len();
        }
        assert!(declared > 0, "no declaration in {text}");
    }
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    let before = kproxy_synthetic::cluster(200, 3);
    let rules = compile_family(&before, &options, IpFamily::V4);
    assert_descending(&render::full(&rules));
    // Losing a Service leaves stale chains, declared (to flush them) among the written ones.
    let mut after = before.clone();
    after.ports.retain(|port| &*port.name.service != "svc-7");
    let restore = partial(&rules, &compile_family(&after, &options, IpFamily::V4));
    assert!(!restore.deleted.is_empty() && !restore.written.is_empty());
    assert_descending(&restore.text);
}

/// A partial restore from `old` to `new`.
fn partial(old: &FamilyRules, new: &FamilyRules) -> restore::Restore {
    restore::Applied::new(old).partial(new)
}

/// The requirement: an endpoint change rewrites only that Service's chains. Unlike
/// kube-proxy, not even the top-level chains: they did not change.
#[test]
fn an_endpoint_change_rewrites_only_that_services_chains() {
    let before = state(vec![
        port("a", "10.96.0.1", vec![ep("10.244.1.1", false)]),
        port(
            "b",
            "10.96.0.2",
            vec![ep("10.244.1.2", false), ep("10.244.1.3", false)],
        ),
        port("c", "10.96.0.3", vec![ep("10.244.1.4", false)]),
    ]);
    let mut after = before.clone();
    after.ports[1].families[0].endpoints.cluster[1] = ep("10.244.1.9", false);
    let (old, new) = (v4(&before, &options()), v4(&after, &options()));
    let restore = partial(&old, &new);
    let b = port_name("b");
    let sep = |a: &str| naming::endpoint_chain(&b, format!("{a}:8080").parse().unwrap());
    assert_eq!(
        restore.written,
        [
            format!("nat/{}", naming::cluster_chain(&b)),
            format!("nat/{}", sep("10.244.1.9")),
        ]
    );
    assert_eq!(restore.deleted, [format!("nat/{}", sep("10.244.1.3"))]);
    // The restore input itself: only the nat table, and nothing of a, c or a top-level chain.
    let tables: Vec<&str> = restore
        .text
        .lines()
        .filter(|l| l.starts_with('*'))
        .collect();
    assert_eq!(tables, ["*nat"], "{}", restore.text);
    assert!(restore
        .text
        .contains(&format!(":{} - [0:0]\n", sep("10.244.1.3"))));
    assert!(restore
        .text
        .contains(&format!("-X {}\n", sep("10.244.1.3"))));
    for chain in naming::TOP_LEVEL {
        assert!(!restore.text.contains(&format!("-A {chain} ")), "{chain}");
    }
    for other in ["a", "c"] {
        let chain = naming::cluster_chain(&port_name(other));
        assert!(!restore.text.contains(&chain), "{}", restore.text);
    }
}

/// Nothing changed: no table, no text, so the syncer spawns no restore.
#[test]
fn an_unchanged_family_needs_no_restore() {
    let rules = v4(&kproxy_synthetic::cluster(50, 3), &options());
    let restore = partial(&rules, &rules);
    assert!(restore.is_empty(), "{}", restore.text);
    assert!(restore.written.is_empty() && restore.deleted.is_empty());
    // Nor on the next sync of the same rules, from the state the first one left.
    let mut applied = restore::Applied::new(&rules);
    assert!(applied.partial(&rules).is_empty());
    assert!(applied.partial(&rules).is_empty());
}

/// A Service added or removed changes the top-level chains that list it, and only those.
#[test]
fn a_service_added_or_removed_rewrites_the_top_level_chains() {
    let two = state(vec![
        port("a", "10.96.0.1", vec![ep("10.244.1.1", false)]),
        port("b", "10.96.0.2", vec![ep("10.244.1.2", false)]),
    ]);
    let mut three = two.clone();
    three
        .ports
        .push(port("c", "10.96.0.3", vec![ep("10.244.1.3", false)]));
    let (old, new) = (v4(&two, &options()), v4(&three, &options()));
    let c = port_name("c");
    let svc = naming::cluster_chain(&c);
    let sep = naming::endpoint_chain(&c, "10.244.1.3:8080".parse().unwrap());
    let added = partial(&old, &new);
    assert_eq!(
        added.written,
        [
            "nat/KUBE-SERVICES".to_string(),
            format!("nat/{svc}"),
            format!("nat/{sep}"),
            // Its ClusterIP's undefined ports are rejected.
            "filter/KUBE-SERVICES".to_string(),
        ]
    );
    assert!(added.deleted.is_empty());
    assert!(!added.text.contains("*mangle"), "{}", added.text);

    let removed = partial(&new, &old);
    assert_eq!(
        removed.written,
        ["nat/KUBE-SERVICES", "filter/KUBE-SERVICES"]
    );
    assert_eq!(
        removed.deleted,
        [format!("nat/{sep}"), format!("nat/{svc}")]
    );
    // In the nat section: the chains go after the rule that jumped to them is rewritten.
    let lines: Vec<&str> = removed
        .text
        .lines()
        .take_while(|l| *l != "COMMIT")
        .collect();
    let last_rule = lines
        .iter()
        .rposition(|l| l.starts_with("-A KUBE-SERVICES"));
    let first_delete = lines.iter().position(|l| l.starts_with("-X "));
    assert!(last_rule < first_delete, "{}", removed.text);
}

/// The kernel's side of a restore, as far as chains go: enough to check that an input is
/// valid in order (no rule jumps to an undeclared chain, no chain deleted while a rule still
/// jumps to it or while it has rules) and what it leaves.
#[derive(Debug, Default, PartialEq, Eq)]
struct Kernel {
    tables: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

impl Kernel {
    /// Applies `--noflush` input, panicking where `iptables-restore` would fail.
    fn restore(&mut self, input: &str) {
        let mut table = None;
        for line in input.lines() {
            if let Some(name) = line.strip_prefix('*') {
                table = Some(self.tables.entry(name.to_string()).or_default());
            } else if line == "COMMIT" {
                table = None;
            } else {
                let chains = table.as_deref_mut().expect("a line inside a table");
                Kernel::line(chains, line);
            }
        }
        assert!(table.is_none(), "input ends inside a table");
    }

    fn line(chains: &mut BTreeMap<String, Vec<String>>, line: &str) {
        if let Some(declaration) = line.strip_prefix(':') {
            let name = declaration.split(' ').next().expect("a chain name");
            chains.insert(name.to_string(), Vec::new());
        } else if let Some(name) = line.strip_prefix("-X ") {
            let rules = chains.remove(name).expect("-X of a chain that exists");
            assert!(rules.is_empty(), "-X {name} of a chain with rules");
            let user = chains
                .iter()
                .find(|(_, rules)| rules.iter().any(|r| jump_target(r) == Some(name)));
            let user = user.map(|(chain, _)| chain);
            assert!(user.is_none(), "-X {name} while {user:?} jumps to it");
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let (chain, _) = rule.split_once(' ').expect("a chain and a rule");
            if let Some(to) = jump_target(rule) {
                let builtin = [
                    "MARK",
                    "DNAT",
                    "RETURN",
                    "ACCEPT",
                    "DROP",
                    "REJECT",
                    "MASQUERADE",
                ];
                assert!(
                    builtin.contains(&to) || chains.contains_key(to),
                    "{line}: no chain {to}"
                );
            }
            chains
                .get_mut(chain)
                .expect("-A to a declared chain")
                .push(rule.to_string());
        } else {
            panic!("unexpected restore line {line}");
        }
    }
}

fn jump_target(rule: &str) -> Option<&str> {
    rule.split_once(" -j ")
        .and_then(|(_, target)| target.split(' ').next())
}

/// Partial restores, each from what the previous one left, are valid in order and leave what
/// a full restore of the final rules leaves; none writes a chain whose rules did not change,
/// and the [`restore::Applied`] record updated in place by each stays exact.
#[test]
fn partial_restores_in_sequence_leave_what_a_full_restore_leaves() {
    let base = kproxy_synthetic::cluster(60, 3);
    let mut states = vec![base.clone()];
    let mut next = base.clone();
    next.ports[5].families[0].endpoints.cluster.pop();
    states.push(next.clone());
    let gone = next.ports.remove(7);
    states.push(next.clone());
    next.ports.insert(7, gone);
    states.push(next.clone());
    for port in next.ports.iter_mut().take(4) {
        for family in &mut port.families {
            family.endpoints = EndpointSets::default();
        }
    }
    states.push(next.clone());
    for port in next.ports.iter_mut().skip(10).take(5) {
        port.internal_policy = TrafficPolicy::Local;
        port.external_policy = TrafficPolicy::Local;
    }
    states.push(next.clone());
    states.push(next.clone());
    next.ports.truncate(20);
    states.push(next);
    states.push(base);

    let compile_v4 = |s: &ProxyState| compile_family(s, &options(), IpFamily::V4);
    let first = compile_v4(&states[0]);
    let mut kernel = Kernel::default();
    kernel.restore(&render::full(&first));
    let mut applied = restore::Applied::new(&first);
    let mut previous = first;
    for (step, state) in states.iter().enumerate().skip(1) {
        let rules = compile_v4(state);
        let restore = applied.partial(&rules);
        // The record kept and updated across syncs plans as one made afresh would.
        assert_eq!(restore, partial(&previous, &rules), "step {step}");
        kernel.restore(&restore.text);
        let mut fresh = Kernel::default();
        fresh.restore(&render::full(&rules));
        assert_eq!(kernel, fresh, "step {step}");
        for written in &restore.written {
            let (table, chain) = written.split_once('/').expect("table/chain");
            let table = [TableName::Nat, TableName::Filter, TableName::Mangle]
                .into_iter()
                .find(|t| t.as_str() == table)
                .expect("a table name");
            let before = previous.table(table).and_then(|t| t.chain(chain));
            let after = rules.table(table).and_then(|t| t.chain(chain));
            assert_ne!(before, after, "step {step}: {written} rewritten unchanged");
        }
        previous = rules;
    }
}

#[test]
fn a_full_restore_deletes_leftover_kproxy_chains_only() {
    let rules = v4(
        &state(vec![port("a", "10.96.0.1", vec![ep("10.244.1.1", false)])]),
        &options(),
    );
    let mut existing = restore::ExistingChains::new();
    existing.insert(
        TableName::Nat,
        [
            "KUBE-SVC-OLDOLDOLDOLDOLDO",
            "KUBE-SERVICES",
            "DOCKER",
            "KUBE-KUBELET-CANARY",
        ]
        .map(String::from)
        .into(),
    );
    let restore = restore::full(&rules, &existing);
    assert_eq!(restore.deleted, ["nat/KUBE-SVC-OLDOLDOLDOLDOLDO"]);
    assert!(restore.written.iter().any(|c| c == "filter/KUBE-FORWARD"));
}

#[test]
fn the_ipv6_family_uses_ipv6_loopback_and_addresses() {
    let mut dual = port("dual", "10.96.0.70", vec![ep("10.244.1.1", false)]);
    let mut v6 = dual.families[0].clone();
    v6.family = IpFamily::V6;
    v6.cluster_ip = ip("fd00:10:96::70");
    v6.endpoints.cluster = vec![ep("fd00:10:244::1", false)];
    dual.families.push(v6);
    let mut s = state(vec![dual]);
    s.node.seen = false;
    let rules = compile(&s, &Options::default());
    let six = &rules.families[1];
    assert_eq!(six.family, IpFamily::V6);
    let services = lines(six, TableName::Nat, naming::SERVICES);
    assert!(services[0].contains("-d fd00:10:96::70 "), "{services:#?}");
    assert!(services[1].contains("! -d ::1 -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"));
    let sep = naming::endpoint_chain(&port_name("dual"), "[fd00:10:244::1]:8080".parse().unwrap());
    assert!(lines(six, TableName::Nat, &sep)[1].ends_with("--to-destination [fd00:10:244::1]:8080"));
}

#[test]
fn large_clusters_drop_endpoint_comments_only() {
    let state = kproxy_synthetic::cluster(200, 10);
    let rules = compile_family(&state, &options(), IpFamily::V4);
    let nat = rules.table(TableName::Nat).unwrap();
    let endpoint_rules = nat
        .chains
        .iter()
        .filter(|c| c.name.starts_with("KUBE-SEP-"))
        .flat_map(|c| &c.rules);
    assert!(endpoint_rules.clone().count() > 2 * LARGE_CLUSTER_ENDPOINTS);
    assert!(endpoint_rules.clone().all(|r| r.comment.is_none()));
    // Service-level rules keep theirs.
    assert!(nat
        .chain(naming::SERVICES)
        .unwrap()
        .rules
        .iter()
        .all(|r| r.comment.is_some()));
    let small = compile_family(&kproxy_synthetic::cluster(20, 10), &options(), IpFamily::V4);
    let sep = small
        .table(TableName::Nat)
        .unwrap()
        .chains
        .iter()
        .find(|c| c.name.starts_with("KUBE-SEP-"))
        .unwrap();
    assert!(sep.rules.iter().all(|r| r.comment.is_some()));
}
