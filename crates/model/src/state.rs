//! The desired state for one node: every Service port with its selected endpoints.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;

use crate::endpoint::{self, Candidate, NodeView};
use crate::{
    FamilyPort, IpFamily, NodeInfo, OutsideAddresses, PortSpec, ServicePort, ServicePortName,
    ServiceSpec, SliceSpec, TrafficPolicy,
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
    pub fn build<'a>(
        node: NodeInfo,
        services: impl IntoIterator<Item = &'a ServiceSpec>,
        slices: impl IntoIterator<Item = &'a SliceSpec>,
    ) -> ProxyState {
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
                .get(&(&*service.namespace, &*service.name))
                .map(Vec::as_slice)
                .unwrap_or_default();
            // The Service's own names, shared by all its ports.
            let namespace = Arc::clone(&service.namespace);
            let service_name = Arc::clone(&service.name);
            for port in &service.ports {
                let name = ServicePortName {
                    namespace: namespace.clone(),
                    service: service_name.clone(),
                    port: Arc::clone(&port.name),
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
    let mut families = Vec::with_capacity(service.cluster_ips.len());
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
            outside: OutsideAddresses {
                external_ips: of_family(&service.outside().external_ips, family),
                load_balancer_ips: of_family(&service.outside().load_balancer_ips, family),
                source_ranges: service
                    .outside()
                    .source_ranges
                    .iter()
                    .filter(|net| IpFamily::of_net(net) == family)
                    .copied()
                    .collect(),
            }
            .boxed(),
            endpoints: endpoint::select(&candidates, node),
        });
    }
    let mut port = ServicePort {
        name,
        port: port.port,
        node_port: port.node_port,
        health_check_node_port: service.health_check_node_port,
        internal_policy: service.internal_policy,
        external_policy: service.external_policy,
        affinity: service.affinity,
        families,
    };
    // A set that no policy of the port routes to is never read, and a daemon keeps every
    // port's sets: with Cluster policies, the local set would hold this node's endpoints a
    // second time.
    let reachable = port.is_externally_reachable();
    let routes_to =
        |policy| port.internal_policy == policy || (reachable && port.external_policy == policy);
    let (cluster, local) = (
        routes_to(TrafficPolicy::Cluster),
        routes_to(TrafficPolicy::Local),
    );
    for family in &mut port.families {
        if !cluster {
            family.endpoints.cluster = Vec::new();
        }
        if !local {
            family.endpoints.local = Vec::new();
        }
    }
    port
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

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{EndpointConditions, Protocol, SliceEndpoint, SlicePort, TopologyHints};

    fn service(ports: &[(&str, Protocol, u16)], cluster_ips: &[&str]) -> ServiceSpec {
        ServiceSpec {
            namespace: "ns".into(),
            name: "svc".into(),
            cluster_ips: cluster_ips.iter().map(|ip| ip.parse().unwrap()).collect(),
            ports: ports
                .iter()
                .map(|&(name, protocol, port)| PortSpec {
                    name: name.into(),
                    protocol,
                    port,
                    node_port: None,
                })
                .collect(),
            outside: OutsideAddresses {
                external_ips: vec![
                    "198.51.100.1".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                ],
                ..OutsideAddresses::default()
            }
            .boxed(),
            internal_policy: Default::default(),
            external_policy: Default::default(),
            affinity: Default::default(),
            health_check_node_port: None,
        }
    }

    fn slice(
        name: &str,
        family: IpFamily,
        ports: &[(&str, Protocol, u16)],
        eps: &[(&str, bool)],
    ) -> SliceSpec {
        SliceSpec {
            namespace: "ns".into(),
            name: name.into(),
            service: "svc".into(),
            family,
            ports: ports
                .iter()
                .map(|&(name, protocol, port)| SlicePort {
                    name: name.into(),
                    protocol,
                    port,
                })
                .collect(),
            endpoints: eps
                .iter()
                .map(|&(addr, ready)| {
                    SliceEndpoint::new(
                        addr.parse().unwrap(),
                        EndpointConditions {
                            ready,
                            serving: ready,
                            terminating: false,
                        },
                        Some("node-b"),
                        TopologyHints::default(),
                    )
                })
                .collect(),
        }
    }

    fn addrs(port: &ServicePort, family: IpFamily) -> Vec<(IpAddr, u16)> {
        port.family(family)
            .unwrap()
            .endpoints
            .cluster
            .iter()
            .map(|e| (e.addr, e.port))
            .collect()
    }

    #[test]
    fn slices_join_ports_by_name_and_protocol_and_give_the_target_port() {
        let svc = service(
            &[("dns", Protocol::Udp, 53), ("dns", Protocol::Tcp, 53)],
            &["10.96.0.10"],
        );
        let slices = [slice(
            "svc-a",
            IpFamily::V4,
            &[("dns", Protocol::Udp, 5353), ("dns", Protocol::Tcp, 5354)],
            &[("10.0.0.1", true)],
        )];
        let state = ProxyState::build(NodeInfo::named("node-a"), &[svc], &slices);
        assert_eq!(state.ports.len(), 2);
        let tcp = &state.ports[0];
        assert_eq!(
            tcp.name.protocol,
            Protocol::Tcp,
            "ports are sorted by name then protocol"
        );
        assert_eq!(
            addrs(tcp, IpFamily::V4),
            [("10.0.0.1".parse().unwrap(), 5354)]
        );
        assert_eq!(
            addrs(&state.ports[1], IpFamily::V4),
            [("10.0.0.1".parse().unwrap(), 5353)]
        );
    }

    #[test]
    fn duplicate_endpoints_are_merged_and_the_ready_copy_wins() {
        let svc = service(&[("", Protocol::Tcp, 80)], &["10.96.0.1"]);
        let slices = [
            slice(
                "svc-b",
                IpFamily::V4,
                &[("", Protocol::Tcp, 8080)],
                &[("10.0.0.1", true), ("10.0.0.2", true)],
            ),
            slice(
                "svc-a",
                IpFamily::V4,
                &[("", Protocol::Tcp, 8080)],
                &[("10.0.0.1", false)],
            ),
        ];
        let state = ProxyState::build(NodeInfo::named("node-a"), &[svc], &slices);
        let endpoints = &state.ports[0].families[0].endpoints;
        assert_eq!(endpoints.cluster.len(), 2);
        assert!(endpoints.any_usable);
    }

    #[test]
    fn each_family_takes_its_own_slices_and_addresses() {
        let svc = service(&[("", Protocol::Tcp, 80)], &["10.96.0.1", "fd00::1"]);
        let slices = [
            slice(
                "v4",
                IpFamily::V4,
                &[("", Protocol::Tcp, 8080)],
                &[("10.0.0.1", true)],
            ),
            slice(
                "v6",
                IpFamily::V6,
                &[("", Protocol::Tcp, 8080)],
                &[("fd00:10::1", true)],
            ),
        ];
        let state = ProxyState::build(NodeInfo::named("node-a"), &[svc], &slices);
        let port = &state.ports[0];
        assert_eq!(port.families.len(), 2);
        assert_eq!(
            addrs(port, IpFamily::V6),
            [("fd00:10::1".parse().unwrap(), 8080)]
        );
        assert_eq!(
            port.family(IpFamily::V4).unwrap().external_ips(),
            ["198.51.100.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            port.family(IpFamily::V6).unwrap().external_ips(),
            ["2001:db8::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_port_without_a_matching_slice_port_has_no_endpoints() {
        let svc = service(&[("http", Protocol::Tcp, 80)], &["10.96.0.1"]);
        let slices = [slice(
            "s",
            IpFamily::V4,
            &[("web", Protocol::Tcp, 8080)],
            &[("10.0.0.1", true)],
        )];
        let state = ProxyState::build(NodeInfo::named("node-a"), &[svc], &slices);
        let endpoints = &state.ports[0].families[0].endpoints;
        assert!(endpoints.cluster.is_empty() && !endpoints.any_usable);
    }
}
