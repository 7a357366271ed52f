//! `/healthz` and `/livez`, answered as kube-proxy answers them.
//!
//! Healthy unless an update has waited longer than the timeout (2 × `--sync-period`) without
//! being applied. The initial sync counts as an update queued at startup, so a daemon that
//! cannot reach the API server (or the kernel) turns unhealthy after the timeout. `/healthz`
//! is also unhealthy while this node is being deleted (a deletion timestamp, or the cluster
//! autoscaler's `ToBeDeletedByClusterAutoscaler` taint), so load balancers that probe it drain
//! the node first; `/livez` ignores the node, so the pod is not restarted for it.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;

use super::http::{Handler, Request, Response};

/// What the health endpoints report; shared by the sync loop and the HTTP server.
#[derive(Debug)]
pub struct Health {
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the last sync completed.
    last_updated: Option<SystemTime>,
    /// The oldest update not yet handed to a sync.
    queued: Option<Instant>,
    /// The oldest update the sync in flight applies.
    in_flight: Option<Instant>,
    /// This node is not being deleted (see [`node_eligible`]).
    node_eligible: bool,
}

/// Which of the two endpoints answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: the proxy is healthy and its node is not being deleted.
    Healthz,
    /// `/livez`: the proxy is healthy.
    Livez,
}

/// The cluster autoscaler's taint on a node it is about to delete.
const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// A node is eligible for traffic unless it is being deleted: a deletion timestamp, or the
/// cluster autoscaler's taint (kube-proxy's rule).
pub fn node_eligible(node: &Node) -> bool {
    let deleting = node.metadata.deletion_timestamp.is_some();
    let tainted = node
        .spec
        .as_ref()
        .and_then(|spec| spec.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
    !deleting && !tainted
}

/// One answer of the health endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub healthy: bool,
    pub body: String,
}

impl Health {
    /// Unhealthy when an update waits longer than `timeout`; the initial sync is owed from now.
    pub fn new(timeout: Duration) -> Health {
        Health {
            timeout,
            state: Mutex::new(State {
                last_updated: None,
                queued: Some(Instant::now()),
                in_flight: None,
                node_eligible: true,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An update arrived that is not programmed yet.
    pub fn queued(&self) {
        self.lock().queued.get_or_insert_with(Instant::now);
    }

    /// A sync starts: it applies every update queued so far.
    pub fn sync_started(&self) {
        let mut state = self.lock();
        state.in_flight = state.queued.take().or(state.in_flight);
    }

    /// The sync in flight succeeded.
    pub fn sync_succeeded(&self) {
        let mut state = self.lock();
        state.in_flight = None;
        state.last_updated = Some(SystemTime::now());
    }

    /// The sync in flight failed: its updates are queued again, as old as they were.
    pub fn sync_failed(&self) {
        let mut state = self.lock();
        if let Some(since) = state.in_flight.take() {
            state.queued = Some(state.queued.map_or(since, |q| q.min(since)));
        }
    }

    /// Records whether the node is eligible ([`node_eligible`]); eligible until told otherwise.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.lock().node_eligible = eligible;
    }

    /// True unless an update has waited longer than the timeout.
    pub fn healthy(&self) -> bool {
        let state = self.lock();
        self.healthy_in(&state)
    }

    fn healthy_in(&self, state: &State) -> bool {
        let oldest = match (state.queued, state.in_flight) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        oldest.is_none_or(|since| since.elapsed() <= self.timeout)
    }

    /// The current answer of `probe`: kube-proxy's JSON body.
    pub fn status(&self, probe: Probe) -> Status {
        let state = self.lock();
        let healthy = self.healthy_in(&state);
        // Go's zero time, as kube-proxy prints before its first sync.
        let last_updated = state
            .last_updated
            .and_then(|t| Timestamp::try_from(t).ok())
            .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_string());
        let mut body = serde_json::json!({
            "lastUpdated": last_updated,
            "currentTime": Timestamp::now().to_string(),
        });
        let healthy = match probe {
            Probe::Healthz => {
                body["nodeEligible"] = state.node_eligible.into();
                healthy && state.node_eligible
            }
            Probe::Livez => healthy,
        };
        Status {
            healthy,
            body: body.to_string(),
        }
    }
}

/// Answers `/healthz` and `/livez`.
pub fn handler(health: Arc<Health>) -> Handler {
    Arc::new(move |request: &Request| {
        let probe = match request.path.as_str() {
            "/healthz" => Probe::Healthz,
            "/livez" => Probe::Livez,
            _ => return Response::not_found(),
        };
        let status = health.status(probe);
        Response::json(status.healthy, status.body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(status: &Status) -> serde_json::Value {
        serde_json::from_str(&status.body).expect("JSON body")
    }

    #[test]
    fn healthy_until_an_update_waits_too_long() {
        let health = Health::new(Duration::from_millis(40));
        let status = health.status(Probe::Healthz);
        assert!(status.healthy, "the initial sync is not late yet");
        assert_eq!(body(&status)["lastUpdated"], "0001-01-01T00:00:00Z");
        assert_eq!(body(&status)["nodeEligible"], true);
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            !health.status(Probe::Healthz).healthy,
            "the initial sync is late"
        );

        health.sync_started();
        assert!(
            !health.status(Probe::Healthz).healthy,
            "still late while the sync runs"
        );
        health.sync_succeeded();
        let status = health.status(Probe::Healthz);
        assert!(status.healthy);
        let last = body(&status)["lastUpdated"].as_str().unwrap().to_string();
        assert!(last.parse::<Timestamp>().is_ok(), "{last} is RFC 3339");
        let now = body(&status)["currentTime"].as_str().unwrap().to_string();
        assert!(now.parse::<Timestamp>().is_ok(), "{now} is RFC 3339");

        // A failed sync re-queues its update with its original age.
        health.queued();
        health.sync_started();
        std::thread::sleep(Duration::from_millis(60));
        health.queued();
        health.sync_failed();
        assert!(!health.status(Probe::Healthz).healthy);
        health.sync_started();
        health.sync_succeeded();
        assert!(health.status(Probe::Healthz).healthy);
    }

    #[test]
    fn a_node_being_deleted_fails_healthz_but_not_livez() {
        let health = Health::new(Duration::from_secs(60));
        health.set_node_eligible(false);
        let healthz = health.status(Probe::Healthz);
        assert!(!healthz.healthy);
        assert_eq!(body(&healthz)["nodeEligible"], false);
        let livez = health.status(Probe::Livez);
        assert!(livez.healthy);
        assert!(body(&livez).get("nodeEligible").is_none(), "{}", livez.body);
    }

    #[test]
    fn deletion_and_the_autoscaler_taint_make_a_node_ineligible() {
        use k8s_openapi::api::core::v1::{NodeSpec, Taint};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let mut node = Node::default();
        assert!(node_eligible(&node));
        node.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "node.kubernetes.io/unschedulable".into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            }]),
            ..NodeSpec::default()
        });
        assert!(node_eligible(&node), "cordoned is still eligible");
        if let Some(taints) = node.spec.as_mut().and_then(|s| s.taints.as_mut()) {
            taints.push(Taint {
                key: TO_BE_DELETED_TAINT.into(),
                effect: "NoSchedule".into(),
                ..Taint::default()
            });
        }
        assert!(!node_eligible(&node));
        let mut deleted = Node::default();
        deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!node_eligible(&deleted));
    }
}
