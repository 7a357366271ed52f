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

/// The `KUBE-SEP-` chain names of the endpoints a port's selection chains use, sorted by
/// endpoint, each computed once: the selection chains and the endpoint chains both need
/// them, and each is a sha256 of formatted text.
pub(crate) struct EndpointNames(Vec<(SocketAddr, String)>);

impl EndpointNames {
    /// The endpoints of the cluster-wide and local sets that `ctx`'s chains use (an endpoint
    /// in both sets has one chain).
    pub(crate) fn new(ctx: &PortContext<'_>) -> EndpointNames {
        let sets = &ctx.family.endpoints;
        let mut used: Vec<SocketAddr> = Vec::new();
        if ctx.uses_cluster_chain() {
            used.extend(sets.cluster.iter().map(socket));
        }
        if ctx.uses_local_chain() {
            used.extend(sets.local.iter().map(socket));
        }
        used.sort_unstable();
        used.dedup();
        let mut namer = naming::EndpointNamer::new(&ctx.port.name);
        EndpointNames(used.into_iter().map(|a| (a, namer.name(a))).collect())
    }

    /// The chain of `addr`; computed on the spot for an endpoint [`new`](Self::new) did not
    /// see (none: the selection chains use the same sets).
    fn get(&self, addr: SocketAddr, ctx: &PortContext<'_>) -> String {
        match self.0.binary_search_by_key(&addr, |(a, _)| *a) {
            Ok(i) => self.0[i].1.clone(),
            Err(_) => naming::endpoint_chain(&ctx.port.name, addr),
        }
    }
}

/// A `KUBE-SVC-`/`KUBE-SVL-` chain over `endpoints`, after an optional masquerade rule.
pub(crate) fn selection_chain(
    name: String,
    endpoints: &[Endpoint],
    masquerade: Option<Rule>,
    ctx: &PortContext<'_>,
    names: &EndpointNames,
) -> Chain {
    let mut rules: Vec<Rule> = masquerade.into_iter().collect();
    let targets: Vec<(SocketAddr, String)> = endpoints
        .iter()
        .map(|ep| {
            let addr = socket(ep);
            (addr, names.get(addr, ctx))
        })
        .collect();
    // Built only when kept: above the large-cluster limit every one would be thrown away.
    let describe = |rule: Rule, addr: &SocketAddr| {
        if ctx.endpoint_comments {
            rule.comment(naming::comment(&format!("{} -> {addr}", ctx.comment)))
        } else {
            rule
        }
    };
    if let SessionAffinity::ClientIp { timeout_seconds } = ctx.port.affinity {
        for (addr, chain) in &targets {
            let rule = Rule::to(Target::Jump(chain.clone())).when([Match::RecentCheck {
                name: chain.clone(),
                seconds: timeout_seconds,
            }]);
            rules.push(describe(rule, addr));
        }
    }
    let count = targets.len();
    for (i, (addr, chain)) in targets.into_iter().enumerate() {
        let rule = describe(Rule::to(Target::Jump(chain)), &addr);
        let remaining = u32::try_from(count - i).unwrap_or(u32::MAX);
        rules.push(if remaining > 1 {
            rule.when([Match::RandomOneIn(remaining)])
        } else {
            rule
        });
    }
    service_chain(name, rules)
}

/// The `KUBE-SEP-` chains of every endpoint in `names`, in its order (by endpoint).
pub(crate) fn endpoint_chains(ctx: &PortContext<'_>, names: EndpointNames) -> Vec<Chain> {
    names
        .0
        .into_iter()
        .map(|(addr, name)| endpoint_chain(ctx, addr, name))
        .collect()
}

fn endpoint_chain(ctx: &PortContext<'_>, addr: SocketAddr, name: String) -> Chain {
    let hairpin = Rule::to(Target::Jump(naming::MARK_MASQ.into()))
        .when([Match::source(IpNet::from(addr.ip()))]);
    let mut dnat = Rule::to(Target::Dnat(addr));
    if let SessionAffinity::ClientIp { .. } = ctx.port.affinity {
        dnat = dnat.when([Match::RecentSet { name: name.clone() }]);
    }
    let dnat = dnat.when([Match::Protocol {
        protocol: ctx.port.name.protocol,
        dport: None,
    }]);
    let mut rules = vec![hairpin, dnat];
    if ctx.endpoint_comments {
        for rule in &mut rules {
            rule.comment = Some(ctx.comment.clone());
        }
    }
    service_chain(name, rules)
}

fn socket(endpoint: &Endpoint) -> SocketAddr {
    SocketAddr::new(endpoint.addr, endpoint.port)
}
