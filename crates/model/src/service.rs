//! Services and their ports, as validated specs and as the per-node result.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Serialize;

use crate::endpoint::{EndpointSets, SliceEndpoint};

/// A transport protocol a Service port can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name used by nftables and in rule names.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IANA protocol number, as the kernel matches it (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IP family. Each family is programmed independently (dual-stack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl std::fmt::Display for IpFamily {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

impl IpFamily {
    /// Both families, IPv4 first: the order tables are emitted in.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(addr: IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(net.addr())
    }
}

/// `internalTrafficPolicy` / `externalTrafficPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum TrafficPolicy {
    /// Any usable endpoint in the cluster.
    #[default]
    Cluster,
    /// Only endpoints on this node; none means the traffic is dropped.
    Local,
}

/// `sessionAffinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum SessionAffinity {
    /// Every new connection picks an endpoint at random.
    #[default]
    None,
    /// A client IP keeps its endpoint until it has been idle this long.
    ClientIp {
        /// `sessionAffinityConfig.clientIP.timeoutSeconds` (1..=86400, default 10800).
        timeout_seconds: u32,
    },
}

/// Names one port of one Service: the unit kproxy programs.
///
/// Ordered by namespace, Service, port name and protocol, which is the order of rules in the
/// output, so output is deterministic. The compiled state keeps a name for every key, claim
/// and window of a port (half a million at 50,000 Services), so the strings are shared:
/// cloning a name copies three pointers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServicePortName {
    /// Namespace of the Service.
    pub namespace: Arc<str>,
    /// Name of the Service.
    pub service: Arc<str>,
    /// Name of the port; empty for the single unnamed port of a Service.
    pub port: Arc<str>,
    /// Protocol of the port.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)?;
        if !self.port.is_empty() {
            write!(f, ":{}", self.port)?;
        }
        Ok(())
    }
}

impl ServicePortName {
    /// The ports of Service `namespace/service` in `map`, in name order. A Service's ports
    /// sort next to each other, so this walks their range, not the map: the daemon asks it
    /// of every changed Service instead of keeping each Service's port list.
    pub fn of_service<'a, V>(
        map: &'a BTreeMap<ServicePortName, V>,
        namespace: &'a str,
        service: &'a str,
    ) -> impl Iterator<Item = (&'a ServicePortName, &'a V)> + 'a {
        map.range(ServicePortName::first_of_service(namespace, service)..)
            .take_while(move |(name, _)| name.is_of_service(namespace, service))
    }

    /// The smallest name a port of Service `namespace/service` can have (the empty port
    /// name, and the protocol that sorts first): where its ports start in name order.
    pub fn first_of_service(namespace: &str, service: &str) -> ServicePortName {
        ServicePortName {
            namespace: namespace.into(),
            service: service.into(),
            port: "".into(),
            protocol: Protocol::Tcp,
        }
    }

    /// True for a port of Service `namespace/service`.
    pub fn is_of_service(&self, namespace: &str, service: &str) -> bool {
        &*self.namespace == namespace && &*self.service == service
    }
}

/// One port of a validated Service, before endpoints are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// `ports[].name`.
    pub name: Arc<str>,
    /// `ports[].protocol`.
    pub protocol: Protocol,
    /// `ports[].port`.
    pub port: u16,
    /// `ports[].nodePort`, when the Service type allocates one.
    pub node_port: Option<u16>,
}

