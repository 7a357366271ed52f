//! Compiles the desired state of one node into an nftables ruleset.
//!
//! The compiler is a pure function: [`compile`] maps a [`ProxyState`] and [`Options`] to a
//! typed [`Ruleset`] ([`ir`]). No I/O, no async, no kernel. [`render::nft`] turns the IR into the
//! text `nft -f` loads; the syncer encodes the same IR into netlink messages, so what `dry-run`
//! prints is exactly what `apply` programs.
//!
//! # Brief overview
//!
//! One table per IP family (`ip kproxy`, `ip6 kproxy`). A packet whose `address . protocol .
//! port` ([`MapName::ServiceIps`]) or `protocol . port` (NodePorts) is a Service's goes to the
//! bucket chain of its address's or port's low bits ([`buckets`]), where a Service port's rules
//! sit behind a guard: two hash lookups and a short walk, whatever the number of Services, and
//! a number of chains that does not grow with them. The compiler builds each Service port as up
//! to three small chains (`service-…`, `local-…`, `external-…`) that [`buckets`] inlines; its
//! endpoints are ranges in a shared, sharded endpoint map ([`endpoint_maps`]), so an endpoint
//! change rewrites map elements and no rule. `docs/architecture.md` explains the layout and counts the kernel objects.
//!
//! The modules are named for what they compile: [`clusterip`], [`nodeport`], [`external`]
//! (externalIPs, load-balancer IPs and externalTrafficPolicy), [`firewall`]
//! (loadBalancerSourceRanges), [`endpoints`] (DNAT, random selection, session affinity),
//! [`masquerade`] and [`no_endpoints`] (REJECT). [`hooks`] builds the base chains that tie them
//! together, and [`naming`] owns every name.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod buckets;
pub mod clusterip;
pub mod endpoint_maps;
pub mod endpoints;
pub mod external;
pub mod firewall;
pub mod hooks;
pub mod incremental;
pub mod iptables;
pub mod ir;
pub mod masquerade;
pub mod naming;
pub mod no_endpoints;
pub mod nodeport;
mod options;
pub mod render;
mod table;

use kproxy_model::{IpFamily, ProxyState};

pub use incremental::{Incremental, PortChange, RulesetChange};
pub use ir::Ruleset;
pub use options::{NodePortAddresses, Options};
pub use table::{MapName, SetName};

/// Compiles the rules for `state`: one table per IP family in use.
///
/// A family is in use when a Service, the node or a cluster CIDR has an address of it; IPv4
/// always is, so the output is never empty.
pub fn compile(state: &ProxyState, options: &Options) -> Ruleset {
    let tables = IpFamily::ALL
        .into_iter()
        .filter(|&family| family == IpFamily::V4 || family_in_use(state, options, family))
        .map(|family| table::compile_family(state, options, family))
        .collect();
    Ruleset { tables }
}

fn family_in_use(state: &ProxyState, options: &Options, family: IpFamily) -> bool {
    state.ports.iter().any(|p| p.family(family).is_some())
        || state
            .node
            .primary_ips
            .iter()
            .any(|ip| IpFamily::of(*ip) == family)
        || !options.cluster_cidrs(family).is_empty()
}
