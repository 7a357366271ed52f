//! Traffic from outside the cluster: NodePorts, externalTrafficPolicy, load-balancer IPs with
//! source ranges, and externalIPs.

use std::net::{IpAddr, SocketAddr};

use kproxy_testkit::traffic::Failure;

use super::manifests::{local, remote, Service};
use super::{answered, apply, at, topology, Mode, DROP_WAIT};

const PODS: [(&str, &str); 4] = [
    ("client", "10.244.1.5"),
    ("a", "10.244.1.10"),
    ("b", "10.244.2.11"),
    ("d", "10.244.2.12"),
];

fn nodeport_from_outside_reaches_endpoints_masqueraded(mode: Mode) {
    let Some(topo) = topology(mode, "tr-nodeport", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[Service::new("np", &["10.96.0.80", "fd00:10:96::80"])
            .node_port(30080)
            .endpoints([local(a), remote(b), remote(d)])],
    );
    let ext = topo.client("ext");
    let node_v4 = SocketAddr::new(topo.node_ipv4().into(), 30080);
    let node_v6 = SocketAddr::new(topo.node_ipv6().into(), 30080);

    let tcp = answered("TCP", &ext.tcp_repeat(node_v4, 30));
    assert_eq!(tcp.names(), ["a", "b", "d"], "{:?}", tcp.servers);
    assert_eq!(
        tcp.sources,
        [IpAddr::from(topo.node_ipv4())],
        "endpoints must see the node's address, not the client's ({})",
        ext.ipv4()
    );
    let udp = answered("UDP", &ext.udp_repeat(node_v4, 30));
    assert_eq!(udp.names(), ["a", "b", "d"], "{:?}", udp.servers);
    assert_eq!(udp.sources, [IpAddr::from(topo.node_ipv4())]);

    let tcp6 = answered("TCP/IPv6", &ext.tcp_repeat(node_v6, 30));
    assert_eq!(tcp6.names(), ["a", "b", "d"], "{:?}", tcp6.servers);
    assert!(
        !tcp6.sources.contains(&IpAddr::from(ext.ipv6())),
        "IPv6 NodePort traffic was not masqueraded: {:?}",
        tcp6.sources
    );
}

fn external_traffic_policy_local_keeps_the_client_ip_and_uses_local_endpoints(mode: Mode) {
    let Some(topo) = topology(mode, "tr-etp", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[
            Service::new("local", &["10.96.0.90"])
                .node_port(30090)
                .etp_local()
                .endpoints([local(a), remote(b), remote(d)]),
            Service::new("elsewhere", &["10.96.0.91"])
                .node_port(30091)
                .etp_local()
                .endpoints([remote(b), remote(d)]),
        ],
    );
    let ext = topo.client("ext");
    let node = |port| SocketAddr::new(topo.node_ipv4().into(), port);

    let tcp = answered("TCP", &ext.tcp_repeat(node(30090), 30));
    assert_eq!(tcp.names(), ["a"], "{:?}", tcp.servers);
    assert_eq!(
        tcp.sources,
        [IpAddr::from(ext.ipv4())],
        "the client's address must be preserved"
    );
    let udp = answered("UDP", &ext.udp_repeat(node(30090), 10));
    assert_eq!(udp.names(), ["a"], "{:?}", udp.servers);
    assert_eq!(udp.sources, [IpAddr::from(ext.ipv4())]);

    // No local endpoint: dropped, so a load balancer's health check moves traffic elsewhere.
    assert_eq!(
        ext.tcp_timeout(node(30091), DROP_WAIT),
        Err(Failure::TimedOut)
    );
    assert_eq!(
        ext.udp_timeout(node(30091), DROP_WAIT),
        Err(Failure::TimedOut)
    );

    // Pods on this node are short-circuited to every endpoint (docs/semantics.md).
    let client = topo.pod("client");
    let from_pod = answered("pod → NodePort", &client.tcp_repeat(node(30091), 20));
    assert_eq!(from_pod.names(), ["b", "d"], "{:?}", from_pod.servers);
}

fn load_balancer_source_ranges_and_external_ips(mode: Mode) {
    let Some(topo) = topology(mode, "tr-lb", &PODS, &[("outsider", 51)]) else {
        return;
    };
    let (a, b) = (topo.pod("a"), topo.pod("b"));
    apply(
        &topo,
        &[
            Service::new("lb", &["10.96.0.100"])
                .node_port(30100)
                .load_balancer("192.168.70.10", &["192.168.50.0/24"])
                .endpoints([local(a), remote(b)]),
            Service::new("eip", &["10.96.0.101"])
                .external_ip("192.168.60.10")
                .endpoints([remote(b)]),
        ],
    );
    let ext = topo.client("ext");
    let outsider = topo.client("outsider");
    let lb = at("192.168.70.10", None);

    let allowed = answered("allowed source → LB IP", &ext.tcp_repeat(lb, 20));
    assert_eq!(allowed.names(), ["a", "b"], "{:?}", allowed.servers);
    let udp = answered("allowed source → LB IP (UDP)", &ext.udp_repeat(lb, 5));
    assert!(!udp.servers.is_empty());

    assert_eq!(
        outsider.tcp_timeout(lb, DROP_WAIT),
        Err(Failure::TimedOut),
        "a source outside loadBalancerSourceRanges must be dropped"
    );
    assert_eq!(outsider.udp_timeout(lb, DROP_WAIT), Err(Failure::TimedOut));

    // NodePorts are not subject to the ranges.
    let node_port = SocketAddr::new(topo.node_ipv4().into(), 30100);
    answered("outsider → NodePort", &outsider.tcp_repeat(node_port, 3));

    let eip = answered(
        "ext → externalIP",
        &ext.tcp_repeat(at("192.168.60.10", None), 5),
    );
    assert_eq!(eip.names(), ["b"]);
    let eip_udp = answered(
        "outsider → externalIP (UDP)",
        &outsider.udp_repeat(at("192.168.60.10", None), 5),
    );
    assert_eq!(eip_udp.names(), ["b"]);
}

super::in_both_modes!(
    nodeport_from_outside_reaches_endpoints_masqueraded,
    external_traffic_policy_local_keeps_the_client_ip_and_uses_local_endpoints,
    load_balancer_source_ranges_and_external_ips
);
