//! Endpoint selection chains (`KUBE-SVC-`, `KUBE-SVL-`) and endpoint chains (`KUBE-SEP-`).
//!
//! A selection chain picks one of N endpoints with equal probability the way kube-proxy does:
//! rule i (from 0) matches with probability 1/(N−i) (`-m statistic --mode random`, written with
//! 10 decimals), the last rule is unconditional. With `sessionAffinity: ClientIP` it first
//! sends a client seen within the timeout back to its endpoint (`-m recent --rcheck --reap`,
//! one list per endpoint chain), and the endpoint chain records the client (`--set`).
//!
//! An endpoint chain marks a pod reaching itself (hairpin) for masquerade, then DNATs.
//!
//! Above [`super::LARGE_CLUSTER_ENDPOINTS`] endpoints these rules carry no comment, as in
//! kube-proxy: the comments were most of the table's size, and so of every restore's cost.

use std::net::SocketAddr;

use ipnet::IpNet;
use kproxy_model::{Endpoint, SessionAffinity};

use super::ir::{Chain, Match, Rule, Target};
use super::{naming, service_chain, PortContext};

/// A `KUBE-SVC-`/`KUBE-SVL-` chain over `endpoints`, after an optional masquerade rule.
pub(crate) fn selection_chain(
    name: String,
    endpoints: &[Endpoint],
    masquerade: Option<Rule>,
    ctx: &PortContext<'_>,
) -> Chain {
    let mut rules: Vec<Rule> = masquerade.into_iter().collect();
    let picks_start = rules.len();
    let targets: Vec<(SocketAddr, String)> = endpoints
        .iter()
        .map(|ep| {
            let addr = socket(ep);
            (addr, naming::endpoint_chain(&ctx.port.name, addr))
        })
        .collect();
    let describe = |addr: &SocketAddr| naming::comment(&format!("{} -> {addr}", ctx.comment));
    if let SessionAffinity::ClientIp { timeout_seconds } = ctx.port.affinity {
        for (addr, chain) in &targets {
            rules.push(
                Rule::to(Target::Jump(chain.clone()))
                    .when([Match::RecentCheck {
                        name: chain.clone(),
                        seconds: timeout_seconds,
                    }])
                    .comment(describe(addr)),
            );
        }
    }
    let count = targets.len();
    for (i, (addr, chain)) in targets.iter().enumerate() {
        let rule = Rule::to(Target::Jump(chain.clone())).comment(describe(addr));
        let remaining = u32::try_from(count - i).unwrap_or(u32::MAX);
        rules.push(if remaining > 1 {
            rule.when([Match::RandomOneIn(remaining)])
        } else {
            rule
        });
    }
    if !ctx.endpoint_comments {
        for rule in &mut rules[picks_start..] {
            rule.comment = None;
        }
    }
    service_chain(name, rules)
}

/// The `KUBE-SEP-` chains of every endpoint the port's selection chains use, sorted by
/// endpoint (an endpoint in both the cluster-wide and the local set has one chain).
pub(crate) fn endpoint_chains(ctx: &PortContext<'_>) -> Vec<Chain> {
    let sets = &ctx.family.endpoints;
    let mut used: Vec<&Endpoint> = Vec::new();
    if ctx.uses_cluster_chain() {
        used.extend(&sets.cluster);
    }
    if ctx.uses_local_chain() {
        used.extend(&sets.local);
    }
    used.sort();
    used.dedup_by_key(|ep| socket(ep));
    used.into_iter()
        .map(|ep| endpoint_chain(ctx, socket(ep)))
        .collect()
}

fn endpoint_chain(ctx: &PortContext<'_>, addr: SocketAddr) -> Chain {
    let name = naming::endpoint_chain(&ctx.port.name, addr);
    let hairpin = Rule::to(Target::Jump(naming::MARK_MASQ.into()))
        .when([Match::source(IpNet::from(addr.ip()))])
        .comment(ctx.comment.clone());
    let mut dnat = Rule::to(Target::Dnat(addr)).comment(ctx.comment.clone());
    if let SessionAffinity::ClientIp { .. } = ctx.port.affinity {
        dnat = dnat.when([Match::RecentSet { name: name.clone() }]);
    }
    let dnat = dnat.when([Match::Protocol {
        protocol: ctx.port.name.protocol,
        dport: None,
    }]);
    let mut rules = vec![hairpin, dnat];
    if !ctx.endpoint_comments {
        for rule in &mut rules {
            rule.comment = None;
        }
    }
    service_chain(name, rules)
}

fn socket(endpoint: &Endpoint) -> SocketAddr {
    SocketAddr::new(endpoint.addr, endpoint.port)
}
