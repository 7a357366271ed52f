//! A Kubernetes node in miniature, built from throwaway network namespaces, so tests can check
//! kproxy's rules with real connections instead of reading them.
//!
//! ```text
//!   client "ext" 192.168.50.2 ──ext0── 192.168.50.1 (node's InternalIP)
//!   client "…"   192.168.N.2  ──extN── 192.168.N.1        node namespace
//!   pod "a" eth0 10.244.1.10  ──vethK── 169.254.1.1           (rules go here)
//! ```
//!
//! * **node**: forwards (IPv4 and IPv6); kproxy's tables are loaded here. Its first uplink,
//!   `ext0`, carries the node's primary addresses ([`Topology::node_ipv4`]), which tests put in
//!   the Node object's InternalIPs. The Service CIDRs ([`SERVICE_CIDR_V4`], [`SERVICE_CIDR_V6`])
//!   are routed to `ext0` too, so locally generated packets to ClusterIPs have a route (not to
//!   a dummy interface: some kernels, such as CI's, are built without the dummy driver).
//! * **pods**: one namespace each, Calico-style: `eth0` holds the pod's /32 and /128, the node's
//!   side of the veth holds `169.254.1.1` (link scope, so masquerading picks the node's primary
//!   address) and `fe80::1`, and the node routes each pod address to its veth. Whether a pod is
//!   "on this node" is only a matter of the EndpointSlice's `nodeName`: every pod is attached
//!   here so every pod is reachable. Every pod runs a [`Server`] answering with its name.
//! * **clients**: namespaces outside the cluster, each on its own /24 (and /64) with a default
//!   route via the node; one, `ext`, always exists.
//!
//! Nothing is created in the host's namespace: links are created inside the node namespace with
//! their peer placed directly in the pod's or client's. Dropping the [`Topology`] stops the
//! servers and deletes every namespace, also when a test panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::traffic::{self, Failure, Outcome, Server, UdpFlow, DEFAULT_TIMEOUT};
use crate::NetNs;

/// The IPv4 Service CIDR routed in the node: ClusterIPs must come from it.
pub const SERVICE_CIDR_V4: &str = "10.96.0.0/16";
/// The IPv6 Service CIDR routed in the node: ClusterIPs must come from it.
pub const SERVICE_CIDR_V6: &str = "fd00:10:96::/112";
/// The port every pod serves (TCP and UDP) unless [`Builder::ports`] says otherwise.
pub const DEFAULT_PORT: u16 = 8080;
/// The subnet number of the client `ext` that always exists: `192.168.50.0/24`.
pub const EXT_SUBNET: u8 = 50;

/// Describes a [`Topology`] before building it.
#[derive(Debug, Clone)]
pub struct Builder {
    purpose: String,
    pods: Vec<(String, Ipv4Addr)>,
    clients: Vec<(String, u8)>,
    ports: Vec<u16>,
}

impl Builder {
    /// Adds a pod with an IPv4 address `10.244.C.D` (from the cluster CIDR); its IPv6 address
    /// is `fd00:10:244:C::D`, the decimal numbers written as they are.
    pub fn pod(mut self, name: &str, ipv4: &str) -> Builder {
        let ipv4 = ipv4
            .parse()
            .unwrap_or_else(|e| panic!("pod {name}: {ipv4:?} is not an IPv4 address: {e}"));
        self.pods.push((name.to_string(), ipv4));
        self
    }

    /// Adds an external client on `192.168.<subnet>.0/24` (client `.2`, node `.1`) and
    /// `fd00:192:168:<subnet>::/64`. Subnet 50 is taken by `ext`.
    pub fn client(mut self, name: &str, subnet: u8) -> Builder {
        assert!(
            self.clients.iter().all(|(n, s)| n != name && *s != subnet),
            "client {name} / subnet {subnet} given twice"
        );
        self.clients.push((name.to_string(), subnet));
        self
    }

    /// The ports every pod serves, TCP and UDP (default: [`DEFAULT_PORT`]).
    pub fn ports(mut self, ports: &[u16]) -> Builder {
        self.ports = ports.to_vec();
        self
    }

