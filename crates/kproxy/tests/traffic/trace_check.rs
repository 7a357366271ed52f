//! `kproxy trace` checked against the kernel: for each of 40 packets (pods, the node and
//! external clients; ClusterIPs, NodePorts, a load-balancer IP with source ranges, both traffic
//! policies, a Service without endpoints, an undefined port, hairpin; TCP and UDP), the trace
//! library predicts every possible outcome from the rules compiled from the manifests, and real
//! connections through the node namespace, programmed by `kproxy apply` from the same
//! manifests, must land within the prediction — and, with enough tries, on every predicted
//! outcome.
//!
//! An outcome is what a client can observe: which pod answered and whether it saw the client's
//! own address (masqueraded or not), a fast refusal (REJECT), or silence (DROP). Masquerade is
//! compared only where it is observable: from the node itself, the address a masquerade picks
//! is the node's primary address, the one the connection started from anyway.
//!
//! A UDP datagram the node itself sends to a Service without endpoints is refused by a rule in
//! `output`; the sender sees that as `send()` failing at once with EPERM, counted as refused.
//!
//! The same packets are also traced through the ruleset read back from the kernel (what
//! `kproxy trace --live` reads): both traces must agree.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use kproxy_compiler::ir::Ruleset;
use kproxy_model::Protocol;
use kproxy_testkit::topology::{Host, Topology};
use kproxy_testkit::traffic::{self, Failure, Outcome, DEFAULT_TIMEOUT};
use kproxy_trace::{Disposition, LocalAddresses, Origin, Packet};

use super::manifests::{self, local, remote, Service, FLAGS, NODE};
use super::{program, topology, Mode, DROP_WAIT};

/// Connections per accepted case and protocol: enough to see each of three equally likely
/// endpoints with probability above 0.999 ((2/3)^24 × 3 ≈ 2 × 10⁻⁴ of missing one).
const TRIES: usize = 24;

/// What a client can observe of one connection.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    /// The pod `server` answered; it saw a masqueraded source (`None`: not observable).
    Answer {
        server: String,
        masqueraded: Option<bool>,
    },
    /// A TCP reset or ICMP port unreachable.
    Refused,
    /// Nothing came back.
    Dropped,
}

/// Where a packet of one case starts.
#[derive(Clone, Copy)]
enum From<'a> {
    /// A pod or external client: its namespace, and the origin the trace gives it.
    Host(&'a Host, Origin),
    /// A process in the node namespace.
    Node,
}

struct Case<'a> {
    what: &'static str,
    from: From<'a>,
    to: SocketAddr,
}

