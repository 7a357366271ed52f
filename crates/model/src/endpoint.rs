//! Endpoint selection: which endpoints of a Service port a packet on this node may reach.
//!
//! This follows kube-proxy's rules so that a Service behaves the same whichever proxy runs:
//! ready endpoints are used; when none is ready, endpoints that are both serving and terminating
//! are used instead (decided separately for the cluster-wide and the node-local set); topology
//! hints narrow the cluster-wide set only when every ready endpoint carries them and at least
//! one names this node (or its zone).

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;

/// The conditions an EndpointSlice reports for one endpoint, with the API defaults applied
/// (`ready` and `serving` default to true, `terminating` to false).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointConditions {
    /// The endpoint accepts new connections and is not terminating.
    pub ready: bool,
    /// The endpoint accepts connections, terminating or not.
    pub serving: bool,
    /// The endpoint's pod is shutting down.
    pub terminating: bool,
}

impl Default for EndpointConditions {
    fn default() -> Self {
        EndpointConditions {
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// One endpoint as an EndpointSlice lists it, before selection.
///
/// The daemon's watcher keeps one per endpoint of the cluster (500,000 at 50,000 Services), so
/// it is kept small: the node's name and the hints, which every endpoint on a node (or in a
/// zone) repeats, sit behind one pointer to a copy shared by all endpoints with the same ones.
/// 32 bytes; a shared name and a separate pointer to the hints made it 40, a `String` name and
/// two inline sets 96.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    /// The first of `addresses` (the only one kube-proxy uses).
    pub addr: IpAddr,
    /// `conditions`.
    pub conditions: EndpointConditions,
    /// `nodeName` and `hints`; `None` when neither is set.
    place: Option<Arc<Place>>,
}

/// `hints` of one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TopologyHints {
    /// `forZones[].name`.
    pub zones: BTreeSet<String>,
    /// `forNodes[].name`.
    pub nodes: BTreeSet<String>,
}

/// Where an endpoint runs and what its hints name: the part of an endpoint that many share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Place {
    node: Option<NodeName>,
    hints: TopologyHints,
}

static NO_HINTS: BTreeSet<String> = BTreeSet::new();

impl SliceEndpoint {
    /// An endpoint on node `node_name` (if set) with `hints`. Each distinct pair of node and
    /// hints is stored once, for the life of the process: a cluster has one per node, or per
    /// node and zone with hints, not one per endpoint.
    pub fn new(
        addr: IpAddr,
        conditions: EndpointConditions,
        node_name: Option<&str>,
        hints: TopologyHints,
    ) -> SliceEndpoint {
        let place = Place {
            node: node_name.map(NodeName::new),
            hints,
        };
        let place = (place.node.is_some() || place.hints != TopologyHints::default())
            .then(|| shared_place(&place));
        SliceEndpoint {
            addr,
            conditions,
            place,
        }
    }

    /// `nodeName`, if set.
    pub fn node_name(&self) -> Option<&str> {
        self.place.as_ref()?.node.as_deref()
    }

    /// `hints.forZones[].name`.
    pub fn zone_hints(&self) -> &BTreeSet<String> {
        self.place.as_ref().map_or(&NO_HINTS, |p| &p.hints.zones)
    }

    /// `hints.forNodes[].name`.
    pub fn node_hints(&self) -> &BTreeSet<String> {
        self.place.as_ref().map_or(&NO_HINTS, |p| &p.hints.nodes)
    }
}

/// The shared copy of `place` (a new one is a clone: once per distinct node and hints).
fn shared_place(place: &Place) -> Arc<Place> {
    static PLACES: OnceLock<Mutex<HashSet<Arc<Place>>>> = OnceLock::new();
    crate::interned::intern(&PLACES, place, |place| Arc::new(place.clone()))
}

/// A node's name as endpoints carry it. Every endpoint on a node repeats the name, so each
/// distinct name is stored once and shared: a cluster has thousands of nodes, its slices
/// hundreds of thousands of endpoints.
///
/// A thin pointer (to a shared `String`), so an endpoint spends 8 bytes on it, not 16.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(Arc<String>);

impl NodeName {
    /// The shared copy of `name`. Names are kept for the life of the process: a few dozen
    /// bytes per node the cluster ever had.
    pub fn new(name: &str) -> NodeName {
        static NAMES: OnceLock<Mutex<HashSet<NodeName>>> = OnceLock::new();
        crate::interned::intern(&NAMES, name, |name| NodeName(Arc::new(name.to_string())))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Names compare, hash and order as their text, so the shared set finds a name by `&str`.
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for NodeName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

/// A candidate endpoint of one Service port: a slice endpoint plus the port from its slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The slice's endpoint.
    pub endpoint: &'a SliceEndpoint,
    /// The target port its slice gives for the Service port.
    pub port: u16,
}

impl Candidate<'_> {
    fn is_local(&self, node: &str) -> bool {
        self.endpoint.node_name() == Some(node)
    }

