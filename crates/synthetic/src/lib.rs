//! Synthetic clusters: a realistic, deterministic [`ProxyState`] of any size, for benchmarks
//! and tests of the rule compiler.
//!
//! [`cluster`] builds `services` Services as validated specs ([`ServiceSpec`], [`SliceSpec`]) and
//! joins them with [`ProxyState::build`], so endpoint selection, de-duplication and sorting are
//! the model's own. Nothing is random: Service `i` is always the same Service, so two runs (and
//! two machines) compile exactly the same input.
//!
//! # The mix
//!
//! The kind of Service `i` is chosen by `i % 100` ([`Kind::of`]); the percentages are exact when
//! `services` is a multiple of 100.
//!
//! | share | kind | shape |
//! |---|---|---|
//! | 60 % | [`Kind::ClusterIp`] | one unnamed TCP port |
//! | 15 % | [`Kind::MultiPort`] | two named ports (`http`/`https`, or `dns` UDP/`dns-tcp` TCP) |
//! | 10 % | [`Kind::NodePort`] | one port with a NodePort |
//! | 5 % | [`Kind::LoadBalancer`] | NodePort, one load-balancer IP, two source ranges |
//! | 3 % | [`Kind::ExternalLocal`] | LoadBalancer with `externalTrafficPolicy: Local` |
//! | 3 % | [`Kind::InternalLocal`] | ClusterIP with `internalTrafficPolicy: Local` |
//! | 2 % | [`Kind::Affinity`] | ClusterIP with `sessionAffinity: ClientIP` |
//! | 2 % | [`Kind::NoEndpoints`] | ClusterIP or NodePort whose slices list no endpoint |
//!
//! Independently, 10 % of Services are dual-stack ([`is_dual_stack`]): they also have an IPv6
//! ClusterIP, IPv6 endpoints and (for load balancers) an IPv6 load-balancer IP.
//!
//! # Addresses and names
//!
//! * Services are `ns-<i % 50>/svc-<i>`.
//! * ClusterIPs come from `10.96.0.0/12` and `fd00:10:96::/108`, one per Service.
//! * Every endpoint is a distinct pod: pod `k` (a counter over all Services) is `10.0.0.0/10 + k`
//!   and, when dual-stack, `fd00:10:244::/64 + k` ([`pod_cidrs`]).
//! * Endpoint `j` of Service `i` runs on [`NODES`]`[(i + j) % 3]`; the local node is
//!   [`NODE`]. All endpoints are ready.
//! * NodePorts (and health-check NodePorts) are allocated from 30000 upwards, one per use,
//!   so they never collide; past port 65535 no more are allocated.
//! * Load-balancer IPs come from `172.16.0.0/12` and `fd00:172:16::/64`.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use kproxy_model::{
    Endpoint, EndpointConditions, IpFamily, NodeInfo, OutsideAddresses, PortSpec, Protocol,
    ProxyState, ServicePort, ServiceSpec, SessionAffinity, SliceEndpoint, SlicePort, SliceSpec,
    TopologyHints, TrafficPolicy,
};

/// The node the state is built for.
pub const NODE: &str = "node-a";

/// The nodes endpoints run on; [`NODE`] is the first.
pub const NODES: [&str; 3] = [NODE, "node-b", "node-c"];

/// The zone label of [`NODE`].
pub const ZONE: &str = "zone-a";

/// The largest number of Services [`cluster`] can address (the size of the ClusterIP range,
/// less a few reserved addresses at its start).
pub const MAX_SERVICES: usize = (1 << 20) - 16;

/// The largest number of endpoints, over all Services, [`cluster`] can address.
pub const MAX_ENDPOINTS: usize = (1 << 22) - 2;

/// `sessionAffinityConfig.clientIP.timeoutSeconds` of [`Kind::Affinity`] Services (the default).
pub const AFFINITY_TIMEOUT: u32 = 10_800;

const SERVICE_V4: u32 = 0x0a60_0000; // 10.96.0.0
const SERVICE_V6: u128 = 0xfd00_0010_0096_0000_0000_0000_0000_0000; // fd00:10:96::
const POD_V4: u32 = 0x0a00_0000; // 10.0.0.0
const POD_V6: u128 = 0xfd00_0010_0244_0000_0000_0000_0000_0000; // fd00:10:244::
const LB_V4: u32 = 0xac10_0000; // 172.16.0.0
const LB_V6: u128 = 0xfd00_0172_0016_0000_0000_0000_0000_0000; // fd00:172:16::
const FIRST_NODE_PORT: u32 = 30_000;

