//! One task per cache: a kube-rs `watcher` with backoff, feeding a translated [`Store`], and a
//! tracker that turns its events into [`Changes`].
//!
//! Each event is written into the store *before* the change is recorded, so by the time the
//! consumer is told about a change, a snapshot contains it. A relist (after `410 Gone` or an
//! `InitialListFailed`) replaces the store in one step at `InitDone`; the tracker then diffs
//! the old content against the new by resourceVersion, which also catches objects deleted
//! while the watch was down.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, NodeAddress};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

use crate::cache::{Cached, CachedNode, CachedService, CachedSlice, ObjectKey, Store};
use crate::changes::{Cache, Changes, ServiceKey, Shared};

/// Turns one cache's events into the changes the consumer cares about.
pub(crate) trait Tracker<V> {
    /// `value` was added or updated; `previous` is the version the store held until now.
    fn applied(&mut self, previous: Option<&V>, value: &V, changes: &mut Changes);
    /// `value` was deleted.
    fn deleted(&mut self, value: &V, changes: &mut Changes);
}

/// Runs one watch forever: errors are logged and retried with kube-rs's default backoff
/// (exponential from 0.8 s to 30 s, with jitter), and the store keeps its content meanwhile.
/// `convert` translates each object into what the store keeps.
pub(crate) async fn run<K, V, T>(
    cache: Cache,
    api: Api<K>,
    config: watcher::Config,
    store: Arc<Store<V>>,
    convert: fn(&K) -> V,
    mut tracker: T,
    shared: Arc<Shared>,
) where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    V: Cached,
    T: Tracker<V>,
{
    let stream = watcher::watcher(api, config).default_backoff();
    let mut stream = std::pin::pin!(stream);
    // The relist in progress: the store keeps the previous content until InitDone.
    let mut relist: Option<HashMap<ObjectKey, Arc<V>>> = None;
    while let Some(event) = stream.next().await {
        let mut changes = Changes::default();
        match event {
            Ok(Event::Apply(object)) => {
                let value = Arc::new(convert(&object));
                let previous = store.insert(Arc::clone(&value));
                tracker.applied(previous.as_deref(), &value, &mut changes);
            }
            Ok(Event::Delete(object)) => {
                let key = crate::cache::object_key(&object);
                let gone = store
                    .remove(&key)
                    .unwrap_or_else(|| Arc::new(convert(&object)));
                tracker.deleted(&gone, &mut changes);
            }
            Ok(Event::Init) => relist = Some(HashMap::new()),
            Ok(Event::InitApply(object)) => {
                let value = convert(&object);
                relist
                    .get_or_insert_with(HashMap::new)
                    .insert(value.key().clone(), Arc::new(value));
            }
            Ok(Event::InitDone) => {
                let after = relist.take().unwrap_or_default();
                tracing::info!(cache = ?cache, objects = after.len(), "listed");
                let before = store.replace(after.clone());
                relisted(&mut tracker, &before, &after, &mut changes);
                shared.listed(cache, std::mem::take(&mut changes));
            }
            Err(error) => {
                tracing::warn!(cache = ?cache, error = %error, "watch failed; retrying with backoff");
            }
        }
        shared.record(changes);
    }
}

/// Reports the difference between the store before and after a relist.
fn relisted<V: Cached, T: Tracker<V>>(
    tracker: &mut T,
    before: &HashMap<ObjectKey, Arc<V>>,
    after: &HashMap<ObjectKey, Arc<V>>,
    changes: &mut Changes,
) {
    // In key order, so the trackers see a deterministic sequence.
    let after: BTreeMap<&ObjectKey, &Arc<V>> = after.iter().collect();
    for (key, value) in &after {
        match before.get(*key) {
            Some(previous) if previous.resource_version() == value.resource_version() => {}
            previous => tracker.applied(previous.map(|p| &**p), value, changes),
        }
    }
    let gone: BTreeMap<&ObjectKey, &Arc<V>> = before
        .iter()
        .filter(|(key, _)| !after.contains_key(key))
        .collect();
    for value in gone.values() {
        tracker.deleted(value, changes);
    }
}

/// Services: the Service's own key.
#[derive(Debug, Default)]
pub(crate) struct Services;

impl Tracker<CachedService> for Services {
    fn applied(
        &mut self,
        _: Option<&CachedService>,
        service: &CachedService,
        changes: &mut Changes,
    ) {
        changes.service_object(service_key(service));
    }

    fn deleted(&mut self, service: &CachedService, changes: &mut Changes) {
        changes.service_object(service_key(service));
    }
}

fn service_key(service: &CachedService) -> ServiceKey {
    let (namespace, name) = service.key();
    ServiceKey::new(Arc::clone(namespace), Arc::clone(name))
}

/// EndpointSlices: the Service named by `kubernetes.io/service-name`. A slice whose label
/// changes reports both the old and the new Service (the old one is the previous version's,
/// which the store hands over), and the tracker keeps the [`SliceIndex`] the handle reads one
/// Service's slices from.
#[derive(Debug, Default)]
pub(crate) struct Slices {
    index: Arc<Mutex<SliceIndex>>,
}

