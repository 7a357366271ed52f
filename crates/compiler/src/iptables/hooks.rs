//! The fixed parts: rules in built-in chains, masquerade, forwarding accepts, and which
//! destinations are NodePort addresses.
//!
//! Built-in chains get only jumps, each commented `kproxy …` so that cleanup can tell them
//! from kube-proxy's own (`kubernetes …`). The load-balancer firewall hooks into mangle
//! PREROUTING and OUTPUT (before DNAT and routing); in FORWARD, `KUBE-FORWARD`'s accepts come
//! last, after the rejects.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use kproxy_model::IpFamily;

use super::ir::{BuiltinChain, CtState, Hook, Match, Rule, TableName, Target};
use super::{naming, Builder};
use crate::masquerade::MASQUERADE_MARK;
use crate::options::NodePortMatch;

/// How a rule recognises a NodePort address of this node.
pub(crate) struct NodePortDestinations {
    /// Return first for loopback when a `--nodeport-addresses` network contains it (iptables
    /// cannot say "in this network but not loopback" in one rule).
    loopback_return: Option<IpNet>,
    /// One rule's matches per alternative.
    alternatives: Vec<Vec<Match>>,
}

fn loopback(family: IpFamily) -> IpNet {
    match family {
        IpFamily::V4 => IpNet::new(IpAddr::from([127, 0, 0, 0]), 8),
        IpFamily::V6 => IpNet::new(IpAddr::from(Ipv6Addr::LOCALHOST), 128),
    }
    .expect("constant prefix lengths are valid")
}

pub(crate) fn nodeport_destinations(b: &Builder) -> NodePortDestinations {
    let loopback = loopback(b.family);
    match &b.nodeport {
        NodePortMatch::Addresses(ips) => NodePortDestinations {
            loopback_return: None,
            alternatives: ips.iter().map(|&ip| vec![Match::destination(ip)]).collect(),
        },
        NodePortMatch::LocalIn(nets) => NodePortDestinations {
            loopback_return: nets
                .iter()
                .any(|n| n.contains(&loopback) || loopback.contains(n))
                .then_some(loopback),
            alternatives: nets
                .iter()
                .map(|&net| vec![Match::Destination { net, negate: false }, Match::to_local()])
                .collect(),
        },
        NodePortMatch::AnyLocal => NodePortDestinations {
            loopback_return: None,
            alternatives: vec![vec![
                Match::Destination {
                    net: loopback,
                    negate: true,
                },
                Match::to_local(),
            ]],
        },
    }
}

/// Rules that send NodePort destinations to `chain`; they must end their chain (a loopback
/// RETURN may precede them).
pub(crate) fn to_chain(dest: &NodePortDestinations, chain: &str, comment: &str) -> Vec<Rule> {
    if dest.alternatives.is_empty() {
        return Vec::new();
    }
    let loopback = dest.loopback_return.map(|net| {
        Rule::to(Target::Return)
            .when([Match::Destination { net, negate: false }])
            .comment("NodePorts never listen on loopback")
    });
    loopback
        .into_iter()
        .chain(dest.alternatives.iter().map(|matches| {
            Rule::to(Target::Jump(chain.into()))
                .when(matches.iter().cloned())
                .comment(comment)
        }))
        .collect()
}

/// nat `KUBE-POSTROUTING`: masquerade marked packets (fully random ports) and clear the mark.
pub(crate) fn postrouting_rules() -> Vec<Rule> {
    vec![
        Rule::to(Target::Return).when([Match::Mark {
            value: MASQUERADE_MARK,
            mask: MASQUERADE_MARK,
            negate: true,
        }]),
        Rule::to(Target::MarkXor(MASQUERADE_MARK)),
        Rule::to(Target::Masquerade { random_fully: true })
            .comment("kubernetes service traffic requiring SNAT"),
    ]
}

/// nat `KUBE-MARK-MASQ`: set the mark.
pub(crate) fn mark_masq_rules() -> Vec<Rule> {
    vec![Rule::to(Target::MarkOr(MASQUERADE_MARK))]
}

/// filter `KUBE-FORWARD`: accept Service traffic on hosts whose FORWARD policy drops.
pub(crate) fn forward_rules() -> Vec<Rule> {
    vec![
        Rule::to(Target::Accept)
            .when([Match::Mark {
                value: MASQUERADE_MARK,
                mask: MASQUERADE_MARK,
                negate: false,
            }])
            .comment("kubernetes forwarding rules"),
        Rule::to(Target::Accept)
            .when([Match::CtState(vec![CtState::Related, CtState::Established])])
            .comment("kubernetes forwarding conntrack rule"),
    ]
}

/// Comment prefix of every rule kproxy puts in a built-in chain.
pub const HOOK_COMMENT_PREFIX: &str = "kproxy ";

/// The jumps from built-in chains, in the order they must appear at the top of each chain.
pub fn builtin_hooks() -> Vec<Hook> {
    use BuiltinChain::{Forward, Input, Output, Postrouting, Prerouting};
    use TableName::{Filter, Mangle, Nat};
    let hook = |table, chain, target: &str, new_only: bool, what: &str| {
        let mut rule =
            Rule::to(Target::Jump(target.into())).comment(format!("{HOOK_COMMENT_PREFIX}{what}"));
        if new_only {
            rule = rule.when([Match::new_connection()]);
        }
        Hook { table, chain, rule }
    };
    let firewall = "load balancer firewall";
    let portals = "service portals";
    let external = "externally-visible service portals";
    vec![
        hook(Nat, Prerouting, naming::SERVICES, false, portals),
        hook(Nat, Output, naming::SERVICES, false, portals),
        hook(
            Nat,
            Postrouting,
            naming::POSTROUTING,
            false,
            "postrouting rules",
        ),
        hook(Mangle, Prerouting, naming::PROXY_FIREWALL, true, firewall),
        hook(Mangle, Output, naming::PROXY_FIREWALL, true, firewall),
        hook(Filter, Input, naming::EXTERNAL_SERVICES, true, external),
        hook(Filter, Forward, naming::SERVICES, true, portals),
        hook(Filter, Forward, naming::EXTERNAL_SERVICES, true, external),
        hook(Filter, Forward, naming::FORWARD, false, "forwarding rules"),
        hook(Filter, Output, naming::SERVICES, true, portals),
        hook(Filter, Output, naming::EXTERNAL_SERVICES, true, external),
    ]
}