/// What kind of Service index `i` is; see the table in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A ClusterIP Service with one unnamed TCP port.
    ClusterIp,
    /// A ClusterIP Service with two named ports.
    MultiPort,
    /// A NodePort Service.
    NodePort,
    /// A LoadBalancer Service with one load-balancer IP per family and two source ranges.
    LoadBalancer,
    /// A LoadBalancer Service with `externalTrafficPolicy: Local` and a health-check NodePort.
    ExternalLocal,
    /// A ClusterIP Service with `internalTrafficPolicy: Local`.
    InternalLocal,
    /// A ClusterIP Service with `sessionAffinity: ClientIP`.
    Affinity,
    /// A Service (ClusterIP or NodePort) whose EndpointSlices list no endpoint.
    NoEndpoints,
}

impl Kind {
    /// The kind of Service `i`, chosen by `i % 100`.
    pub fn of(i: usize) -> Kind {
        match i % 100 {
            0..=1 => Kind::NoEndpoints,
            2..=4 => Kind::ExternalLocal,
            5..=7 => Kind::InternalLocal,
            8..=9 => Kind::Affinity,
            10..=19 => Kind::NodePort,
            20..=24 => Kind::LoadBalancer,
            25..=39 => Kind::MultiPort,
            _ => Kind::ClusterIp,
        }
    }
}

/// Service `i` is dual-stack. Exactly one Service in ten is; the choice rotates with `i / 100`
/// so that every [`Kind`] gets dual-stack Services.
pub fn is_dual_stack(i: usize) -> bool {
    (i + i / 100) % 10 == 3
}

/// The node: [`NODE`] in [`ZONE`], with a primary IPv4 and IPv6 address, seen.
pub fn node() -> NodeInfo {
    NodeInfo {
        name: NODE.to_string(),
        zone: Some(ZONE.to_string()),
        primary_ips: vec![
            IpAddr::V4(Ipv4Addr::new(192, 168, 0, 10)),
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0x192, 0x168, 0, 0, 0, 0, 0x10)),
        ],
        seen: true,
    }
}

/// The pod networks (`--cluster-cidr`) all endpoints are in, IPv4 first.
pub fn pod_cidrs() -> Vec<IpNet> {
    vec![
        IpNet::new(IpAddr::V4(Ipv4Addr::from(POD_V4)), 10).expect("valid prefix length"),
        IpNet::new(IpAddr::V6(Ipv6Addr::from(POD_V6)), 64).expect("valid prefix length"),
    ]
}

/// The state of [`node`] in a cluster of `services` Services, each with
/// `endpoints_per_service` ready endpoints (none for [`Kind::NoEndpoints`]).
///
/// A plain ClusterIP Service port with endpoints: no affinity, Cluster traffic policy, not
/// reachable from outside. Its `service-…` chain is one DNAT rule, so one endpoint change of
/// it is the cheapest change there is: what the benchmarks and tests of a change use.
pub fn is_plain(port: &ServicePort) -> bool {
    port.affinity == SessionAffinity::None
        && port.internal_policy == TrafficPolicy::Cluster
        && !port.is_externally_reachable()
        && port.families[0].endpoints.any_usable
}

/// The endpoint [`toggle_endpoint`] adds and removes: on another node, in a range no
/// synthetic pod uses.
pub const EXTRA_ENDPOINT: Endpoint = Endpoint {
    addr: IpAddr::V4(Ipv4Addr::new(10, 127, 0, 1)),
    port: 8080,
    local: false,
};

/// Adds [`EXTRA_ENDPOINT`] to the first [plain](is_plain) port of `state` on even `call`s and
/// removes it on odd ones, so a series of calls alternates between two states.
///
/// # Panics
///
/// When `state` has no plain port.
pub fn toggle_endpoint(state: &mut ProxyState, call: usize) {
    let port = state
        .ports
        .iter_mut()
        .find(|p| is_plain(p))
        .expect("a plain ClusterIP Service port");
    let endpoints = &mut port.families[0].endpoints.cluster;
    if call % 2 == 0 {
        endpoints.push(EXTRA_ENDPOINT);
        endpoints.sort();
    } else {
        endpoints.retain(|e| e.addr != EXTRA_ENDPOINT.addr);
    }
}

/// # Panics
///
/// When `services` exceeds [`MAX_SERVICES`], or the endpoints exceed [`MAX_ENDPOINTS`].
pub fn cluster(services: usize, endpoints_per_service: usize) -> ProxyState {
    let (services, slices) = specs(services, endpoints_per_service);
    ProxyState::build(node(), &services, &slices)
}

