//! The watcher's caches: each object translated once, when it arrives, and kept as what the
//! model needs.
//!
//! kube-rs reflector stores keep every k8s-openapi object whole: at 10,000 Services with
//! 10-endpoint slices that is ~70 MB, most of it fields kproxy never reads. A [`Store`] keeps
//! the model's spec instead (a few times smaller), with the resourceVersion that tells a
//! relist what changed. Invalid objects are logged once, when they arrive, and kept without a
//! spec, so a later valid version replaces them.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_model::k8s::{self, Skip, SERVICE_NAME_LABEL};
use kproxy_model::{ServiceSpec, SliceSpec};
use kube::ResourceExt as _;

use crate::ServiceKey;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects. Shared, not
/// copied, between a store's map and the value it keys (100,000 objects at 50,000 Services).
pub(crate) type ObjectKey = (Arc<str>, Arc<str>);

/// What every cached value says about the object it came from.
pub(crate) trait Cached: Send + Sync + 'static {
    fn key(&self) -> &ObjectKey;
    fn resource_version(&self) -> Option<ResourceVersion>;
}

/// `metadata.resourceVersion`, which the watcher only compares for equality. The API
/// server's are etcd revisions, decimal numbers: kept as one, in the value itself instead of
/// a heap block per cached object. Any other text is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ResourceVersion {
    Revision(u64),
    Text(Box<str>),
}

impl ResourceVersion {
    /// The version of `object`, if it has one.
    pub(crate) fn of_object<K: kube::Resource>(object: &K) -> Option<ResourceVersion> {
        object
            .meta()
            .resource_version
            .as_deref()
            .map(ResourceVersion::of)
    }

    pub(crate) fn of(text: &str) -> ResourceVersion {
        // Only the number's one spelling: "007" and "7" are different versions.
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse() {
            Ok(revision) if canonical => ResourceVersion::Revision(revision),
            _ => ResourceVersion::Text(text.into()),
        }
    }
}

/// One cache: the current values by object key. Shared by its watch task (the only writer)
/// and the handle's snapshots.
#[derive(Debug)]
pub(crate) struct Store<V> {
    values: RwLock<HashMap<ObjectKey, Arc<V>>>,
}

impl<V> Default for Store<V> {
    fn default() -> Self {
        Store {
            values: RwLock::new(HashMap::new()),
        }
    }
}

impl<V: Cached> Store<V> {
    /// Adds or replaces `value`; returns the version it replaces.
    pub(crate) fn insert(&self, value: Arc<V>) -> Option<Arc<V>> {
        self.write().insert(value.key().clone(), value)
    }

    pub(crate) fn remove(&self, key: &ObjectKey) -> Option<Arc<V>> {
        self.write().remove(key)
    }

    /// Replaces the whole content (a completed relist); returns the old one.
    pub(crate) fn replace(&self, values: HashMap<ObjectKey, Arc<V>>) -> HashMap<ObjectKey, Arc<V>> {
        std::mem::replace(&mut *self.write(), values)
    }

    pub(crate) fn get(&self, key: &ObjectKey) -> Option<Arc<V>> {
        self.read().get(key).cloned()
    }