    fn is_ready(&self) -> bool {
        self.endpoint.conditions.ready
    }

    fn is_serving_terminating(&self) -> bool {
        self.endpoint.conditions.serving && self.endpoint.conditions.terminating
    }

    fn to_endpoint(&self, node: &str) -> Endpoint {
        Endpoint {
            addr: self.endpoint.addr,
            port: self.port,
            local: self.is_local(node),
        }
    }
}

/// A DNAT destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    /// Endpoint address.
    pub addr: IpAddr,
    /// Endpoint port (the DNAT target port).
    pub port: u16,
    /// The endpoint runs on this node. A pod reaching itself through a Service (hairpin) is
    /// only possible for local endpoints.
    pub local: bool,
}

/// The endpoints of one Service port in one family, as this node uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointSets {
    /// Used by `Cluster` traffic policies: topology-filtered, with terminating fallback.
    /// In a [`crate::ProxyState`], empty when no policy of the port is `Cluster`.
    pub cluster: Vec<Endpoint>,
    /// Used by `Local` traffic policies: endpoints on this node, with terminating fallback.
    /// In a [`crate::ProxyState`], empty when no policy of the port is `Local` (an external
    /// policy counts only for a port reachable from outside).
    pub local: Vec<Endpoint>,
    /// Some endpoint anywhere can serve traffic. When false, traffic is rejected (clients fail
    /// fast); when true but a Local policy has no local endpoint, traffic is dropped instead.
    pub any_usable: bool,
}

/// This node, as endpoint selection sees it.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// Node name (`nodeName` of local endpoints).
    pub name: &'a str,
    /// The node's `topology.kubernetes.io/zone` label.
    pub zone: Option<&'a str>,
}

/// How topology hints narrow the cluster-wide set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology<'a> {
    /// No filtering.
    Any,
    /// Only endpoints hinted for this node.
    SameNode(&'a str),
    /// Only endpoints hinted for this zone.
    SameZone(&'a str),
}

impl Topology<'_> {
    fn allows(self, candidate: &Candidate<'_>) -> bool {
        match self {
            Topology::Any => true,
            Topology::SameNode(node) => candidate.endpoint.node_hints().contains(node),
            Topology::SameZone(zone) => candidate.endpoint.zone_hints().contains(zone),
        }
    }
}

/// Chooses the topology mode from the hints of the ready candidates. All-or-nothing: one ready
/// endpoint without hints disables filtering, so a half-rolled-out hint set never concentrates
/// traffic on a few endpoints.
fn topology<'a>(candidates: &[Candidate<'_>], node: NodeView<'a>) -> Topology<'a> {
    let mut ready = candidates.iter().filter(|c| c.is_ready()).peekable();
    if ready.peek().is_none() {
        return Topology::Any;
    }
    let ready: Vec<_> = ready.collect();
    let all_node_hinted = ready.iter().all(|c| !c.endpoint.node_hints().is_empty());
    if all_node_hinted
        && ready
            .iter()
            .any(|c| c.endpoint.node_hints().contains(node.name))
    {
        return Topology::SameNode(node.name);
    }
    if let Some(zone) = node.zone {
        let all_zone_hinted = ready.iter().all(|c| !c.endpoint.zone_hints().is_empty());
        if all_zone_hinted && ready.iter().any(|c| c.endpoint.zone_hints().contains(zone)) {
            return Topology::SameZone(zone);
        }
    }
    Topology::Any
}

