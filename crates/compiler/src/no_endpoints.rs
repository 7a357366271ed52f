//! Services without usable endpoints: REJECT, so clients fail fast instead of timing out.
//!
//! Such Services get no DNAT rules at all; their addresses go into the `no-endpoint-services`
//! and `no-endpoint-nodeports` maps instead, which filter chains consult for new connections.
//! REJECT is only allowed in filter chains, which is why this is not done at DNAT time.

use crate::clusterip::service_key;
use crate::ir::{Action, Chain, Expr, Rule, Verdict};
use crate::nodeport::{self, nodeport_key};
use crate::table::{MapName, PortContext, TableBuilder};

/// The chain that rejects; map elements `goto` it.
pub(crate) const REJECT_CHAIN: &str = "reject-chain";

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    if ctx.has_endpoints() {
        return;
    }
    let reject = Verdict::Goto(REJECT_CHAIN.into());
    let family = ctx.family;
    let ips = std::iter::once(&family.cluster_ip)
        .chain(family.external_ips())
        .chain(family.load_balancer_ips());
    for &ip in ips {
        table.add_verdict(
            MapName::NoEndpointServices,
            service_key(ip, ctx),
            reject.clone(),
        );
    }
    if let Some(node_port) = ctx.port.node_port {
        table.add_verdict(
            MapName::NoEndpointNodePorts,
            nodeport_key(ctx, node_port),
            reject,
        );
    }
}

pub(crate) fn chains(table: &TableBuilder<'_>) -> Vec<Chain> {
    let services = Rule::action(Action::Vmap {
        key: vec![Expr::DestAddr, Expr::L4Proto, Expr::DestPort],
        map: MapName::NoEndpointServices.as_str().into(),
    });
    let nodeports = Rule::action(Action::Vmap {
        key: vec![Expr::L4Proto, Expr::DestPort],
        map: MapName::NoEndpointNodePorts.as_str().into(),
    })
    .when(nodeport::destination(table));
    vec![
        Chain {
            name: "service-endpoints-check".into(),
            hook: None,
            comment: None,
            rules: vec![services],
        },
        Chain {
            name: "nodeport-endpoints-check".into(),
            hook: None,
            comment: None,
            rules: vec![nodeports],
        },
        Chain {
            name: REJECT_CHAIN.into(),
            hook: None,
            comment: Some("Services without endpoints".into()),
            rules: crate::ir::refusal(Vec::new()),
        },
    ]
}
