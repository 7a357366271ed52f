//! Assembles one family's table: global sets and maps, base chains, per-Service-port chains.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kproxy_model::{FamilyPort, IpFamily, ProxyState, ServicePort, TrafficPolicy};
use serde::Serialize;

use crate::endpoint_maps;
use crate::endpoints::EndpointChain;
use crate::ir::{
    Chain, DataType, EndpointMap, EndpointRange, Family, Map, Set, Table, Value, Verdict,
    VerdictElement, TABLE_NAME,
};
use crate::options::{NodePortMatch, Options};
use crate::{clusterip, endpoints, external, firewall, hooks, naming, no_endpoints, nodeport};

/// The named sets every table has. Their elements change with Services; the rules that read
/// them never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum SetName {
    /// Every ClusterIP: for masquerading and for rejecting undefined ports.
    ClusterIps,
    /// The node's primary IPs or `--nodeport-addresses` networks.
    NodePortIps,
    /// Load-balancer `ip . proto . port` that have source ranges.
    FirewallIps,
    /// Allowed `ip . proto . port . source` for those.
    FirewallAllow,
    /// `endpoint . endpoint` for endpoints on this node: a pod reaching itself.
    Hairpin,
}

impl SetName {
    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            SetName::ClusterIps => "cluster-ips",
            SetName::NodePortIps => "nodeport-ips",
            SetName::FirewallIps => "firewall-ips",
            SetName::FirewallAllow => "firewall-allow",
            SetName::Hairpin => "hairpin",
        }
    }
}

/// The named verdict maps every table has: the O(1) dispatch from a destination to its
/// Service port's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum MapName {
    /// `ip . proto . port` of ClusterIPs, externalIPs and load-balancer IPs → chain.
    ServiceIps,
    /// `proto . port` of NodePorts → chain.
    ServiceNodePorts,
    /// `ip . proto . port` of Services without usable endpoints → reject.
    NoEndpointServices,
    /// `proto . port` of NodePorts without usable endpoints → reject.
    NoEndpointNodePorts,
}

impl MapName {
    /// The name in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            MapName::ServiceIps => "service-ips",
            MapName::ServiceNodePorts => "service-nodeports",
            MapName::NoEndpointServices => "no-endpoint-services",
            MapName::NoEndpointNodePorts => "no-endpoint-nodeports",
        }
    }
}

/// Collects one table's contents while Service ports are compiled.
pub(crate) struct TableBuilder<'a> {
    pub family: Family,
    pub ip_family: IpFamily,
    pub options: &'a Options,
    pub cluster_cidrs: Vec<IpNet>,
    pub nodeport: NodePortMatch,
    // Elements are collected in Vecs and sorted once in `finish`: far cheaper than keeping
    // ordered trees of heap-allocated keys while compiling.
    sets: BTreeMap<SetName, Vec<Vec<Value>>>,
    maps: BTreeMap<MapName, Vec<(Vec<Value>, Verdict)>>,
    affinity_sets: Vec<Set>,
    chains: Vec<ChainSlot>,
}

/// A chain, or an endpoint chain whose rule is written once every window is placed.
enum ChainSlot {
    Ready(Chain),
    Endpoints(EndpointChain),
}

