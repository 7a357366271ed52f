//! Coalescing change notifications: what changed since the consumer last looked.
//!
//! The watch tasks merge what they see into one pending [`Changes`] and wake the consumer; the
//! consumer takes everything pending at once. However many events arrive while the consumer is
//! busy, it gets one notification with their union, so a slow consumer never falls behind.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// Identifies a Service: `(namespace, name)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
///
/// The watcher keeps a key per EndpointSlice (the Service it serves) and per Service in its
/// slice index, so the strings are shared: a key made from a cached object's namespace
/// clones a pointer.
pub struct ServiceKey {
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `metadata.name`.
    pub name: Arc<str>,
}

impl ServiceKey {
    /// A key from its parts.
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> ServiceKey {
        ServiceKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What changed since the previous [`Update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Services whose object or whose EndpointSlices (by their `kubernetes.io/service-name`
    /// label) were added, updated or deleted: the union of the next two.
    pub services: BTreeSet<ServiceKey>,
    /// Services whose Service object was added, updated or deleted.
    pub service_objects: BTreeSet<ServiceKey>,
    /// Services one of whose EndpointSlices was added, updated or deleted.
    pub endpoint_slices: BTreeSet<ServiceKey>,
    /// This node's `topology.kubernetes.io/*` labels, its `status.addresses`, its taints or
    /// its deletion timestamp changed (or the Node appeared or disappeared).
    pub node: bool,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` of each EndpointSlice version
    /// that arrived with a value its previous version did not have, in arrival order: when
    /// the changes now to be programmed began (kube-proxy's network-programming latency).
    pub trigger_times: Vec<String>,
}

impl Changes {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && !self.node
    }

    fn merge(&mut self, other: Changes) {
        self.services.extend(other.services);
        self.service_objects.extend(other.service_objects);
        self.endpoint_slices.extend(other.endpoint_slices);
        self.node |= other.node;
        self.trigger_times.extend(other.trigger_times);
    }

    /// Records a change of `key`'s Service object.
    pub(crate) fn service_object(&mut self, key: ServiceKey) {
        self.services.insert(key.clone());
        self.service_objects.insert(key);
    }

    /// Records a trigger time that arrived with an EndpointSlice.
    pub(crate) fn trigger_time(&mut self, time: &str) {
        self.trigger_times.push(time.to_string());
    }

    /// Records a change of one of `key`'s EndpointSlices.
    pub(crate) fn endpoint_slice(&mut self, key: ServiceKey) {
        self.services.insert(key.clone());
        self.endpoint_slices.insert(key);
    }
}

/// A notification for the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Services, EndpointSlices and the Node have all completed their initial list: the
    /// snapshot is complete and may be programmed. Sent once, before any [`Update::Changed`].
    Synced,
    /// Objects changed after the initial sync; the snapshot already contains the change.
    Changed(Changes),
}

/// Which cache a watch task fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cache {
    Services = 0,
    EndpointSlices = 1,
    Node = 2,
}

#[derive(Debug, Default)]
struct Pending {
    /// Which caches have completed an initial list.
    listed: [bool; 3],
    /// `Update::Synced` was handed out.
    synced_sent: bool,
    changes: Changes,
    closed: bool,
}

/// The state the watch tasks and the consumer share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records changes (after the cache holds them) and wakes the consumer.
    pub(crate) fn record(&self, changes: Changes) {
        if changes.is_empty() {
            return;
        }
        self.lock().changes.merge(changes);
        self.wake.notify_one();
    }

    /// Records that a cache completed a (re)list, with what the relist changed. One lock for
    /// both: the consumer must never see the cache listed without its changes, or it could
    /// take `Synced` first and get the initial list's changes as a stale `Changed`.
    pub(crate) fn listed(&self, cache: Cache, changes: Changes) {
        let mut pending = self.lock();
        let first = !pending.listed[cache as usize];
        pending.listed[cache as usize] = true;
        let wake = first || !changes.is_empty();
        pending.changes.merge(changes);
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
    }

    /// True once every cache has completed its initial list.
    pub(crate) fn all_listed(&self) -> bool {
        self.lock().listed.iter().all(|listed| *listed)
    }

    /// Ends the update stream.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_one();
    }
}

/// The consumer's end: [`Updates::next`] waits for the next [`Update`].
#[derive(Debug)]
pub struct Updates {
    pub(crate) shared: Arc<Shared>,
}

impl Updates {
    /// Waits for the next update: first [`Update::Synced`] (once all three caches are listed),
    /// then [`Update::Changed`] with everything that changed since the previous one. Returns
    /// `None` once the [`crate::WatcherHandle`] is dropped.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            {
                let mut pending = self.shared.lock();
                if pending.closed {
                    return None;
                }
                if !pending.synced_sent {
                    if pending.listed.iter().all(|listed| *listed) {
                        pending.synced_sent = true;
                        // The snapshot taken after `Synced` contains everything seen so far.
                        pending.changes = Changes::default();
                        return Some(Update::Synced);
                    }
                } else if !pending.changes.is_empty() {
                    return Some(Update::Changed(std::mem::take(&mut pending.changes)));
                }
            }
            // A notification sent after the check above is kept as a permit, so none is lost.
            self.shared.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn service(name: &str) -> Changes {
        let mut changes = Changes::default();
        changes.service_object(ServiceKey::new("ns", name));
        changes
    }

    #[tokio::test]
    async fn synced_first_then_coalesced_changes() {
        let shared = Arc::new(Shared::default());
        let mut updates = Updates {
            shared: Arc::clone(&shared),
        };
        shared.record(service("before-sync"));
        shared.listed(Cache::Services, service("listed"));
        shared.listed(Cache::EndpointSlices, Changes::default());
        let early = tokio::time::timeout(Duration::from_millis(20), updates.next()).await;
        assert!(early.is_err(), "no update before every cache is listed");
        shared.listed(Cache::Node, service("listed-last"));
        assert_eq!(updates.next().await, Some(Update::Synced));
        shared.record(service("a"));
        shared.record(service("b"));
        shared.record(Changes {
            node: true,
            ..Changes::default()
        });
        let both: BTreeSet<_> = [ServiceKey::new("ns", "a"), ServiceKey::new("ns", "b")].into();
        let expected = Changes {
            services: both.clone(),
            service_objects: both,
            endpoint_slices: BTreeSet::new(),
            node: true,
            trigger_times: Vec::new(),
        };
        assert_eq!(updates.next().await, Some(Update::Changed(expected)));
        shared.close();
        assert_eq!(updates.next().await, None);
    }
}
