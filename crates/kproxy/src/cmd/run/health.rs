//! `/healthz` and `/livez`, answered as kube-proxy answers them.
//!
//! Healthy unless an update has waited longer than the timeout (2 × `--sync-period`) without
//! being applied. The initial sync counts as an update queued at startup, so a daemon that
//! cannot reach the API server (or the kernel) turns unhealthy after the timeout.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

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

    /// The current answer: kube-proxy's JSON body.
    pub fn status(&self) -> Status {
        let state = self.lock();
        let healthy = self.healthy_in(&state);
        // Go's zero time, as kube-proxy prints before its first sync.
        let last_updated = state
            .last_updated
            .and_then(|t| Timestamp::try_from(t).ok())
            .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_string());
        let body = serde_json::json!({
            "lastUpdated": last_updated,
            "currentTime": Timestamp::now().to_string(),
            // Node deletion (and the ToBeDeleted taint) is not watched yet.
            "nodeEligible": true,
        })
        .to_string();
        Status { healthy, body }
    }
}

/// Answers `/healthz` and `/livez`.
pub fn handler(health: Arc<Health>) -> Handler {
    Arc::new(move |request: &Request| match request.path.as_str() {
        "/healthz" | "/livez" => {
            let status = health.status();
            Response::json(status.healthy, status.body)
        }
        _ => Response::not_found(),
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
        let status = health.status();
        assert!(status.healthy, "the initial sync is not late yet");
        assert_eq!(body(&status)["lastUpdated"], "0001-01-01T00:00:00Z");
        assert_eq!(body(&status)["nodeEligible"], true);
        std::thread::sleep(Duration::from_millis(60));
        assert!(!health.status().healthy, "the initial sync is late");

        health.sync_started();
        assert!(!health.status().healthy, "still late while the sync runs");
        health.sync_succeeded();
        let status = health.status();
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
        assert!(!health.status().healthy);
        health.sync_started();
        health.sync_succeeded();
        assert!(health.status().healthy);
    }
}
