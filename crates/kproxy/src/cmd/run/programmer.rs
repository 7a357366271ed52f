//! What the daemon has programmed, Service by Service, and the syncs that change it.
//!
//! A full sync translates every object, compiles everything
//! ([`Incremental::new`](kproxy_compiler::Incremental::new) in nftables mode; see [`Backend`])
//! and makes the kernel equal to it (read back first). A partial sync takes only the changed
//! Services' objects
//! ([`WatcherHandle::service_snapshot`](kproxy_watcher::WatcherHandle::service_snapshot)),
//! translates and recompiles them alone and sends the syncer the touched objects
//! ([`Syncer::sync_change`](kproxy_syncer::Syncer::sync_change); iptables mode restores the
//! changed chains), so it costs what the change costs. The per-Service records here (which
//! ports a Service had, its health check, its share of the no-local-endpoints gauge) say what a
//! changed Service replaces.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use kproxy_compiler::{Options, PortChange};
use kproxy_model::{ServicePort, ServicePortName};
use kproxy_syncer::SyncReport;
use kproxy_watcher::{ServiceKey, Snapshot};

use super::backend::Backend;
use super::metrics::{self, Metrics};
use super::service_health::{self, ServiceCheck};
use crate::conntrack_targets;

/// One sync's input.
pub enum Work {
    /// Every object: compile everything; `adopted` when the kernel was just read back.
    Full { snapshot: Snapshot, adopted: bool },
    /// The objects of the Services that changed (each may have none left: deleted).
    Partial(Vec<(ServiceKey, Snapshot)>),
}

/// A successful sync.
pub struct Synced {
    /// The kernel is not yet equal to the ruleset: chains this sync flushed are deleted by the
    /// next transaction (see the syncer), so another sync is due.
    pub follow_up: bool,
    /// The healthCheckNodePort servers the synced state asks for.
    pub service_checks: Vec<ServiceCheck>,
}

/// The syncer, the compiled state and what each Service contributed to it.
pub struct Programmer {
    /// The mode's syncer and compiled state (empty until a full sync succeeded, and after any
    /// failure: the next sync is full).
    backend: Backend,
    node_name: String,
    options: Options,
    services: HashMap<ServiceKey, Contribution>,
    /// Sums over `services`.
    no_local: (i64, i64),
    /// The healthCheckNodePort servers the compiled state asks for, by Service: kept apart
    /// from `services` so a sync hands them over without walking every Service.
    checks: BTreeMap<ServiceKey, ServiceCheck>,
}

/// What one Service contributed to the compiled state.
#[derive(Debug, Default)]
struct Contribution {
    ports: Vec<ServicePortName>,
    /// Ports with a Local policy and no local endpoint: (internal, external).
    no_local: (i64, i64),
    /// The change trigger time ([`kproxy_watcher::Slice::trigger_time`]) of each annotated
    /// slice, by slice name.
    triggers: BTreeMap<String, String>,
}

impl Programmer {
    pub fn new(backend: Backend, node_name: &str, options: Options) -> Programmer {
        Programmer {
            backend,
            node_name: node_name.to_string(),
            options,
            services: HashMap::new(),
            no_local: (0, 0),
            checks: BTreeMap::new(),
        }
    }

    /// The next sync must be full: nothing is compiled yet, or the kernel is not known to
    /// hold what the last sync left.
    pub fn needs_full_sync(&self) -> bool {
        self.backend.needs_full_sync()
    }

    /// Runs one sync; on failure the kernel keeps its rules and the next sync is full.
    pub fn sync(&mut self, work: Work, metrics: &Metrics) -> anyhow::Result<Synced> {
        let full = matches!(work, Work::Full { .. });
        let span = tracing::info_span!(
            "sync",
            kind = if full { "full" } else { "partial" },
            duration = tracing::field::Empty,
            operations = tracing::field::Empty,
        );
        let _entered = span.enter();
        let start = Instant::now();
        let outcome = match work {
            Work::Full { snapshot, adopted } => self.full(&snapshot, adopted),
            Work::Partial(services) => self.partial(services),
        };
        let programmed = match outcome {
            Ok(programmed) => programmed,
            Err(error) => {
                self.backend.forget();
                return Err(error);
            }
        };
        if let Some(report) = &programmed.report {
            metrics.transaction(report);
            span.record("operations", report.operations);
        }
        metrics.synced(self.no_local);
        let now = SystemTime::now();
        for trigger in &programmed.triggers {
            metrics.network_programmed(now.duration_since(*trigger).unwrap_or(Duration::ZERO));
        }
        // Rules first, then flows: a cleared UDP flow is re-created by its next datagram, which
        // must meet the new rules.
        let cleared = kproxy_syncer::conntrack::clear_stale_flows(&programmed.conntrack);
        // Recorded before the event, so the log line carries it.
        span.record("duration", tracing::field::debug(start.elapsed()));
        match cleared {
            Ok(cleared) => {
                metrics.conntrack_deleted(cleared.deleted);
                tracing::info!(
                    services = programmed.services,
                    messages = programmed.report.map_or(0, |r| r.applied.messages),
                    bytes = programmed.report.map_or(0, |r| r.applied.bytes),
                    stale_flows_deleted = cleared.deleted,
                    "synced"
                );
            }
            // The rules are in force; the next sync clears what this one missed.
            Err(error) => tracing::warn!(
                services = programmed.services,
                "synced, but clearing stale UDP/SCTP conntrack entries failed: {error}"
            ),
        }
        // Chains emptied by this transaction are deleted by the next one.
        let follow_up = self.backend.has_stale_chains();
        if follow_up {
            tracing::debug!("chains left to delete: another sync follows");
        }
        Ok(Synced {
            follow_up,
            service_checks: self.checks.values().cloned().collect(),
        })
    }

