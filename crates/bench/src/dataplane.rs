//! Measurement 5: what a packet pays for the ruleset's size. A testkit [`Topology`] gives a
//! node namespace with two pods on veths; the node gets the synthetic cluster of N − 1
//! Services plus a probe Service, created last (sorted last, added last), whose one endpoint
//! is the `backend` pod. From the `client` pod, TCP connects alternate between the probe's
//! ClusterIP (DNAT through kproxy's rules) and the backend's pod IP (the floor: the same
//! veths and forwarding, no Service lookup). One topology serves every size, emptied and
//! cold-applied with `Syncer::sync` at each.
//!
//! A connect is timed from `connect(2)` to its return: SYN out, SYN-ACK back, the packets
//! that go through the NAT hooks (later packets of a connection follow conntrack).
//!
//! At each size up to [`IPTABLES_MAX`] a third topology gets the same state in iptables mode
//! (legacy backend) and the probe's ClusterIP is measured there (kube-proxy's iptables mode is
//! where first-packet latency grows with the number of Services: every Service address is one
//! more rule in `KUBE-SERVICES`). It has a topology of its own because a legacy table, once
//! used in a namespace, stays hooked there until the namespace goes: on the nftables node
//! every later packet would also walk the empty legacy chains, which the baseline node does
//! not (`perf` put `ipt_do_table` at 0.8 % of all samples of a 50k run that did this).

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::Context;
use kproxy_compiler::compile;
use kproxy_model::{
    EndpointConditions, IpFamily, NodeInfo, PortSpec, Protocol, ProxyState, ServiceSpec,
    SessionAffinity, SliceEndpoint, SlicePort, SliceSpec, TopologyHints, TrafficPolicy,
};
use kproxy_syncer::iptables::{IptablesSyncer, Tools, Variant};
use kproxy_syncer::Syncer;
use kproxy_testkit::topology::{Topology, DEFAULT_PORT};
use kproxy_testkit::NetNs;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::cluster::options;
use crate::stats::Summary;

/// The probe's ClusterIP, near the end of the node's routed Service CIDR (10.96.0.0/16); the
/// synthetic ClusterIPs (10.96.0.10 upwards) stay below it up to this many Services.
const PROBE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 255, 250);
pub const MAX_SERVICES: usize = 65_000;
const PROBE_PORT: u16 = 80;
const CLIENT: &str = "client";
const BACKEND: &str = "backend";
/// The pods' addresses: inside the synthetic cluster CIDR (10.0.0.0/10), above the synthetic
/// endpoints, so pod traffic is pod traffic (not masqueraded) with the bench's own options. A
/// second IPv4 cluster CIDR for them, as the bench had until 2026-12-04, turns every "from a
/// pod" test into an anonymous set, and the kernel binds each anonymous set by walking the whole
/// transaction: the 50k apply took 65 s instead of a few (`__nft_set_trans_bind`, perf).
const CLIENT_IP: &str = "10.63.1.10";
const BACKEND_IP: &str = "10.63.2.10";
/// Connects made before measuring at each size (ARP, route and socket caches warm).
const WARMUP: usize = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Sizes above this are not measured in iptables mode: the legacy `iptables-restore` of the
/// whole ruleset takes 21 s at 10,000 Services and grows faster than linearly.
pub const IPTABLES_MAX: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dataplane {
    pub connects: usize,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub services: usize,
    /// The cold `Syncer::sync` (empty kernel → this size) that programmed the node.
    pub apply: f64,
    pub cluster_ip: Latency,
    pub direct: Latency,
    /// The probe's ClusterIP on a second node that holds only [`BASELINE_SERVICES`] Services,
    /// measured interleaved with `cluster_ip`: the same machine conditions, so the two p50s
    /// compare (measured minutes apart, they drift by more than the 10 % the target allows).
    #[serde(default)]
    pub baseline: Option<Latency>,
    /// The ClusterIP latency with iptables mode's rules (legacy backend); `None` when not
    /// measured (over [`IPTABLES_MAX`], or no `iptables-legacy` on the machine).
    pub iptables: Option<Latency>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub connect: Summary,
    pub failures: usize,
}

