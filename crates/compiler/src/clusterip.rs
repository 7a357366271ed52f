//! ClusterIP: `clusterIP:port` → the Service port's chain for internalTrafficPolicy.
//!
//! Every ClusterIP also joins the `cluster-ips` set, which lets one rule masquerade off-cluster
//! clients (see [`crate::masquerade`]) and one rule reject ports a Service does not define.

use crate::ir::{Chain, Expr, Match, Value};
use crate::table::{MapName, PortContext, SetName, TableBuilder};

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    let ip = ctx.family.cluster_ip;
    table.add_element(SetName::ClusterIps, vec![Value::Addr(ip)]);
    if ctx.has_endpoints() {
        table.add_verdict(
            MapName::ServiceIps,
            service_key(ip, ctx),
            ctx.internal_verdict(),
        );
    }
}

/// The `ip . proto . port` key of a Service address.
pub(crate) fn service_key(ip: std::net::IpAddr, ctx: &PortContext<'_>) -> Vec<Value> {
    vec![
        Value::Addr(ip),
        Value::Proto(ctx.port.name.protocol),
        Value::Port(ctx.port.port),
    ]
}

/// Rejects new connections to a ClusterIP on a port no Service defines. It runs after DNAT,
/// so only packets still addressed to a ClusterIP get here.
pub(crate) fn undefined_port_chain() -> Chain {
    Chain {
        name: "cluster-ips-check".into(),
        hook: None,
        comment: Some("reject ports that no Service defines on a ClusterIP".into()),
        rules: crate::ir::refusal(vec![Match::in_set(
            [Expr::DestAddr],
            SetName::ClusterIps.as_str(),
        )]),
    }
}