/// Picks the endpoints of one Service port in one family for this node.
///
/// `candidates` must already be de-duplicated; the result is sorted by address and port.
pub fn select(candidates: &[Candidate<'_>], node: NodeView<'_>) -> EndpointSets {
    let topology = topology(candidates, node);
    let mut cluster: Vec<Endpoint> = candidates
        .iter()
        .filter(|c| c.is_ready() && topology.allows(c))
        .map(|c| c.to_endpoint(node.name))
        .collect();
    if cluster.is_empty() {
        cluster = candidates
            .iter()
            .filter(|c| c.is_serving_terminating())
            .map(|c| c.to_endpoint(node.name))
            .collect();
    }

    let local_ready = candidates
        .iter()
        .any(|c| c.is_local(node.name) && c.is_ready());
    let mut local: Vec<Endpoint> = candidates
        .iter()
        .filter(|c| c.is_local(node.name))
        .filter(|c| {
            if local_ready {
                c.is_ready()
            } else {
                c.is_serving_terminating()
            }
        })
        .map(|c| c.to_endpoint(node.name))
        .collect();

    let any_usable = candidates
        .iter()
        .any(|c| c.is_ready() || c.is_serving_terminating());
    cluster.sort();
    local.sort();
    // A daemon keeps every port's sets until the port changes; a filtered collect leaves room
    // for sixteen endpoints where there are ten.
    cluster.shrink_to_fit();
    local.shrink_to_fit();
    EndpointSets {
        cluster,
        local,
        any_usable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ep {
        addr: &'static str,
        node: &'static str,
        ready: bool,
        serving: bool,
        terminating: bool,
        zones: &'static [&'static str],
        nodes: &'static [&'static str],
    }

    const READY: Ep = Ep {
        addr: "",
        node: "",
        ready: true,
        serving: true,
        terminating: false,
        zones: &[],
        nodes: &[],
    };
    const TERMINATING: Ep = Ep {
        ready: false,
        serving: true,
        terminating: true,
        ..READY
    };
    const GONE: Ep = Ep {
        ready: false,
        serving: false,
        terminating: true,
        ..READY
    };

    fn slice_endpoints(eps: &[Ep]) -> Vec<SliceEndpoint> {
        eps.iter()
            .map(|e| {
                SliceEndpoint::new(
                    e.addr.parse().expect("test address"),
                    EndpointConditions {
                        ready: e.ready,
                        serving: e.serving,
                        terminating: e.terminating,
                    },
                    (!e.node.is_empty()).then_some(e.node),
                    TopologyHints {
                        zones: e.zones.iter().map(|z| z.to_string()).collect(),
                        nodes: e.nodes.iter().map(|n| n.to_string()).collect(),
                    },
                )
            })
            .collect()
    }

    fn run(eps: &[Ep], zone: Option<&str>) -> (Vec<String>, Vec<String>, bool) {
        let slice = slice_endpoints(eps);
        let candidates: Vec<_> = slice
            .iter()
            .map(|e| Candidate {
                endpoint: e,
                port: 80,
            })
            .collect();
        let sets = select(
            &candidates,
            NodeView {
                name: "node-a",
                zone,
            },
        );
        let names = |v: &[Endpoint]| v.iter().map(|e| e.addr.to_string()).collect();
        (names(&sets.cluster), names(&sets.local), sets.any_usable)
    }

    #[test]
    fn ready_endpoints_are_used_and_not_ready_ones_are_not() {
        let (cluster, local, any) = run(
            &[
                Ep {
                    addr: "10.0.0.2",
                    node: "node-b",
                    ..READY
                },
                Ep {
                    addr: "10.0.0.1",
                    node: "node-a",
                    ..READY
                },
                Ep {
                    addr: "10.0.0.3",
                    node: "node-a",
                    ..TERMINATING
                },
            ],
            None,
        );
        assert_eq!(cluster, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(local, ["10.0.0.1"]);
        assert!(any);
    }

    #[test]
    fn serving_terminating_endpoints_are_the_fallback_when_none_is_ready() {
        let (cluster, local, any) = run(
            &[
                Ep {
                    addr: "10.0.0.1",
                    node: "node-a",
                    ..TERMINATING
                },
                Ep {
                    addr: "10.0.0.2",
                    node: "node-b",
                    ..TERMINATING
                },
                Ep {
                    addr: "10.0.0.3",
                    node: "node-b",
                    ..GONE
                },
            ],
            None,
        );
        assert_eq!(cluster, ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(local, ["10.0.0.1"]);
        assert!(any);
    }

    #[test]
    fn local_fallback_is_decided_apart_from_the_cluster_set() {
        let (cluster, local, _) = run(
            &[
                Ep {
                    addr: "10.0.0.1",
                    node: "node-a",
                    ..TERMINATING
                },
                Ep {
                    addr: "10.0.0.2",
                    node: "node-b",
                    ..READY
                },
            ],
            None,
        );
        assert_eq!(
            cluster,
            ["10.0.0.2"],
            "a ready remote endpoint wins cluster-wide"
        );
        assert_eq!(
            local,
            ["10.0.0.1"],
            "the terminating local endpoint is the local fallback"
        );
    }

    #[test]
    fn nothing_usable_means_reject_not_drop() {
        let (cluster, local, any) = run(
            &[Ep {
                addr: "10.0.0.1",
                node: "node-a",
                ..GONE
            }],
            None,
        );
        assert!(cluster.is_empty() && local.is_empty());
        assert!(!any);
        let (_, local, any) = run(
            &[Ep {
                addr: "10.0.0.1",
                node: "node-b",
                ..READY
            }],
            None,
        );
        assert!(local.is_empty());
        assert!(
            any,
            "usable elsewhere: a Local policy drops instead of rejecting"
        );
    }

    #[test]
    fn zone_hints_filter_only_when_every_ready_endpoint_has_them() {
        let hinted = [
            Ep {
                addr: "10.0.0.1",
                node: "node-b",
                zones: &["zone-a"],
                ..READY
            },
            Ep {
                addr: "10.0.0.2",
                node: "node-c",
                zones: &["zone-b"],
                ..READY
            },
            Ep {
                addr: "10.0.0.3",
                node: "node-c",
                zones: &["zone-b"],
                ..TERMINATING
            },
        ];
        let (cluster, _, _) = run(&hinted, Some("zone-a"));
        assert_eq!(cluster, ["10.0.0.1"]);

        let partial = [
            Ep {
                addr: "10.0.0.1",
                node: "node-b",
                zones: &["zone-a"],
                ..READY
            },
            Ep {
                addr: "10.0.0.2",
                node: "node-c",
                ..READY
            },
        ];
        let (cluster, _, _) = run(&partial, Some("zone-a"));
        assert_eq!(cluster, ["10.0.0.1", "10.0.0.2"]);

        let (cluster, _, _) = run(&hinted, Some("zone-z"));
        assert_eq!(
            cluster,
            ["10.0.0.1", "10.0.0.2"],
            "no hint for our zone: no filtering"
        );
        let (cluster, _, _) = run(&hinted, None);
        assert_eq!(
            cluster,
            ["10.0.0.1", "10.0.0.2"],
            "node without zone label: no filtering"
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn slice_endpoints_stay_small_and_share_where_they_run() {
        // The watcher keeps one per endpoint of the cluster (half a million at 50,000
        // Services): one shared pointer for node and hints makes it 32 bytes instead of 40.
        assert_eq!(std::mem::size_of::<SliceEndpoint>(), 32);
        let first = NodeName::new("node-x");
        let again = NodeName::new(&String::from("node-x"));
        assert!(Arc::ptr_eq(&first.0, &again.0), "one copy per name");
        assert_eq!(again.as_str(), "node-x");

        let addr: IpAddr = "10.0.0.1".parse().expect("address");
        let conditions = EndpointConditions::default();
        let zone_a = TopologyHints {
            zones: ["zone-a".to_string()].into(),
            nodes: BTreeSet::new(),
        };
        let on = |node: Option<&str>, hints: &TopologyHints| {
            SliceEndpoint::new(addr, conditions, node, hints.clone())
        };
        let (one, two) = (on(Some("node-x"), &zone_a), on(Some("node-x"), &zone_a));
        let place = |e: &SliceEndpoint| e.place.clone().expect("a place");
        assert!(
            Arc::ptr_eq(&place(&one), &place(&two)),
            "one copy per node and hints"
        );
        let elsewhere = on(Some("node-y"), &zone_a);
        assert!(!Arc::ptr_eq(&place(&one), &place(&elsewhere)));
        assert_eq!(elsewhere.node_name(), Some("node-y"));
        assert_eq!(elsewhere.zone_hints(), &zone_a.zones);
        assert!(elsewhere.node_hints().is_empty());

        let nowhere = on(None, &TopologyHints::default());
        assert!(
            nowhere.place.is_none(),
            "no node and no hints take no shared copy"
        );
        assert_eq!(nowhere.node_name(), None);
        assert!(nowhere.zone_hints().is_empty());
        let hinted_only = on(None, &zone_a);
        assert_eq!(
            (hinted_only.node_name(), hinted_only.zone_hints()),
            (None, &zone_a.zones)
        );
    }

    #[test]
    fn node_hints_are_preferred_over_zone_hints() {
        let eps = [
            Ep {
                addr: "10.0.0.1",
                node: "node-a",
                zones: &["zone-a"],
                nodes: &["node-a"],
                ..READY
            },
            Ep {
                addr: "10.0.0.2",
                node: "node-b",
                zones: &["zone-a"],
                nodes: &["node-b"],
                ..READY
            },
            Ep {
                addr: "10.0.0.3",
                node: "node-c",
                zones: &["zone-c"],
                nodes: &["node-c"],
                ..READY
            },
        ];
        let (cluster, _, _) = run(&eps, Some("zone-a"));
        assert_eq!(cluster, ["10.0.0.1"]);
    }

    #[test]
    fn topology_never_hides_the_local_set() {
        let eps = [
            Ep {
                addr: "10.0.0.1",
                node: "node-a",
                zones: &["zone-b"],
                ..READY
            },
            Ep {
                addr: "10.0.0.2",
                node: "node-b",
                zones: &["zone-a"],
                ..READY
            },
        ];
        let (cluster, local, _) = run(&eps, Some("zone-a"));
        assert_eq!(cluster, ["10.0.0.2"]);
        assert_eq!(local, ["10.0.0.1"]);
    }
}
