//! `/metrics`: Prometheus (OpenMetrics) text, with kube-proxy's names where the meaning is the
//! same and `kproxy_` names for what kube-proxy does not have.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kproxy_model::{ServicePort, TrafficPolicy};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

use super::http::{Handler, Request, Response};

/// The `traffic_policy` label of the no-local-endpoints gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    pub traffic_policy: &'static str,
}

/// Every metric the daemon exports. Cheap to update from any thread.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sync_duration: Histogram,
    full_sync_duration: Histogram,
    partial_sync_duration: Histogram,
    last_timestamp: Gauge<f64, AtomicU64>,
    last_queued_timestamp: Gauge<f64, AtomicU64>,
    service_changes: Counter,
    endpoint_changes: Counter,
    no_local_endpoints: Family<PolicyLabel, Gauge>,
    sync_failures: Counter,
    conntrack_deleted: Counter,
    network_programming: Histogram,
    operations: Histogram,
    transaction_bytes: Histogram,
    transaction_seconds: Histogram,
}

/// kube-proxy's sync duration buckets: 1 ms to ~16 s.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let sync_duration = duration_buckets();
        let full_sync_duration = duration_buckets();
        let partial_sync_duration = duration_buckets();
        let last_timestamp = Gauge::<f64, AtomicU64>::default();
        let last_queued_timestamp = Gauge::<f64, AtomicU64>::default();
        let service_changes = Counter::default();
        let endpoint_changes = Counter::default();
        let no_local_endpoints = Family::<PolicyLabel, Gauge>::default();
        let sync_failures = Counter::default();
        let conntrack_deleted = Counter::default();
        // kube-proxy's buckets reach minutes: the trigger time is set by another component.
        let network_programming = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let operations = Histogram::new(exponential_buckets(1.0, 4.0, 12));
        let transaction_bytes = Histogram::new(exponential_buckets(64.0, 4.0, 14));
        let transaction_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 18));
        registry.register_with_unit(
            "kubeproxy_sync_proxy_rules_duration",
            "How long a sync took (compile, netlink transaction, conntrack cleanup), every sync",
            Unit::Seconds,
            sync_duration.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_sync_full_proxy_rules_duration",
            "How long a full sync took (the kernel's tables read back first)",
            Unit::Seconds,
            full_sync_duration.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_sync_partial_proxy_rules_duration",
            "How long a partial sync took (only the difference from kproxy's mirror sent)",
            Unit::Seconds,
            partial_sync_duration.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_sync_proxy_rules_last_timestamp",
            "When the last successful sync finished (Unix time)",
            Unit::Seconds,
            last_timestamp.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp",
            "When the last change was queued for a sync (Unix time)",
            Unit::Seconds,
            last_queued_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Services whose Service object was added, updated or deleted, counted once per \
             Service per sync (changes coalesced between two syncs count once)",
            service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Services whose set of EndpointSlices (names and resourceVersions) changed, counted \
             once per Service per sync (changes coalesced between two syncs count once)",
            endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Service ports with a Local traffic policy whose endpoints are all on other nodes \
             (traffic to them on this node is dropped), after the last sync",
            no_local_endpoints.clone(),
        );
        registry.register_with_unit(
            "kubeproxy_network_programming_duration",
            "From an EndpointSlice change (its last-change-trigger-time annotation) to the \
             rules for it in force",
            Unit::Seconds,
            network_programming.clone(),
        );
        registry.register(
            "kproxy_sync_failures",
            "Syncs that failed (the previous rules stayed in force)",
            sync_failures.clone(),
        );
        registry.register(
            "kproxy_conntrack_entries_deleted",
            "Stale UDP/SCTP conntrack entries deleted after syncs",
            conntrack_deleted.clone(),
        );
        registry.register(
            "kproxy_sync_operations",
            "Ruleset changes (plan operations) a sync sent to the kernel",
            operations.clone(),
        );
        registry.register_with_unit(
            "kproxy_sync_transaction",
            "Netlink bytes a sync sent to the kernel",
            Unit::Bytes,
            transaction_bytes.clone(),
        );
        registry.register_with_unit(
            "kproxy_sync_transaction",
            "Time from sending a sync's netlink batch to the kernel's answer",
            Unit::Seconds,
            transaction_seconds.clone(),
        );
        Metrics {
            registry,
            sync_duration,
            full_sync_duration,
            partial_sync_duration,
            last_timestamp,
            last_queued_timestamp,
            service_changes,
            endpoint_changes,
            no_local_endpoints,
            sync_failures,
            conntrack_deleted,
            network_programming,
            operations,
            transaction_bytes,
            transaction_seconds,
        }
    }

    /// A change was queued.
    pub fn queued(&self) {
        self.last_queued_timestamp.set(unix_now());
    }

    /// A sync ended, successfully or not, after `duration`.
    pub fn sync_ended(&self, full: bool, duration: Duration) {
        let seconds = duration.as_secs_f64();
        self.sync_duration.observe(seconds);
        if full {
            self.full_sync_duration.observe(seconds);
        } else {
            self.partial_sync_duration.observe(seconds);
        }
    }

    /// A sync failed.
    pub fn sync_failed(&self) {
        self.sync_failures.inc();
    }

    /// A sync's transaction succeeded.
    pub fn transaction(&self, report: &kproxy_syncer::SyncReport) {
        self.operations.observe(report.operations as f64);
        self.transaction_bytes.observe(report.applied.bytes as f64);
        self.transaction_seconds
            .observe(report.transaction.as_secs_f64());
    }

    /// A sync succeeded; `(internal, external)` Service ports have a Local policy and no
    /// local endpoint ([`no_local_endpoints`]).
    pub fn synced(&self, (internal, external): (i64, i64)) {
        self.no_local_endpoints
            .get_or_create(&PolicyLabel {
                traffic_policy: "internal",
            })
            .set(internal);
        self.no_local_endpoints
            .get_or_create(&PolicyLabel {
                traffic_policy: "external",
            })
            .set(external);
        self.last_timestamp.set(unix_now());
    }

    /// Services whose object, and Services whose slices, changed since the previous sync.
    pub fn changes(&self, services: u64, endpoints: u64) {
        self.service_changes.inc_by(services);
        self.endpoint_changes.inc_by(endpoints);
    }

    /// Rules for a change are in force, `latency` after the change that triggered it (an
    /// EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`).
    pub fn network_programmed(&self, latency: Duration) {
        self.network_programming.observe(latency.as_secs_f64());
    }

    /// Stale flows deleted.
    pub fn conntrack_deleted(&self, deleted: usize) {
        self.conntrack_deleted.inc_by(deleted as u64);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Answers `/metrics`.
pub fn handler(metrics: Arc<Metrics>) -> Handler {
    Arc::new(move |request: &Request| match request.path.as_str() {
        "/metrics" => Response::new(
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => Response::not_found(),
    })
}

/// Service ports with an internal (resp. external) Local policy that have usable endpoints
/// but none on this node, in some family: what kube-proxy counts.
pub fn no_local_endpoints<'a>(ports: impl IntoIterator<Item = &'a ServicePort>) -> (i64, i64) {
    let mut internal = 0;
    let mut external = 0;
    for port in ports {
        let missing = port
            .families
            .iter()
            .any(|f| f.endpoints.any_usable && f.endpoints.local.is_empty());
        if !missing {
            continue;
        }
        if port.internal_policy == TrafficPolicy::Local {
            internal += 1;
        }
        if port.effective_external_policy() == TrafficPolicy::Local {
            external += 1;
        }
    }
    (internal, external)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxy_names_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.sync_ended(true, Duration::from_millis(3));
        metrics.sync_ended(false, Duration::from_millis(1));
        metrics.changes(2, 1);
        metrics.sync_failed();
        metrics.synced((0, 0));
        metrics.network_programmed(Duration::from_millis(40));
        let text = metrics.render();
        for line in [
            "# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram",
            "kubeproxy_sync_proxy_rules_duration_seconds_count 2",
            "kubeproxy_sync_full_proxy_rules_duration_seconds_count 1",
            "kubeproxy_sync_partial_proxy_rules_duration_seconds_count 1",
            "kubeproxy_sync_proxy_rules_service_changes_total 2",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 1",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"} 0",
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"} 0",
            "# TYPE kubeproxy_sync_proxy_rules_last_timestamp_seconds gauge",
            "kubeproxy_network_programming_duration_seconds_count 1",
            "kproxy_sync_failures_total 1",
            "kproxy_conntrack_entries_deleted_total 0",
            "# TYPE kproxy_sync_operations histogram",
            "# TYPE kproxy_sync_transaction_bytes histogram",
            "# TYPE kproxy_sync_transaction_seconds histogram",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
