//! iptables mode (`--proxy-mode iptables`): the same desired state compiled into kube-proxy's
//! chain structure, loaded with `iptables-restore --noflush` (and `ip6tables-restore`).
//!
//! # Brief overview
//!
//! [`compile`] maps a [`ProxyState`] and [`Options`] to a typed [`ir::Ruleset`]: per IP family
//! a `nat`, a `filter` and a `mangle` [`ir::Table`] of user chains, plus the few [`ir::Hook`] rules in
//! built-in chains that lead to them. [`render`] writes `iptables-restore` input from it and
//! [`restore`] computes what one sync must write (only the chains whose rules changed, top-level
//! or per Service port, and deletions of stale ones).
//!
//! The chains are kube-proxy's, with kube-proxy's names ([`naming`]):
//!
//! | table | chain | job | module |
//! |---|---|---|---|
//! | nat | `KUBE-SERVICES` | one rule per ClusterIP, externalIP, LB IP; NodePorts last | [`services`] |
//! | nat | `KUBE-NODEPORTS` | one rule per NodePort | [`services`] |
//! | nat | `KUBE-SVC-`, `KUBE-SVL-` | random pick of a cluster-wide / node-local endpoint | [`endpoints`] |
//! | nat | `KUBE-EXT-` | externalTrafficPolicy | [`services`] |
//! | nat | `KUBE-SEP-` | one endpoint: hairpin mark, DNAT, affinity list | [`endpoints`] |
//! | nat | `KUBE-POSTROUTING`, `KUBE-MARK-MASQ` | masquerade via mark 0x4000 | [`hooks`] |
//! | filter | `KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-NODEPORTS` | REJECT (no endpoints, undefined ClusterIP ports), DROP (Local policies without local endpoints) | [`filter`] |
//! | filter | `KUBE-FORWARD` | forwarding accepts | [`hooks`] |
//! | mangle | `KUBE-PROXY-FIREWALL`, `KUBE-FW-` | loadBalancerSourceRanges, before DNAT and routing | [`filter`] |
//!
//! Where kproxy's nftables mode behaves differently from kube-proxy (undefined ClusterIP ports
//! are rejected, TCP is rejected with a reset, externalTrafficPolicy Local drops only traffic
//! that is not short-circuited), this mode behaves like kproxy's nftables mode, so switching
//! modes never changes what a packet experiences (docs/semantics.md).
//!
//! Per-packet cost is linear in the number of Services here, as in kube-proxy's iptables
//! mode; that is the price of the format, and why nftables is the default.

pub mod endpoints;
pub mod filter;
pub mod hooks;
pub mod ir;
pub mod naming;
pub mod render;
pub mod restore;
pub mod services;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_model::{FamilyPort, IpFamily, NodeInfo, ProxyState, ServicePort, TrafficPolicy};

use crate::options::{NodePortMatch, Options};
use ir::{Chain, ChainKind, FamilyRules, Rule, Ruleset, Table, TableName};

/// Compiles the iptables rules for `state`: one [`FamilyRules`] per IP family in use (IPv4
/// always, IPv6 when a Service, the node or a cluster CIDR has an IPv6 address), as the
/// nftables compiler chooses its tables.
pub fn compile(state: &ProxyState, options: &Options) -> Ruleset {
    let ports: Vec<&ServicePort> = state.ports.iter().collect();
    compile_ports(&state.node, &ports, options)
}

/// [`compile`] of `ports` (in Service port order) on `node`: for a caller that keeps its ports
/// elsewhere, such as the daemon's by-name map, and need not copy them into a [`ProxyState`]
/// for every sync.
pub fn compile_ports(node: &NodeInfo, ports: &[&ServicePort], options: &Options) -> Ruleset {
    let families = IpFamily::ALL
        .into_iter()
        .filter(|&family| family == IpFamily::V4 || family_in_use(node, ports, options, family))
        .map(|family| compile_ports_family(node, ports, options, family))
        .collect();
    Ruleset { families }
}

fn family_in_use(
    node: &NodeInfo,
    ports: &[&ServicePort],
    options: &Options,
    family: IpFamily,
) -> bool {
    ports.iter().any(|p| p.family(family).is_some())
        || node
            .primary_ips
            .iter()
            .any(|ip| IpFamily::of(*ip) == family)
        || !options.cluster_cidrs(family).is_empty()
}

/// Above this many endpoints in a family, endpoint rules carry no comment, as in kube-proxy's
/// "large cluster mode": the kernel stores 256 bytes per comment match, and a legacy
/// `iptables-restore` reads and writes back the whole table on every sync.
pub const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

/// Compiles one family.
pub fn compile_family(state: &ProxyState, options: &Options, family: IpFamily) -> FamilyRules {
    let ports: Vec<&ServicePort> = state.ports.iter().collect();
    compile_ports_family(&state.node, &ports, options, family)
}

fn compile_ports_family(
    node: &NodeInfo,
    ports: &[&ServicePort],
    options: &Options,
    family: IpFamily,
) -> FamilyRules {
    let endpoints: usize = ports
        .iter()
        .filter_map(|p| p.family(family))
        .map(|f| f.endpoints.cluster.len())
        .sum();
    let endpoint_comments = endpoints <= LARGE_CLUSTER_ENDPOINTS;
    let mut builder = Builder {
        family,
        cluster_cidrs: options.cluster_cidrs(family),
        masquerade_all: options.masquerade_all,
        nodeport: options.nodeport_match(family, node),
        nat_services: Vec::new(),
        nat_nodeports: Vec::new(),
        nat_chains: Vec::new(),
        filter_services: Vec::new(),
        filter_external: Vec::new(),
        filter_nodeports: Vec::new(),
        firewall: Vec::new(),
        mangle_chains: Vec::new(),
        cluster_ips: BTreeSet::new(),
    };
    for &port in ports {
        let Some(family_port) = port.family(family) else {
            continue;
        };
        let ctx = PortContext {
            port,
            family: family_port,
            comment: naming::comment(&port.name.to_string()),
            endpoint_comments,
        };
        builder.cluster_ips.insert(family_port.cluster_ip);
        services::compile(&mut builder, &ctx);
    }
    builder.finish()
}

