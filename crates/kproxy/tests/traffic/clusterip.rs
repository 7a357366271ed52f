//! ClusterIP traffic from pods: which endpoints answer, with which source address, and how
//! connections fail when there is nowhere to go.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use kproxy_testkit::traffic::Failure;

use super::manifests::{local, remote, Service, State};
use super::{answered, apply, at, topology, Mode, DROP_WAIT};

/// The pods most cases use: a client pod and a non-endpoint pod on this node, endpoints `a`
/// (this node), `b` and `d` (node-b).
const PODS: [(&str, &str); 5] = [
    ("client", "10.244.1.5"),
    ("idle", "10.244.1.6"),
    ("a", "10.244.1.10"),
    ("b", "10.244.2.11"),
    ("d", "10.244.2.12"),
];

fn clusterip_spreads_connections_over_every_endpoint_and_only_them(mode: Mode) {
    let Some(topo) = topology(mode, "tr-spread", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[Service::new("web", &["10.96.0.10"]).endpoints([local(a), remote(b), remote(d)])],
    );
    let client = topo.pod("client");

    let tcp = answered("TCP", &client.tcp_repeat(at("10.96.0.10", None), 45));
    assert_eq!(
        tcp.names(),
        ["a", "b", "d"],
        "TCP answers: {:?}",
        tcp.servers
    );
    assert_eq!(
        tcp.sources,
        [IpAddr::from(client.ipv4())],
        "pod traffic must not be masqueraded"
    );

    let udp = answered("UDP", &client.udp_repeat(at("10.96.0.10", None), 45));
    assert_eq!(
        udp.names(),
        ["a", "b", "d"],
        "UDP answers: {:?}",
        udp.servers
    );
    assert_eq!(udp.sources, [IpAddr::from(client.ipv4())]);
}

fn ipv6_clusterip_of_a_dual_stack_service_reaches_its_endpoints(mode: Mode) {
    let Some(topo) = topology(mode, "tr-ipv6", &PODS, &[]) else {
        return;
    };
    let (a, b) = (topo.pod("a"), topo.pod("b"));
    apply(
        &topo,
        &[
            Service::new("echo", &["10.96.0.20", "fd00:10:96::20"])
                .endpoints([local(a), remote(b)]),
        ],
    );
    let client = topo.pod("client");

    let tcp6 = answered(
        "TCP/IPv6",
        &client.tcp_repeat(at("fd00:10:96::20", None), 30),
    );
    assert_eq!(tcp6.names(), ["a", "b"], "{:?}", tcp6.servers);
    assert_eq!(tcp6.sources, [IpAddr::from(client.ipv6())]);

    let udp6 = answered(
        "UDP/IPv6",
        &client.udp_repeat(at("fd00:10:96::20", None), 30),
    );
    assert_eq!(udp6.names(), ["a", "b"], "{:?}", udp6.servers);

    let tcp4 = answered("TCP/IPv4", &client.tcp_repeat(at("10.96.0.20", None), 30));
    assert_eq!(tcp4.names(), ["a", "b"], "{:?}", tcp4.servers);
}

/// A Service without endpoints is rejected, so clients fail at once instead of waiting for a
/// timeout; so is a port that no Service defines on an active ClusterIP.
///
/// TCP is refused with a reset. With ICMPv6 port unreachable, an IPv6 TCP client on the node
/// (a pod, or the external client's namespace, which shares the kernel) was refused only after
/// about one second, at the SYN retransmission: the error arrives while `connect()` holds the
/// socket lock and TCP takes it as a soft one (`TcpExtLockDroppedIcmps`).
fn no_endpoints_and_undefined_ports_are_refused_fast(mode: Mode) {
    let Some(topo) = topology(mode, "tr-reject", &PODS, &[]) else {
        return;
    };
    apply(
        &topo,
        &[
            Service::new("empty", &["10.96.0.30", "fd00:10:96::30"]).node_port(30030),
            Service::new("web", &["10.96.0.31"]).endpoints([local(topo.pod("a"))]),
        ],
    );
    let client = topo.pod("client");
    let ext = topo.client("ext");
    let node_port = std::net::SocketAddr::new(topo.node_ipv4().into(), 30030);
    let cases = [
        ("TCP ClusterIP", client, at("10.96.0.30", None), true),
        ("UDP ClusterIP", client, at("10.96.0.30", None), false),
        (
            "TCP IPv6 ClusterIP",
            client,
            at("fd00:10:96::30", None),
            true,
        ),
        (
            "UDP IPv6 ClusterIP",
            client,
            at("fd00:10:96::30", None),
            false,
        ),
        ("TCP NodePort from outside", ext, node_port, true),
        ("UDP NodePort from outside", ext, node_port, false),
        (
            "TCP undefined port",
            client,
            at("10.96.0.31", Some(81)),
            true,
        ),
    ];
    for (what, from, to, tcp) in cases {
        let start = Instant::now();
        let outcome = if tcp {
            from.tcp_timeout(to, Duration::from_secs(2))
        } else {
            from.udp_timeout(to, Duration::from_secs(2))
        };
        let took = start.elapsed();
        assert_eq!(outcome, Err(Failure::Refused), "{what} ({to})");
        assert!(
            took < Duration::from_millis(300),
            "{what}: refused after {took:?}"
        );
    }
    // The defined port of the same ClusterIP still works.
    let ok = answered("web", &client.tcp_repeat(at("10.96.0.31", None), 3));
    assert_eq!(ok.names(), ["a"]);
}

