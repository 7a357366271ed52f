//! The pure decision: given what serves each Service destination now, is a conntrack entry
//! stale? No kernel, no I/O; the kernel side only feeds it dumped entries.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use super::{Destination, Flow, IpFamily, Protocol, ServiceTarget};

/// The targets of one sync, indexed for per-entry lookups.
///
/// Built once per cleanup and consulted for every dumped entry, so a node with a large
/// conntrack table pays one map lookup (two for NodePorts) per entry.
#[derive(Debug, Clone, Default)]
pub struct StaleFilter {
    services: BTreeMap<(Protocol, SocketAddr), BTreeSet<SocketAddr>>,
    node_ports: BTreeMap<(Protocol, IpFamily, u16), BTreeSet<SocketAddr>>,
}

impl StaleFilter {
    /// Indexes `targets`. A destination listed twice keeps the union of its serving endpoints:
    /// when in doubt, an entry is kept.
    pub fn new(targets: &[ServiceTarget]) -> StaleFilter {
        let mut filter = StaleFilter::default();
        for t in targets {
            let serving = match t.destination {
                Destination::Service(addr) => {
                    filter.services.entry((t.protocol, addr)).or_default()
                }
                Destination::NodePort { family, port } => filter
                    .node_ports
                    .entry((t.protocol, family, port))
                    .or_default(),
            };
            serving.extend(t.serving.iter().copied());
        }
        filter
    }