#[test]
fn trace_predicts_what_the_kernel_does() {
    // `kproxy trace` reads nftables mode's ruleset, so this runs in that mode only.
    let Some(topo) = topology(
        Mode::Nftables,
        "tr-trace",
        &[
            ("client", "10.244.1.5"),
            ("a", "10.244.1.10"),
            ("b", "10.244.2.11"),
            ("d", "10.244.2.12"),
        ],
        &[("outsider", 51)],
    ) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    let services = [
        Service::new("web", &["10.96.0.10", "fd00:10:96::10"]).endpoints([
            local(a),
            remote(b),
            remote(d),
        ]),
        Service::new("np", &["10.96.0.80"])
            .node_port(30080)
            .endpoints([local(a), remote(b), remote(d)]),
        Service::new("lb", &["10.96.0.100"])
            .node_port(30100)
            .load_balancer("192.168.70.10", &["192.168.50.0/24"])
            .endpoints([local(a), remote(b)]),
        Service::new("etp-here", &["10.96.0.90"])
            .node_port(30090)
            .etp_local()
            .endpoints([local(a), remote(b), remote(d)]),
        Service::new("etp-elsewhere", &["10.96.0.91"])
            .node_port(30091)
            .etp_local()
            .endpoints([remote(b), remote(d)]),
        Service::new("itp", &["10.96.0.60"]).itp_local().endpoints([
            local(a),
            remote(b),
            remote(d),
        ]),
        Service::new("empty", &["10.96.0.30"]).node_port(30030),
    ];
    let manifests = manifests::render(&topo, &services);
    program(topo.node(), &manifests, &FLAGS);
    let compiled = compile(&manifests);
    let read_back = topo
        .node()
        .exec(kproxy_syncer::netlink::read_tables)
        .expect("reading kproxy's tables back from the node namespace");
    assert!(
        read_back.unreadable.is_empty(),
        "{:?}",
        read_back.unreadable
    );

    let client = topo.pod("client");
    let (ext, outsider) = (topo.client("ext"), topo.client("outsider"));
    let pod = |host| From::Host(host, Origin::Pod);
    let outside = |host| From::Host(host, Origin::External);
    let ip = |text: &str| -> IpAddr { text.parse().expect("an address") };
    let to = |addr: &str, port| SocketAddr::new(ip(addr), port);
    let node_port = |port| SocketAddr::new(topo.node_ipv4().into(), port);
    let cases = [
        Case {
            what: "pod → ClusterIP: every endpoint, client address kept",
            from: pod(client),
            to: to("10.96.0.10", 80),
        },
        Case {
            what: "pod → IPv6 ClusterIP",
            from: pod(client),
            to: to("fd00:10:96::10", 80),
        },
        Case {
            what: "pod → its own Service: hairpin masquerade when it picks itself",
            from: pod(a),
            to: to("10.96.0.10", 80),
        },
        Case {
            what: "node → ClusterIP",
            from: From::Node,
            to: to("10.96.0.10", 80),
        },
        Case {
            what: "external client → ClusterIP: masqueraded (not from the cluster CIDR)",
            from: outside(ext),
            to: to("10.96.0.10", 80),
        },
        Case {
            what: "pod → undefined port of a ClusterIP: refused",
            from: pod(client),
            to: to("10.96.0.10", 81),
        },
        Case {
            what: "external client → NodePort: masqueraded",
            from: outside(ext),
            to: node_port(30080),
        },
        Case {
            what: "pod → NodePort",
            from: pod(client),
            to: node_port(30080),
        },
        Case {
            what: "node → its own NodePort",
            from: From::Node,
            to: node_port(30080),
        },
        Case {
            what: "allowed source → LB IP",
            from: outside(ext),
            to: to("192.168.70.10", 80),
        },
        Case {
            what: "blocked source → LB IP: dropped",
            from: outside(outsider),
            to: to("192.168.70.10", 80),
        },
        Case {
            what: "blocked source → the LB Service's NodePort: not subject to the ranges",
            from: outside(outsider),
            to: node_port(30100),
        },
        Case {
            what: "external client → ETP Local with a local endpoint: client address kept",
            from: outside(ext),
            to: node_port(30090),
        },
        Case {
            what: "external client → ETP Local without local endpoints: dropped",
            from: outside(ext),
            to: node_port(30091),
        },
        Case {
            what: "pod → ETP Local without local endpoints: short-circuited to all",
            from: pod(client),
            to: node_port(30091),
        },
        Case {
            what: "pod → ITP Local: the local endpoint only",
            from: pod(client),
            to: to("10.96.0.60", 80),
        },
        Case {
            what: "pod → Service without endpoints: refused",
            from: pod(client),
            to: to("10.96.0.30", 80),
        },
        Case {
            what: "node → Service without endpoints: refused",
            from: From::Node,
            to: to("10.96.0.30", 80),
        },
        Case {
            what: "external client → NodePort without endpoints: refused",
            from: outside(ext),
            to: node_port(30030),
        },
        Case {
            what: "pod → LB IP: pods are not in the source ranges either",
            from: pod(client),
            to: to("192.168.70.10", 80),
        },
    ];
    let local = LocalAddresses::new([topo.node_ipv4().into(), topo.node_ipv6().into()]);
    let mut failures = Vec::new();
    let mut packets = 0;
    for case in &cases {
        for proto in [Protocol::Tcp, Protocol::Udp] {
            packets += 1;
            let what = format!("{} ({proto}, {})", case.what, case.to);
            let (source, origin) = match case.from {
                From::Host(host, origin) => (host.ip_like(case.to.ip()), origin),
                From::Node => (node_ip(&topo, case.to.ip()), Origin::Node),
            };
            let packet = Packet {
                src: source,
                src_port: 40000,
                dst: case.to.ip(),
                dst_port: case.to.port(),
                proto,
                origin,
                ct_new: true,
            };
            let traced = kproxy_trace::trace(&compiled, &packet, &local)
                .unwrap_or_else(|e| panic!("{what}: tracing: {e}"));
            let live = kproxy_trace::trace(&read_back.ruleset, &packet, &local)
                .unwrap_or_else(|e| panic!("{what}: tracing the kernel's rules: {e}"));
            if traced.outcomes != live.outcomes {
                failures.push(format!(
                    "{what}: the rules read back from the kernel trace differently:\n{}\n{}",
                    kproxy_trace::render_text(&traced),
                    kproxy_trace::render_text(&live)
                ));
            }
            // Masquerade is observable unless the client's address is the one it would pick.
            let observable = source != node_ip(&topo, source);
            let mut predicted: BTreeSet<Seen> = BTreeSet::new();
            let mut least = 1.0f64;
            for outcome in &traced.outcomes {
                least = least.min(outcome.probability.value());
                predicted.insert(match &outcome.disposition {
                    Disposition::Accepted {
                        dnat: Some(target),
                        masquerade,
                        ..
                    } => Seen::Answer {
                        server: pod_at(&topo, target.ip()),
                        masqueraded: observable.then_some(*masquerade),
                    },
                    Disposition::Accepted { dnat: None, .. } => {
                        panic!("{what}: no case here is left undisturbed by the rules")
                    }
                    Disposition::Rejected { .. } => Seen::Refused,
                    Disposition::Dropped { .. } => Seen::Dropped,
                });
            }
            let answers = predicted.iter().any(|s| matches!(s, Seen::Answer { .. }));
            let tries = if answers { TRIES } else { 2 };
            let timeout = if predicted.contains(&Seen::Dropped) {
                DROP_WAIT
            } else {
                DEFAULT_TIMEOUT
            };
            let observed: Vec<Outcome> = match case.from {
                From::Host(host, _) => host
                    .ns()
                    .exec(|| connect_repeatedly(proto, case.to, timeout, tries)),
                From::Node => topo
                    .node()
                    .exec(|| connect_repeatedly(proto, case.to, timeout, tries)),
            };
            let mut seen = BTreeSet::new();
            for outcome in observed {
                let one = match outcome {
                    Ok(reply) => {
                        let masqueraded = reply.source != source;
                        if masqueraded {
                            let expected = node_ip(&topo, source);
                            if source.is_ipv4() && reply.source != expected {
                                failures.push(format!(
                                    "{what}: masqueraded to {}, not the node's primary address {expected}",
                                    reply.source
                                ));
                            }
                        }
                        Seen::Answer {
                            server: reply.server,
                            masqueraded: observable.then_some(masqueraded),
                        }
                    }
                    Err(Failure::Refused) => Seen::Refused,
                    Err(Failure::TimedOut) => Seen::Dropped,
                    // A datagram the node sends that a rule in `output` refuses never leaves:
                    // send() fails at once with EPERM (the ICMP error is for the kernel).
                    Err(Failure::Other(e))
                        if matches!(case.from, From::Node) && e.starts_with("PermissionDenied") =>
                    {
                        Seen::Refused
                    }
                    Err(Failure::Other(e)) => {
                        failures.push(format!("{what}: {e}"));
                        continue;
                    }
                };
                seen.insert(one);
            }
            let unexpected: Vec<&Seen> = seen.difference(&predicted).collect();
            if !unexpected.is_empty() {
                failures.push(format!(
                    "{what}: observed {unexpected:?}, outside the prediction {predicted:?}\n{}",
                    kproxy_trace::render_text(&traced)
                ));
            }
            // Every predicted outcome shows up, when the tries make missing one unlikely
            // (below 10⁻³).
            let missed: Vec<&Seen> = predicted.difference(&seen).collect();
            let tries_suffice = (1.0 - least).powi(tries as i32) * (predicted.len() as f64) < 1e-3;
            if !missed.is_empty() && tries_suffice {
                failures.push(format!(
                    "{what}: predicted {missed:?} never happened in {tries} tries (saw {seen:?})"
                ));
            }
        }
    }
    assert!(packets >= 30, "only {packets} packets");
    assert!(
        failures.is_empty(),
        "{} of {packets} packets disagree with their trace:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The ruleset `kproxy apply` compiles for these manifests with the traffic tests' flags,
/// built through the same library calls (manifests → model → compiler).
fn compile(manifests: &str) -> Ruleset {
    let mut loaded = kproxy_manifests::Manifests::default();
    let mut errors = Vec::new();
    kproxy_manifests::load_str("traffic manifests", manifests, &mut loaded, &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    let services: Vec<_> = loaded
        .services
        .iter()
        .map(|s| kproxy_model::k8s::service(&s.object))
        .map(|t| {
            t.expect("a valid Service")
                .expect("a Service kproxy proxies")
        })
        .collect();
    let slices: Vec<_> = loaded
        .endpoint_slices
        .iter()
        .map(|s| kproxy_model::k8s::endpoint_slice(&s.object))
        .map(|t| {
            t.expect("a valid EndpointSlice")
                .expect("a slice kproxy reads")
        })
        .collect();
    let node = loaded
        .nodes
        .iter()
        .find(|n| n.object.metadata.name.as_deref() == Some(NODE))
        .map(|n| kproxy_model::k8s::node(&n.object).expect("a valid Node"))
        .expect("the node's Node object");
    let state = kproxy_model::ProxyState::build(node, &services, &slices);
    assert_eq!(FLAGS[2], "--cluster-cidr");
    let options = kproxy_compiler::Options {
        cluster_cidrs: FLAGS[3]
            .split(',')
            .map(|n| n.parse().expect("a CIDR"))
            .collect(),
        ..Default::default()
    };
    kproxy_compiler::compile(&state, &options)
}

/// `tries` connections (TCP) or exchanges from new sockets (UDP), from the calling thread's
/// namespace.
fn connect_repeatedly(
    proto: Protocol,
    to: SocketAddr,
    timeout: Duration,
    tries: usize,
) -> Vec<Outcome> {
    (0..tries)
        .map(|_| match proto {
            Protocol::Udp => traffic::udp(to, timeout),
            _ => traffic::tcp(to, timeout),
        })
        .collect()
}

/// The node's primary address in the family of `like`: where its own connections start, and
/// what a masquerade picks.
fn node_ip(topo: &Topology, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => topo.node_ipv4().into(),
        IpAddr::V6(_) => topo.node_ipv6().into(),
    }
}

/// The pod with address `ip`.
fn pod_at(topo: &Topology, ip: IpAddr) -> String {
    topo.pods()
        .iter()
        .find(|p| IpAddr::from(p.ipv4()) == ip || IpAddr::from(p.ipv6()) == ip)
        .map(|p| p.name().to_string())
        .unwrap_or_else(|| panic!("no pod has the DNAT target {ip}"))
}