/// The Services and EndpointSlices [`cluster`] joins: one slice per Service and family.
///
/// # Panics
///
/// As [`cluster`].
pub fn specs(services: usize, endpoints_per_service: usize) -> (Vec<ServiceSpec>, Vec<SliceSpec>) {
    assert!(
        services <= MAX_SERVICES,
        "at most {MAX_SERVICES} Services fit the ClusterIP range"
    );
    assert!(
        services.saturating_mul(endpoints_per_service) <= MAX_ENDPOINTS,
        "at most {MAX_ENDPOINTS} endpoints fit the pod range"
    );
    let mut alloc = Allocator::default();
    let mut specs = Vec::with_capacity(services);
    let mut slices = Vec::with_capacity(services + services / 10);
    for i in 0..services {
        let (service, service_slices) = service(i, endpoints_per_service, &mut alloc);
        specs.push(service);
        slices.extend(service_slices);
    }
    (specs, slices)
}

/// Counters for addresses and ports that must be unique across Services.
#[derive(Default)]
struct Allocator {
    pods: u32,
    load_balancers: u32,
    node_ports: u32,
}

impl Allocator {
    /// The next pod index; pod 0 would be the network address, so pods start at 1.
    fn pod(&mut self) -> u32 {
        self.pods += 1;
        self.pods
    }

    fn load_balancer(&mut self) -> u32 {
        self.load_balancers += 1;
        self.load_balancers
    }

    fn node_port(&mut self) -> Option<u16> {
        let port = u16::try_from(FIRST_NODE_PORT + self.node_ports).ok()?;
        self.node_ports += 1;
        Some(port)
    }
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("bounded by MAX_SERVICES")
}

fn service(i: usize, endpoints: usize, alloc: &mut Allocator) -> (ServiceSpec, Vec<SliceSpec>) {
    let kind = Kind::of(i);
    let dual = is_dual_stack(i);
    let offset = index(i) + 10;
    let mut cluster_ips = vec![IpAddr::V4(Ipv4Addr::from(SERVICE_V4 + offset))];
    if dual {
        cluster_ips.push(IpAddr::V6(Ipv6Addr::from(SERVICE_V6 + u128::from(offset))));
    }

    // (name, protocol, port, target port)
    let ports: &[(&str, Protocol, u16, u16)] = match kind {
        Kind::MultiPort if i % 100 < 30 => &[
            ("dns", Protocol::Udp, 53, 53),
            ("dns-tcp", Protocol::Tcp, 53, 53),
        ],
        Kind::MultiPort => &[
            ("http", Protocol::Tcp, 80, 8080),
            ("https", Protocol::Tcp, 443, 8443),
        ],
        _ => &[("", Protocol::Tcp, 80, 8080)],
    };
    let has_node_port = match kind {
        Kind::NodePort | Kind::LoadBalancer | Kind::ExternalLocal => true,
        Kind::NoEndpoints => i % 2 == 1,
        _ => false,
    };
    let is_load_balancer = matches!(kind, Kind::LoadBalancer | Kind::ExternalLocal);

    let mut load_balancer_ips = Vec::new();
    let mut source_ranges = Vec::new();
    if is_load_balancer {
        let lb = alloc.load_balancer();
        load_balancer_ips.push(IpAddr::V4(Ipv4Addr::from(LB_V4 + lb)));
        if dual {
            load_balancer_ips.push(IpAddr::V6(Ipv6Addr::from(LB_V6 + u128::from(lb))));
        }
        if kind == Kind::LoadBalancer {
            source_ranges.push(net([192, 0, 2, 0], 24));
            source_ranges.push(net([198, 51, 100, 0], 24));
            if dual {
                source_ranges.push(net6([0x2001, 0xdb8, 1, 0, 0, 0, 0, 0], 48));
                source_ranges.push(net6([0x2001, 0xdb8, 2, 0, 0, 0, 0, 0], 48));
            }
        }
    }

    let namespace = kproxy_model::interned::shared(&format!("ns-{}", i % 50));
    let name: Arc<str> = format!("svc-{i}").into();
    let spec = ServiceSpec {
        namespace: namespace.clone(),
        name: name.clone(),
        cluster_ips,
        ports: ports
            .iter()
            .map(|&(port_name, protocol, port, _)| PortSpec {
                name: kproxy_model::interned::shared(port_name),
                protocol,
                port,
                node_port: if has_node_port {
                    alloc.node_port()
                } else {
                    None
                },
            })
            .collect(),
        outside: OutsideAddresses {
            external_ips: Vec::new(),
            load_balancer_ips,
            source_ranges,
        }
        .boxed(),
        internal_policy: if kind == Kind::InternalLocal {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        external_policy: if kind == Kind::ExternalLocal {
            TrafficPolicy::Local
        } else {
            TrafficPolicy::Cluster
        },
        affinity: if kind == Kind::Affinity {
            SessionAffinity::ClientIp {
                timeout_seconds: AFFINITY_TIMEOUT,
            }
        } else {
            SessionAffinity::None
        },
        health_check_node_port: if kind == Kind::ExternalLocal {
            alloc.node_port()
        } else {
            None
        },
    };

    let count = if kind == Kind::NoEndpoints {
        0
    } else {
        endpoints
    };
    let pods: Vec<(u32, &'static str)> = (0..count)
        .map(|j| (alloc.pod(), NODES[(i + j) % NODES.len()]))
        .collect();
    let slice_ports: Vec<SlicePort> = ports
        .iter()
        .map(|&(port_name, protocol, _, target)| SlicePort {
            name: kproxy_model::interned::shared(port_name),
            protocol,
            port: target,
        })
        .collect();
    let families: &[IpFamily] = if dual {
        &[IpFamily::V4, IpFamily::V6]
    } else {
        &[IpFamily::V4]
    };
    let slices = families
        .iter()
        .map(|&family| SliceSpec {
            namespace: namespace.clone(),
            name: format!(
                "{name}-{}",
                match family {
                    IpFamily::V4 => "ipv4",
                    IpFamily::V6 => "ipv6",
                }
            )
            .into(),
            service: name.clone(),
            family,
            ports: slice_ports.clone(),
            endpoints: pods
                .iter()
                .map(|&(pod, node)| {
                    SliceEndpoint::new(
                        pod_addr(family, pod),
                        EndpointConditions::default(),
                        Some(node),
                        TopologyHints::default(),
                    )
                })
                .collect(),
        })
        .collect();
    (spec, slices)
}

fn pod_addr(family: IpFamily, pod: u32) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4(Ipv4Addr::from(POD_V4 + pod)),
        IpFamily::V6 => IpAddr::V6(Ipv6Addr::from(POD_V6 + u128::from(pod))),
    }
}

