//! Base chains: where kproxy's rules attach to netfilter, and the `services` dispatch chain.
//!
//! | chain | hook, priority | job |
//! |---|---|---|
//! | `filter-prerouting-pre-dnat` | prerouting, dstnat − 10 | loadBalancerSourceRanges |
//! | `filter-output-pre-dnat` | output, dstnat − 10 | loadBalancerSourceRanges |
//! | `nat-prerouting`, `nat-output` | prerouting/output, dstnat | Service dispatch, DNAT |
//! | `filter-output` | output, dstnat + 10 | REJECT: no endpoints, undefined ports |
//! | `filter-input` | input, filter − 10 | REJECT: no endpoints (incl. NodePorts) |
//! | `filter-forward` | forward, filter − 10 | REJECT: no endpoints, undefined ports |
//! | `nat-postrouting` | postrouting, srcnat | masquerade |
//!
//! All base chains accept by default: kproxy only acts on Service traffic.

use crate::ir::{
    Action, BaseHook, Chain, ChainType, Expr, Hook, Match, Priority, PriorityBase, Rule, Value,
    Verdict,
};
use crate::table::{MapName, TableBuilder};
use crate::{buckets, clusterip, firewall, masquerade, no_endpoints, nodeport};

fn base(
    name: &str,
    kind: ChainType,
    hook: Hook,
    base: PriorityBase,
    offset: i32,
    rules: Vec<Rule>,
) -> Chain {
    Chain {
        name: name.into(),
        hook: Some(BaseHook {
            kind,
            hook,
            priority: Priority { base, offset },
        }),
        comment: None,
        rules,
    }
}

fn jump(chain: &str) -> Rule {
    Rule::verdict(Verdict::Jump(chain.into()))
}

/// The first packet of a connection: later ones follow the decision conntrack recorded for it.
fn first_packet() -> Match {
    Match::eq(Expr::CtState, Value::CtNew)
}

/// A jump for the first packet of a connection that no DNAT rule took. The checks it jumps to
/// reject packets still addressed to a Service; a DNATed packet is addressed to its endpoint,
/// so for Service traffic (which is what is DNATed) the test spares their lookups in sets as
/// large as the cluster.
fn new_undnatted_connections(chain: &str) -> Rule {
    jump(chain).when([first_packet(), Match::ne(Expr::CtStatus, Value::CtDnat)])
}

/// Every chain that does not belong to one Service port, base chains first.
pub(crate) fn chains(table: &TableBuilder<'_>) -> Vec<Chain> {
    use ChainType::{Filter, Nat};
    use PriorityBase::{Dstnat, Filter as FilterPriority, Srcnat};
    let mut chains = vec![
        base(
            "filter-prerouting-pre-dnat",
            Filter,
            Hook::Prerouting,
            Dstnat,
            -10,
            vec![jump("firewall-check").when([first_packet()])],
        ),
        base(
            "filter-output-pre-dnat",
            Filter,
            Hook::Output,
            Dstnat,
            -10,
            vec![jump("firewall-check").when([first_packet()])],
        ),
        base(
            "nat-prerouting",
            Nat,
            Hook::Prerouting,
            Dstnat,
            0,
            vec![jump("services")],
        ),
        base(
            "nat-output",
            Nat,
            Hook::Output,
            Dstnat,
            0,
            vec![jump("services")],
        ),
        base(
            "filter-output",
            Filter,
            Hook::Output,
            Dstnat,
            10,
            vec![
                new_undnatted_connections("service-endpoints-check"),
                new_undnatted_connections("cluster-ips-check"),
            ],
        ),
        base(
            "filter-input",
            Filter,
            Hook::Input,
            FilterPriority,
            -10,
            vec![
                new_undnatted_connections("nodeport-endpoints-check"),
                new_undnatted_connections("service-endpoints-check"),
            ],
        ),
        base(
            "filter-forward",
            Filter,
            Hook::Forward,
            FilterPriority,
            -10,
            vec![
                new_undnatted_connections("service-endpoints-check"),
                new_undnatted_connections("cluster-ips-check"),
            ],
        ),
        base(
            "nat-postrouting",
            Nat,
            Hook::Postrouting,
            Srcnat,
            0,
            vec![jump("masquerading")],
        ),
        services_chain(table),
    ];
    chains.extend(masquerade::chains());
    chains.push(firewall::check_chain());
    chains.extend(no_endpoints::chains(table));
    chains.push(clusterip::undefined_port_chain());
    chains
}

/// Dispatch: a packet to a Service address and port goes to the bucket of its address's low
/// bits, a packet to a NodePort to its NodePort's bucket ([`crate::buckets`]).
fn services_chain(table: &TableBuilder<'_>) -> Chain {
    let mut rules: Vec<Rule> = masquerade::cluster_ip_rule(table).into_iter().collect();
    rules.push(
        Rule::action(Action::Vmap {
            key: vec![Expr::DestAddrLowBits {
                bits: buckets::SERVICE_IP_BITS,
            }],
            map: buckets::SERVICE_IP_BUCKETS_MAP.into(),
        })
        .when([Match::in_set(
            [Expr::DestAddr, Expr::L4Proto, Expr::DestPort],
            MapName::ServiceIps.as_str(),
        )]),
    );
    rules.push(
        Rule::action(Action::Vmap {
            key: vec![Expr::DestPortLowBits {
                bits: buckets::NODEPORT_BITS,
            }],
            map: buckets::NODEPORT_BUCKETS_MAP.into(),
        })
        .when(
            nodeport::destination(table)
                .into_iter()
                .chain([Match::in_set(
                    [Expr::L4Proto, Expr::DestPort],
                    MapName::ServiceNodePorts.as_str(),
                )]),
        ),
    );
    Chain {
        name: "services".into(),
        hook: None,
        comment: None,
        rules,
    }
}