    /// Every value, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<V>> {
        self.read().values().cloned().collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectKey, Arc<V>>> {
        self.values.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjectKey, Arc<V>>> {
        self.values.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cached Service.
#[derive(Debug)]
pub(crate) struct CachedService {
    key: ObjectKey,
    resource_version: Option<ResourceVersion>,
    /// `None` when kproxy ignores the Service (headless, ExternalName, ...) or it is invalid.
    pub(crate) spec: Option<Arc<ServiceSpec>>,
}

impl CachedService {
    pub(crate) fn of(service: &Service) -> CachedService {
        let spec = translated(service, k8s::service(service));
        CachedService {
            // The spec's strings, when there is a spec: one copy for both.
            key: spec.as_ref().map_or_else(
                || object_key(service),
                |spec| (Arc::clone(&spec.namespace), Arc::clone(&spec.name)),
            ),
            resource_version: ResourceVersion::of_object(service),
            spec: spec.map(Arc::new),
        }
    }
}

impl Cached for CachedService {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
    fn resource_version(&self) -> Option<ResourceVersion> {
        self.resource_version.clone()
    }
}

/// An EndpointSlice as the daemon uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// The model's spec.
    pub spec: SliceSpec,
    /// `endpoints.kubernetes.io/last-change-trigger-time`: when the change that produced this
    /// version of the slice happened (kube-proxy's network-programming latency starts there).
    pub trigger_time: Option<String>,
}

/// The annotation behind [`Slice::trigger_time`].
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// A cached EndpointSlice.
#[derive(Debug)]
pub(crate) struct CachedSlice {
    key: ObjectKey,
    resource_version: Option<ResourceVersion>,
    /// The Service its `kubernetes.io/service-name` label names.
    pub(crate) service: Option<ServiceKey>,
    /// `None` when kproxy ignores the slice or it is invalid.
    pub(crate) slice: Option<Arc<Slice>>,
}

impl CachedSlice {
    pub(crate) fn of(slice: &EndpointSlice) -> CachedSlice {
        let spec = translated(slice, k8s::endpoint_slice(slice));
        // The spec's strings, when there is a spec: one copy for the key, the Service's key
        // and the spec.
        let (key, service) = match &spec {
            Some(spec) => (
                (Arc::clone(&spec.namespace), Arc::clone(&spec.name)),
                Some(ServiceKey::new(
                    Arc::clone(&spec.namespace),
                    Arc::clone(&spec.service),
                )),
            ),
            None => {
                let key = object_key(slice);
                let service = slice
                    .labels()
                    .get(SERVICE_NAME_LABEL)
                    .map(|name| ServiceKey::new(Arc::clone(&key.0), name.as_str()));
                (key, service)
            }
        };
        CachedSlice {
            resource_version: ResourceVersion::of_object(slice),
            service,
            slice: spec.map(|spec| {
                Arc::new(Slice {
                    spec,
                    trigger_time: slice.annotations().get(TRIGGER_TIME_ANNOTATION).cloned(),
                })
            }),
            key,
        }
    }
}

impl Cached for CachedSlice {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
    fn resource_version(&self) -> Option<ResourceVersion> {
        self.resource_version.clone()
    }
}

/// The node is one object, kept whole.
#[derive(Debug)]
pub(crate) struct CachedNode {
    key: ObjectKey,
    pub(crate) node: Arc<Node>,
}

impl CachedNode {
    pub(crate) fn of(node: &Node) -> CachedNode {
        CachedNode {
            key: object_key(node),
            node: Arc::new(node.clone()),
        }
    }
}

impl Cached for CachedNode {
    fn key(&self) -> &ObjectKey {
        &self.key
    }
    fn resource_version(&self) -> Option<ResourceVersion> {
        ResourceVersion::of_object(&*self.node)
    }
}

pub(crate) fn object_key<K: kube::Resource>(object: &K) -> ObjectKey {
    (
        object.namespace().unwrap_or_default().into(),
        object.name_any().into(),
    )
}

/// The spec of a translated object; skips and invalid fields are logged here, once per
/// version of the object.
fn translated<K: kube::Resource, T>(object: &K, translation: k8s::Translation<T>) -> Option<T> {
    match translation {
        Ok(Ok(spec)) => Some(spec),
        Ok(Err(skip)) => {
            log_skip(object, &skip);
            None
        }
        Err(problems) => {
            log_problems(&problems, "invalid object skipped");
            None
        }
    }
}

/// One warning per invalid field: the object, the field and what is wrong, after `what`.
pub(crate) fn log_problems(problems: &[kproxy_model::FieldError], what: &str) {
    for problem in problems {
        tracing::warn!(
            object = %problem.object,
            field = %problem.field,
            "{what}: {}",
            problem.message
        );
    }
}

fn log_skip<K: kube::Resource>(object: &K, skip: &Skip) {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    if skip.is_surprising() {
        tracing::warn!(%namespace, %name, "skipped: {skip}");
    } else {
        tracing::debug!(%namespace, %name, "skipped: {skip}");
    }
}

#[cfg(test)]
mod tests {
    use super::ResourceVersion;

    #[test]
    fn resource_versions_are_equal_only_when_their_text_is() {
        let of = ResourceVersion::of;
        assert_eq!(of("12345"), ResourceVersion::Revision(12345));
        assert_eq!(of("0"), ResourceVersion::Revision(0));
        assert_ne!(of("007"), of("7"));
        assert_eq!(of("007"), of("007"));
        assert_ne!(of("+7"), of("7"));
        assert_eq!(of("abc"), ResourceVersion::Text("abc".into()));
        assert_ne!(of("99999999999999999999999"), of("9"));
        assert_eq!(of(""), ResourceVersion::Text("".into()));
    }
}