/// The baseline node's size.
pub const BASELINE_SERVICES: usize = 100;
/// Connects to one node before switching to the other (a switch enters another namespace).
const CHUNK: usize = 20;

pub fn measure(sizes: &[usize], connects: usize) -> anyhow::Result<Dataplane> {
    // Before the topologies: their servers' threads inherit this thread's CPUs.
    let cpus = Cpus::split();
    let topology = Topology::builder("bench-dp")
        .pod(CLIENT, CLIENT_IP)
        .pod(BACKEND, BACKEND_IP)
        .build();
    let baseline = Topology::builder("bench-dpb")
        .pod(CLIENT, CLIENT_IP)
        .pod(BACKEND, BACKEND_IP)
        .build();
    let legacy = Topology::builder("bench-dpi")
        .pod(CLIENT, CLIENT_IP)
        .pod(BACKEND, BACKEND_IP)
        .build();
    let backend = topology.pod(BACKEND).ipv4();
    let node = NodeInfo {
        name: kproxy_synthetic::NODE.to_string(),
        zone: Some(kproxy_synthetic::ZONE.to_string()),
        primary_ips: vec![topology.node_ipv4().into(), topology.node_ipv6().into()],
        seen: true,
    };
    let options = options();

    let base_state = with_probe(BASELINE_SERVICES, node.clone(), backend);
    baseline
        .node()
        .exec(|| Syncer::default().sync(compile(&base_state, &options)))
        .context("programming the baseline node")?;
    drop(base_state);

    let mut rows = Vec::with_capacity(sizes.len());
    for &services in sizes {
        anyhow::ensure!(
            (1..=MAX_SERVICES).contains(&services),
            "the dataplane measures 1 to {MAX_SERVICES} Services"
        );
        eprintln!("bench: dataplane, {services} Services, {connects} connects each way");
        let state = with_probe(services, node.clone(), backend);
        let ruleset = compile(&state, &options);
        // Each size starts from an empty kernel: growing the last size's ruleset would bind
        // every new DNAT rule to a map that already holds elements, which the kernel checks
        // one by one (the 10k → 50k step took 22 s that way, a cold 50k apply a few).
        topology
            .node()
            .exec(kproxy_syncer::cleanup)
            .context("emptying the node")?;
        let start = Instant::now();
        topology
            .node()
            .exec(|| Syncer::default().sync(ruleset))
            .context("programming the node")?;
        let apply = start.elapsed();

        let cluster_ip = SocketAddr::from((PROBE_IP, PROBE_PORT));
        let pod_ip = SocketAddr::from((backend, DEFAULT_PORT));
        let (cluster_ip_latency, direct, base) =
            interleaved(&topology, &baseline, cluster_ip, pod_ip, connects, cpus);
        anyhow::ensure!(
            cluster_ip_latency.failures < connects,
            "no connect to the probe's ClusterIP succeeded at {services} Services"
        );
        let iptables = if services <= IPTABLES_MAX && legacy_installed() {
            eprintln!("bench: dataplane, {services} Services, iptables mode (legacy)");
            let latency = in_iptables_mode(&legacy, &state, &options, || {
                cpus.exec_as_client(legacy.pod(CLIENT).ns(), || repeated(cluster_ip, connects))
            })?;
            anyhow::ensure!(
                latency.failures < connects,
                "no connect to the probe's ClusterIP succeeded in iptables mode at {services} Services"
            );
            Some(latency)
        } else {
            None
        };
        rows.push(Row {
            services,
            apply: apply.as_secs_f64(),
            cluster_ip: cluster_ip_latency,
            direct,
            baseline: Some(base),
            iptables,
        });
    }
    Ok(Dataplane { connects, rows })
}

