//! Unit tests: tiny hand-built rulesets, one per expression, match, statement and verdict kind,
//! asserting the outcome the kernel would give.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_compiler::ir::{
    Action, BaseHook, Chain, ChainType, CmpOp, DataType, Dnat, EndpointMap, EndpointRange, Expr,
    Family, Hook, Map, Match, Priority, PriorityBase, RejectWith, Rule, Ruleset, Set, SetRef,
    Statement, Table, Value, Verdict, VerdictElement,
};
use kproxy_model::Protocol;

use crate::{
    render_text, trace, Delivery, Disposition, Event, LocalAddresses, Origin, Outcome, Packet,
    Probability, Trace, TraceError,
};

const NODE_IP: &str = "192.168.10.11";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn sock(text: &str) -> SocketAddr {
    text.parse().expect("an address and port")
}

fn net(text: &str) -> IpNet {
    text.parse().expect("a network")
}

fn base(name: &str, kind: ChainType, hook: Hook, base: PriorityBase, offset: i32) -> Chain {
    Chain {
        name: name.to_string(),
        hook: Some(BaseHook {
            kind,
            hook,
            priority: Priority { base, offset },
        }),
        comment: None,
        rules: Vec::new(),
    }
}

fn regular(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        hook: None,
        comment: None,
        rules,
    }
}

fn with_rules(mut chain: Chain, rules: Vec<Rule>) -> Chain {
    chain.rules = rules;
    chain
}

fn table(chains: Vec<Chain>) -> Table {
    Table {
        family: Family::Ip,
        name: "kproxy".to_string(),
        sets: Vec::new(),
        maps: Vec::new(),
        endpoint_maps: Vec::new(),
        chains,
    }
}

fn ruleset(table: Table) -> Ruleset {
    Ruleset {
        tables: vec![table],
    }
}

/// A filter chain on prerouting at priority 0 with these rules.
fn prerouting(rules: Vec<Rule>) -> Chain {
    with_rules(
        base(
            "pre",
            ChainType::Filter,
            Hook::Prerouting,
            PriorityBase::Filter,
            0,
        ),
        rules,
    )
}

fn packet(src: &str, dst: &str) -> Packet {
    let dst = sock(dst);
    Packet {
        src: ip(src),
        src_port: 40000,
        dst: dst.ip(),
        dst_port: dst.port(),
        proto: Protocol::Tcp,
        origin: Origin::Pod,
        ct_new: true,
    }
}

fn run(rules: &Ruleset, packet: &Packet) -> Trace {
    let traced = trace(rules, packet, &LocalAddresses::new([ip(NODE_IP)])).expect("traced");
    let total = traced
        .outcomes
        .iter()
        .fold(Probability::ZERO, |sum, o| sum + o.probability);
    assert!(total.is_one(), "probabilities add up to {total}");
    // The text rendering never fails and names every outcome.
    let text = render_text(&traced);
    assert!(text.contains(&format!("{} possible outcome", traced.outcomes.len())));
    traced
}

fn only(trace: &Trace) -> &Outcome {
    assert_eq!(trace.outcomes.len(), 1, "{:#?}", trace.outcomes);
    &trace.outcomes[0]
}

fn dropped_by(outcome: &Outcome) -> Option<(&str, usize)> {
    match &outcome.disposition {
        Disposition::Dropped { by } => Some((by.chain.as_str(), by.index)),
        _ => None,
    }
}

fn accepted(outcome: &Outcome) -> Option<(Option<SocketAddr>, bool, Delivery)> {
    match &outcome.disposition {
        Disposition::Accepted {
            dnat,
            masquerade,
            delivery,
        } => Some((*dnat, *masquerade, *delivery)),
        _ => None,
    }
}

fn drop_when(matches: Vec<Match>) -> Rule {
    Rule::verdict(Verdict::Drop).when(matches)
}

/// Traces the packet through one prerouting rule that drops when `m` holds.
fn drops(m: Match, packet: &Packet) -> bool {
    let rules = ruleset(table(vec![prerouting(vec![drop_when(vec![m])])]));
    dropped_by(only(&run(&rules, packet))).is_some()
}