    /// No target at all: nothing can be stale, and no dump is needed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.node_ports.is_empty()
    }

    /// The (family, protocol) pairs that have targets: only their conntrack entries need
    /// dumping.
    pub fn dumps(&self) -> BTreeSet<(IpFamily, Protocol)> {
        let services = self
            .services
            .keys()
            .map(|(p, a)| (IpFamily::of(a.ip()), *p));
        let node_ports = self.node_ports.keys().map(|(p, f, _)| (*f, *p));
        services.chain(node_ports).collect()
    }

    /// True when `flow` must be deleted: a UDP or SCTP entry whose original destination is a
    /// target (a Service address and port, else a NodePort on any address of the family) and
    /// whose reply source — where DNAT actually sent it — is not a serving endpoint of that
    /// target. Everything else (TCP, other protocols, traffic to non-Service destinations,
    /// entries already on a serving endpoint) is kept.
    ///
    /// A Service address wins over a NodePort with the same port number, as in the dataplane,
    /// where the `service-ips` map is consulted before `service-nodeports`.
    pub fn is_stale(&self, flow: &Flow) -> bool {
        let Some(protocol) = Protocol::from_number(flow.protocol) else {
            return false;
        };
        let dst = flow.original.dst;
        let serving = match self.services.get(&(protocol, dst)) {
            Some(serving) => serving,
            None => match self
                .node_ports
                .get(&(protocol, IpFamily::of(dst.ip()), dst.port()))
            {
                Some(serving) => serving,
                None => return false,
            },
        };
        !serving.contains(&flow.reply.src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::Tuple;

    const UDP: u8 = 17;
    const TCP: u8 = 6;
    const SCTP: u8 = 132;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A client at `client` reaching `dst`, DNATed (or not) to `reply_src`.
    fn flow(protocol: u8, dst: &str, reply_src: &str) -> Flow {
        let client = if dst.starts_with('[') {
            sa("[fd00::1]:40000")
        } else {
            sa("10.0.0.1:40000")
        };
        Flow {
            protocol,
            original: Tuple {
                src: client,
                dst: sa(dst),
            },
            reply: Tuple {
                src: sa(reply_src),
                dst: client,
            },
            id: Some(1),
            zone: 0,
        }
    }

    fn service(protocol: Protocol, addr: &str, serving: &[&str]) -> ServiceTarget {
        ServiceTarget {
            protocol,
            destination: Destination::Service(sa(addr)),
            serving: serving.iter().map(|s| sa(s)).collect(),
        }
    }

    fn node_port(
        protocol: Protocol,
        family: IpFamily,
        port: u16,
        serving: &[&str],
    ) -> ServiceTarget {
        ServiceTarget {
            protocol,
            destination: Destination::NodePort { family, port },
            serving: serving.iter().map(|s| sa(s)).collect(),
        }
    }

    fn dns() -> StaleFilter {
        StaleFilter::new(&[
            service(Protocol::Udp, "10.96.0.10:53", &["10.244.1.5:53"]),
            service(Protocol::Udp, "[fd00:96::10]:53", &["[fd00:244::5]:53"]),
            node_port(Protocol::Udp, IpFamily::V4, 30053, &["10.244.1.5:53"]),
        ])
    }

    #[test]
    fn flow_to_a_removed_endpoint_is_stale() {
        assert!(dns().is_stale(&flow(UDP, "10.96.0.10:53", "10.244.9.9:53")));
        assert!(dns().is_stale(&flow(UDP, "[fd00:96::10]:53", "[fd00:244::9]:53")));
    }

    #[test]
    fn flow_to_a_serving_endpoint_is_kept() {
        assert!(!dns().is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.5:53")));
        assert!(!dns().is_stale(&flow(UDP, "[fd00:96::10]:53", "[fd00:244::5]:53")));
    }

    #[test]
    fn the_endpoint_port_counts_too() {
        // Same pod, but the Service's targetPort moved: the old DNAT goes nowhere.
        assert!(dns().is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.5:5353")));
    }

    #[test]
    fn flow_never_dnated_to_a_service_is_stale() {
        // Created before the rules existed: the reply comes from the ClusterIP itself.
        assert!(dns().is_stale(&flow(UDP, "10.96.0.10:53", "10.96.0.10:53")));
    }

    #[test]
    fn other_service_ports_and_addresses_are_kept() {
        let f = dns();
        assert!(!f.is_stale(&flow(UDP, "10.96.0.10:54", "10.244.9.9:54")));
        assert!(!f.is_stale(&flow(UDP, "10.96.0.11:53", "10.244.9.9:53")));
        assert!(!f.is_stale(&flow(UDP, "8.8.8.8:53", "8.8.8.8:53")));
    }

    #[test]
    fn tcp_and_other_protocols_are_never_touched() {
        let f = StaleFilter::new(&[
            service(Protocol::Udp, "10.96.0.10:53", &[]),
            node_port(Protocol::Udp, IpFamily::V4, 30053, &[]),
        ]);
        assert!(!f.is_stale(&flow(TCP, "10.96.0.10:53", "10.244.9.9:53")));
        assert!(!f.is_stale(&flow(TCP, "192.168.1.1:30053", "10.244.9.9:53")));
        assert!(!f.is_stale(&flow(1, "10.96.0.10:0", "10.244.9.9:0")));
        assert!(f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.9.9:53")));
    }

    #[test]
    fn protocols_are_matched_separately() {
        let f = StaleFilter::new(&[service(
            Protocol::Sctp,
            "10.96.0.20:9000",
            &["10.244.1.7:9000"],
        )]);
        assert!(f.is_stale(&flow(SCTP, "10.96.0.20:9000", "10.244.2.2:9000")));
        assert!(!f.is_stale(&flow(SCTP, "10.96.0.20:9000", "10.244.1.7:9000")));
        // A UDP flow to the same address and port belongs to no UDP target.
        assert!(!f.is_stale(&flow(UDP, "10.96.0.20:9000", "10.244.2.2:9000")));
        assert_eq!(f.dumps(), BTreeSet::from([(IpFamily::V4, Protocol::Sctp)]));
    }

    #[test]
    fn node_port_matches_any_address_of_its_family() {
        let f = dns();
        for dst in ["192.168.1.10:30053", "10.0.0.1:30053", "127.0.0.1:30053"] {
            assert!(f.is_stale(&flow(UDP, dst, "10.244.9.9:53")), "{dst}");
            assert!(!f.is_stale(&flow(UDP, dst, "10.244.1.5:53")), "{dst}");
        }
        assert!(!f.is_stale(&flow(UDP, "192.168.1.10:30054", "10.244.9.9:53")));
    }

    #[test]
    fn node_port_of_one_family_ignores_the_other() {
        // The IPv4 NodePort target knows IPv4 endpoints only; an IPv6 flow to the same port is
        // the IPv6 proxier's business (no IPv6 target here), so it is kept.
        assert!(!dns().is_stale(&flow(UDP, "[fd00::10]:30053", "[fd00:244::9]:53")));
        let f = StaleFilter::new(&[node_port(
            Protocol::Udp,
            IpFamily::V6,
            30053,
            &["[fd00:244::5]:53"],
        )]);
        assert!(f.is_stale(&flow(UDP, "[fd00::10]:30053", "[fd00:244::9]:53")));
        assert!(!f.is_stale(&flow(UDP, "[fd00::10]:30053", "[fd00:244::5]:53")));
        assert!(!f.is_stale(&flow(UDP, "10.0.0.10:30053", "10.244.9.9:53")));
    }

    #[test]
    fn family_mismatch_never_matches_a_service() {
        let f = StaleFilter::new(&[service(Protocol::Udp, "10.96.0.10:53", &[])]);
        assert!(!f.is_stale(&flow(UDP, "[::ffff:10.96.0.10]:53", "[fd00:244::9]:53")));
        assert_eq!(f.dumps(), BTreeSet::from([(IpFamily::V4, Protocol::Udp)]));
    }

    #[test]
    fn zero_endpoints_makes_every_flow_to_the_service_stale() {
        let f = StaleFilter::new(&[
            service(Protocol::Udp, "10.96.0.10:53", &[]),
            node_port(Protocol::Udp, IpFamily::V4, 30053, &[]),
        ]);
        assert!(f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.5:53")));
        assert!(f.is_stale(&flow(UDP, "192.168.1.10:30053", "10.244.1.5:53")));
    }

    #[test]
    fn a_service_address_wins_over_a_node_port_with_the_same_number() {
        // An LB IP that is also a node address, on a port that is another Service's NodePort.
        let f = StaleFilter::new(&[
            service(Protocol::Udp, "192.168.1.10:30053", &["10.244.3.3:53"]),
            node_port(Protocol::Udp, IpFamily::V4, 30053, &["10.244.1.5:53"]),
        ]);
        assert!(!f.is_stale(&flow(UDP, "192.168.1.10:30053", "10.244.3.3:53")));
        assert!(f.is_stale(&flow(UDP, "192.168.1.10:30053", "10.244.1.5:53")));
        assert!(f.is_stale(&flow(UDP, "192.168.1.11:30053", "10.244.3.3:53")));
    }

    #[test]
    fn duplicate_targets_keep_the_union() {
        let f = StaleFilter::new(&[
            service(Protocol::Udp, "10.96.0.10:53", &["10.244.1.5:53"]),
            service(Protocol::Udp, "10.96.0.10:53", &["10.244.1.6:53"]),
        ]);
        assert!(!f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.5:53")));
        assert!(!f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.6:53")));
        assert!(f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.7:53")));
    }

    #[test]
    fn no_targets_means_nothing_to_dump() {
        let f = StaleFilter::new(&[]);
        assert!(f.is_empty());
        assert!(f.dumps().is_empty());
        assert!(!f.is_stale(&flow(UDP, "10.96.0.10:53", "10.244.1.5:53")));
        assert_eq!(
            dns().dumps(),
            BTreeSet::from([(IpFamily::V4, Protocol::Udp), (IpFamily::V6, Protocol::Udp)])
        );
    }
}