impl TableBuilder<'_> {
    pub fn addr_type(&self) -> DataType {
        match self.ip_family {
            IpFamily::V4 => DataType::Ipv4Addr,
            IpFamily::V6 => DataType::Ipv6Addr,
        }
    }

    pub fn add_element(&mut self, set: SetName, key: Vec<Value>) {
        self.sets.entry(set).or_default().push(key);
    }

    /// Adds a map element. If two Services claim the same key, the first (in Service order)
    /// keeps it, so the result does not depend on input order.
    pub fn add_verdict(&mut self, map: MapName, key: Vec<Value>, verdict: Verdict) {
        self.maps.entry(map).or_default().push((key, verdict));
    }

    pub fn add_chain(&mut self, chain: Chain) {
        self.chains.push(ChainSlot::Ready(chain));
    }

    pub fn add_endpoint_chain(&mut self, chain: EndpointChain) {
        self.chains.push(ChainSlot::Endpoints(chain));
    }

    /// Places every endpoint chain in a window of an endpoint map, then writes the chains and
    /// the maps.
    fn endpoint_chains(&mut self) -> (Vec<Chain>, Vec<EndpointMap>) {
        let slots = std::mem::take(&mut self.chains);
        // Placements come back in slot order, so the second pass takes them one by one.
        let mut placements = endpoint_maps::place(slots.iter().filter_map(|slot| match slot {
            ChainSlot::Endpoints(chain) => Some(chain.name.as_str()),
            ChainSlot::Ready(_) => None,
        }))
        .into_iter();
        let mut shards: BTreeMap<u32, Vec<EndpointRange>> = BTreeMap::new();
        let chains = slots
            .into_iter()
            .map(|slot| match slot {
                ChainSlot::Ready(chain) => chain,
                ChainSlot::Endpoints(chain) => {
                    let placement = placements.next().flatten();
                    let (chain, mut ranges) = chain.into_chain(placement.as_ref());
                    if let Some(placement) = placement {
                        shards
                            .entry(placement.shard)
                            .or_default()
                            .append(&mut ranges);
                    }
                    chain
                }
            })
            .collect();
        let maps = shards
            .into_iter()
            .map(|(shard, mut elements)| {
                elements.sort_unstable();
                EndpointMap {
                    name: naming::endpoint_map(shard),
                    comment: Some(format!(
                        "Service endpoints by numgen window (shard {shard} of {})",
                        endpoint_maps::SHARDS
                    )),
                    elements,
                }
            })
            .collect();
        (chains, maps)
    }

    pub fn add_set(&mut self, set: Set) {
        self.affinity_sets.push(set);
    }

    fn set(&mut self, name: SetName, key: Vec<DataType>, interval: bool, comment: &str) -> Set {
        let mut elements = self.sets.remove(&name).unwrap_or_default();
        elements.sort_unstable();
        elements.dedup();
        Set {
            name: name.as_str().to_string(),
            key,
            interval,
            timeout: None,
            comment: Some(comment.to_string()),
            elements,
        }
    }

    fn map(&mut self, name: MapName, key: Vec<DataType>, comment: &str) -> Map {
        let mut elements = self.maps.remove(&name).unwrap_or_default();
        // Stable sort, then keep the first of equal keys: the first Service wins.
        elements.sort_by(|a, b| a.0.cmp(&b.0));
        elements.dedup_by(|later, first| later.0 == first.0);
        let elements = elements
            .into_iter()
            .map(|(key, verdict)| VerdictElement { key, verdict })
            .collect();
        Map {
            name: name.as_str().to_string(),
            key,
            comment: Some(comment.to_string()),
            elements,
        }
    }

    fn finish(mut self) -> Table {
        use DataType::{InetProto, InetService};
        let addr = self.addr_type();
        let mut sets = vec![self.set(
            SetName::ClusterIps,
            vec![addr],
            false,
            "ClusterIPs of all Services",
        )];
        match self.nodeport.clone() {
            NodePortMatch::Addresses(ips) => {
                for ip in ips {
                    self.add_element(SetName::NodePortIps, vec![Value::Addr(ip)]);
                }
                sets.push(self.set(
                    SetName::NodePortIps,
                    vec![addr],
                    false,
                    "addresses that accept NodePorts",
                ));
            }
            NodePortMatch::LocalIn(nets) => {
                for net in nets {
                    self.add_element(SetName::NodePortIps, vec![Value::Prefix(net)]);
                }
                sets.push(self.set(
                    SetName::NodePortIps,
                    vec![addr],
                    true,
                    "networks whose local addresses accept NodePorts",
                ));
            }
            NodePortMatch::AnyLocal => {}
        }
        sets.push(self.set(
            SetName::FirewallIps,
            vec![addr, InetProto, InetService],
            false,
            "load-balancer IPs with loadBalancerSourceRanges",
        ));
        sets.push(self.set(
            SetName::FirewallAllow,
            vec![addr, InetProto, InetService, addr],
            true,
            "sources allowed by loadBalancerSourceRanges",
        ));
        sets.push(self.set(
            SetName::Hairpin,
            vec![addr, addr],
            false,
            "local endpoints: masquerade a pod reaching itself",
        ));
        sets.append(&mut self.affinity_sets);

        let maps = vec![
            self.map(
                MapName::ServiceIps,
                vec![addr, InetProto, InetService],
                "ClusterIPs, externalIPs and load-balancer IPs",
            ),
            self.map(
                MapName::ServiceNodePorts,
                vec![InetProto, InetService],
                "NodePorts",
            ),
            self.map(
                MapName::NoEndpointServices,
                vec![addr, InetProto, InetService],
                "Service IPs without endpoints",
            ),
            self.map(
                MapName::NoEndpointNodePorts,
                vec![InetProto, InetService],
                "NodePorts without endpoints",
            ),
        ];

        let mut chains = hooks::chains(&self);
        let (mut endpoint_chains, endpoint_maps) = self.endpoint_chains();
        chains.append(&mut endpoint_chains);
        Table {
            family: self.family,
            name: TABLE_NAME.to_string(),
            sets,
            maps,
            endpoint_maps,
            chains,
        }
    }
}

