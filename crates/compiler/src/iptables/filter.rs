//! The filter table: what the nat table cannot do (REJECT, DROP).
//!
//! Filter chains run after DNAT, so a packet still addressed to a Service address here was
//! not sent to an endpoint:
//!
//! * `KUBE-SERVICES` (FORWARD, OUTPUT; new connections): ClusterIPs of ports without endpoints
//!   are rejected, ClusterIPs of internalTrafficPolicy Local ports without local endpoints are
//!   dropped, and, last, every other port of an active ClusterIP is rejected.
//! * `KUBE-EXTERNAL-SERVICES` (INPUT, FORWARD, OUTPUT; new connections): the same for
//!   externalIPs and LB IPs (externalTrafficPolicy Local drops), then NodePort addresses go to
//!   filter `KUBE-NODEPORTS`, which rejects or drops by port.
//! * mangle `KUBE-PROXY-FIREWALL` (PREROUTING, OUTPUT; new connections): LB IPs with source
//!   ranges go to their `KUBE-FW-`, which returns allowed sources and drops the rest. This is
//!   the one job done in mangle: it must happen before DNAT (which rewrites the LB IP) and
//!   before routing (an LB IP this node has no route for would otherwise be answered "network
//!   unreachable" instead of dropped), as nftables mode drops at prerouting.
//!
//! TCP is rejected with a reset, other protocols with ICMP port unreachable, as in nftables
//! mode.

use kproxy_model::Protocol;

use super::hooks;
use super::ir::{Chain, Match, RejectWith, Rule, Target};
use super::{naming, service_chain, top, Builder, PortContext};

/// REJECT for `protocol`: a reset for TCP (the rule must match TCP), else ICMP.
fn reject(protocol: Protocol) -> Target {
    Target::Reject(match protocol {
        Protocol::Tcp => RejectWith::TcpReset,
        Protocol::Udp | Protocol::Sctp => RejectWith::PortUnreachable,
    })
}

/// A port without any usable endpoint: every address and its NodePort are rejected.
pub(crate) fn no_endpoints(b: &mut Builder, ctx: &PortContext<'_>) {
    let protocol = ctx.port.name.protocol;
    let comment = naming::comment(&format!("{} has no endpoints", ctx.comment));
    let rule = |ip| {
        Rule::to(reject(protocol))
            .when([Match::destination(ip), Match::port(protocol, ctx.port.port)])
            .comment(comment.clone())
    };
    b.filter_services.push(rule(ctx.family.cluster_ip));
    let external: Vec<Rule> = ctx.external_ips().map(rule).collect();
    b.filter_external.extend(external);
    if let Some(node_port) = ctx.port.node_port {
        b.filter_nodeports.push(
            Rule::to(reject(protocol))
                .when([Match::port(protocol, node_port)])
                .comment(comment.clone()),
        );
    }
}

/// internalTrafficPolicy Local without local endpoints: ClusterIP traffic is dropped.
pub(crate) fn no_local_endpoints_cluster_ip(b: &mut Builder, ctx: &PortContext<'_>) {
    let protocol = ctx.port.name.protocol;
    b.filter_services.push(
        Rule::to(Target::Drop)
            .when([
                Match::destination(ctx.family.cluster_ip),
                Match::port(protocol, ctx.port.port),
            ])
            .comment(naming::comment(&format!(
                "{} has no local endpoints",
                ctx.comment
            ))),
    );
}

/// externalTrafficPolicy Local without local endpoints: external traffic that was not
/// short-circuited (so not DNATed) is dropped.
pub(crate) fn no_local_endpoints_external(b: &mut Builder, ctx: &PortContext<'_>) {
    let protocol = ctx.port.name.protocol;
    let comment = naming::comment(&format!("{} has no local endpoints", ctx.comment));
    let external: Vec<Rule> = ctx
        .external_ips()
        .map(|ip| {
            Rule::to(Target::Drop)
                .when([Match::destination(ip), Match::port(protocol, ctx.port.port)])
                .comment(comment.clone())
        })
        .collect();
    b.filter_external.extend(external);
    if let Some(node_port) = ctx.port.node_port {
        b.filter_nodeports.push(
            Rule::to(Target::Drop)
                .when([Match::port(protocol, node_port)])
                .comment(comment),
        );
    }
}

/// loadBalancerSourceRanges: mangle `KUBE-PROXY-FIREWALL` sends each guarded LB IP and port
/// to the port's `KUBE-FW-` chain, which returns allowed sources and drops the rest.
pub(crate) fn firewall(b: &mut Builder, ctx: &PortContext<'_>) {
    let ranges = ctx.family.source_ranges();
    if ranges.is_empty() || ctx.family.load_balancer_ips().is_empty() {
        return;
    }
    let protocol = ctx.port.name.protocol;
    let chain = naming::firewall_chain(&ctx.port.name);
    for &ip in ctx.family.load_balancer_ips() {
        b.firewall.push(
            Rule::to(Target::Jump(chain.clone()))
                .when([Match::destination(ip), Match::port(protocol, ctx.port.port)])
                .comment(naming::comment(&format!("{} loadbalancer IP", ctx.comment))),
        );
    }
    let mut rules: Vec<Rule> = ranges
        .iter()
        .map(|&range| Rule::to(Target::Return).when([Match::source(range)]))
        .collect();
    rules.push(Rule::to(Target::Drop).comment(naming::comment(&format!(
        "{} traffic not accepted by loadBalancerSourceRanges",
        ctx.comment
    ))));
    b.mangle_chains.push(service_chain(chain, rules));
}

/// The filter table's chains, once every Service port is compiled.
pub(crate) fn chains(
    b: &mut Builder,
    nodeport_matches: &hooks::NodePortDestinations,
) -> Vec<Chain> {
    let mut services = std::mem::take(&mut b.filter_services);
    for &ip in &b.cluster_ips {
        let to_cluster_ip = Match::destination(ip);
        let comment = "reject ports that no Service defines on a ClusterIP";
        services.push(
            Rule::to(Target::Reject(RejectWith::TcpReset))
                .when([
                    to_cluster_ip.clone(),
                    Match::Protocol {
                        protocol: Protocol::Tcp,
                        dport: None,
                    },
                ])
                .comment(comment),
        );
        services.push(
            Rule::to(Target::Reject(RejectWith::PortUnreachable))
                .when([to_cluster_ip])
                .comment(comment),
        );
    }
    let nodeports = std::mem::take(&mut b.filter_nodeports);
    let mut external = std::mem::take(&mut b.filter_external);
    if !nodeports.is_empty() {
        external.extend(hooks::to_chain(
            nodeport_matches,
            naming::NODEPORTS,
            "NodePorts without (local) endpoints",
        ));
    }
    vec![
        top(naming::SERVICES, services),
        top(naming::EXTERNAL_SERVICES, external),
        top(naming::NODEPORTS, nodeports),
        top(naming::FORWARD, hooks::forward_rules()),
    ]
}
