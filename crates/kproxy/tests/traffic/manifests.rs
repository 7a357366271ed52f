//! The Kubernetes objects of the traffic tests, written from the topology so that addresses in
//! Services and EndpointSlices are the pods' real ones.
//!
//! Every Service has two ports, `tcp` and `udp` (port [`SERVICE_PORT`] → the pods'
//! [`DEFAULT_PORT`]), so each case can send both protocols; a NodePort Service uses one node
//! port number for both. Endpoints list both addresses of a pod and land in the IPv4 and IPv6
//! slices of the families the Service has.

use std::net::IpAddr;

use kproxy_testkit::topology::{Host, Topology, DEFAULT_PORT};
use serde_json::{json, Value};

/// The node kproxy runs on.
pub const NODE: &str = "node-a";
/// Another node, for endpoints that are not local.
pub const OTHER_NODE: &str = "node-b";
/// The port every Service exposes.
pub const SERVICE_PORT: u16 = 80;
/// The flags of every traffic test.
pub const FLAGS: [&str; 4] = [
    "--hostname-override",
    NODE,
    "--cluster-cidr",
    "10.244.0.0/16,fd00:10:244::/56",
];

/// An endpoint's conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// ready, serving, not terminating.
    Ready,
    /// not ready, serving, terminating: a pod draining during a rollout.
    Draining,
    /// not ready, not serving, terminating: a pod that must get no traffic.
    Gone,
}

/// One endpoint of a Service: a pod, the node it is on and its conditions.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pod: String,
    ips: [IpAddr; 2],
    node: &'static str,
    state: State,
}

/// A ready endpoint for `pod` on this node.
pub fn local(pod: &Host) -> Endpoint {
    Endpoint {
        pod: pod.name().to_string(),
        ips: [pod.ipv4().into(), pod.ipv6().into()],
        node: NODE,
        state: State::Ready,
    }
}

/// A ready endpoint for `pod` on another node.
pub fn remote(pod: &Host) -> Endpoint {
    Endpoint {
        node: OTHER_NODE,
        ..local(pod)
    }
}

impl Endpoint {
    /// The same endpoint in another state.
    pub fn state(self, state: State) -> Endpoint {
        Endpoint { state, ..self }
    }
}

/// A Service with its endpoints.
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    cluster_ips: Vec<IpAddr>,
    node_port: Option<u16>,
    load_balancer_ip: Option<IpAddr>,
    source_ranges: Vec<String>,
    external_ips: Vec<IpAddr>,
    etp_local: bool,
    itp_local: bool,
    affinity_seconds: Option<u32>,
    endpoints: Vec<Endpoint>,
}

impl Service {
    /// A ClusterIP Service with these ClusterIPs (first = primary family) and no endpoints.
    pub fn new(name: &str, cluster_ips: &[&str]) -> Service {
        Service {
            name: name.to_string(),
            cluster_ips: cluster_ips
                .iter()
                .map(|ip| ip.parse().expect("a ClusterIP"))
                .collect(),
            node_port: None,
            load_balancer_ip: None,
            source_ranges: Vec::new(),
            external_ips: Vec::new(),
            etp_local: false,
            itp_local: false,
            affinity_seconds: None,
            endpoints: Vec::new(),
        }
    }

    /// Makes it a NodePort Service (TCP and UDP on `port`).
    pub fn node_port(mut self, port: u16) -> Service {
        self.node_port = Some(port);
        self
    }

    /// Makes it a LoadBalancer Service with this ingress IP (it needs a node port too).
    pub fn load_balancer(mut self, ip: &str, source_ranges: &[&str]) -> Service {
        self.load_balancer_ip = Some(ip.parse().expect("a load-balancer IP"));
        self.source_ranges = source_ranges.iter().map(|r| r.to_string()).collect();
        self
    }

    /// Adds an externalIP.
    pub fn external_ip(mut self, ip: &str) -> Service {
        self.external_ips.push(ip.parse().expect("an externalIP"));
        self
    }

    /// `externalTrafficPolicy: Local`.
    pub fn etp_local(mut self) -> Service {
        self.etp_local = true;
        self
    }

    /// `internalTrafficPolicy: Local`.
    pub fn itp_local(mut self) -> Service {
        self.itp_local = true;
        self
    }

