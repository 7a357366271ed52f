//! Assembles one family's table: global sets and maps, base chains, and the fragment each
//! Service port contributes.

use std::collections::BTreeMap;

use ipnet::IpNet;
use kproxy_model::{FamilyPort, IpFamily, NodeInfo, ProxyState, ServicePort, TrafficPolicy};
use serde::Serialize;

use crate::endpoint_maps;
use crate::endpoints::EndpointChain;
use crate::ir::{
    Chain, DataType, EndpointMap, EndpointRange, Family, Map, Set, Table, Value, Verdict,
    VerdictElement, TABLE_NAME,
};
use crate::options::{NodePortMatch, Options};
use crate::{
    buckets, clusterip, endpoints, external, firewall, hooks, naming, no_endpoints, nodeport,
};

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

/// The keyed dispatch every table has: from a destination to its Service port's rules. The
/// first two become sets and bucket maps in the kernel ([`crate::buckets`]); the other two are
/// verdict maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum MapName {
    /// `ip . proto . port` of ClusterIPs, externalIPs and load-balancer IPs → port chain.
    ServiceIps,
    /// `proto . port` of NodePorts → port chain.
    ServiceNodePorts,
    /// `ip . proto . port` of Services without usable endpoints → reject.
    NoEndpointServices,
    /// `proto . port` of NodePorts without usable endpoints → reject.
    NoEndpointNodePorts,
}

impl MapName {
    /// Every map, in table order.
    pub const ALL: [MapName; 4] = [
        MapName::ServiceIps,
        MapName::ServiceNodePorts,
        MapName::NoEndpointServices,
        MapName::NoEndpointNodePorts,
    ];

    /// The map called `name` in the table.
    pub fn of(name: &str) -> Option<MapName> {
        MapName::ALL.into_iter().find(|map| map.as_str() == name)
    }

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

/// What one Service port contributes to one family's table: set and map elements and its own
/// chains. A table is the base chains plus the fragments of every port, so
/// a changed port can be recompiled alone ([`crate::incremental`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Fragment {
    pub elements: Vec<(SetName, Vec<Value>)>,
    /// In the order the modules add them: the first of two claims on a key wins.
    pub verdicts: Vec<(MapName, Vec<Value>, Verdict)>,
    pub chains: Vec<ChainSlot>,
}

/// A chain, or an endpoint chain whose rule is written once every window is placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainSlot {
    Ready(Chain),
    Endpoints(EndpointChain),
}

/// Compiles Service ports into [`Fragment`]s for one family, and fragments into a table.
pub(crate) struct TableBuilder<'a> {
    pub family: Family,
    pub ip_family: IpFamily,
    pub options: &'a Options,
    pub cluster_cidrs: Vec<IpNet>,
    pub nodeport: NodePortMatch,
    /// The fragment of the port being compiled.
    fragment: Fragment,
}