fn legacy_installed() -> bool {
    std::process::Command::new(LEGACY.program(IpFamily::V4, "-restore"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const LEGACY: Tools = Tools {
    variant: Variant::Legacy,
};

/// Programs iptables mode's rules for `state` on `topology`'s node, runs `measure`, and
/// removes the rules again.
fn in_iptables_mode<T>(
    topology: &Topology,
    state: &ProxyState,
    options: &kproxy_compiler::Options,
    measure: impl FnOnce() -> T,
) -> anyhow::Result<T> {
    let rules = kproxy_compiler::iptables::compile(state, options);
    let node = topology.node();
    node.exec(|| IptablesSyncer::new(LEGACY).sync(&rules))
        .context("programming iptables mode")?;
    let measured = measure();
    node.exec(|| kproxy_syncer::iptables::cleanup(LEGACY, false))
        .context("removing iptables mode's rules")?;
    Ok(measured)
}

/// `connects` connects each to the ClusterIP and the pod IP of `node` and to the ClusterIP of
/// `baseline`, interleaved in chunks, so all three see the same machine. On both nodes each
/// ClusterIP connect is followed by one to the node's pod IP (on `baseline` untimed): with
/// back-to-back connects to its ClusterIP alone, the baseline measured 25–30 % slower than the
/// same rules on `node` (59–73 µs against 42–47 µs at 100 Services each, on the EPYC host of
/// 2026-12-02); with the same pattern, 45–48 µs against 45–48 µs.
fn interleaved(
    node: &Topology,
    baseline: &Topology,
    cluster_ip: SocketAddr,
    pod_ip: SocketAddr,
    connects: usize,
    cpus: Cpus,
) -> (Latency, Latency, Latency) {
    let (client, base_client) = (node.pod(CLIENT).ns(), baseline.pod(CLIENT).ns());
    cpus.exec_as_client(client, || {
        for _ in 0..WARMUP {
            let _ = connect(cluster_ip);
            let _ = connect(pod_ip);
        }
    });
    cpus.exec_as_client(base_client, || {
        for _ in 0..WARMUP {
            let _ = connect(cluster_ip);
        }
    });
    let (mut cluster, mut pod, mut base) =
        (Samples::default(), Samples::default(), Samples::default());
    let mut done = 0;
    while done < connects {
        let chunk = CHUNK.min(connects - done);
        let pairs = cpus.exec_as_client(client, || {
            (0..chunk)
                .map(|_| (connect(cluster_ip), connect(pod_ip)))
                .collect::<Vec<_>>()
        });
        for (a, b) in pairs {
            cluster.record(a);
            pod.record(b);
        }
        let times = cpus.exec_as_client(base_client, || {
            (0..chunk)
                .map(|_| {
                    let time = connect(cluster_ip);
                    let _ = connect(pod_ip);
                    time
                })
                .collect::<Vec<_>>()
        });
        for time in times {
            base.record(time);
        }
        done += chunk;
    }
    (cluster.latency(), pod.latency(), base.latency())
}

/// `connects` connects to `to`, after a warm-up.
fn repeated(to: SocketAddr, connects: usize) -> Latency {
    for _ in 0..WARMUP {
        let _ = connect(to);
    }
    let mut samples = Samples::default();
    for _ in 0..connects {
        samples.record(connect(to));
    }
    samples.latency()
}

/// Where the measurement's threads run: the client's connects on one CPU of their own, everything
/// else (the backends' servers, the syncer) on the others.
///
/// Over veths a connect's whole path (the client's syscall and every hop's softirq) runs on the
/// CPU that sends, so on a CPU of its own it is measured alone; the server's `accept` runs beside
/// it instead of before or after it. Left to the scheduler, the placement of client and server
/// threads decided each chunk: on the 2-core host of 2026-12-04 the same rules read from 36 µs to
/// 58 µs within one run, more than the 10 % the target compares.
#[derive(Debug, Clone, Copy)]
struct Cpus {
    /// `None` when the process may use only one CPU: nothing is pinned.
    client: Option<usize>,
}

impl Cpus {
    /// Keeps the last CPU this thread may use for the client and moves this thread (and so
    /// every thread it spawns later) to the others.
    fn split() -> Self {
        let unpinned = Self { client: None };
        let Ok(allowed) = sched_getaffinity(Pid::from_raw(0)) else {
            return unpinned;
        };
        let usable: Vec<usize> = (0..CpuSet::count())
            .filter(|&cpu| allowed.is_set(cpu).unwrap_or(false))
            .collect();
        let [others @ .., client] = usable.as_slice() else {
            return unpinned;
        };
        if others.is_empty() {
            return unpinned;
        }
        let mut rest = CpuSet::new();
        for &cpu in others {
            if rest.set(cpu).is_err() {
                return unpinned;
            }
        }
        if sched_setaffinity(Pid::from_raw(0), &rest).is_err() {
            return unpinned;
        }
        Self {
            client: Some(*client),
        }
    }

    /// Runs `f` inside `ns` on a thread of its own, moved to the client's CPU first.
    fn exec_as_client<T: Send>(self, ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
        ns.exec(|| {
            if let Some(cpu) = self.client {
                let mut set = CpuSet::new();
                if set.set(cpu).is_ok() {
                    // Unpinned, the numbers are noisier, not wrong: no reason to fail the bench.
                    let _ = sched_setaffinity(Pid::from_raw(0), &set);
                }
            }
            f()
        })
    }
}

/// Connect times to one address, and how many connects failed.
#[derive(Default)]
struct Samples {
    times: Vec<Duration>,
    failures: usize,
}

impl Samples {
    fn record(&mut self, time: Option<Duration>) {
        match time {
            Some(t) => self.times.push(t),
            None => self.failures += 1,
        }
    }

    fn latency(&self) -> Latency {
        Latency {
            connect: Summary::of(&self.times),
            failures: self.failures,
        }
    }
}

/// The time `connect(2)` takes, or `None` if it failed.
fn connect(to: SocketAddr) -> Option<Duration> {
    let start = Instant::now();
    let stream = TcpStream::connect_timeout(&to, CONNECT_TIMEOUT).ok()?;
    let elapsed = start.elapsed();
    drop(stream);
    Some(elapsed)
}

/// The synthetic cluster of `services − 1` Services, and the probe Service, last.
fn with_probe(services: usize, node: NodeInfo, backend: Ipv4Addr) -> ProxyState {
    let (mut specs, mut slices) = kproxy_synthetic::specs(services - 1, 10);
    let (namespace, name) = ("zz-bench".to_string(), "probe".to_string());
    specs.push(ServiceSpec {
        namespace: namespace.as_str().into(),
        name: name.as_str().into(),
        cluster_ips: vec![PROBE_IP.into()],
        ports: vec![PortSpec {
            name: "".into(),
            protocol: Protocol::Tcp,
            port: PROBE_PORT,
            node_port: None,
        }],
        outside: None,
        internal_policy: TrafficPolicy::Cluster,
        external_policy: TrafficPolicy::Cluster,
        affinity: SessionAffinity::None,
        health_check_node_port: None,
    });
    slices.push(SliceSpec {
        namespace: namespace.into(),
        name: format!("{name}-1").into(),
        service: name.into(),
        family: IpFamily::V4,
        ports: vec![SlicePort {
            name: "".into(),
            protocol: Protocol::Tcp,
            port: DEFAULT_PORT,
        }],
        endpoints: vec![SliceEndpoint::new(
            backend.into(),
            EndpointConditions::default(),
            Some(kproxy_synthetic::NODE),
            TopologyHints::default(),
        )],
    });
    ProxyState::build(node, &specs, &slices)
}