    /// `sessionAffinity: ClientIP` with this timeout.
    pub fn affinity(mut self, seconds: u32) -> Service {
        self.affinity_seconds = Some(seconds);
        self
    }

    /// Sets the endpoints.
    pub fn endpoints(mut self, endpoints: impl IntoIterator<Item = Endpoint>) -> Service {
        self.endpoints = endpoints.into_iter().collect();
        self
    }

    /// The Service and its EndpointSlices, as the API server stores them.
    pub fn objects(&self) -> Vec<Value> {
        let families: Vec<&str> = self.cluster_ips.iter().map(|ip| family(*ip)).collect();
        let kind = match (self.load_balancer_ip, self.node_port) {
            (Some(_), _) => "LoadBalancer",
            (None, Some(_)) => "NodePort",
            (None, None) => "ClusterIP",
        };
        let ports: Vec<Value> = ["TCP", "UDP"]
            .iter()
            .map(|protocol| {
                let mut port = json!({
                    "name": protocol.to_lowercase(),
                    "port": SERVICE_PORT,
                    "protocol": protocol,
                    "targetPort": DEFAULT_PORT,
                });
                if let Some(node_port) = self.node_port {
                    port["nodePort"] = json!(node_port);
                }
                port
            })
            .collect();
        let mut spec = json!({
            "type": kind,
            "clusterIP": self.cluster_ips[0].to_string(),
            "clusterIPs": self.cluster_ips.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            "ipFamilies": families,
            "ipFamilyPolicy": if families.len() == 2 { "RequireDualStack" } else { "SingleStack" },
            "internalTrafficPolicy": if self.itp_local { "Local" } else { "Cluster" },
            "ports": ports,
            "selector": {"app": self.name},
            "sessionAffinity": if self.affinity_seconds.is_some() { "ClientIP" } else { "None" },
        });
        if kind != "ClusterIP" {
            spec["externalTrafficPolicy"] = json!(if self.etp_local { "Local" } else { "Cluster" });
        }
        if let Some(seconds) = self.affinity_seconds {
            spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": seconds}});
        }
        if !self.external_ips.is_empty() {
            spec["externalIPs"] = json!(self
                .external_ips
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>());
        }
        if !self.source_ranges.is_empty() {
            spec["loadBalancerSourceRanges"] = json!(self.source_ranges);
        }
        let status = match self.load_balancer_ip {
            Some(ip) => {
                json!({"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}})
            }
            None => json!({"loadBalancer": {}}),
        };
        let mut objects = vec![json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": "default"},
            "spec": spec,
            "status": status,
        })];
        for (index, family) in families.iter().enumerate() {
            objects.push(self.slice(index, family));
        }
        objects
    }

    fn slice(&self, index: usize, family: &str) -> Value {
        let endpoints: Vec<Value> = self
            .endpoints
            .iter()
            .map(|ep| {
                let ip = ep
                    .ips
                    .iter()
                    .find(|ip| self::family(**ip) == family)
                    .expect("an endpoint has both families");
                let (ready, serving, terminating) = match ep.state {
                    State::Ready => (true, true, false),
                    State::Draining => (false, true, true),
                    State::Gone => (false, false, true),
                };
                json!({
                    "addresses": [ip.to_string()],
                    "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                    "nodeName": ep.node,
                    "targetRef": {"kind": "Pod", "name": ep.pod, "namespace": "default"},
                })
            })
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-{index}", self.name),
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": self.name,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": family,
            "endpoints": endpoints,
            "ports": [
                {"name": "tcp", "port": DEFAULT_PORT, "protocol": "TCP"},
                {"name": "udp", "port": DEFAULT_PORT, "protocol": "UDP"},
            ],
        })
    }
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// The manifests for node [`NODE`] of `topology` (its Node object with the node's primary
/// addresses as InternalIPs) and `services`: JSON documents separated by `---`.
pub fn render(topology: &Topology, services: &[Service]) -> String {
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:10:244:1::/64"]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": topology.node_ipv4().to_string()},
            {"type": "InternalIP", "address": topology.node_ipv6().to_string()},
            {"type": "Hostname", "address": NODE},
        ]},
    });
    std::iter::once(node)
        .chain(services.iter().flat_map(Service::objects))
        .map(|object| object.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}
