//! externalIPs, load-balancer IPs and externalTrafficPolicy: the `external-…` chain.
//!
//! NodePorts, externalIPs and load-balancer ingress IPs all lead to one chain per Service port.
//! With `externalTrafficPolicy: Cluster` it marks the packet for masquerade and continues to the
//! cluster-wide endpoints. With `Local` it keeps the client address and uses only endpoints on
//! this node, except that traffic from this node or its pods is "short-circuited" to the
//! internal endpoints, as kube-proxy does (it could not reach a local endpoint otherwise).

use kproxy_model::TrafficPolicy;

use crate::clusterip::service_key;
use crate::ir::{Action, Chain, Expr, Match, Rule, SetRef, Value, Verdict};
use crate::masquerade::MARK_CHAIN;
use crate::naming;
use crate::table::{MapName, PortContext, TableBuilder};

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    if !ctx.port.is_externally_reachable() || !ctx.has_endpoints() {
        return;
    }
    let chain = naming::external_chain(&ctx.id);
    let family = ctx.family;
    for &ip in family
        .external_ips()
        .iter()
        .chain(family.load_balancer_ips())
    {
        table.add_verdict(
            MapName::ServiceIps,
            service_key(ip, ctx),
            Verdict::Goto(chain.clone()),
        );
    }
    let rules = match ctx.port.effective_external_policy() {
        TrafficPolicy::Cluster => vec![
            Rule::verdict(Verdict::Jump(MARK_CHAIN.into())),
            Rule::verdict(Verdict::Goto(naming::service_chain(&ctx.id))),
        ],
        TrafficPolicy::Local => local_policy_rules(table, ctx),
    };
    table.add_chain(Chain {
        name: chain,
        hook: None,
        comment: Some(ctx.comment.clone()),
        rules,
    });
}

fn local_policy_rules(table: &TableBuilder<'_>, ctx: &PortContext<'_>) -> Vec<Rule> {
    let from_node = Match::eq(Expr::SourceAddrType, Value::Local);
    let mut rules = vec![
        Rule::verdict(Verdict::Jump(MARK_CHAIN.into()))
            .when([from_node.clone()])
            .comment("masquerade traffic from this node"),
        Rule::verdict(ctx.internal_verdict())
            .when([from_node])
            .comment("short-circuit traffic from this node"),
    ];
    if !table.cluster_cidrs.is_empty() {
        rules.push(
            Rule::verdict(ctx.internal_verdict())
                .when([source_in(&table.cluster_cidrs, false)])
                .comment("short-circuit traffic from pods"),
        );
    }
    rules.push(Rule::action(Action::Verdict(ctx.local_verdict())));
    rules
}

/// `ip saddr [!=] <cidr>`, or `ip saddr [!=] { cidrs }` for several.
pub(crate) fn source_in(cidrs: &[ipnet::IpNet], negate: bool) -> Match {
    match cidrs {
        [one] if negate => Match::ne(Expr::SourceAddr, Value::Prefix(*one)),
        [one] => Match::eq(Expr::SourceAddr, Value::Prefix(*one)),
        many => Match::Lookup {
            key: vec![Expr::SourceAddr],
            set: SetRef::Prefixes(many.to_vec()),
            negate,
        },
    }
}