/// One Service port in one family, with the decisions every module shares.
pub(crate) struct PortContext<'a> {
    pub port: &'a ServicePort,
    pub family: &'a FamilyPort,
    /// See [`naming::port_id`].
    pub id: String,
    /// See [`naming::port_comment`].
    pub comment: String,
}

impl PortContext<'_> {
    /// Some endpoint anywhere can take traffic; otherwise every destination is rejected.
    pub fn has_endpoints(&self) -> bool {
        self.family.endpoints.any_usable
    }

    /// Where traffic that follows internalTrafficPolicy goes: ClusterIP traffic, and
    /// external traffic from this node or its pods under externalTrafficPolicy Local.
    pub fn internal_verdict(&self) -> Verdict {
        match self.port.internal_policy {
            TrafficPolicy::Cluster => Verdict::Goto(naming::service_chain(&self.id)),
            TrafficPolicy::Local => self.local_verdict(),
        }
    }

    /// Where traffic restricted to local endpoints goes: dropped when there are none.
    pub fn local_verdict(&self) -> Verdict {
        if self.family.endpoints.local.is_empty() {
            Verdict::Drop
        } else {
            Verdict::Goto(naming::local_chain(&self.id))
        }
    }

    /// The `service-…` chain (cluster-wide endpoints) is reachable.
    pub fn uses_cluster_chain(&self) -> bool {
        let external_cluster = self.port.is_externally_reachable()
            && self.port.external_policy == TrafficPolicy::Cluster;
        self.has_endpoints()
            && (self.port.internal_policy == TrafficPolicy::Cluster || external_cluster)
    }

    /// The `local-…` chain (endpoints on this node) is reachable.
    pub fn uses_local_chain(&self) -> bool {
        !self.family.endpoints.local.is_empty()
            && (self.port.internal_policy == TrafficPolicy::Local
                || self.port.effective_external_policy() == TrafficPolicy::Local)
    }
}

pub(crate) fn compile_family(state: &ProxyState, options: &Options, ip_family: IpFamily) -> Table {
    let mut table = TableBuilder {
        family: match ip_family {
            IpFamily::V4 => Family::Ip,
            IpFamily::V6 => Family::Ip6,
        },
        ip_family,
        options,
        cluster_cidrs: options.cluster_cidrs(ip_family),
        nodeport: options.nodeport_match(ip_family, &state.node),
        sets: BTreeMap::new(),
        maps: BTreeMap::new(),
        affinity_sets: Vec::new(),
        chains: Vec::new(),
    };
    for port in &state.ports {
        let Some(family) = port.family(ip_family) else {
            continue;
        };
        let id = naming::port_id(&port.name, port.port);
        let ctx = PortContext {
            port,
            family,
            comment: naming::port_comment(&port.name),
            id,
        };
        clusterip::compile(&mut table, &ctx);
        external::compile(&mut table, &ctx);
        nodeport::compile(&mut table, &ctx);
        firewall::compile(&mut table, &ctx);
        no_endpoints::compile(&mut table, &ctx);
        endpoints::compile(&mut table, &ctx);
    }
    table.finish()
}
