//! NodePort: `proto . nodePort` on the node's NodePort addresses → the `external-…` chain.
//!
//! Which addresses count is decided once per table (see [`crate::Options`]) and expressed
//! as matches in front of the `service-nodeports` lookup, so NodePorts never cost a rule each.
//! Loopback addresses never accept NodePorts.

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_model::IpFamily;

use crate::ir::{Expr, Match, Value, Verdict};
use crate::naming;
use crate::options::NodePortMatch;
use crate::table::{MapName, PortContext, SetName, TableBuilder};

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    let Some(node_port) = ctx.port.node_port else {
        return;
    };
    if ctx.has_endpoints() {
        let key = nodeport_key(ctx, node_port);
        table.add_verdict(
            MapName::ServiceNodePorts,
            key,
            Verdict::Goto(naming::external_chain(&ctx.id)),
        );
    }
}

/// The `proto . port` key of a NodePort.
pub(crate) fn nodeport_key(ctx: &PortContext<'_>, node_port: u16) -> Vec<Value> {
    vec![Value::Proto(ctx.port.name.protocol), Value::Port(node_port)]
}

/// Matches packets addressed to a NodePort address of this node.
pub(crate) fn destination(table: &TableBuilder<'_>) -> Vec<Match> {
    let local = Match::eq(Expr::DestAddrType, Value::Local);
    let not_loopback = Match::ne(Expr::DestAddr, Value::Prefix(loopback(table.ip_family)));
    let in_set = Match::in_set([Expr::DestAddr], SetName::NodePortIps.as_str());
    match table.nodeport {
        NodePortMatch::Addresses(_) => vec![in_set],
        NodePortMatch::LocalIn(_) => vec![in_set, local, not_loopback],
        NodePortMatch::AnyLocal => vec![local, not_loopback],
    }
}

fn loopback(family: IpFamily) -> IpNet {
    match family {
        IpFamily::V4 => IpNet::new(IpAddr::from([127, 0, 0, 0]), 8),
        IpFamily::V6 => IpNet::new(IpAddr::from(std::net::Ipv6Addr::LOCALHOST), 128),
    }
    .expect("constant prefix lengths are valid")
}
