//! Measurement 3: partial syncs, the path the daemon takes for one EndpointSlice or Service
//! event. The cluster is compiled per port (`Incremental::new`) and applied whole; then, each
//! repetition, four changes go through `Incremental::update` → `Syncer::sync_change`:
//!
//! 1. one remote endpoint added to a plain ClusterIP port (a different port each repetition);
//! 2. the same endpoint removed again;
//! 3. one plain ClusterIP Service added (the synthetic cluster's next ones, not yet applied);
//! 4. that Service removed again.
//!
//! Each change reports the kernel transaction (`SyncReport::transaction`) and the whole
//! update + sync (compile the port, diff its objects, plan, transaction). The loop runs on one
//! thread inside the namespace, so no thread start is timed.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kproxy_compiler::{Incremental, PortChange};
use kproxy_model::{Endpoint, ProxyState, ServicePort, SessionAffinity, TrafficPolicy};
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;
use serde::{Deserialize, Serialize};

use crate::cluster::options;
use crate::stats::Summary;

/// The four changes, in the order each repetition makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    EndpointAdded,
    EndpointRemoved,
    ServiceAdded,
    ServiceRemoved,
}

impl Change {
    pub const ALL: [Change; 4] = [
        Change::EndpointAdded,
        Change::EndpointRemoved,
        Change::ServiceAdded,
        Change::ServiceRemoved,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Change::EndpointAdded => "endpoint added",
            Change::EndpointRemoved => "endpoint removed",
            Change::ServiceAdded => "Service added",
            Change::ServiceRemoved => "Service removed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Incrementals {
    pub services: usize,
    pub endpoints: usize,
    /// `Incremental::new` on the whole cluster.
    pub compile: f64,
    /// The first, full `Syncer::sync` of `Incremental::ruleset`.
    pub initial_sync: f64,
    pub changes: Vec<ChangeTimes>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeTimes {
    pub change: Change,
    pub transaction: Summary,
    /// `Incremental::update` + `Syncer::sync_change`.
    pub whole: Summary,
    /// Plan operations of the largest of these changes.
    pub max_operations: usize,
}

pub fn measure(services: usize, endpoints: usize, repeats: usize) -> anyhow::Result<Incrementals> {
    eprintln!("bench: incremental changes, {services} × {endpoints}, {repeats} repetitions");
    let (specs, slices) = kproxy_synthetic::specs(services + 2 * repeats + 100, endpoints);
    let node = kproxy_synthetic::node();
    let state = ProxyState::build(node.clone(), &specs[..services], &slices);
    // The Services after the cluster's last one: added and removed again.
    let spare: Vec<ServicePort> = ProxyState::build(node, &specs[services..], &slices)
        .ports
        .into_iter()
        .filter(is_plain)
        .take(repeats)
        .collect();
    let candidates: Vec<&ServicePort> = state.ports.iter().filter(|p| is_plain(p)).collect();
    if spare.len() < repeats || candidates.is_empty() {
        bail!(
            "the synthetic cluster has too few plain ClusterIP Services for {repeats} repetitions"
        );
    }
    // Spread the endpoint changes over the cluster.
    let targets: Vec<ServicePort> = (0..repeats)
        .map(|r| candidates[r * candidates.len() / repeats].clone())
        .collect();

    let start = Instant::now();
    let mut incremental = Incremental::new(&state, &options());
    let compile = start.elapsed();
    drop(state);

    let ns = NetNs::new("bench-incremental");
    let mut syncer = Syncer::default();
    let (initial_sync, samples) = ns.exec(|| -> anyhow::Result<_> {
        let start = Instant::now();
        syncer
            .sync(incremental.ruleset())
            .context("the first, full sync")?;
        let initial_sync = start.elapsed();
        let mut samples: Vec<Samples> = Change::ALL.iter().map(|_| Samples::default()).collect();
        for (r, (target, spare)) in targets.iter().zip(&spare).enumerate() {
            let steps = [
                PortChange::Set(with_one_more_endpoint(target, r)),
                PortChange::Set(target.clone()),
                PortChange::Set(spare.clone()),
                PortChange::Remove(spare.name.clone()),
            ];
            for ((change, step), samples) in Change::ALL.into_iter().zip(steps).zip(&mut samples) {
                let start = Instant::now();
                let ruleset_change = incremental
                    .update([step])
                    .with_context(|| format!("{}: a table appeared or went", change.describe()))?;
                let report = syncer
                    .sync_change(&ruleset_change)
                    .with_context(|| change.describe())?;
                samples.whole.push(start.elapsed());
                samples.transaction.push(report.transaction);
                samples.operations = samples.operations.max(report.operations);
            }
        }
        Ok((initial_sync, samples))
    })?;
    Ok(Incrementals {
        services,
        endpoints,
        compile: compile.as_secs_f64(),
        initial_sync: initial_sync.as_secs_f64(),
        changes: Change::ALL
            .into_iter()
            .zip(samples)
            .map(|(change, s)| ChangeTimes {
                change,
                transaction: Summary::of(&s.transaction),
                whole: Summary::of(&s.whole),
                max_operations: s.operations,
            })
            .collect(),
    })
}

#[derive(Default)]
struct Samples {
    transaction: Vec<Duration>,
    whole: Vec<Duration>,
    operations: usize,
}

/// A single-port, IPv4-only ClusterIP Service port with endpoints and no affinity or traffic
/// policy: the most common kind, where one endpoint change is one element change.
fn is_plain(port: &ServicePort) -> bool {
    port.name.port.is_empty()
        && port.affinity == SessionAffinity::None
        && port.internal_policy == TrafficPolicy::Cluster
        && !port.is_externally_reachable()
        && port.families.len() == 1
        && port.families[0].endpoints.any_usable
}

/// `port` with one more endpoint, on another node, from a range no synthetic pod uses.
fn with_one_more_endpoint(port: &ServicePort, repetition: usize) -> ServicePort {
    let mut port = port.clone();
    let endpoints = &mut port.families[0].endpoints;
    let target_port = endpoints.cluster.first().map_or(8080, |e| e.port);
    let [_, _, c, d] = u32::try_from(repetition + 1).unwrap_or(1).to_be_bytes();
    endpoints.cluster.push(Endpoint {
        addr: IpAddr::V4(Ipv4Addr::new(10, 127, c, d)),
        port: target_port,
        local: false,
    });
    endpoints.cluster.sort();
    port
}