/// A Service that kproxy proxies, validated. Skipped Services (headless, ExternalName, another
/// proxy's) never become a `ServiceSpec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `spec.clusterIPs` (or `spec.clusterIP`), at most one per family.
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports`.
    pub ports: Vec<PortSpec>,
    /// `spec.externalIPs`, `status.loadBalancer.ingress[].ip` of a LoadBalancer (except
    /// `ipMode: Proxy`) and `spec.loadBalancerSourceRanges` (normalised to network
    /// addresses), if any: behind one pointer, as most Services have none
    /// ([`ServiceSpec::outside`]).
    pub outside: Option<Box<OutsideAddresses>>,
    /// `spec.internalTrafficPolicy`.
    pub internal_policy: TrafficPolicy,
    /// `spec.externalTrafficPolicy`; only meaningful when the Service is externally reachable.
    pub external_policy: TrafficPolicy,
    /// `spec.sessionAffinity` with its timeout.
    pub affinity: SessionAffinity,
    /// `spec.healthCheckNodePort` (LoadBalancer with externalTrafficPolicy Local).
    pub health_check_node_port: Option<u16>,
}

/// One port of a validated EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    /// Matches a Service port name (both may be empty).
    pub name: Arc<str>,
    /// Matches the Service port protocol.
    pub protocol: Protocol,
    /// The port the endpoints listen on: the DNAT target port.
    pub port: u16,
}

/// A validated EndpointSlice of IPv4 or IPv6 endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSpec {
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`; orders slices so merging is deterministic.
    pub name: Arc<str>,
    /// The `kubernetes.io/service-name` label: the Service this slice serves.
    pub service: Arc<str>,
    /// `addressType`.
    pub family: IpFamily,
    /// `ports`.
    pub ports: Vec<SlicePort>,
    /// `endpoints`, first address of each.
    pub endpoints: Vec<SliceEndpoint>,
}

/// One port of one Service as this node must proxy it: the compiler's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    /// Which Service port this is.
    pub name: ServicePortName,
    /// The Service port number.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// Health check port served for LoadBalancer Services with externalTrafficPolicy Local.
    pub health_check_node_port: Option<u16>,
    /// Policy for traffic to the ClusterIP.
    pub internal_policy: TrafficPolicy,
    /// Policy for traffic to NodePorts, externalIPs and load-balancer IPs.
    pub external_policy: TrafficPolicy,
    /// Session affinity.
    pub affinity: SessionAffinity,
    /// One entry per IP family of the Service, IPv4 first.
    pub families: Vec<FamilyPort>,
}

impl ServicePort {
    /// True when the port can be reached from outside the cluster network (NodePort,
    /// externalIPs or load-balancer IPs), which is when `externalTrafficPolicy` applies.
    pub fn is_externally_reachable(&self) -> bool {
        self.node_port.is_some()
            || self
                .families
                .iter()
                .any(|f| !f.external_ips().is_empty() || !f.load_balancer_ips().is_empty())
    }

    /// The policy external traffic actually follows: `Local` only for reachable ports.
    pub fn effective_external_policy(&self) -> TrafficPolicy {
        if self.is_externally_reachable() {
            self.external_policy
        } else {
            TrafficPolicy::Cluster
        }
    }

    /// The per-family view, if the Service has a ClusterIP of that family.
    pub fn family(&self, family: IpFamily) -> Option<&FamilyPort> {
        self.families.iter().find(|f| f.family == family)
    }

    /// Some traffic to `family` is spread over the cluster-wide endpoints: there are usable
    /// ones, and ClusterIP traffic (internalTrafficPolicy Cluster) or external traffic
    /// (externalTrafficPolicy Cluster) goes to them. Both proxy modes build that chain only then.
    pub fn uses_cluster_endpoints(&self, family: &FamilyPort) -> bool {
        let external_cluster =
            self.is_externally_reachable() && self.external_policy == TrafficPolicy::Cluster;
        family.endpoints.any_usable
            && (self.internal_policy == TrafficPolicy::Cluster || external_cluster)
    }

    /// Some traffic to `family` is restricted to this node's endpoints, and there are some.
    pub fn uses_local_endpoints(&self, family: &FamilyPort) -> bool {
        !family.endpoints.local.is_empty()
            && (self.internal_policy == TrafficPolicy::Local
                || self.effective_external_policy() == TrafficPolicy::Local)
    }
}

