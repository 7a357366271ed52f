//! Endpoint chains: DNAT to one endpoint chosen at random, with optional session affinity.
//!
//! A Service port has up to two endpoint chains: `service-…` for the cluster-wide set and
//! `local-…` for endpoints on this node (Local traffic policies). Without affinity each chain is
//! one rule that never changes, `dnat to numgen random mod 720720 offset W map @endpoints-S`: the
//! endpoints are ranges of the chain's window in a shared endpoint map ([`crate::endpoint_maps`]),
//! so adding or removing an endpoint rewrites map elements and no rule.
//!
//! With `sessionAffinity: ClientIP`, each endpoint has a timeout set of client addresses. A
//! client found in an endpoint's set goes back to it (refreshing the timeout); a new client
//! picks an endpoint with the same uniform probability (rule i of N matches with 1/(N−i)) and
//! is recorded in its set. Because the sets belong to endpoints, a removed endpoint takes its
//! clients' affinity with it and nobody is sent to a dead pod.

use std::net::SocketAddr;

use kproxy_model::{Endpoint, SessionAffinity};

use crate::endpoint_maps::{self, Placement};
use crate::ir::{
    Action, Chain, Dnat, EndpointRange, Expr, Match, RejectWith, Rule, Set, Statement, Value,
};
use crate::naming;
use crate::table::{PortContext, SetName, TableBuilder};

pub(crate) fn compile(table: &mut TableBuilder<'_>, ctx: &PortContext<'_>) {
    let sets = &ctx.family.endpoints;
    let mut used: Vec<&Endpoint> = Vec::new();
    if ctx.uses_cluster_chain() {
        endpoint_chain(table, naming::service_chain(&ctx.id), &sets.cluster, ctx);
        used.extend(&sets.cluster);
    }
    if ctx.uses_local_chain() {
        endpoint_chain(table, naming::local_chain(&ctx.id), &sets.local, ctx);
        used.extend(&sets.local);
    }
    used.sort();
    used.dedup();
    for endpoint in &used {
        if endpoint.local {
            table.add_element(
                SetName::Hairpin,
                vec![Value::Addr(endpoint.addr), Value::Addr(endpoint.addr)],
            );
        }
    }
    if let SessionAffinity::ClientIp { timeout_seconds } = ctx.port.affinity {
        let addr = table.addr_type();
        for endpoint in used {
            table.add_set(Set {
                name: naming::affinity_set(&ctx.id, socket(endpoint)),
                key: vec![addr],
                interval: false,
                timeout: Some(timeout_seconds),
                comment: Some(ctx.comment.clone()),
                elements: Vec::new(),
            });
        }
    }
}

fn socket(endpoint: &Endpoint) -> SocketAddr {
    SocketAddr::new(endpoint.addr, endpoint.port)
}

fn endpoint_chain(
    table: &mut TableBuilder<'_>,
    name: String,
    endpoints: &[Endpoint],
    ctx: &PortContext<'_>,
) {
    let protocol = Match::eq(Expr::L4Proto, Value::Proto(ctx.port.name.protocol));
    let targets: Vec<SocketAddr> = endpoints.iter().map(socket).collect();
    match ctx.port.affinity {
        // The rule waits for its window, which depends on every other chain of the table.
        SessionAffinity::None => table.add_endpoint_chain(EndpointChain {
            name,
            comment: ctx.comment.clone(),
            protocol,
            targets,
        }),
        SessionAffinity::ClientIp { .. } => table.add_chain(Chain {
            rules: affinity_rules(&targets, protocol, &ctx.id),
            name,
            hook: None,
            comment: Some(ctx.comment.clone()),
        }),
    }
}

/// A chain that DNATs to one of `targets` through an endpoint map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EndpointChain {
    pub name: String,
    pub comment: String,
    /// The Service port's protocol (nft needs it before a port rewrite).
    pub protocol: Match,
    pub targets: Vec<SocketAddr>,
}

impl EndpointChain {
    /// The chain, reading its window, and its ranges of the window; `None` (no window left)
    /// rejects instead.
    pub fn render(&self, placement: Option<&Placement>) -> (Chain, Vec<EndpointRange>) {
        let (action, ranges) = match placement {
            Some(placement) => (
                Action::Dnat(Dnat::Numgen {
                    map: placement.map(),
                    modulus: endpoint_maps::MODULUS,
                    offset: placement.offset,
                }),
                endpoint_maps::ranges(placement.offset, &self.targets),
            ),
            None => (Action::Reject(RejectWith::PortUnreachable), Vec::new()),
        };
        let chain = Chain {
            name: self.name.clone(),
            hook: None,
            comment: Some(self.comment.clone()),
            rules: vec![Rule::action(action).when([self.protocol.clone()])],
        };
        (chain, ranges)
    }
}

fn affinity_rules(targets: &[SocketAddr], protocol: Match, id: &str) -> Vec<Rule> {
    let to = |target: SocketAddr| {
        let set = naming::affinity_set(id, target);
        Rule::action(Action::Dnat(Dnat::To(target)))
            .with(Statement::UpdateSet {
                set,
                key: Expr::SourceAddr,
            })
            .when([protocol.clone()])
    };
    let sticky = targets.iter().map(|&target| {
        to(target).when([Match::in_set(
            [Expr::SourceAddr],
            &naming::affinity_set(id, target),
        )])
    });
    let count = targets.len();
    let pick = targets.iter().enumerate().map(|(i, &target)| {
        let remaining = u32::try_from(count - i).unwrap_or(u32::MAX);
        if remaining == 1 {
            to(target)
        } else {
            to(target).when([Match::eq(
                Expr::Numgen { modulus: remaining },
                Value::Integer(0),
            )])
        }
    });
    sticky.chain(pick).collect()
}