    fn full(&mut self, snapshot: &Snapshot, adopted: bool) -> anyhow::Result<Programmed> {
        self.backend.forget();
        let state = snapshot.state(&self.node_name);
        let checks = service_health::wanted(&state, snapshot, &self.node_name);
        let mut services: HashMap<ServiceKey, Contribution> = HashMap::new();
        for port in &state.ports {
            let contribution = services.entry(key_of(port)).or_default();
            contribution.ports.push(port.name.clone());
            let (internal, external) = metrics::no_local_endpoints([port]);
            contribution.no_local.0 += internal;
            contribution.no_local.1 += external;
        }
        for slice in &snapshot.endpoint_slices {
            if let Some(time) = &slice.trigger_time {
                let spec = &slice.spec;
                let key = ServiceKey::new(spec.namespace.clone(), spec.service.clone());
                if let Some(contribution) = services.get_mut(&key) {
                    contribution
                        .triggers
                        .insert(spec.name.clone(), time.clone());
                }
            }
        }
        // Kept until the next full sync: without the slack of a pushed Vec (room for four
        // ports where nearly every Service has one; ~3 MB at 10,000 Services).
        for contribution in services.values_mut() {
            contribution.ports.shrink_to_fit();
        }
        let conntrack = conntrack_targets::targets(&state);
        // The state moves into the backend's compiled form, so the ports are not held twice.
        // Right after adopt the kernel was just read; otherwise a full sync reads it again.
        let report = self
            .backend
            .full(state, &self.options, adopted)
            .map_err(|e| e.context("programming the kernel (the previous rules are unchanged)"))?;
        self.no_local = services.values().fold((0, 0), |sum, c| {
            (sum.0 + c.no_local.0, sum.1 + c.no_local.1)
        });
        self.services = services;
        self.checks = checks
            .into_iter()
            .map(|check| {
                let key = ServiceKey::new(check.namespace.clone(), check.name.clone());
                (key, check)
            })
            .collect();
        // Partial syncs follow, and the next full one reads the kernel back: the whole-ruleset
        // mirror is dead weight, and so are the sync's freed buffers.
        self.backend.release_mirror();
        super::ffi::release_free_memory();
        Ok(Programmed {
            report,
            conntrack,
            triggers: Vec::new(),
            services: self.services.len(),
        })
    }

    fn partial(&mut self, changed: Vec<(ServiceKey, Snapshot)>) -> anyhow::Result<Programmed> {
        if self.backend.needs_full_sync() {
            anyhow::bail!("a partial sync before any full one");
        }
        let mut changes = Vec::new();
        let mut conntrack = Vec::new();
        let mut triggers = Vec::new();
        let count = changed.len();
        for (key, snapshot) in changed {
            let state = snapshot.state(&self.node_name);
            let mut new = Contribution {
                ports: state.ports.iter().map(|p| p.name.clone()).collect(),
                no_local: metrics::no_local_endpoints(&state.ports),
                triggers: BTreeMap::new(),
            };
            let old = self.services.remove(&key).unwrap_or_default();
            for slice in &snapshot.endpoint_slices {
                let Some(time) = &slice.trigger_time else {
                    continue;
                };
                let name = slice.spec.name.clone();
                if old.triggers.get(&name) != Some(time) {
                    triggers.extend(parse_time(time));
                }
                new.triggers.insert(name, time.clone());
            }
            changes.extend(
                old.ports
                    .iter()
                    .filter(|name| !new.ports.contains(name))
                    .cloned()
                    .map(PortChange::Remove),
            );
            conntrack.extend(conntrack_targets::targets(&state));
            match service_health::wanted(&state, &snapshot, &self.node_name)
                .into_iter()
                .next()
            {
                Some(check) => self.checks.insert(key.clone(), check),
                None => self.checks.remove(&key),
            };
            changes.extend(state.ports.into_iter().map(PortChange::Set));
            self.no_local.0 += new.no_local.0 - old.no_local.0;
            self.no_local.1 += new.no_local.1 - old.no_local.1;
            if !new.ports.is_empty() || !new.triggers.is_empty() {
                self.services.insert(key, new);
            }
        }
        let report = self
            .backend
            .partial(changes, &self.options)
            .map_err(|e| e.context("programming the kernel (the previous rules are unchanged)"))?;
        Ok(Programmed {
            report,
            conntrack,
            triggers,
            services: count,
        })
    }
}

/// What a sync did, for metrics and logs.
struct Programmed {
    /// `None` when no netlink transaction was needed (or iptables mode restored instead).
    report: Option<SyncReport>,
    /// UDP/SCTP destinations whose stale flows to clear.
    conntrack: Vec<kproxy_syncer::conntrack::ServiceTarget>,
    /// New change trigger times seen on EndpointSlices.
    triggers: Vec<SystemTime>,
    /// Services translated.
    services: usize,
}

fn key_of(port: &ServicePort) -> ServiceKey {
    ServiceKey::new(&*port.name.namespace, &*port.name.service)
}

/// An RFC 3339 time as the API server writes it (`2026-12-01T10:00:00Z`, maybe with a
/// fraction or an offset).
fn parse_time(text: &str) -> Option<SystemTime> {
    let time: k8s_openapi::jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(time))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_times_parse_as_the_api_server_writes_them() {
        let at =
            |text| parse_time(text).and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        assert_eq!(at("1970-01-01T00:01:40Z"), Some(Duration::from_secs(100)));
        assert_eq!(
            at("1970-01-01T00:01:40.250Z"),
            Some(Duration::from_millis(100_250))
        );
        assert_eq!(
            at("1970-01-01T01:01:40+01:00"),
            Some(Duration::from_secs(100))
        );
        assert_eq!(at("yesterday"), None);
    }
}
