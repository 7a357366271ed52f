//! A copy of the current objects, and its translation into the model's desired state.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kproxy_model::k8s::{self, Skip};
use kproxy_model::{FieldError, NodeInfo, ProxyState};
use kube::ResourceExt;

/// The objects in the caches at one moment, each list sorted by namespace and name.
///
/// Each cache is read atomically, one after the other; a change that lands between two reads
/// is also reported by the next [`crate::Update::Changed`], so a consumer that takes the
/// changes first and the snapshot second never misses one.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services (headless and other-proxy ones are filtered out by the watch's selector).
    pub services: Vec<Arc<Service>>,
    /// EndpointSlices (same selector).
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// This node's Node object, if the API server has one.
    pub node: Option<Arc<Node>>,
}

/// A snapshot translated by `kproxy-model`.
#[derive(Debug, Clone)]
pub struct Translated {
    /// The desired state for this node from the valid objects.
    pub state: ProxyState,
    /// Every invalid field of every rejected object (the rest is still used).
    pub problems: Vec<FieldError>,
}

impl Snapshot {
    /// Translates every object with `kproxy_model::k8s` and joins them for `node_name`, as
    /// `kproxy dry-run` does for manifests: skipped objects are logged at debug level (warn
    /// when surprising), invalid ones are returned in [`Translated::problems`].
    pub fn translate(&self, node_name: &str) -> Translated {
        let mut problems = Vec::new();
        let services = translate(&self.services, k8s::service, &mut problems);
        let slices = translate(&self.endpoint_slices, k8s::endpoint_slice, &mut problems);
        let node = match self.node.as_deref().map(k8s::node) {
            Some(Ok(info)) => info,
            Some(Err(errors)) => {
                problems.extend(errors);
                NodeInfo::named(node_name)
            }
            None => NodeInfo::named(node_name),
        };
        Translated {
            state: ProxyState::build(node, &services, &slices),
            problems,
        }
    }
}

fn translate<K: kube::Resource, T>(
    objects: &[Arc<K>],
    convert: impl Fn(&K) -> k8s::Translation<T>,
    problems: &mut Vec<FieldError>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(objects.len());
    for object in objects {
        match convert(object) {
            Ok(Ok(spec)) => out.push(spec),
            Ok(Err(skip)) => log_skip(object.as_ref(), &skip),
            Err(errors) => problems.extend(errors),
        }
    }
    out
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

/// Sorts by namespace, then name.
pub(crate) fn sorted<K: kube::Resource>(mut objects: Vec<Arc<K>>) -> Vec<Arc<K>> {
    objects.sort_by_cached_key(|o| (o.namespace().unwrap_or_default(), o.name_any()));
    objects
}
