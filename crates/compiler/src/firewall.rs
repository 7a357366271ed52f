//! loadBalancerSourceRanges: drop traffic to a load-balancer IP from sources outside the ranges.
//!
//! Two global sets replace kube-proxy's chain per Service: `firewall-ips` holds each guarded
//! `ip . proto . port`, `firewall-allow` holds `ip . proto . port . source-range`. One rule,
//! before DNAT, drops a packet whose destination is guarded and whose source is not allowed.
//! NodePorts are not subject to the ranges.

use crate::clusterip::service_key;
use crate::ir::{Action, Chain, Expr, Match, Rule, SetRef, Value, Verdict};
use crate::table::{PortContext, SetName, TableBuilder};

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    let ranges = ctx.family.source_ranges();
    if ranges.is_empty() {
        return;
    }
    for &ip in ctx.family.load_balancer_ips() {
        let key = service_key(ip, ctx);
        for range in ranges {
            let mut allowed = key.clone();
            allowed.push(Value::Prefix(*range));
            table.add_element(SetName::FirewallAllow, allowed);
        }
        table.add_element(SetName::FirewallIps, key);
    }
}

/// The chain both pre-DNAT hooks jump to.
pub(crate) fn check_chain() -> Chain {
    let destination = vec![Expr::DestAddr, Expr::L4Proto, Expr::DestPort];
    let mut with_source = destination.clone();
    with_source.push(Expr::SourceAddr);
    let rule = Rule::action(Action::Verdict(Verdict::Drop))
        .when([
            Match::in_set(destination, SetName::FirewallIps.as_str()),
            Match::Lookup {
                key: with_source,
                set: SetRef::Named(SetName::FirewallAllow.as_str().into()),
                negate: true,
            },
        ])
        .comment("loadBalancerSourceRanges");
    Chain {
        name: "firewall-check".into(),
        hook: None,
        comment: None,
        rules: vec![rule],
    }
}