/// The addresses and endpoints of one Service port in one IP family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyPort {
    /// The family all addresses below belong to.
    pub family: IpFamily,
    /// The ClusterIP of this family.
    pub cluster_ip: IpAddr,
    /// The addresses from outside the cluster, if any. Behind one pointer: most ports have
    /// none, and a daemon keeps every port (three empty vectors are 72 bytes).
    pub outside: Option<Box<OutsideAddresses>>,
    /// The endpoints selected for this node.
    pub endpoints: EndpointSets,
}

impl ServiceSpec {
    /// The addresses from outside the cluster (empty lists when there are none).
    pub fn outside(&self) -> &OutsideAddresses {
        OutsideAddresses::or_none(&self.outside)
    }
}

static NO_OUTSIDE_ADDRESSES: OutsideAddresses = OutsideAddresses {
    external_ips: Vec::new(),
    load_balancer_ips: Vec::new(),
    source_ranges: Vec::new(),
};

/// A Service's addresses reachable from outside the cluster (in a [`FamilyPort`], those of
/// its family).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutsideAddresses {
    /// `externalIPs` of this family.
    pub external_ips: Vec<IpAddr>,
    /// Load-balancer ingress IPs of this family.
    pub load_balancer_ips: Vec<IpAddr>,
    /// `loadBalancerSourceRanges` of this family; empty means every source is allowed.
    pub source_ranges: Vec<IpNet>,
}

impl OutsideAddresses {
    /// `None` when there are none at all.
    pub fn boxed(self) -> Option<Box<OutsideAddresses>> {
        (self != OutsideAddresses::default()).then(|| Box::new(self))
    }

    /// What [`boxed`](Self::boxed) made: empty lists for `None`.
    fn or_none(outside: &Option<Box<OutsideAddresses>>) -> &OutsideAddresses {
        outside.as_deref().unwrap_or(&NO_OUTSIDE_ADDRESSES)
    }
}

impl FamilyPort {
    /// `externalIPs` of this family.
    pub fn external_ips(&self) -> &[IpAddr] {
        &OutsideAddresses::or_none(&self.outside).external_ips
    }

    /// Load-balancer ingress IPs of this family.
    pub fn load_balancer_ips(&self) -> &[IpAddr] {
        &OutsideAddresses::or_none(&self.outside).load_balancer_ips
    }

    /// `loadBalancerSourceRanges` of this family; empty means every source is allowed.
    pub fn source_ranges(&self) -> &[IpNet] {
        &OutsideAddresses::or_none(&self.outside).source_ranges
    }

    /// The outside addresses, to change them (created empty when there are none).
    pub fn outside_mut(&mut self) -> &mut OutsideAddresses {
        self.outside.get_or_insert_with(Box::default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(namespace: &str, service: &str, port: &str, protocol: Protocol) -> ServicePortName {
        ServicePortName {
            namespace: namespace.into(),
            service: service.into(),
            port: port.into(),
            protocol,
        }
    }

    #[test]
    fn a_services_ports_are_found_by_range_and_only_its_own() {
        let names = [
            name("apps", "api", "", Protocol::Sctp),
            name("apps", "web", "", Protocol::Tcp),
            name("apps", "web", "", Protocol::Udp),
            name("apps", "web", "", Protocol::Sctp),
            name("apps", "web", "metrics", Protocol::Tcp),
            name("apps", "web-2", "", Protocol::Tcp),
            name("apps2", "web", "", Protocol::Tcp),
        ];
        let map: BTreeMap<ServicePortName, usize> = names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect();
        let found: Vec<usize> = ServicePortName::of_service(&map, "apps", "web")
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(found, [1, 2, 3, 4]);
        assert_eq!(ServicePortName::of_service(&map, "apps", "api").count(), 1);
        assert_eq!(ServicePortName::of_service(&map, "apps", "none").count(), 0);
    }
}
