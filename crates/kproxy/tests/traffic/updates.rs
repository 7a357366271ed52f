//! Re-programming: after an update only the new endpoints answer, traffic flowing while
//! updates are applied never fails (each update is one atomic transaction), and UDP flows
//! leave endpoints that were removed (conntrack cleanup).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kproxy_testkit::topology::Host;
use kproxy_testkit::traffic::{self, Failure, Outcome, Tally, DEFAULT_TIMEOUT};

use super::manifests::{local, remote, Endpoint, Service};
use super::{answered, apply, at, topology, Mode};

const PODS: [(&str, &str); 6] = [
    ("client", "10.244.1.5"),
    ("a", "10.244.1.10"),
    ("b", "10.244.1.11"),
    ("d", "10.244.2.12"),
    ("e", "10.244.2.13"),
    ("f", "10.244.2.14"),
];

fn reprogrammed_endpoints_take_over_new_connections(mode: Mode) {
    let Some(topo) = topology(mode, "tr-converge", &PODS, &[]) else {
        return;
    };
    let pod = |name| topo.pod(name);
    let web = |endpoints: Vec<Endpoint>| {
        Service::new("web", &["10.96.0.110", "fd00:10:96::110"]).endpoints(endpoints)
    };
    let client = pod("client");
    let to = at("10.96.0.110", None);
    let to6 = at("fd00:10:96::110", None);

    apply(&topo, &[web(vec![local(pod("a")), local(pod("b"))])]);
    let first = answered("before", &client.tcp_repeat(to, 20));
    assert_eq!(first.names(), ["a", "b"], "{:?}", first.servers);

    apply(&topo, &[web(vec![remote(pod("d")), remote(pod("e"))])]);
    for (what, outcomes) in [
        ("TCP", client.tcp_repeat(to, 30)),
        ("UDP", client.udp_repeat(to, 20)),
        ("TCP/IPv6", client.tcp_repeat(to6, 20)),
    ] {
        let after = answered(what, &outcomes);
        assert_eq!(after.names(), ["d", "e"], "{what}: {:?}", after.servers);
    }

    apply(&topo, &[web(vec![])]);
    assert_eq!(client.tcp(to), Err(Failure::Refused));

    apply(&topo, &[web(vec![remote(pod("f"))])]);
    let last = answered("last", &client.tcp_repeat(to, 10));
    assert_eq!(last.names(), ["f"], "{:?}", last.servers);
}

/// Connects in a loop from `client` until `stop`, counting completed attempts in `done`. UDP
/// pauses a millisecond between datagrams so its flows stay well within the client port range
/// (`traffic::udp`), which other tests share.
fn keep_connecting(
    client: &Host,
    to: std::net::SocketAddr,
    udp: bool,
    stop: &Arc<AtomicBool>,
    done: &Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<Outcome>> {
    let (stop, done) = (Arc::clone(stop), Arc::clone(done));
    client.ns().spawn(move || {
        let mut outcomes = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            outcomes.push(if udp {
                std::thread::sleep(Duration::from_millis(1));
                traffic::udp(to, DEFAULT_TIMEOUT)
            } else {
                traffic::tcp(to, DEFAULT_TIMEOUT)
            });
            done.fetch_add(1, Ordering::Relaxed);
        }
        outcomes
    })
}