fn chain_names(outcome: &Outcome) -> Vec<String> {
    outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Chain { chain, .. } => Some(chain.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn addresses_compare_exactly_and_by_prefix() {
    let p = packet("10.244.1.5", "10.96.0.10:80");
    assert!(drops(
        Match::eq(Expr::SourceAddr, Value::Addr(ip("10.244.1.5"))),
        &p
    ));
    assert!(!drops(
        Match::eq(Expr::SourceAddr, Value::Addr(ip("10.244.1.6"))),
        &p
    ));
    assert!(drops(
        Match::eq(Expr::SourceAddr, Value::Prefix(net("10.244.0.0/16"))),
        &p
    ));
    assert!(!drops(
        Match::ne(Expr::SourceAddr, Value::Prefix(net("10.244.0.0/16"))),
        &p
    ));
    assert!(drops(
        Match::ne(Expr::DestAddr, Value::Prefix(net("10.244.0.0/16"))),
        &p
    ));
    assert!(drops(
        Match::eq(Expr::DestAddr, Value::Addr(ip("10.96.0.10"))),
        &p
    ));
}

#[test]
fn protocol_and_port_compare() {
    let p = packet("10.244.1.5", "10.96.0.10:80");
    assert!(drops(
        Match::eq(Expr::L4Proto, Value::Proto(Protocol::Tcp)),
        &p
    ));
    assert!(!drops(
        Match::eq(Expr::L4Proto, Value::Proto(Protocol::Udp)),
        &p
    ));
    assert!(drops(Match::eq(Expr::DestPort, Value::Port(80)), &p));
    assert!(!drops(Match::eq(Expr::DestPort, Value::Port(81)), &p));
    // As integers, the way the kernel compares registers.
    assert!(drops(Match::eq(Expr::L4Proto, Value::Integer(6)), &p));
    let udp = Packet {
        proto: Protocol::Udp,
        ..p.clone()
    };
    assert!(drops(
        Match::eq(Expr::L4Proto, Value::Proto(Protocol::Udp)),
        &udp
    ));
}

#[test]
fn ct_state_new_and_established() {
    let new = packet("10.244.1.5", "10.96.0.10:80");
    let established = Packet {
        ct_new: false,
        ..new.clone()
    };
    let m = Match::eq(Expr::CtState, Value::CtNew);
    assert!(drops(m.clone(), &new));
    assert!(!drops(m, &established));
    assert!(drops(Match::ne(Expr::CtState, Value::CtNew), &established));
}

#[test]
fn fib_address_types_use_the_local_addresses() {
    let from_node = Packet {
        origin: Origin::Node,
        ..packet(NODE_IP, "10.96.0.10:80")
    };
    let output = |m: Match| {
        ruleset(table(vec![with_rules(
            base(
                "out",
                ChainType::Filter,
                Hook::Output,
                PriorityBase::Filter,
                0,
            ),
            vec![drop_when(vec![m])],
        )]))
    };
    let local = Match::eq(Expr::SourceAddrType, Value::Local);
    assert!(dropped_by(only(&run(&output(local.clone()), &from_node))).is_some());
    let from_pod = Packet {
        origin: Origin::Node,
        ..packet("10.244.1.5", "10.96.0.10:80")
    };
    assert!(dropped_by(only(&run(&output(local), &from_pod))).is_none());
    // Loopback is always local.
    let to_loopback = packet("10.244.1.5", "127.0.0.1:80");
    assert!(drops(
        Match::eq(Expr::DestAddrType, Value::Local),
        &to_loopback
    ));
    assert!(!drops(
        Match::eq(Expr::DestAddrType, Value::Local),
        &packet("10.244.1.5", "10.96.0.10:80")
    ));
}

#[test]
fn mark_or_then_masked_match_then_xor() {
    let mark = 0x4000;
    let marked = Match::Masked {
        left: Expr::Mark,
        mask: mark,
        value: mark,
    };
    let rules = ruleset(table(vec![
        prerouting(vec![
            Rule::verdict(Verdict::Jump("mark".into())),
            // The mark is set: clear it, then drop if it is still set (it is not).
            Rule {
                matches: vec![marked.clone()],
                statements: vec![Statement::MarkXor(mark)],
                action: None,
                comment: None,
            },
            drop_when(vec![marked.clone()]),
            drop_when(vec![Match::eq(Expr::Mark, Value::Integer(0))]),
        ]),
        regular(
            "mark",
            vec![Rule::action(Action::Verdict(Verdict::Return))
                .when([])
                .with(Statement::MarkOr(mark))],
        ),
    ]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let outcome = only(&traced);
    assert_eq!(dropped_by(outcome), Some(("pre", 3)));
    let changes: Vec<(u32, u32)> = outcome
        .mark_changes
        .iter()
        .map(|c| (c.old, c.new))
        .collect();
    assert_eq!(changes, [(0, mark), (mark, 0)]);
    let first = &outcome.mark_changes[0];
    assert_eq!(first.by.chain, "mark");
    assert_eq!(
        first
            .called_from
            .as_ref()
            .map(|r| (r.chain.as_str(), r.index)),
        Some(("pre", 0))
    );
}

#[test]
fn lookups_in_named_concatenated_interval_and_anonymous_sets() {
    let mut t = table(vec![prerouting(vec![
        Rule::verdict(Verdict::Accept).when([Match::Lookup {
            key: vec![
                Expr::DestAddr,
                Expr::L4Proto,
                Expr::DestPort,
                Expr::SourceAddr,
            ],
            set: SetRef::Named("allow".into()),
            negate: false,
        }]),
        drop_when(vec![Match::Lookup {
            key: vec![Expr::SourceAddr],
            set: SetRef::Prefixes(vec![net("198.51.100.0/24"), net("203.0.113.7/32")]),
            negate: false,
        }]),
        drop_when(vec![Match::Lookup {
            key: vec![Expr::DestAddr, Expr::L4Proto, Expr::DestPort],
            set: SetRef::Named("guarded".into()),
            negate: true,
        }]),
    ])]);
    t.sets = vec![
        Set {
            name: "allow".into(),
            key: vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
                DataType::Ipv4Addr,
            ],
            interval: true,
            timeout: None,
            size: None,
            comment: None,
            elements: vec![vec![
                Value::Addr(ip("203.0.113.13")),
                Value::Proto(Protocol::Tcp),
                Value::Port(80),
                Value::Prefix(net("192.0.2.0/24")),
            ]],
        },
        Set {
            name: "guarded".into(),
            key: vec![
                DataType::Ipv4Addr,
                DataType::InetProto,
                DataType::InetService,
            ],
            interval: false,
            timeout: None,
            size: None,
            comment: None,
            elements: vec![vec![
                Value::Addr(ip("203.0.113.13")),
                Value::Proto(Protocol::Tcp),
                Value::Port(80),
            ]],
        },
    ];
    let rules = ruleset(t);
    let outcome = |src: &str, dst: &str| {
        let traced = run(&rules, &packet(src, dst));
        let o = only(&traced).clone();
        dropped_by(&o).map(|(c, i)| (c.to_string(), i))
    };
    // Inside the allowed prefix: accepted by rule 0.
    assert_eq!(outcome("192.0.2.77", "203.0.113.13:80"), None);
    // Inside the anonymous prefix set.
    assert_eq!(
        outcome("198.51.100.3", "203.0.113.13:80"),
        Some(("pre".into(), 1))
    );
    assert_eq!(
        outcome("203.0.113.7", "203.0.113.13:80"),
        Some(("pre".into(), 1))
    );
    // Not in "guarded" (another port): the negated lookup drops.
    assert_eq!(
        outcome("192.0.2.77", "203.0.113.13:81"),
        Some(("pre".into(), 2))
    );
    // In "guarded", outside every other set: accepted by policy.
    assert_eq!(outcome("192.0.2.1", "10.0.0.1:80"), Some(("pre".into(), 2)));
    assert_eq!(outcome("203.0.113.99", "203.0.113.13:80"), None);
}

#[test]
fn jump_returns_goto_does_not() {
    let rules = ruleset(table(vec![
        prerouting(vec![
            Rule::verdict(Verdict::Jump("a".into())),
            drop_when(vec![Match::eq(Expr::DestPort, Value::Port(80))]),
        ]),
        // a: goto b; b ends: back to pre (a's caller), not to a's next rule.
        regular(
            "a",
            vec![
                Rule::verdict(Verdict::Goto("b".into())),
                Rule::verdict(Verdict::Drop),
            ],
        ),
        regular(
            "b",
            vec![
                Rule::verdict(Verdict::Return).when([Match::eq(Expr::DestPort, Value::Port(80))]),
                Rule::verdict(Verdict::Drop),
            ],
        ),
    ]));
    let port80 = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert_eq!(dropped_by(only(&port80)), Some(("pre", 1)));
    let port81 = run(&rules, &packet("10.244.1.5", "10.96.0.10:81"));
    assert_eq!(dropped_by(only(&port81)), Some(("b", 1)));
}

#[test]
fn goto_from_a_base_chain_ends_with_its_policy() {
    let rules = ruleset(table(vec![
        prerouting(vec![
            Rule::verdict(Verdict::Goto("a".into())),
            Rule::verdict(Verdict::Drop),
        ]),
        regular("a", vec![]),
    ]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert!(accepted(only(&traced)).is_some());
}

#[test]
fn accept_ends_one_base_chain_and_the_next_still_runs() {
    let rules = ruleset(table(vec![
        prerouting(vec![
            Rule::verdict(Verdict::Accept),
            Rule::verdict(Verdict::Drop),
        ]),
        with_rules(
            base(
                "later",
                ChainType::Filter,
                Hook::Prerouting,
                PriorityBase::Filter,
                10,
            ),
            vec![Rule::verdict(Verdict::Drop)],
        ),
        // Registered last but runs first: priority order, not table order.
        with_rules(
            base(
                "earlier",
                ChainType::Filter,
                Hook::Prerouting,
                PriorityBase::Filter,
                -10,
            ),
            vec![Rule::verdict(Verdict::Accept)],
        ),
    ]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let outcome = only(&traced);
    assert_eq!(dropped_by(outcome), Some(("later", 0)));
    assert_eq!(chain_names(outcome), ["earlier", "pre", "later"]);
}

#[test]
fn reject_kinds() {
    let rules = ruleset(table(vec![prerouting(ir_refusal())]));
    let tcp = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let udp = run(
        &rules,
        &Packet {
            proto: Protocol::Udp,
            ..packet("10.244.1.5", "10.96.0.10:53")
        },
    );
    let with = |t: &Trace| match &only(t).disposition {
        Disposition::Rejected { by, with } => Some((by.index, *with)),
        _ => None,
    };
    assert_eq!(with(&tcp), Some((0, RejectWith::TcpReset)));
    assert_eq!(with(&udp), Some((1, RejectWith::PortUnreachable)));
}

fn ir_refusal() -> Vec<Rule> {
    kproxy_compiler::ir::refusal(vec![Match::eq(Expr::DestPort, Value::Port(80))])
        .into_iter()
        .chain(kproxy_compiler::ir::refusal(vec![Match::eq(
            Expr::DestPort,
            Value::Port(53),
        )]))
        .filter(|r| {
            // Keep the TCP rule of port 80 and the catch-all of port 53.
            let port80 = r.matches[0] == Match::eq(Expr::DestPort, Value::Port(80));
            (port80 && r.matches.len() == 2) || (!port80 && r.matches.len() == 1)
        })
        .collect()
}

#[test]
fn vmap_hit_applies_the_verdict_and_a_miss_does_not_apply_the_rule() {
    let mut t = table(vec![
        prerouting(vec![
            Rule::action(Action::Vmap {
                key: vec![Expr::L4Proto, Expr::DestPort],
                map: "ports".into(),
            }),
            Rule::verdict(Verdict::Drop).comment("fallthrough"),
        ]),
        regular("ok", vec![Rule::verdict(Verdict::Accept)]),
    ]);
    t.maps = vec![Map {
        name: "ports".into(),
        key: vec![DataType::InetProto, DataType::InetService],
        comment: None,
        elements: vec![
            VerdictElement {
                key: vec![Value::Proto(Protocol::Tcp), Value::Port(80)],
                verdict: Verdict::Goto("ok".into()),
            },
            VerdictElement {
                key: vec![Value::Proto(Protocol::Tcp), Value::Port(22)],
                verdict: Verdict::Drop,
            },
        ],
    }];
    let rules = ruleset(t);
    let hit = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert!(accepted(only(&hit)).is_some());
    let drop = run(&rules, &packet("10.244.1.5", "10.96.0.10:22"));
    assert_eq!(dropped_by(only(&drop)), Some(("pre", 0)));
    let miss = run(&rules, &packet("10.244.1.5", "10.96.0.10:81"));
    assert_eq!(dropped_by(only(&miss)), Some(("pre", 1)));
}

fn nat_prerouting(rules: Vec<Rule>) -> Chain {
    with_rules(
        base(
            "nat-pre",
            ChainType::Nat,
            Hook::Prerouting,
            PriorityBase::Dstnat,
            0,
        ),
        rules,
    )
}

fn postrouting(rules: Vec<Rule>) -> Chain {
    with_rules(
        base(
            "nat-post",
            ChainType::Nat,
            Hook::Postrouting,
            PriorityBase::Srcnat,
            0,
        ),
        rules,
    )
}

#[test]
fn dnat_to_rewrites_the_destination_and_sets_ct_status_dnat() {
    let rules = ruleset(table(vec![
        nat_prerouting(vec![Rule::action(Action::Dnat(Dnat::To(sock(
            "10.244.1.5:8080",
        ))))
        .when([Match::eq(Expr::DestAddr, Value::Addr(ip("10.96.0.10")))])]),
        postrouting(vec![
            // Sees the rewritten destination…
            Rule::action(Action::Masquerade {
                fully_random: false,
            })
            .when([
                Match::eq(Expr::CtStatus, Value::CtDnat),
                Match::eq(Expr::DestAddr, Value::Addr(ip("10.244.1.5"))),
                Match::eq(Expr::SourceAddr, Value::Addr(ip("10.244.1.5"))),
            ]),
        ]),
    ]));
    // A pod reaching itself: masqueraded.
    let hairpin = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let outcome = only(&hairpin);
    assert_eq!(
        accepted(outcome),
        Some((Some(sock("10.244.1.5:8080")), true, Delivery::Routed))
    );
    assert_eq!(outcome.masqueraded_by.as_ref().map(|r| r.index), Some(0));
    // Another pod: DNAT only.
    let other = run(&rules, &packet("10.244.2.5", "10.96.0.10:80"));
    assert_eq!(
        accepted(only(&other)),
        Some((Some(sock("10.244.1.5:8080")), false, Delivery::Routed))
    );
    // No DNAT, no ct status dnat: the same addresses do not masquerade.
    let direct = run(&rules, &packet("10.244.1.5", "10.244.1.5:8080"));
    assert_eq!(
        accepted(only(&direct)),
        Some((None, false, Delivery::Routed))
    );
}

#[test]
fn nat_chains_skip_established_connections() {
    let rules = ruleset(table(vec![nat_prerouting(vec![Rule::action(
        Action::Dnat(Dnat::To(sock("10.244.1.5:8080"))),
    )])]));
    let traced = run(
        &rules,
        &Packet {
            ct_new: false,
            ..packet("10.244.2.5", "10.96.0.10:80")
        },
    );
    let outcome = only(&traced);
    assert_eq!(accepted(outcome), Some((None, false, Delivery::Routed)));
    assert!(matches!(outcome.events[0], Event::Skipped { .. }));
}

fn endpoint_table(ranges: Vec<(u32, u32, &str)>) -> Table {
    let mut t = table(vec![nat_prerouting(vec![
        Rule::action(Action::Dnat(Dnat::Numgen {
            map: "endpoints-001".into(),
            modulus: 720_720,
            offset: 1 << 20,
        })),
        Rule::verdict(Verdict::Drop).comment("no endpoint for the value drawn"),
    ])]);
    t.endpoint_maps = vec![EndpointMap {
        name: "endpoints-001".into(),
        comment: None,
        elements: ranges
            .into_iter()
            .map(|(first, last, target)| EndpointRange {
                first,
                last,
                target: sock(target),
            })
            .collect(),
    }];
    t
}

#[test]
fn numgen_dnat_enumerates_every_endpoint_with_its_share() {
    let w = 1u32 << 20;
    let rules = ruleset(endpoint_table(vec![
        // Another chain's window, never drawn.
        (0, 99, "10.244.9.9:1"),
        (w, w + 240_239, "10.244.1.10:8080"),
        (w + 240_240, w + 480_479, "10.244.2.10:8080"),
        (w + 480_480, w + 720_719, "10.244.3.10:8080"),
    ]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let got: Vec<(String, Option<SocketAddr>)> = traced
        .outcomes
        .iter()
        .map(|o| (o.probability.to_string(), accepted(o).and_then(|a| a.0)))
        .collect();
    let third = "1/3 (33.33%)".to_string();
    assert_eq!(
        got,
        [
            (third.clone(), Some(sock("10.244.1.10:8080"))),
            (third.clone(), Some(sock("10.244.2.10:8080"))),
            (third, Some(sock("10.244.3.10:8080"))),
        ]
    );
}

#[test]
fn numgen_dnat_values_outside_every_range_fall_through() {
    let w = 1u32 << 20;
    // Only the first half of the window is mapped.
    let rules = ruleset(endpoint_table(vec![(w, w + 360_359, "10.244.1.10:8080")]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert_eq!(traced.outcomes.len(), 2);
    assert_eq!(traced.outcomes[0].probability, Probability::new(1, 2));
    assert!(accepted(&traced.outcomes[0]).is_some());
    assert_eq!(dropped_by(&traced.outcomes[1]), Some(("nat-pre", 1)));
    assert!(matches!(traced.outcomes[1].events[1], Event::Missed { .. }));
}

#[test]
fn numgen_matches_fork_into_a_cascade() {
    // numgen mod 3 0 → a; numgen mod 2 0 → b; else c: 1/3 each.
    let pick = |modulus: u32, to: &str| {
        Rule::action(Action::Dnat(Dnat::To(sock(to)))).when([Match::Cmp {
            left: Expr::Numgen { modulus },
            op: CmpOp::Eq,
            right: Value::Integer(0),
        }])
    };
    let rules = ruleset(table(vec![nat_prerouting(vec![
        pick(3, "10.244.1.1:80"),
        pick(2, "10.244.1.2:80"),
        Rule::action(Action::Dnat(Dnat::To(sock("10.244.1.3:80")))),
    ])]));
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let got: Vec<(Probability, Option<SocketAddr>)> = traced
        .outcomes
        .iter()
        .map(|o| (o.probability, accepted(o).and_then(|a| a.0)))
        .collect();
    let third = Probability::new(1, 3);
    assert_eq!(
        got,
        [
            (third, Some(sock("10.244.1.1:80"))),
            (third, Some(sock("10.244.1.2:80"))),
            (third, Some(sock("10.244.1.3:80"))),
        ]
    );
    // Masked numgen and numgen keys are enumerated.
    let masked = ruleset(table(vec![prerouting(vec![drop_when(vec![
        Match::Masked {
            left: Expr::Numgen { modulus: 4 },
            mask: 1,
            value: 1,
        },
    ])])]));
    let traced = run(&masked, &packet("10.244.1.5", "10.96.0.10:80"));
    assert_eq!(traced.outcomes[0].probability, Probability::new(1, 2));
    assert!(dropped_by(&traced.outcomes[0]).is_some());
}

#[test]
fn set_updates_are_noted_and_seen_by_later_lookups() {
    let key = |n| vec![Expr::SourceAddr, Expr::Constant(n)];
    let mut t = table(vec![prerouting(vec![
        // A dynamic set starts empty: this rule does not apply.
        Rule::verdict(Verdict::Accept).when([Match::in_set(key(7), "clients")]),
        Rule {
            matches: Vec::new(),
            statements: vec![Statement::UpdateSet {
                set: "clients".into(),
                key: key(7),
                timeout: Some(60),
            }],
            action: None,
            comment: None,
        },
        // Another constant is another key: not found.
        Rule::verdict(Verdict::Accept).when([Match::in_set(key(8), "clients")]),
        drop_when(vec![Match::in_set(key(7), "clients")]),
    ])]);
    t.sets = vec![Set {
        name: "clients".into(),
        key: vec![DataType::Ipv4Addr, DataType::Integer],
        interval: false,
        timeout: Some(600),
        size: None,
        comment: None,
        elements: Vec::new(),
    }];
    let rules = ruleset(t);
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    let outcome = only(&traced);
    assert_eq!(dropped_by(outcome), Some(("pre", 3)));
    assert!(
        outcome.notes.iter().any(|n| n.contains("assumed empty")),
        "{:?}",
        outcome.notes
    );
    assert!(
        outcome
            .notes
            .iter()
            .any(|n| n.starts_with("10.244.1.5 . 7 added to @clients (timeout 60s)")),
        "{:?}",
        outcome.notes
    );
}

fn hooks_table() -> Ruleset {
    let chain =
        |name: &str, kind: ChainType, hook: Hook, b: PriorityBase| base(name, kind, hook, b, 0);
    ruleset(table(vec![
        chain(
            "pre",
            ChainType::Filter,
            Hook::Prerouting,
            PriorityBase::Filter,
        ),
        chain(
            "nat-pre",
            ChainType::Nat,
            Hook::Prerouting,
            PriorityBase::Dstnat,
        ),
        chain("in", ChainType::Filter, Hook::Input, PriorityBase::Filter),
        chain(
            "fwd",
            ChainType::Filter,
            Hook::Forward,
            PriorityBase::Filter,
        ),
        chain("out", ChainType::Filter, Hook::Output, PriorityBase::Filter),
        chain(
            "nat-out",
            ChainType::Nat,
            Hook::Output,
            PriorityBase::Dstnat,
        ),
        chain(
            "post",
            ChainType::Nat,
            Hook::Postrouting,
            PriorityBase::Srcnat,
        ),
    ]))
}

#[test]
fn hooks_follow_the_kernel_order_for_each_origin() {
    let rules = hooks_table();
    let routed = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert_eq!(
        chain_names(only(&routed)),
        ["nat-pre", "pre", "fwd", "post"]
    );
    let to_node = run(&rules, &packet("10.244.1.5", &format!("{NODE_IP}:22")));
    assert_eq!(chain_names(only(&to_node)), ["nat-pre", "pre", "in"]);
    assert_eq!(accepted(only(&to_node)).map(|a| a.2), Some(Delivery::Host));
    let external = Packet {
        origin: Origin::External,
        ..packet("198.51.100.7", "10.96.0.10:80")
    };
    assert_eq!(
        chain_names(only(&run(&rules, &external))),
        ["nat-pre", "pre", "fwd", "post"]
    );
    let from_node = Packet {
        origin: Origin::Node,
        ..packet(NODE_IP, "10.96.0.10:80")
    };
    assert_eq!(
        chain_names(only(&run(&rules, &from_node))),
        ["nat-out", "out", "post"]
    );
    // To itself: loops back through prerouting, whose nat chain is skipped (already NATed).
    let loopback = Packet {
        origin: Origin::Node,
        ..packet(NODE_IP, "127.0.0.1:80")
    };
    let traced = run(&rules, &loopback);
    let outcome = only(&traced);
    assert_eq!(
        chain_names(outcome),
        ["nat-out", "out", "post", "pre", "in"]
    );
    assert!(outcome
        .events
        .iter()
        .any(|e| matches!(e, Event::Skipped { chain, .. } if chain == "nat-pre")));
}

#[test]
fn routing_uses_the_destination_after_dnat() {
    let mut rules = hooks_table();
    let table = &mut rules.tables[0];
    let nat_pre = table
        .chains
        .iter_mut()
        .find(|c| c.name == "nat-pre")
        .expect("chain");
    nat_pre.rules = vec![Rule::action(Action::Dnat(Dnat::To(sock(&format!(
        "{NODE_IP}:8080"
    )))))];
    let traced = run(&rules, &packet("10.244.1.5", "10.96.0.10:80"));
    assert_eq!(chain_names(only(&traced)), ["nat-pre", "pre", "in"]);
}

#[test]
fn errors_name_the_rule() {
    let bad_jump = ruleset(table(vec![prerouting(vec![Rule::verdict(Verdict::Jump(
        "nope".into(),
    ))])]));
    let p = packet("10.244.1.5", "10.96.0.10:80");
    let local = LocalAddresses::new([]);
    assert_eq!(
        trace(&bad_jump, &p, &local),
        Err(TraceError::Unknown {
            chain: "pre".into(),
            index: 0,
            kind: "chain",
            name: "nope".into()
        })
    );
    let mixed = packet("10.244.1.5", "[fd00::1]:80");
    assert!(matches!(
        trace(&bad_jump, &mixed, &local),
        Err(TraceError::FamilyMismatch { .. })
    ));
    let looping = ruleset(table(vec![
        prerouting(vec![Rule::verdict(Verdict::Jump("a".into()))]),
        regular("a", vec![Rule::verdict(Verdict::Jump("a".into()))]),
    ]));
    assert!(matches!(
        trace(&looping, &p, &local),
        Err(TraceError::Loop { .. })
    ));
    let type_error = ruleset(table(vec![prerouting(vec![drop_when(vec![Match::eq(
        Expr::DestPort,
        Value::Addr(ip("10.0.0.1")),
    )])])]));
    assert!(matches!(
        trace(&type_error, &p, &local),
        Err(TraceError::Type { .. })
    ));
}

#[test]
fn a_family_without_a_table_passes_untouched() {
    let rules = ruleset(table(vec![prerouting(vec![Rule::verdict(Verdict::Drop)])]));
    let v6 = packet("fd00::5", "[fd00::10]:80");
    let traced = run(&rules, &v6);
    assert_eq!(
        accepted(only(&traced)),
        Some((None, false, Delivery::Routed))
    );
    assert_eq!(traced.family, Family::Ip6);
}

/// Two Services behind one verdict map: `web` (a chain with two endpoints in a window of a
/// shared endpoint map) and `db` (one endpoint by `dnat to`), plus a drop rule that looks the
/// keys of a named set up.
fn graph_table() -> Ruleset {
    let mut t = table(vec![
        with_rules(
            nat_prerouting(Vec::new()),
            vec![Rule::verdict(Verdict::Jump("services".into()))],
        ),
        with_rules(
            base(
                "guard",
                ChainType::Filter,
                Hook::Prerouting,
                PriorityBase::Dstnat,
                -10,
            ),
            vec![drop_when(vec![Match::in_set(
                [Expr::DestAddr, Expr::L4Proto, Expr::DestPort],
                "guarded",
            )])],
        ),
        regular(
            "services",
            vec![Rule::action(Action::Vmap {
                key: vec![Expr::DestAddr, Expr::L4Proto, Expr::DestPort],
                map: "service-ips".into(),
            })],
        ),
        regular(
            "service-web",
            vec![Rule::action(Action::Dnat(Dnat::Numgen {
                map: "endpoints-0".into(),
                modulus: 4,
                offset: 4,
            }))],
        ),
        regular(
            "service-db",
            vec![Rule::action(Action::Dnat(Dnat::To(sock(
                "10.244.3.3:5432",
            ))))],
        ),
        regular("orphan", vec![Rule::verdict(Verdict::Drop)]),
    ]);
    let key = |addr: &str, port: u16| {
        vec![
            Value::Addr(ip(addr)),
            Value::Proto(Protocol::Tcp),
            Value::Port(port),
        ]
    };
    t.maps.push(Map {
        name: "service-ips".into(),
        key: vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        comment: None,
        elements: vec![
            VerdictElement {
                key: key("10.96.0.1", 80),
                verdict: Verdict::Goto("service-web".into()),
            },
            VerdictElement {
                key: key("10.96.0.2", 5432),
                verdict: Verdict::Goto("service-db".into()),
            },
        ],
    });
    t.sets.push(Set {
        name: "guarded".into(),
        key: vec![
            DataType::Ipv4Addr,
            DataType::InetProto,
            DataType::InetService,
        ],
        interval: false,
        timeout: None,
        size: None,
        comment: None,
        elements: vec![key("10.96.0.2", 5432)],
    });
    t.endpoint_maps.push(EndpointMap {
        name: "endpoints-0".into(),
        comment: None,
        elements: vec![
            // Another chain's window (0-3), then web's: 3 keys and 1 key.
            EndpointRange {
                first: 0,
                last: 3,
                target: sock("10.244.9.9:1"),
            },
            EndpointRange {
                first: 4,
                last: 6,
                target: sock("10.244.1.1:8080"),
            },
            EndpointRange {
                first: 7,
                last: 7,
                target: sock("10.244.2.2:8080"),
            },
        ],
    });
    ruleset(t)
}

/// The `a -> b [label=…]` lines of a graph, as (from, to, label).
fn edges(dot: &str) -> Vec<(String, String, String)> {
    dot.lines()
        .filter_map(|line| {
            let (from, rest) = line.trim().split_once(" -> ")?;
            let (to, attrs) = rest.split_once(" [")?;
            let label = attrs.split("label=\"").nth(1)?.split('"').next()?;
            Some((
                from.trim_matches('"').to_string(),
                to.trim_matches('"').to_string(),
                label.to_string(),
            ))
        })
        .collect()
}

fn has_edge(edges: &[(String, String, String)], from: &str, to: &str) -> bool {
    edges.iter().any(|(f, t, _)| f == from && t == to)
}

#[test]
fn graph_follows_jumps_vmap_elements_and_endpoint_windows() {
    let dot = crate::render_dot(&graph_table(), None);
    assert!(
        dot.starts_with("digraph kproxy {\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    let e = edges(&dot);
    // Hooks to base chains in priority order: guard (-110) before nat-prerouting (-100).
    let hooked: Vec<&str> = e
        .iter()
        .filter(|(f, _, _)| f == "ip hook prerouting")
        .map(|(_, t, _)| t.as_str())
        .collect();
    assert_eq!(hooked, ["ip chain guard", "ip chain nat-pre"]);
    assert!(has_edge(&e, "ip chain nat-pre", "ip chain services"));
    assert!(has_edge(&e, "ip chain services", "ip map service-ips"));
    assert!(has_edge(&e, "ip map service-ips", "ip chain service-web"));
    assert!(has_edge(&e, "ip map service-ips", "ip chain service-db"));
    assert!(has_edge(
        &e,
        "ip chain service-web",
        "ip window endpoints-0 4"
    ));
    assert!(has_edge(
        &e,
        "ip chain service-db",
        "ip endpoint 10.244.3.3:5432"
    ));
    assert!(has_edge(&e, "ip chain guard", "ip end drop"));
    assert!(has_edge(&e, "ip chain orphan", "ip end drop"));
    // Only the window's ranges, each with its share of the window.
    let ranges: Vec<(&str, &str)> = e
        .iter()
        .filter(|(f, _, _)| f == "ip window endpoints-0 4")
        .map(|(_, t, l)| (t.as_str(), l.as_str()))
        .collect();
    assert_eq!(
        ranges,
        [
            ("ip endpoint 10.244.1.1:8080", "3/4 (75%): 4-6"),
            ("ip endpoint 10.244.2.2:8080", "1/4 (25%): 7-7"),
        ]
    );
    assert!(
        !dot.contains("10.244.9.9"),
        "another window's endpoint: {dot}"
    );
    // Deterministic.
    assert_eq!(dot, crate::render_dot(&graph_table(), None));
}

#[test]
fn graph_focus_keeps_one_services_paths_only() {
    let key = vec![
        Value::Addr(ip("10.96.0.2")),
        Value::Proto(Protocol::Tcp),
        Value::Port(5432),
    ];
    let focus = crate::Focus {
        chains: ["service-db".to_string()].into(),
        keys: [key].into(),
    };
    let dot = crate::render_dot(&graph_table(), Some(&focus));
    let e = edges(&dot);
    assert!(has_edge(&e, "ip hook prerouting", "ip chain nat-pre"));
    assert!(has_edge(&e, "ip chain nat-pre", "ip chain services"));
    assert!(has_edge(&e, "ip map service-ips", "ip chain service-db"));
    assert!(has_edge(
        &e,
        "ip chain service-db",
        "ip endpoint 10.244.3.3:5432"
    ));
    // The drop rule looks db's key up in @guarded: it belongs to db.
    assert!(has_edge(&e, "ip hook prerouting", "ip chain guard"));
    assert!(has_edge(&e, "ip chain guard", "ip end drop"));
    // Nothing of web, nor the unreachable chain.
    assert!(!dot.contains("service-web"), "{dot}");
    assert!(!dot.contains("10.244.1.1"), "{dot}");
    assert!(!dot.contains("orphan"), "{dot}");
    let labels: Vec<&str> = e
        .iter()
        .filter(|(f, _, _)| f == "ip map service-ips")
        .map(|(_, _, l)| l.as_str())
        .collect();
    assert_eq!(labels, ["10.96.0.2 . tcp . 5432 : goto service-db"]);
}

#[test]
fn graph_labels_are_quoted_for_dot() {
    let mut rules = graph_table();
    rules.tables[0].chains[2].comment = Some("say \"hi\" \\ bye".into());
    let dot = crate::render_dot(&rules, None);
    assert!(
        dot.contains(r#"label="chain services\n\"say \"hi\" \\ bye\"""#),
        "{dot}"
    );
}

#[test]
fn local_networks_from_the_kernel_include_prefixes_once() {
    let local = LocalAddresses::from_networks([
        net("127.0.0.0/8"),
        net("127.0.0.1/32"),
        net("10.0.0.0/8"),
        net("192.168.10.11/32"),
    ]);
    let nets: Vec<String> = local.networks().iter().map(ToString::to_string).collect();
    assert_eq!(
        nets,
        ["127.0.0.0/8", "::1/128", "10.0.0.0/8", "192.168.10.11/32"]
    );
    assert!(local.contains(ip("10.1.2.3")));
    assert!(!local.contains(ip("192.168.10.12")));
}