impl<'a> TableBuilder<'a> {
    pub fn new(options: &'a Options, node: &NodeInfo, ip_family: IpFamily) -> TableBuilder<'a> {
        TableBuilder {
            family: match ip_family {
                IpFamily::V4 => Family::Ip,
                IpFamily::V6 => Family::Ip6,
            },
            ip_family,
            options,
            cluster_cidrs: options.cluster_cidrs(ip_family),
            nodeport: options.nodeport_match(ip_family, node),
            fragment: Fragment::default(),
        }
    }

    pub fn addr_type(&self) -> DataType {
        match self.ip_family {
            IpFamily::V4 => DataType::Ipv4Addr,
            IpFamily::V6 => DataType::Ipv6Addr,
        }
    }

    pub fn add_element(&mut self, set: SetName, key: Vec<Value>) {
        self.fragment.elements.push((set, key));
    }

    /// Adds a map element. If two Services claim the same key, the first (in Service order)
    /// keeps it, so the result does not depend on input order.
    pub fn add_verdict(&mut self, map: MapName, key: Vec<Value>, verdict: Verdict) {
        self.fragment.verdicts.push((map, key, verdict));
    }

    pub fn add_chain(&mut self, chain: Chain) {
        self.fragment.chains.push(ChainSlot::Ready(chain));
    }

    pub fn add_endpoint_chain(&mut self, chain: EndpointChain) {
        self.fragment.chains.push(ChainSlot::Endpoints(chain));
    }

    /// Compiles one Service port; `None` when it has no address of this family.
    pub fn port(&mut self, port: &ServicePort) -> Option<Fragment> {
        let family = port.family(self.ip_family)?;
        let ctx = PortContext {
            port,
            family,
            comment: naming::port_comment(&port.name),
            id: naming::port_id(&port.name, port.port),
        };
        clusterip::compile(self, &ctx);
        external::compile(self, &ctx);
        nodeport::compile(self, &ctx);
        firewall::compile(self, &ctx);
        no_endpoints::compile(self, &ctx);
        endpoints::compile(self, &ctx);
        Some(std::mem::take(&mut self.fragment))
    }

    /// The table of the base chains and `fragments`, in Service port order.
    pub fn finish(&self, fragments: Assembly) -> Table {
        let Assembly {
            elements,
            verdicts,
            slots,
        } = fragments;
        let mut sets = self.global_sets(elements);
        let mut maps = self.global_maps(verdicts);
        let mut chains = hooks::chains(self);
        let (port_chains, endpoint_maps) = endpoint_chains(slots);
        chains.extend(buckets::dispatch(&mut sets, &mut maps, port_chains));
        Table {
            family: self.family,
            name: TABLE_NAME.to_string(),
            sets,
            maps,
            endpoint_maps,
            chains,
        }
    }

    /// The sets every table has, holding `elements` (sorted and deduplicated here) and the
    /// NodePort addresses.
    pub fn global_sets(&self, mut elements: BTreeMap<SetName, Vec<Vec<Value>>>) -> Vec<Set> {
        use DataType::{InetProto, InetService};
        let addr = self.addr_type();
        let mut set = |name: SetName, key: Vec<DataType>, interval: bool, comment: &str| {
            let mut elements = elements.remove(&name).unwrap_or_default();
            elements.sort_unstable();
            elements.dedup();
            Set {
                name: name.as_str().to_string(),
                key,
                interval,
                timeout: None,
                size: None,
                comment: Some(comment.to_string()),
                elements,
            }
        };
        let mut sets = vec![set(
            SetName::ClusterIps,
            vec![addr],
            false,
            "ClusterIPs of all Services",
        )];
        match &self.nodeport {
            NodePortMatch::Addresses(ips) => {
                let mut nodeport = set(
                    SetName::NodePortIps,
                    vec![addr],
                    false,
                    "addresses that accept NodePorts",
                );
                nodeport.elements = ips.iter().map(|ip| vec![Value::Addr(*ip)]).collect();
                nodeport.elements.sort_unstable();
                nodeport.elements.dedup();
                sets.push(nodeport);
            }
            NodePortMatch::LocalIn(nets) => {
                let mut nodeport = set(
                    SetName::NodePortIps,
                    vec![addr],
                    true,
                    "networks whose local addresses accept NodePorts",
                );
                nodeport.elements = nets.iter().map(|net| vec![Value::Prefix(*net)]).collect();
                nodeport.elements.sort_unstable();
                nodeport.elements.dedup();
                sets.push(nodeport);
            }
            NodePortMatch::AnyLocal => {}
        }
        sets.push(set(
            SetName::FirewallIps,
            vec![addr, InetProto, InetService],
            false,
            "load-balancer IPs with loadBalancerSourceRanges",
        ));
        sets.push(set(
            SetName::FirewallAllow,
            vec![addr, InetProto, InetService, addr],
            true,
            "sources allowed by loadBalancerSourceRanges",
        ));
        sets.push(set(
            SetName::Hairpin,
            vec![addr, addr],
            false,
            "local endpoints: masquerade a pod reaching itself",
        ));
        sets.push(crate::endpoints::affinity_set(addr));
        sets
    }

    /// The verdict maps every table has. `verdicts` are in claim order: of two equal keys the
    /// first is kept.
    pub fn global_maps(
        &self,
        mut verdicts: BTreeMap<MapName, Vec<(Vec<Value>, Verdict)>>,
    ) -> Vec<Map> {
        use DataType::{InetProto, InetService};
        let addr = self.addr_type();
        let mut map = |name: MapName, key: Vec<DataType>, comment: &str| {
            let mut elements = verdicts.remove(&name).unwrap_or_default();
            // Stable sort, then keep the first of equal keys: the first Service wins.
            elements.sort_by(|a, b| a.0.cmp(&b.0));
            elements.dedup_by(|later, first| later.0 == first.0);
            Map {
                name: name.as_str().to_string(),
                key,
                comment: Some(comment.to_string()),
                elements: elements
                    .into_iter()
                    .map(|(key, verdict)| VerdictElement { key, verdict })
                    .collect(),
            }
        };
        vec![
            map(
                MapName::ServiceIps,
                vec![addr, InetProto, InetService],
                "ClusterIPs, externalIPs and load-balancer IPs",
            ),
            map(
                MapName::ServiceNodePorts,
                vec![InetProto, InetService],
                "NodePorts",
            ),
            map(
                MapName::NoEndpointServices,
                vec![addr, InetProto, InetService],
                "Service IPs without endpoints",
            ),
            map(
                MapName::NoEndpointNodePorts,
                vec![InetProto, InetService],
                "NodePorts without endpoints",
            ),
        ]
    }
}

/// Fragments gathered for [`TableBuilder::finish`].
#[derive(Default)]
pub(crate) struct Assembly {
    // Elements are collected in Vecs and sorted once at the end: far cheaper than keeping
    // ordered trees of heap-allocated keys while compiling.
    elements: BTreeMap<SetName, Vec<Vec<Value>>>,
    verdicts: BTreeMap<MapName, Vec<(Vec<Value>, Verdict)>>,
    slots: Vec<ChainSlot>,
}

impl Assembly {
    /// Adds the next port's fragment (ports must come in Service port order).
    pub fn add(&mut self, fragment: Fragment) {
        for (set, key) in fragment.elements {
            self.elements.entry(set).or_default().push(key);
        }
        for (map, key, verdict) in fragment.verdicts {
            self.verdicts.entry(map).or_default().push((key, verdict));
        }
        self.slots.extend(fragment.chains);
    }
}

/// The endpoint map of `shard`, holding `elements` (sorted here).
pub(crate) fn endpoint_map(shard: u32, mut elements: Vec<EndpointRange>) -> EndpointMap {
    elements.sort_unstable();
    EndpointMap {
        name: naming::endpoint_map(shard),
        comment: Some(format!(
            "Service endpoints by numgen window (shard {shard} of {})",
            endpoint_maps::SHARDS
        )),
        elements,
    }
}

/// Places every endpoint chain in a window of an endpoint map, then writes the chains and the
/// maps.
fn endpoint_chains(slots: Vec<ChainSlot>) -> (Vec<Chain>, Vec<EndpointMap>) {
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
                let (chain, mut ranges) = chain.render(placement.as_ref());
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
        .map(|(shard, elements)| endpoint_map(shard, elements))
        .collect();
    (chains, maps)
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
        self.port.uses_cluster_endpoints(self.family)
    }

    /// The `local-…` chain (endpoints on this node) is reachable.
    pub fn uses_local_chain(&self) -> bool {
        self.port.uses_local_endpoints(self.family)
    }
}

pub(crate) fn compile_family(state: &ProxyState, options: &Options, ip_family: IpFamily) -> Table {
    let mut table = TableBuilder::new(options, &state.node, ip_family);
    let mut assembly = Assembly::default();
    for port in &state.ports {
        if let Some(fragment) = table.port(port) {
            assembly.add(fragment);
        }
    }
    table.finish(assembly)
}