/// Collects one family's rules while Service ports are compiled.
pub(crate) struct Builder {
    pub family: IpFamily,
    pub cluster_cidrs: Vec<IpNet>,
    pub masquerade_all: bool,
    pub nodeport: NodePortMatch,
    /// nat `KUBE-SERVICES`, without the NodePort rules that end it.
    pub nat_services: Vec<Rule>,
    /// nat `KUBE-NODEPORTS`.
    pub nat_nodeports: Vec<Rule>,
    /// Per-Service-port nat chains, in Service order.
    pub nat_chains: Vec<Chain>,
    /// filter `KUBE-SERVICES`: ClusterIPs to reject or drop.
    pub filter_services: Vec<Rule>,
    /// filter `KUBE-EXTERNAL-SERVICES`: externalIPs and LB IPs to reject or drop.
    pub filter_external: Vec<Rule>,
    /// filter `KUBE-NODEPORTS`: NodePorts to reject or drop.
    pub filter_nodeports: Vec<Rule>,
    /// mangle `KUBE-PROXY-FIREWALL`.
    pub firewall: Vec<Rule>,
    /// mangle `KUBE-FW-…` chains.
    pub mangle_chains: Vec<Chain>,
    /// Every ClusterIP of this family, for rejecting undefined ports.
    pub cluster_ips: BTreeSet<IpAddr>,
}

impl Builder {
    fn finish(mut self) -> FamilyRules {
        let nodeport_matches = hooks::nodeport_destinations(&self);
        let mut nat_services = std::mem::take(&mut self.nat_services);
        nat_services.extend(hooks::to_chain(
            &nodeport_matches,
            naming::NODEPORTS,
            "kubernetes service nodeports; NOTE: this must be the last rule in this chain",
        ));
        let mut nat_chains = vec![
            top(naming::SERVICES, nat_services),
            top(naming::NODEPORTS, std::mem::take(&mut self.nat_nodeports)),
            top(naming::POSTROUTING, hooks::postrouting_rules()),
            top(naming::MARK_MASQ, hooks::mark_masq_rules()),
        ];
        nat_chains.append(&mut self.nat_chains);

        let filter_chains = filter::chains(&mut self, &nodeport_matches);
        let mut mangle_chains = vec![top(
            naming::PROXY_FIREWALL,
            std::mem::take(&mut self.firewall),
        )];
        mangle_chains.append(&mut self.mangle_chains);
        FamilyRules {
            family: self.family,
            tables: vec![
                Table {
                    name: TableName::Nat,
                    chains: nat_chains,
                },
                Table {
                    name: TableName::Filter,
                    chains: filter_chains,
                },
                Table {
                    name: TableName::Mangle,
                    chains: mangle_chains,
                },
            ],
            hooks: hooks::builtin_hooks(),
        }
    }
}

/// A top-level chain.
pub(crate) fn top(name: &str, rules: Vec<Rule>) -> Chain {
    Chain {
        name: name.to_string(),
        kind: ChainKind::TopLevel,
        rules,
    }
}

/// A per-Service-port chain.
pub(crate) fn service_chain(name: String, rules: Vec<Rule>) -> Chain {
    Chain {
        name,
        kind: ChainKind::Service,
        rules,
    }
}

/// One Service port in one family, with the decisions every module shares.
pub(crate) struct PortContext<'a> {
    pub port: &'a ServicePort,
    pub family: &'a FamilyPort,
    /// `namespace/service[:port]`, as kube-proxy's comments name it.
    pub comment: String,
    /// Endpoint rules (`KUBE-SEP-`, the picks in `KUBE-SVC-`/`KUBE-SVL-`) carry comments;
    /// false above [`LARGE_CLUSTER_ENDPOINTS`].
    pub endpoint_comments: bool,
}

impl PortContext<'_> {
    /// Some endpoint anywhere can take traffic; otherwise every destination is rejected.
    pub fn has_endpoints(&self) -> bool {
        self.family.endpoints.any_usable
    }

    /// The chain internalTrafficPolicy sends ClusterIP traffic to; `None` means the traffic
    /// is dropped (Local without local endpoints).
    pub fn internal_chain(&self) -> Option<String> {
        match self.port.internal_policy {
            TrafficPolicy::Cluster => Some(naming::cluster_chain(&self.port.name)),
            TrafficPolicy::Local => self.local_chain(),
        }
    }

    /// `KUBE-SVL-…` when there are local endpoints, else `None` (dropped).
    pub fn local_chain(&self) -> Option<String> {
        (!self.family.endpoints.local.is_empty()).then(|| naming::local_chain(&self.port.name))
    }

    /// The `KUBE-SVC-…` chain is reachable.
    pub fn uses_cluster_chain(&self) -> bool {
        self.port.uses_cluster_endpoints(self.family)
    }

    /// The `KUBE-SVL-…` chain is reachable.
    pub fn uses_local_chain(&self) -> bool {
        self.port.uses_local_endpoints(self.family)
    }

    /// The externally reachable addresses (externalIPs, then load-balancer IPs).
    pub fn external_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.family
            .external_ips()
            .iter()
            .chain(self.family.load_balancer_ips())
            .copied()
    }
}

#[cfg(test)]
mod tests;
