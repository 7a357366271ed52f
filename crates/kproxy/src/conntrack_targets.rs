//! Model → conntrack cleanup targets: which UDP/SCTP destinations exist and who serves them.
//!
//! After a sync, a UDP or SCTP flow whose original destination is a Service address (or a
//! NodePort) but whose reply comes from an address that no longer serves it is deleted, so
//! the client's next datagram is DNATed afresh instead of going to a dead endpoint.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use kproxy_model::{Protocol, ProxyState};
use kproxy_syncer::conntrack::{self, Destination, ServiceTarget};

/// One target per destination of every UDP and SCTP Service port, per family, including
/// ports without endpoints (all of their flows are stale).
///
/// The serving set is what the rules DNAT to (cluster-wide and local endpoints). With
/// topology hints this is narrower than kube-proxy's "every serving endpoint", so a flow to
/// an endpoint of another zone is cleared when hints move it out of this node's set.
pub fn targets(state: &ProxyState) -> Vec<ServiceTarget> {
    let mut out = Vec::new();
    for port in &state.ports {
        let protocol = match port.name.protocol {
            Protocol::Udp => conntrack::Protocol::Udp,
            Protocol::Sctp => conntrack::Protocol::Sctp,
            Protocol::Tcp => continue,
        };
        for family in &port.families {
            let serving: BTreeSet<SocketAddr> = family
                .endpoints
                .cluster
                .iter()
                .chain(&family.endpoints.local)
                .map(|e| SocketAddr::new(e.addr, e.port))
                .collect();
            let addresses = std::iter::once(&family.cluster_ip)
                .chain(family.external_ips())
                .chain(family.load_balancer_ips());
            let mut destinations: Vec<Destination> = addresses
                .map(|ip| Destination::Service(SocketAddr::new(*ip, port.port)))
                .collect();
            if let Some(node_port) = port.node_port {
                destinations.push(Destination::NodePort {
                    family: family.family,
                    port: node_port,
                });
            }
            out.extend(destinations.into_iter().map(|destination| ServiceTarget {
                protocol,
                destination,
                serving: serving.clone(),
            }));
        }
    }
    out
}