    /// Creates the namespaces, links, addresses and routes, and starts the pods' servers.
    pub fn build(self) -> Topology {
        let node = NetNs::new(&format!("{}-node", self.purpose));
        let clients: Vec<Host> = self
            .clients
            .iter()
            .map(|(name, subnet)| Host {
                name: name.clone(),
                ns: NetNs::new(&format!("{}-{name}", self.purpose)),
                ipv4: Ipv4Addr::new(192, 168, *subnet, 2),
                ipv6: v6(&format!("fd00:192:168:{subnet}::2")),
            })
            .collect();
        let pods: Vec<Host> = self
            .pods
            .iter()
            .map(|(name, ipv4)| {
                let [_, _, c, d] = ipv4.octets();
                Host {
                    name: name.clone(),
                    ns: NetNs::new(&format!("{}-{name}", self.purpose)),
                    ipv4: *ipv4,
                    ipv6: v6(&format!("fd00:10:244:{c}::{d}")),
                }
            })
            .collect();

        // Before any link exists: no duplicate address detection, so IPv6 addresses (link-local
        // ones included) are usable at once instead of after a second or two.
        for ns in std::iter::once(&node).chain(clients.iter().chain(&pods).map(|h| &h.ns)) {
            ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
            ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        }
        node.sysctl("net.ipv4.ip_forward", "1");
        node.sysctl("net.ipv6.conf.all.forwarding", "1");

        let mut script = String::from("link set lo up\n");
        // Clients first: masquerading picks the first global address of the node, which must
        // be the primary one (on ext0).
        for (i, (client, (_, subnet))) in clients.iter().zip(&self.clients).enumerate() {
            script += &format!(
                "link add ext{i} type veth peer name eth0 netns {peer}\n\
                 addr add 192.168.{subnet}.1/24 dev ext{i}\n\
                 addr add fd00:192:168:{subnet}::1/64 dev ext{i} nodad\n\
                 link set ext{i} up\n",
                peer = client.ns.name(),
            );
        }
        for (i, pod) in pods.iter().enumerate() {
            script += &format!(
                "link add veth{i} type veth peer name eth0 netns {peer}\n\
                 addr add 169.254.1.1/32 scope link dev veth{i}\n\
                 addr add fe80::1/64 dev veth{i} nodad\n\
                 link set veth{i} up\n\
                 route add {v4}/32 dev veth{i}\n\
                 route add {v6}/128 dev veth{i}\n",
                peer = pod.ns.name(),
                v4 = pod.ipv4,
                v6 = pod.ipv6,
            );
        }
        script += &format!(
            "route add {SERVICE_CIDR_V4} dev ext0\n\
             route add {SERVICE_CIDR_V6} dev ext0\n"
        );
        node.ip_batch(&script);

        for (client, (_, subnet)) in clients.iter().zip(&self.clients) {
            client.ns.ip_batch(&format!(
                "link set lo up\n\
                 addr add {v4}/24 dev eth0\n\
                 addr add {v6}/64 dev eth0 nodad\n\
                 link set eth0 up\n\
                 route add default via 192.168.{subnet}.1\n\
                 route add ::/0 via fd00:192:168:{subnet}::1\n",
                v4 = client.ipv4,
                v6 = client.ipv6,
            ));
        }
        for pod in &pods {
            pod.ns.ip_batch(&format!(
                "link set lo up\n\
                 addr add {v4}/32 dev eth0\n\
                 addr add {v6}/128 dev eth0 nodad\n\
                 link set eth0 up\n\
                 route add 169.254.1.1 dev eth0\n\
                 route add default via 169.254.1.1 dev eth0\n\
                 route add ::/0 via fe80::1 dev eth0\n",
                v4 = pod.ipv4,
                v6 = pod.ipv6,
            ));
        }

        let servers = pods
            .iter()
            .map(|pod| Server::start(&pod.ns, &pod.name, &self.ports))
            .collect();
        Topology {
            node_ipv4: Ipv4Addr::new(192, 168, EXT_SUBNET, 1),
            node_ipv6: v6(&format!("fd00:192:168:{EXT_SUBNET}::1")),
            _servers: servers,
            pods,
            clients,
            node,
        }
    }
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse()
        .unwrap_or_else(|e| panic!("{text:?} is not an IPv6 address: {e}"))
}