impl Slices {
    /// A tracker that keeps `index` up to date.
    pub(crate) fn new(index: Arc<Mutex<SliceIndex>>) -> Slices {
        Slices { index }
    }

    /// Records that slice `name` moved from Service `previous` to `service` (either may be
    /// none).
    fn moved(
        &mut self,
        name: &Arc<str>,
        previous: Option<&ServiceKey>,
        service: Option<&ServiceKey>,
    ) {
        if previous == service {
            return;
        }
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(previous) = previous {
            index.remove(previous, name);
        }
        if let Some(service) = service {
            index.insert(service.clone(), Arc::clone(name));
        }
    }
}

/// The names of each Service's EndpointSlices (by their `kubernetes.io/service-name` label),
/// so a partial sync reads one Service's objects without copying every cache. Updated before
/// the change is reported, like the store.
#[derive(Debug, Default)]
pub(crate) struct SliceIndex {
    /// Sorted names. Nearly every Service has one slice, so a vector sized exactly (a tree's
    /// smallest node holds eleven names: ~290 bytes per Service) keeps them. Keys and names
    /// are the cached slices' own strings.
    by_service: HashMap<ServiceKey, Vec<Arc<str>>>,
}

impl SliceIndex {
    fn insert(&mut self, service: ServiceKey, slice: Arc<str>) {
        let slices = self.by_service.entry(service).or_default();
        if let Err(at) = slices.binary_search(&slice) {
            slices.reserve_exact(1);
            slices.insert(at, slice);
        }
    }

    fn remove(&mut self, service: &ServiceKey, slice: &str) {
        if let Some(slices) = self.by_service.get_mut(service) {
            if let Ok(at) = slices.binary_search_by(|name| (**name).cmp(slice)) {
                slices.remove(at);
            }
            if slices.is_empty() {
                self.by_service.remove(service);
            }
        }
    }

    /// The slices of `service`, in name order.
    pub(crate) fn slices_of(&self, service: &ServiceKey) -> Vec<Arc<str>> {
        self.by_service.get(service).cloned().unwrap_or_default()
    }
}

impl Tracker<CachedSlice> for Slices {
    fn applied(
        &mut self,
        previous: Option<&CachedSlice>,
        slice: &CachedSlice,
        changes: &mut Changes,
    ) {
        fn trigger_time(slice: &CachedSlice) -> Option<&str> {
            slice.slice.as_ref()?.trigger_time.as_deref()
        }
        if let Some(time) = trigger_time(slice) {
            if previous.and_then(trigger_time) != Some(time) {
                changes.trigger_time(time);
            }
        }
        let previous = previous.and_then(|p| p.service.as_ref());
        self.moved(&slice.key().1, previous, slice.service.as_ref());
        for key in previous.into_iter().chain(&slice.service) {
            changes.endpoint_slice(key.clone());
        }
    }

    fn deleted(&mut self, slice: &CachedSlice, changes: &mut Changes) {
        self.moved(&slice.key().1, slice.service.as_ref(), None);
        if let Some(key) = &slice.service {
            changes.endpoint_slice(key.clone());
        }
    }
}

/// This node: flags a change of its topology labels or addresses, nothing else (Nodes are
/// updated often, for status conditions and heartbeats).
#[derive(Debug, Default)]
pub(crate) struct NodeTopology {
    last: Option<Topology>,
}

/// The parts of a Node that change the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Topology {
    labels: BTreeMap<String, String>,
    addresses: Vec<(String, String)>,
    /// A deletion timestamp, and taints: whether the node is being deleted (kproxy's
    /// `/healthz` reports it).
    deleting: bool,
    taints: Vec<String>,
}

