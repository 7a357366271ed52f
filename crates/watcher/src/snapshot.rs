//! A copy of the current cache content, and the model's desired state built from it.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Node;
use kproxy_model::k8s;
use kproxy_model::{NodeInfo, ProxyState, ServiceSpec};

use crate::cache::Slice;

/// The proxied objects in the caches at one moment, as the model's specs, each list sorted by
/// namespace and name. Objects kproxy ignores (headless, ExternalName, other proxies) and
/// invalid ones are not here: they were logged when they arrived.
///
/// Each cache is read atomically, one after the other; a change that lands between two reads
/// is also reported by the next [`crate::Update::Changed`], so a consumer that takes the
/// changes first and the snapshot second never misses one.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Services.
    pub services: Vec<Arc<ServiceSpec>>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<Arc<Slice>>,
    /// This node's Node object, if the API server has one.
    pub node: Option<Arc<Node>>,
}

impl Snapshot {
    /// Joins the Services and slices for `node_name`, as `kproxy dry-run` does for manifests.
    /// An invalid Node object is logged and the node is then known by name only.
    pub fn state(&self, node_name: &str) -> ProxyState {
        let node = match self.node.as_deref().map(k8s::node) {
            Some(Ok(info)) => info,
            Some(Err(errors)) => {
                crate::cache::log_problems(&errors, "invalid Node field ignored");
                NodeInfo::named(node_name)
            }
            None => NodeInfo::named(node_name),
        };
        ProxyState::build(
            node,
            self.services.iter().map(|s| &**s),
            self.endpoint_slices.iter().map(|s| &s.spec),
        )
    }
}