/// A pod reaching itself through its Service is masqueraded (else it would see its own
/// address as source, drop the packet as martian, or answer around conntrack); a pod reaching
/// another pod keeps its address.
fn hairpin_traffic_is_masqueraded_and_pod_to_pod_is_not(mode: Mode) {
    let Some(topo) = topology(
        mode,
        "tr-hairpin",
        &[("a", "10.244.1.10"), ("b", "10.244.1.11")],
        &[],
    ) else {
        return;
    };
    let (a, b) = (topo.pod("a"), topo.pod("b"));
    apply(
        &topo,
        &[
            Service::new("self", &["10.96.0.40", "fd00:10:96::40"]).endpoints([local(a)]),
            Service::new("other", &["10.96.0.41", "fd00:10:96::41"]).endpoints([local(b)]),
        ],
    );

    for ip in ["10.96.0.40", "fd00:10:96::40"] {
        let to_self = a
            .tcp(at(ip, None))
            .unwrap_or_else(|e| panic!("a → its own Service {ip}: {e:?}"));
        assert_eq!(to_self.server, "a");
        assert_ne!(
            to_self.source,
            a.ip_like(to_self.source),
            "hairpin via {ip} was not masqueraded"
        );
        if to_self.source.is_ipv4() {
            assert_eq!(
                to_self.source,
                IpAddr::from(topo.node_ipv4()),
                "masqueraded to the node's address"
            );
        }
        let udp_self = a
            .udp_timeout(at(ip, None), Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("a → its own Service {ip} over UDP: {e:?}"));
        assert_eq!(udp_self.server, "a");
        assert_ne!(udp_self.source, a.ip_like(udp_self.source));
    }
    for ip in ["10.96.0.41", "fd00:10:96::41"] {
        let to_other = a
            .tcp(at(ip, None))
            .unwrap_or_else(|e| panic!("a → b's Service {ip}: {e:?}"));
        assert_eq!(to_other.server, "b");
        assert_eq!(to_other.source, a.ip_like(to_other.source));
    }
}

fn client_ip_affinity_keeps_each_client_on_one_endpoint(mode: Mode) {
    let Some(topo) = topology(mode, "tr-affinity", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[Service::new("sticky", &["10.96.0.50"])
            .affinity(600)
            .endpoints([local(a), remote(b), remote(d)])],
    );
    for name in ["client", "idle"] {
        let from = topo.pod(name);
        let tcp = answered(name, &from.tcp_repeat(at("10.96.0.50", None), 20));
        assert_eq!(tcp.servers.len(), 1, "{name} over TCP: {:?}", tcp.servers);
        let udp = answered(name, &from.udp_repeat(at("10.96.0.50", None), 20));
        assert_eq!(udp.servers.len(), 1, "{name} over UDP: {:?}", udp.servers);
    }
}

fn internal_traffic_policy_local_uses_only_this_nodes_endpoints(mode: Mode) {
    let Some(topo) = topology(mode, "tr-itp", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[
            Service::new("itp", &["10.96.0.60"]).itp_local().endpoints([
                local(a),
                remote(b),
                remote(d),
            ]),
            Service::new("itp-remote", &["10.96.0.61"])
                .itp_local()
                .endpoints([remote(b), remote(d)]),
        ],
    );
    let client = topo.pod("client");
    let tcp = answered("itp", &client.tcp_repeat(at("10.96.0.60", None), 30));
    assert_eq!(tcp.names(), ["a"], "{:?}", tcp.servers);
    let udp = answered("itp", &client.udp_repeat(at("10.96.0.60", None), 10));
    assert_eq!(udp.names(), ["a"], "{:?}", udp.servers);

    // No local endpoint: dropped, not rejected (endpoints exist elsewhere).
    assert_eq!(
        client.tcp_timeout(at("10.96.0.61", None), DROP_WAIT),
        Err(Failure::TimedOut)
    );
}

fn terminating_endpoints_serve_when_none_is_ready(mode: Mode) {
    let Some(topo) = topology(mode, "tr-terminating", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    apply(
        &topo,
        &[
            Service::new("draining", &["10.96.0.70"]).endpoints([
                local(a).state(State::Draining),
                remote(b).state(State::Draining),
                remote(d).state(State::Gone),
            ]),
            Service::new("rolling", &["10.96.0.71"]).endpoints([
                local(a).state(State::Draining),
                remote(b),
                remote(d).state(State::Gone),
            ]),
        ],
    );
    let client = topo.pod("client");
    let draining = answered("draining", &client.tcp_repeat(at("10.96.0.70", None), 30));
    assert_eq!(draining.names(), ["a", "b"], "{:?}", draining.servers);
    let rolling = answered("rolling", &client.tcp_repeat(at("10.96.0.71", None), 20));
    assert_eq!(
        rolling.names(),
        ["b"],
        "a ready endpoint exists, so terminating ones get nothing: {:?}",
        rolling.servers
    );
}

super::in_both_modes!(
    clusterip_spreads_connections_over_every_endpoint_and_only_them,
    ipv6_clusterip_of_a_dual_stack_service_reaches_its_endpoints,
    no_endpoints_and_undefined_ports_are_refused_fast,
    hairpin_traffic_is_masqueraded_and_pod_to_pod_is_not,
    client_ip_affinity_keeps_each_client_on_one_endpoint,
    internal_traffic_policy_local_uses_only_this_nodes_endpoints,
    terminating_endpoints_serve_when_none_is_ready
);