impl Topology {
    fn of(node: &Node) -> Topology {
        let labels = node
            .labels()
            .iter()
            .filter(|(key, _)| key.starts_with("topology.kubernetes.io/"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let addresses = node
            .status
            .as_ref()
            .and_then(|status| status.addresses.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|NodeAddress { address, type_ }| (type_.clone(), address.clone()))
            .collect();
        let taints = node
            .spec
            .as_ref()
            .and_then(|spec| spec.taints.as_deref())
            .unwrap_or_default()
            .iter()
            .map(|taint| taint.key.clone())
            .collect();
        Topology {
            labels,
            addresses,
            deleting: node.metadata.deletion_timestamp.is_some(),
            taints,
        }
    }
}

impl Tracker<CachedNode> for NodeTopology {
    fn applied(&mut self, _: Option<&CachedNode>, node: &CachedNode, changes: &mut Changes) {
        let topology = Some(Topology::of(&node.node));
        if topology != self.last {
            self.last = topology;
            changes.node = true;
        }
    }

    fn deleted(&mut self, _node: &CachedNode, changes: &mut Changes) {
        if self.last.take().is_some() {
            changes.node = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kproxy_model::k8s::SERVICE_NAME_LABEL;
    use kube::api::ObjectMeta;

    fn slice(name: &str, service: Option<&str>, rv: &str) -> CachedSlice {
        let labels = service.map(|s| [(SERVICE_NAME_LABEL.to_string(), s.to_string())].into());
        CachedSlice::of(&EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels,
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            address_type: "IPv4".into(),
            endpoints: Vec::new(),
            ports: None,
        })
    }

    fn by_key(slices: Vec<CachedSlice>) -> HashMap<ObjectKey, Arc<CachedSlice>> {
        slices
            .into_iter()
            .map(|s| (s.key().clone(), Arc::new(s)))
            .collect()
    }

    fn keys(changes: &Changes) -> Vec<String> {
        changes.services.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_relabelled_slice_reports_its_old_and_new_service() {
        let mut tracker = Slices::default();
        let mut changes = Changes::default();
        let v1 = slice("web-1", Some("web"), "1");
        tracker.applied(None, &v1, &mut changes);
        assert_eq!(keys(&changes), ["ns/web"]);
        assert_eq!(changes.endpoint_slices, changes.services);
        assert!(
            changes.service_objects.is_empty(),
            "a slice is not the Service"
        );
        let mut changes = Changes::default();
        let v2 = slice("web-1", Some("api"), "2");
        tracker.applied(Some(&v1), &v2, &mut changes);
        assert_eq!(keys(&changes), ["ns/api", "ns/web"]);
        let mut changes = Changes::default();
        tracker.applied(Some(&v2), &slice("web-1", None, "3"), &mut changes);
        assert_eq!(
            keys(&changes),
            ["ns/api"],
            "an unlabelled slice belongs to no Service"
        );
    }

    #[test]
    fn the_index_follows_labels_and_deletes() {
        let index = Arc::new(Mutex::new(SliceIndex::default()));
        let mut tracker = Slices::new(Arc::clone(&index));
        let mut changes = Changes::default();
        let web = ServiceKey::new("ns", "web");
        let api = ServiceKey::new("ns", "api");
        let of = |key: &ServiceKey| -> Vec<String> {
            let slices = index.lock().unwrap().slices_of(key);
            slices.iter().map(|name| name.to_string()).collect()
        };
        let web_1 = slice("web-1", Some("web"), "1");
        tracker.applied(None, &slice("web-2", Some("web"), "1"), &mut changes);
        tracker.applied(None, &web_1, &mut changes);
        assert_eq!(of(&web), ["web-1", "web-2"]);
        let web_1_relabelled = slice("web-1", Some("api"), "2");
        tracker.applied(Some(&web_1), &web_1_relabelled, &mut changes);
        assert_eq!(of(&web), ["web-2"]);
        assert_eq!(of(&api), ["web-1"]);
        tracker.deleted(&slice("web-2", Some("web"), "3"), &mut changes);
        assert!(of(&web).is_empty());
        tracker.applied(
            Some(&web_1_relabelled),
            &slice("web-1", None, "4"),
            &mut changes,
        );
        assert!(of(&api).is_empty());
    }

    #[test]
    fn a_relist_reports_changed_new_and_vanished_objects_only() {
        let mut tracker = Slices::default();
        let before = by_key(vec![
            slice("same", Some("a"), "1"),
            slice("changed", Some("b"), "2"),
            slice("gone", Some("c"), "3"),
        ]);
        let mut changes = Changes::default();
        relisted(&mut tracker, &HashMap::new(), &before, &mut changes);
        assert_eq!(keys(&changes), ["ns/a", "ns/b", "ns/c"]);
        let after = by_key(vec![
            slice("same", Some("a"), "1"),
            slice("changed", Some("b"), "7"),
            slice("new", Some("d"), "8"),
        ]);
        let mut changes = Changes::default();
        relisted(&mut tracker, &before, &after, &mut changes);
        assert_eq!(keys(&changes), ["ns/b", "ns/c", "ns/d"]);
    }

    #[test]
    fn node_changes_count_only_for_topology_and_addresses() {
        let node = |zone: &str, ip: &str, heartbeat: &str| Node {
            metadata: ObjectMeta {
                name: Some("node-a".into()),
                labels: Some(
                    [
                        ("topology.kubernetes.io/zone".to_string(), zone.to_string()),
                        ("heartbeat".to_string(), heartbeat.to_string()),
                    ]
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(NodeStatus {
                addresses: Some(vec![NodeAddress {
                    address: ip.into(),
                    type_: "InternalIP".into(),
                }]),
                ..NodeStatus::default()
            }),
        };
        let mut tracker = NodeTopology::default();
        let mut seen = |n: &Node| {
            let mut changes = Changes::default();
            tracker.applied(None, &CachedNode::of(n), &mut changes);
            changes.node
        };
        assert!(seen(&node("z1", "10.0.0.1", "1")), "first sight");
        assert!(
            !seen(&node("z1", "10.0.0.1", "2")),
            "other labels do not count"
        );
        assert!(seen(&node("z2", "10.0.0.1", "2")));
        assert!(seen(&node("z2", "10.0.0.2", "2")));
        let mut changes = Changes::default();
        tracker.deleted(&CachedNode::of(&node("z2", "10.0.0.2", "2")), &mut changes);
        assert!(changes.node);
    }
}
