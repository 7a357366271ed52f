//! What the daemon has programmed, Service by Service, and the syncs that change it.
//!
//! A full sync translates every object, compiles everything
//! ([`Incremental::new`](kproxy_compiler::Incremental::new) in nftables mode; see [`Backend`])
//! and makes the kernel equal to it (read back first). A partial sync takes only the changed
//! Services' objects
//! ([`WatcherHandle::service_snapshot`](kproxy_watcher::WatcherHandle::service_snapshot)),
//! translates and recompiles them alone and sends the syncer the touched objects
//! ([`Syncer::sync_change`](kproxy_syncer::Syncer::sync_change); iptables mode restores the
//! changed chains), so it costs what the change costs. What a changed Service replaces comes
//! from the compiled state (its ports, [`Backend::service_ports`]) and from the records here
//! (its health check, its share of the no-local-endpoints gauge), which hold only the
//! Services that have one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kproxy_compiler::{Options, PortChange};
use kproxy_model::ServicePort;
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
    /// The Services with ports that have a Local policy and no local endpoint: how many,
    /// (internal, external). Most Services have none and no entry.
    no_local_by_service: HashMap<ServiceKey, (i64, i64)>,
    /// Sums over `no_local_by_service`.
    no_local: (i64, i64),
    /// The healthCheckNodePort servers the compiled state asks for, by Service: only the
    /// Services that have one, so a sync hands them over without walking every Service.
    checks: BTreeMap<ServiceKey, ServiceCheck>,
}

impl Programmer {
    pub fn new(backend: Backend, node_name: &str, options: Options) -> Programmer {
        Programmer {
            backend,
            node_name: node_name.to_string(),
            options,
            no_local_by_service: HashMap::new(),
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
    /// `trigger_times` are the EndpointSlice trigger times that arrived since the previous
    /// sync ([`kproxy_watcher::Changes::trigger_times`]): once the kernel holds the change,
    /// the time since each is the network-programming latency.
    pub fn sync(
        &mut self,
        work: Work,
        trigger_times: &[String],
        metrics: &Metrics,
    ) -> anyhow::Result<Synced> {
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
        for trigger in trigger_times.iter().filter_map(|time| parse_time(time)) {
            metrics.network_programmed(now.duration_since(trigger).unwrap_or(Duration::ZERO));
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
        let mut no_local_by_service: HashMap<ServiceKey, (i64, i64)> = HashMap::new();
        for port in &state.ports {
            let (internal, external) = metrics::no_local_endpoints([port]);
            if (internal, external) != (0, 0) {
                let share = no_local_by_service.entry(key_of(port)).or_default();
                share.0 += internal;
                share.1 += external;
            }
        }
        let conntrack = conntrack_targets::targets(&state);
        // The state moves into the backend's compiled form, so the ports are not held twice.
        // Right after adopt the kernel was just read; otherwise a full sync reads it again.
        let report = self
            .backend
            .full(state, &self.options, adopted)
            .map_err(|e| e.context("programming the kernel (the previous rules are unchanged)"))?;
        self.no_local = no_local_by_service
            .values()
            .fold((0, 0), |sum, share| (sum.0 + share.0, sum.1 + share.1));
        self.no_local_by_service = no_local_by_service;
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
            services: snapshot.services.len(),
        })
    }

    fn partial(&mut self, changed: Vec<(ServiceKey, Snapshot)>) -> anyhow::Result<Programmed> {
        if self.backend.needs_full_sync() {
            anyhow::bail!("a partial sync before any full one");
        }
        let mut changes = Vec::new();
        let mut conntrack = Vec::new();
        let count = changed.len();
        for (key, snapshot) in changed {
            let state = snapshot.state(&self.node_name);
            // Asked before any change is applied: the ports as the kernel holds them.
            let old_ports = self.backend.service_ports(&key.namespace, &key.name);
            changes.extend(
                old_ports
                    .into_iter()
                    .filter(|name| !state.ports.iter().any(|port| port.name == *name))
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
            let share = metrics::no_local_endpoints(&state.ports);
            let old_share = if share == (0, 0) {
                self.no_local_by_service.remove(&key)
            } else {
                self.no_local_by_service.insert(key, share)
            }
            .unwrap_or_default();
            self.no_local.0 += share.0 - old_share.0;
            self.no_local.1 += share.1 - old_share.1;
            changes.extend(state.ports.into_iter().map(PortChange::Set));
        }
        let report = self
            .backend
            .partial(changes, &self.options)
            .map_err(|e| e.context("programming the kernel (the previous rules are unchanged)"))?;
        Ok(Programmed {
            report,
            conntrack,
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
    /// Services translated.
    services: usize,
}

fn key_of(port: &ServicePort) -> ServiceKey {
    ServiceKey::new(
        Arc::clone(&port.name.namespace),
        Arc::clone(&port.name.service),
    )
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
