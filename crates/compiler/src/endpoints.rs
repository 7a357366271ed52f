//! Endpoint chains: DNAT to one endpoint chosen at random, with optional session affinity.
//!
//! A Service port has up to two endpoint chains: `service-…` for the cluster-wide set and
//! `local-…` for endpoints on this node (Local traffic policies). Without affinity each chain is
//! one rule that never changes, `dnat to numgen random mod 720720 offset W map @endpoints-S`: the
//! endpoints are ranges of the chain's window in a shared endpoint map ([`crate::endpoint_maps`]),
//! so adding or removing an endpoint rewrites map elements and no rule.
//!
//! With `sessionAffinity: ClientIP`, the chain has one rule per endpoint that sends a client
//! back to the endpoint it picked before (refreshing the timeout), then one per endpoint that
//! picks with the same uniform probability as kube-proxy (rule i of N matches with 1/(N−i)) and
//! records the pick. Every pick of the table lives in one dynamic set, [`affinity_set`], keyed
//! `client . endpoint key` ([`naming::affinity_key`]: 64 bits for the Service port and the
//! endpoint), each element with its Service's timeout. kube-proxy keeps one set per endpoint
//! instead; thousands of sets make every rule that names one slower to load, because the kernel
//! finds a set by walking the table's sets by name (at 10,000 Services that walk was a third
//! of a cold apply). A removed endpoint loses its rules, so no client is sent back to a dead
//! pod; its elements stay until they expire and match nothing.

use std::net::SocketAddr;

use kproxy_model::{Endpoint, SessionAffinity};

use crate::endpoint_maps::{self, Placement};
use crate::ir::{
    Action, Chain, DataType, Dnat, EndpointRange, Expr, Match, RejectWith, Rule, Set, Statement,
    Value,
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
}

/// kube-proxy's default `sessionAffinityConfig.clientIP.timeoutSeconds`; every update names its
/// Service's own timeout, so this only fills the declaration.
const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// Most client-endpoint pairs the affinity set holds. nft's default for a dynamic set is
/// 65,535, which kube-proxy gets per endpoint; one set for the whole table needs more. Memory
/// is spent per live element only; when the set is full, a new client's pick is not recorded
/// and the pick goes on to the next rule.
pub(crate) const AFFINITY_SET_SIZE: u32 = 1 << 20;

/// The table's set of session-affinity picks: `client . key high . key low`.
pub(crate) fn affinity_set(addr: DataType) -> Set {
    Set {
        name: naming::AFFINITY_SET.to_string(),
        key: vec![addr, DataType::Integer, DataType::Integer],
        interval: false,
        timeout: Some(DEFAULT_AFFINITY_TIMEOUT),
        size: Some(AFFINITY_SET_SIZE),
        comment: Some("ClientIP session affinity: client . Service port and endpoint".to_string()),
        elements: Vec::new(),
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
        SessionAffinity::ClientIp { timeout_seconds } => table.add_chain(Chain {
            rules: affinity_rules(&targets, protocol, &ctx.id, timeout_seconds),
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
        let chain = Chain {
            name: self.name.clone(),
            hook: None,
            comment: Some(self.comment.clone()),
            rules: vec![Rule::action(self.action(placement)).when([self.protocol.clone()])],
        };
        (chain, self.ranges(placement))
    }

    /// The chain's ranges of its window (none without one).
    pub fn ranges(&self, placement: Option<&Placement>) -> Vec<EndpointRange> {
        placement.map_or_else(Vec::new, |placement| {
            endpoint_maps::ranges(placement.offset, &self.targets)
        })
    }

    fn action(&self, placement: Option<&Placement>) -> Action {
        match placement {
            Some(placement) => Action::Dnat(Dnat::Numgen {
                map: placement.map(),
                modulus: endpoint_maps::MODULUS,
                offset: placement.offset,
            }),
            None => Action::Reject(RejectWith::PortUnreachable),
        }
    }
}

fn affinity_rules(targets: &[SocketAddr], protocol: Match, id: &str, timeout: u32) -> Vec<Rule> {
    let key = |target: SocketAddr| {
        let [high, low] = naming::affinity_key(id, target);
        vec![Expr::SourceAddr, Expr::Constant(high), Expr::Constant(low)]
    };
    let to = |target: SocketAddr| {
        Rule::action(Action::Dnat(Dnat::To(target)))
            .with(Statement::UpdateSet {
                set: naming::AFFINITY_SET.to_string(),
                key: key(target),
                timeout: Some(timeout),
            })
            .when([protocol.clone()])
    };
    let sticky = targets
        .iter()
        .map(|&target| to(target).when([Match::in_set(key(target), naming::AFFINITY_SET)]));
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