/// A pod or an external client: a namespace with one address per family, from which tests
/// connect.
pub struct Host {
    name: String,
    ns: NetNs,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl Host {
    /// The name given to the builder (pods answer with it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host's namespace.
    pub fn ns(&self) -> &NetNs {
        &self.ns
    }

    /// The host's IPv4 address.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// The host's IPv6 address.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// The host's address in the family of `other`.
    pub fn ip_like(&self, other: IpAddr) -> IpAddr {
        match other {
            IpAddr::V4(_) => self.ipv4.into(),
            IpAddr::V6(_) => self.ipv6.into(),
        }
    }

    /// One TCP connection to `to`, waiting at most [`DEFAULT_TIMEOUT`].
    pub fn tcp(&self, to: SocketAddr) -> Outcome {
        self.tcp_timeout(to, DEFAULT_TIMEOUT)
    }

    /// One TCP connection to `to`, waiting at most `timeout` to connect and again to read.
    pub fn tcp_timeout(&self, to: SocketAddr, timeout: Duration) -> Outcome {
        self.ns.exec(|| traffic::tcp(to, timeout))
    }

    /// `count` TCP connections to `to`, one after the other.
    pub fn tcp_repeat(&self, to: SocketAddr, count: usize) -> Vec<Outcome> {
        self.ns.exec(|| {
            (0..count)
                .map(|_| traffic::tcp(to, DEFAULT_TIMEOUT))
                .collect()
        })
    }

    /// One UDP datagram to `to` from a new socket, waiting at most `timeout` for the answer.
    pub fn udp_timeout(&self, to: SocketAddr, timeout: Duration) -> Outcome {
        self.ns.exec(|| traffic::udp(to, timeout))
    }

    /// A UDP socket to `to` kept open: one conntrack flow for as long as it lives.
    pub fn udp_flow(&self, to: SocketAddr) -> Result<UdpFlow, Failure> {
        UdpFlow::open(&self.ns, to)
    }

    /// `count` UDP exchanges with `to`, each from a new socket (so a new flow).
    pub fn udp_repeat(&self, to: SocketAddr, count: usize) -> Vec<Outcome> {
        self.ns.exec(|| {
            (0..count)
                .map(|_| traffic::udp(to, DEFAULT_TIMEOUT))
                .collect()
        })
    }
}

/// A node namespace with pods and external clients attached; see the module documentation.
pub struct Topology {
    // Fields drop in order: the servers (whose threads hold namespaces) stop first.
    _servers: Vec<Server>,
    pods: Vec<Host>,
    clients: Vec<Host>,
    node: NetNs,
    node_ipv4: Ipv4Addr,
    node_ipv6: Ipv6Addr,
}

impl Topology {
    /// Starts describing a topology; `purpose` goes into the namespaces' names. The client
    /// `ext` (subnet [`EXT_SUBNET`]) is always there.
    pub fn builder(purpose: &str) -> Builder {
        Builder {
            purpose: purpose.to_string(),
            pods: Vec::new(),
            clients: vec![("ext".to_string(), EXT_SUBNET)],
            ports: vec![DEFAULT_PORT],
        }
    }

    /// The node's namespace, where rules are loaded.
    pub fn node(&self) -> &NetNs {
        &self.node
    }

    /// The node's primary IPv4 address (on `ext0`): its InternalIP, where NodePorts listen.
    pub fn node_ipv4(&self) -> Ipv4Addr {
        self.node_ipv4
    }

    /// The node's primary IPv6 address (on `ext0`).
    pub fn node_ipv6(&self) -> Ipv6Addr {
        self.node_ipv6
    }

    /// The pod called `name`; panics if there is none.
    pub fn pod(&self, name: &str) -> &Host {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in this topology"))
    }

    /// The external client called `name` (`ext` always exists); panics if there is none.
    pub fn client(&self, name: &str) -> &Host {
        self.clients
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no client {name} in this topology"))
    }

    /// Every pod, in the order they were added.
    pub fn pods(&self) -> &[Host] {
        &self.pods
    }
}