fn net(octets: [u8; 4], len: u8) -> IpNet {
    IpNet::new(IpAddr::from(octets), len).expect("valid prefix length")
}

fn net6(segments: [u16; 8], len: u8) -> IpNet {
    IpNet::new(IpAddr::from(segments), len).expect("valid prefix length")
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet, HashSet};
    use std::sync::Arc;

    use super::*;

    const SERVICES: usize = 300;
    const ENDPOINTS: usize = 4;

    fn count(pred: impl Fn(usize) -> bool) -> usize {
        (0..SERVICES).filter(|&i| pred(i)).count()
    }

    #[test]
    fn the_mix_has_the_documented_shares() {
        let share = |kind| count(|i| Kind::of(i) == kind);
        assert_eq!(share(Kind::ClusterIp), 180);
        assert_eq!(share(Kind::MultiPort), 45);
        assert_eq!(share(Kind::NodePort), 30);
        assert_eq!(share(Kind::LoadBalancer), 15);
        assert_eq!(share(Kind::ExternalLocal), 9);
        assert_eq!(share(Kind::InternalLocal), 9);
        assert_eq!(share(Kind::Affinity), 6);
        assert_eq!(share(Kind::NoEndpoints), 6);
        assert_eq!(count(is_dual_stack), 30);
        let dual_kinds: HashSet<Kind> = (0..1000)
            .filter(|&i| is_dual_stack(i))
            .map(Kind::of)
            .collect();
        assert_eq!(dual_kinds.len(), 8, "every kind has dual-stack Services");
    }

    #[test]
    fn state_is_sorted_unique_and_as_large_as_asked() {
        let state = cluster(SERVICES, ENDPOINTS);
        assert_eq!(state, cluster(SERVICES, ENDPOINTS), "deterministic");
        assert_eq!(state.node.name, NODE);
        assert!(state.node.seen);

        // One ServicePort per port: the multi-port Services add one each.
        assert_eq!(state.ports.len(), SERVICES + 45);
        assert!(
            state.ports.windows(2).all(|w| w[0].name < w[1].name),
            "ports sorted by name, no duplicates"
        );

        type Service = (Arc<str>, Arc<str>);
        let mut cluster_ips: BTreeMap<IpAddr, Service> = BTreeMap::new();
        let mut pods_by_service: BTreeMap<Service, BTreeSet<IpAddr>> = BTreeMap::new();
        let mut node_ports = HashSet::new();
        let (mut v6, mut lb, mut ranged, mut empty, mut local_eps, mut eps) = (0, 0, 0, 0, 0, 0);
        let mut local_only = 0;
        for port in &state.ports {
            let service = (port.name.namespace.clone(), port.name.service.clone());
            if let Some(node_port) = port.node_port {
                assert!(node_ports.insert(node_port), "NodePorts are unique");
            }
            for family in &port.families {
                let owner = cluster_ips
                    .entry(family.cluster_ip)
                    .or_insert_with(|| service.clone());
                assert_eq!(*owner, service, "ClusterIPs are unique per Service");
                v6 += usize::from(family.family == IpFamily::V6);
                lb += usize::from(!family.load_balancer_ips().is_empty());
                ranged += usize::from(family.source_ranges().len() == 2);
                let sets = &family.endpoints;
                // A set is kept only for a port that routes to it.
                let routes = |policy| {
                    port.internal_policy == policy
                        || (port.is_externally_reachable() && port.external_policy == policy)
                };
                if !sets.any_usable {
                    assert!(sets.cluster.is_empty() && sets.local.is_empty());
                    empty += 1;
                } else if routes(TrafficPolicy::Cluster) {
                    assert_eq!(sets.cluster.len(), ENDPOINTS);
                    let local: Vec<_> = sets.cluster.iter().filter(|e| e.local).collect();
                    if routes(TrafficPolicy::Local) {
                        assert_eq!(local.len(), sets.local.len());
                    } else {
                        assert!(sets.local.is_empty());
                    }
                    local_eps += local.len();
                    eps += sets.cluster.len();
                } else {
                    assert!(sets.cluster.is_empty());
                    local_only += 1;
                }
                pods_by_service
                    .entry(service.clone())
                    .or_default()
                    .extend(family.endpoints.cluster.iter().map(|e| e.addr));
            }
        }
        assert_eq!(pods_by_service.len(), SERVICES);
        let dual_services: BTreeSet<&Arc<str>> = state
            .ports
            .iter()
            .filter(|p| p.families.len() == 2)
            .map(|p| &p.name.service)
            .collect();
        assert_eq!(dual_services.len(), 30);
        let dual_ports = state.ports.iter().filter(|p| p.families.len() == 2).count();
        assert_eq!(v6, dual_ports);
        let families = |i: usize| 1 + usize::from(is_dual_stack(i));
        let empty_services = |i: usize| Kind::of(i) == Kind::NoEndpoints;
        let expected_empty: usize = (0..SERVICES)
            .filter(|&i| empty_services(i))
            .map(families)
            .sum();
        assert_eq!(empty, expected_empty);
        let local_only_services = |i: usize| Kind::of(i) == Kind::InternalLocal;
        let expected_local_only: usize = (0..SERVICES)
            .filter(|&i| local_only_services(i))
            .map(families)
            .sum();
        assert_eq!(local_only, expected_local_only);
        let load_balancers =
            |i: usize| matches!(Kind::of(i), Kind::LoadBalancer | Kind::ExternalLocal);
        let expected_lb: usize = (0..SERVICES)
            .filter(|&i| load_balancers(i))
            .map(families)
            .sum();
        assert_eq!(
            lb, expected_lb,
            "every load balancer has an IP in each family"
        );
        let expected_ranged: usize = (0..SERVICES)
            .filter(|&i| Kind::of(i) == Kind::LoadBalancer)
            .map(families)
            .sum();
        assert_eq!(ranged, expected_ranged);
        assert!(
            local_eps * 4 > eps && local_eps * 2 < eps,
            "about a third of endpoints are local"
        );

        let all_pods: usize = pods_by_service.values().map(BTreeSet::len).sum();
        let distinct: BTreeSet<&IpAddr> = pods_by_service.values().flatten().collect();
        assert_eq!(all_pods, distinct.len(), "no pod serves two Services");
        let expected_pods: usize = (0..SERVICES)
            .filter(|&i| !empty_services(i) && !local_only_services(i))
            .map(|i| families(i) * ENDPOINTS)
            .sum();
        assert_eq!(
            all_pods, expected_pods,
            "one address per endpoint and family"
        );
    }
}
