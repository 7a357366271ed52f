//! One Service port's nat rules: its `KUBE-SERVICES` / `KUBE-NODEPORTS` entries and its
//! `KUBE-EXT-` and `KUBE-FW-` chains (externalTrafficPolicy, loadBalancerSourceRanges).
//!
//! * ClusterIP → `KUBE-SVC-` (internalTrafficPolicy Cluster) or `KUBE-SVL-` (Local).
//! * externalIPs, LB IPs, NodePort → `KUBE-EXT-` (loadBalancerSourceRanges have dropped what
//!   they refuse before DNAT, in the mangle table: see [`super::filter::firewall`]).
//! * `KUBE-EXT-` with Cluster policy marks for masquerade and goes to `KUBE-SVC-`; with Local
//!   it short-circuits traffic from this node (masqueraded) and from its pods to the internal
//!   chain and sends the rest to `KUBE-SVL-`. Without local endpoints the rest falls through
//!   undNATed and the filter table drops it, so pods still reach the Service.
//!
//! Ports without any usable endpoint get no nat rules at all; the filter table rejects them.

use kproxy_model::TrafficPolicy;

use super::ir::{Match, Rule, Target};
use super::{endpoints, filter, naming, service_chain, Builder, PortContext};

pub(crate) fn compile(b: &mut Builder, ctx: &PortContext<'_>) {
    // Source ranges hold whether or not there are endpoints, as in nftables mode.
    filter::firewall(b, ctx);
    if !ctx.has_endpoints() {
        filter::no_endpoints(b, ctx);
        return;
    }
    let protocol = ctx.port.name.protocol;
    let to_cluster_ip = [
        Match::destination(ctx.family.cluster_ip),
        Match::port(protocol, ctx.port.port),
    ];
    match ctx.internal_chain() {
        Some(chain) => b.nat_services.push(
            Rule::to(Target::Jump(chain))
                .when(to_cluster_ip.clone())
                .comment(naming::comment(&format!("{} cluster IP", ctx.comment))),
        ),
        None => filter::no_local_endpoints_cluster_ip(b, ctx),
    }

    let external = ctx.port.is_externally_reachable();
    let names = endpoints::EndpointNames::new(ctx);
    let mut chains = Vec::new();
    if ctx.uses_cluster_chain() {
        let masquerade = (ctx.port.internal_policy == TrafficPolicy::Cluster)
            .then(|| masquerade_rule(b, ctx, &to_cluster_ip))
            .flatten();
        chains.push(endpoints::selection_chain(
            naming::cluster_chain(&ctx.port.name),
            &ctx.family.endpoints.cluster,
            masquerade,
            ctx,
            &names,
        ));
    }
    if ctx.uses_local_chain() {
        let masquerade = (ctx.port.internal_policy == TrafficPolicy::Local)
            .then(|| masquerade_rule(b, ctx, &to_cluster_ip))
            .flatten();
        chains.push(endpoints::selection_chain(
            naming::local_chain(&ctx.port.name),
            &ctx.family.endpoints.local,
            masquerade,
            ctx,
            &names,
        ));
    }
    if external {
        external_entries(b, ctx);
        chains.push(service_chain(
            naming::external_chain(&ctx.port.name),
            external_rules(b, ctx),
        ));
    }
    chains.extend(endpoints::endpoint_chains(ctx, names));
    b.nat_chains.append(&mut chains);
}

/// Marks ClusterIP traffic for masquerade: everything with `--masquerade-all`, else traffic
/// from outside the cluster CIDR; nothing without a cluster CIDR. It sits at the top of the
/// internal chain and matches the ClusterIP itself, so external traffic passing through the
/// same chain is not affected.
fn masquerade_rule(b: &Builder, ctx: &PortContext<'_>, to_cluster_ip: &[Match]) -> Option<Rule> {
    let rule = Rule::to(Target::Jump(naming::MARK_MASQ.into()))
        .when(to_cluster_ip.iter().cloned())
        .comment(naming::comment(&format!("{} cluster IP", ctx.comment)));
    if b.masquerade_all {
        return Some(rule);
    }
    // `--cluster-cidr` allows one network per family (the flag is validated); iptables can
    // negate only one source per rule.
    let cidr = b.cluster_cidrs.first()?;
    Some(rule.when([Match::Source {
        net: *cidr,
        negate: true,
    }]))
}

/// `KUBE-SERVICES` rules for externalIPs and LB IPs, and the `KUBE-NODEPORTS` rule.
fn external_entries(b: &mut Builder, ctx: &PortContext<'_>) {
    let protocol = ctx.port.name.protocol;
    let ext = naming::external_chain(&ctx.port.name);
    for &ip in ctx.family.external_ips() {
        b.nat_services.push(
            Rule::to(Target::Jump(ext.clone()))
                .when([Match::destination(ip), Match::port(protocol, ctx.port.port)])
                .comment(naming::comment(&format!("{} external IP", ctx.comment))),
        );
    }
    for &ip in ctx.family.load_balancer_ips() {
        b.nat_services.push(
            Rule::to(Target::Jump(ext.clone()))
                .when([Match::destination(ip), Match::port(protocol, ctx.port.port)])
                .comment(naming::comment(&format!("{} loadbalancer IP", ctx.comment))),
        );
    }
    if let Some(node_port) = ctx.port.node_port {
        b.nat_nodeports.push(
            Rule::to(Target::Jump(ext))
                .when([Match::port(protocol, node_port)])
                .comment(ctx.comment.clone()),
        );
    }
}

fn external_rules(b: &mut Builder, ctx: &PortContext<'_>) -> Vec<Rule> {
    let mark = Rule::to(Target::Jump(naming::MARK_MASQ.into()));
    match ctx.port.effective_external_policy() {
        TrafficPolicy::Cluster => vec![
            mark.comment(naming::comment(&format!(
                "masquerade traffic for {} external destinations",
                ctx.comment
            ))),
            Rule::to(Target::Jump(naming::cluster_chain(&ctx.port.name))),
        ],
        TrafficPolicy::Local => {
            let mut rules = vec![mark
                .when([Match::from_local()])
                .comment("masquerade traffic from this node")];
            if let Some(internal) = ctx.internal_chain() {
                rules.push(
                    Rule::to(Target::Jump(internal.clone()))
                        .when([Match::from_local()])
                        .comment("short-circuit traffic from this node"),
                );
                for &cidr in b.cluster_cidrs.iter().take(1) {
                    rules.push(
                        Rule::to(Target::Jump(internal.clone()))
                            .when([Match::source(cidr)])
                            .comment("short-circuit traffic from pods"),
                    );
                }
            }
            match ctx.local_chain() {
                Some(local) => rules.push(Rule::to(Target::Jump(local))),
                None => filter::no_local_endpoints_external(b, ctx),
            }
            rules
        }
    }
}