fn twenty_updates_under_live_traffic_fail_no_connection(mode: Mode) {
    let Some(topo) = topology(mode, "tr-live", &PODS, &[]) else {
        return;
    };
    let pod = |name| topo.pod(name);
    let client = pod("client");
    let to = at("10.96.0.120", None);
    let varying = [local(pod("b")), remote(pod("d")), remote(pod("e"))];
    // Update i: the stable endpoint a, a changing subset of b, d, e, and a changing number
    // of unrelated Services (with their own endpoints and NodePorts).
    let state = |i: usize| {
        let endpoints: Vec<Endpoint> = std::iter::once(local(pod("a")))
            .chain(
                varying
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| (i + 1) & (1 << bit) != 0)
                    .map(|(_, ep)| ep.clone()),
            )
            .collect();
        let mut services = vec![Service::new("live", &["10.96.0.120"]).endpoints(endpoints)];
        for j in 0..i % 5 {
            services.push(
                Service::new(&format!("noise-{j}"), &[&format!("10.96.1.{}", j + 1)])
                    .node_port(30200 + u16::try_from(j).expect("small"))
                    .endpoints([remote(pod("f"))]),
            );
        }
        services
    };
    apply(&topo, &state(0));

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let tcp = keep_connecting(client, to, false, &stop, &done);
    let udp = keep_connecting(client, to, true, &stop, &done);
    let started = Instant::now();
    for i in 1..=20 {
        // Let traffic flow between updates, so every ruleset carries some.
        let before = done.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(5);
        while done.load(Ordering::Relaxed) < before + 6 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        apply(&topo, &state(i));
    }
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let tcp = Tally::of(&tcp.join().expect("TCP client thread"));
    let udp = Tally::of(&udp.join().expect("UDP client thread"));
    let took = started.elapsed();

    for (what, tally) in [("TCP", &tcp), ("UDP", &udp)] {
        let total = tally.servers.values().sum::<usize>() + tally.failures.len();
        eprintln!("{what}: {total} attempts in {took:?}: {:?}", tally.servers);
        assert!(
            tally.failures.is_empty(),
            "{what}: {} of {total} attempts failed during 20 updates ({took:?}): {:?}",
            tally.failures.len(),
            tally.failures
        );
        assert!(
            total >= 40,
            "{what}: only {total} attempts in {took:?}, too few to mean anything"
        );
        assert!(
            tally
                .names()
                .iter()
                .all(|n| ["a", "b", "d", "e"].contains(n)),
            "{what}: answered by a pod that was never an endpoint: {:?}",
            tally.servers
        );
    }
    let tally = answered("after the updates", &client.tcp_repeat(to, 40));
    // State 20: a plus the subset of bits of 21 = 0b10101: b and e.
    assert_eq!(tally.names(), ["a", "b", "e"], "{:?}", tally.servers);
}

/// A long-lived UDP flow (one socket, one conntrack entry) follows the Service when its
/// endpoint goes: `kproxy apply` deletes conntrack entries whose endpoint no longer serves,
/// so the next datagram meets the new rules. The removed pod keeps answering throughout: only
/// the cleanup can move the flow. Scaled to zero, the flow is refused instead of answered by
/// the old pod.
fn udp_flows_leave_an_endpoint_that_was_removed(mode: Mode) {
    let Some(topo) = topology(mode, "tr-udpflow", &PODS, &[]) else {
        return;
    };
    let (a, d) = (topo.pod("a"), topo.pod("d"));
    let dns = |endpoints: Vec<Endpoint>| {
        Service::new("dns", &["10.96.0.130", "fd00:10:96::130"])
            .node_port(30130)
            .endpoints(endpoints)
    };
    apply(&topo, &[dns(vec![local(a), remote(d)])]);
    let node_port = std::net::SocketAddr::new(topo.node_ipv4().into(), 30130);
    let flows = [
        (
            "pod → ClusterIP",
            topo.pod("client"),
            at("10.96.0.130", None),
        ),
        (
            "pod → IPv6 ClusterIP",
            topo.pod("client"),
            at("fd00:10:96::130", None),
        ),
        ("external client → NodePort", topo.client("ext"), node_port),
    ];
    let flows: Vec<_> = flows
        .into_iter()
        .map(|(what, from, to)| {
            let flow = from
                .udp_flow(to)
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let first = flow
                .ask(DEFAULT_TIMEOUT)
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
            for _ in 0..3 {
                let again = flow.ask(DEFAULT_TIMEOUT).expect("the flow answers");
                assert_eq!(again.server, first.server, "{what}: one flow, one endpoint");
            }
            (what, flow, first.server)
        })
        .collect();

    // Each flow's endpoint goes and the other stays (both are back first, for the flows
    // after the first).
    for (what, flow, server) in &flows {
        let (gone, stays) = if server == "a" { (a, d) } else { (d, a) };
        apply(&topo, &[dns(vec![local(a), remote(d)])]);
        let stays_ep = if stays.name() == "a" {
            local(stays)
        } else {
            remote(stays)
        };
        apply(&topo, &[dns(vec![stays_ep])]);
        let moved = flow
            .ask(DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{what}: after {} was removed: {e:?}", gone.name()));
        assert_eq!(
            moved.server,
            stays.name(),
            "{what}: the flow still reaches {}, which is no longer an endpoint",
            gone.name()
        );
    }

    // Scaled to zero: refused, not answered by the last endpoint.
    apply(&topo, &[dns(vec![])]);
    for (what, flow, _) in &flows {
        assert_eq!(
            flow.ask(DEFAULT_TIMEOUT),
            Err(Failure::Refused),
            "{what}: a Service without endpoints must refuse the flow"
        );
    }
}

super::in_both_modes!(
    reprogrammed_endpoints_take_over_new_connections,
    twenty_updates_under_live_traffic_fail_no_connection,
    udp_flows_leave_an_endpoint_that_was_removed
);
