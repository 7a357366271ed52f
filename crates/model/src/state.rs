//! The desired state for one node: every Service port with its selected endpoints.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::endpoint::{self, Candidate, NodeView};
use crate::{
    FamilyPort, IpFamily, NodeInfo, PortSpec, ServicePort, ServicePortName, ServiceSpec, SliceSpec,
};

/// Everything the compiler needs to produce this node's rules. Immutable once built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProxyState {
    /// The node the rules are for.
    pub node: NodeInfo,
    /// Every proxied Service port, sorted by [`ServicePortName`].
    pub ports: Vec<ServicePort>,
}

impl ProxyState {
    /// Joins Services with their EndpointSlices and selects endpoints for `node`.
    ///
    /// Slices are matched to a Service by namespace and the `kubernetes.io/service-name` label,
    /// and to a Service port by port name and protocol. An endpoint listed by several slices is
    /// used once (the ready copy wins). When two Services share a namespace and name, the first
    /// is used.
    pub fn build(node: NodeInfo, services: &[ServiceSpec], slices: &[SliceSpec]) -> ProxyState {
        let mut slices_by_service: HashMap<(&str, &str), Vec<&SliceSpec>> = HashMap::new();
        for slice in slices {
            slices_by_service
                .entry((&slice.namespace, &slice.service))
                .or_default()
                .push(slice);
        }
        for list in slices_by_service.values_mut() {
            list.sort_by(|a, b| a.name.cmp(&b.name));
        }

        let view = NodeView {
            name: &node.name,
            zone: node.zone.as_deref(),
        };
        let mut ports = BTreeMap::new();
        for service in services {
            let slices = slices_by_service
                .get(&(service.namespace.as_str(), service.name.as_str()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            for port in &service.ports {
                let name = ServicePortName {
                    namespace: service.namespace.clone(),
                    service: service.name.clone(),
                    port: port.name.clone(),
                    protocol: port.protocol,
                };
                if ports.contains_key(&name) {
                    continue;
                }
                let built = build_port(service, port, name.clone(), slices, view);
                ports.insert(name, built);
            }
        }
        ProxyState {
            node,
            ports: ports.into_values().collect(),
        }
    }
}

fn build_port(
    service: &ServiceSpec,
    port: &PortSpec,
    name: ServicePortName,
    slices: &[&SliceSpec],
    node: NodeView<'_>,
) -> ServicePort {
    let mut families = Vec::new();
    for family in IpFamily::ALL {
        let Some(&cluster_ip) = service
            .cluster_ips
            .iter()
            .find(|ip| IpFamily::of(**ip) == family)
        else {
            continue;
        };
        let candidates = candidates(slices, port, family);
        families.push(FamilyPort {
            family,
            cluster_ip,
            external_ips: of_family(&service.external_ips, family),
            load_balancer_ips: of_family(&service.load_balancer_ips, family),
            source_ranges: service
                .source_ranges
                .iter()
                .filter(|net| IpFamily::of_net(net) == family)
                .copied()
                .collect(),
            endpoints: endpoint::select(&candidates, node),
        });
    }
    ServicePort {
        name,
        port: port.port,
        node_port: port.node_port,
        health_check_node_port: service.health_check_node_port,
        internal_policy: service.internal_policy,
        external_policy: service.external_policy,
        affinity: service.affinity,
        families,
    }
}

fn of_family(addrs: &[std::net::IpAddr], family: IpFamily) -> Vec<std::net::IpAddr> {
    let mut out: Vec<_> = addrs
        .iter()
        .copied()
        .filter(|a| IpFamily::of(*a) == family)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The endpoints of `family` that slices list for `port`, one per address and target port.
fn candidates<'a>(
    slices: &[&'a SliceSpec],
    port: &PortSpec,
    family: IpFamily,
) -> Vec<Candidate<'a>> {
    let mut by_key: BTreeMap<(std::net::IpAddr, u16), Candidate<'a>> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.family == family) {
        let Some(slice_port) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let candidate = Candidate {
                endpoint,
                port: slice_port.port,
            };
            by_key
                .entry((endpoint.addr, slice_port.port))
                .and_modify(|existing| {
                    if !existing.endpoint.conditions.ready && endpoint.conditions.ready {
                        *existing = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    by_key.into_values().collect()
}
