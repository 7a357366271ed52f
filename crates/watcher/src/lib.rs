//! Watches the Kubernetes objects a kproxy node needs and keeps them cached.
//!
//! Three kube-rs watchers with reflector stores: Services and EndpointSlices (cluster-wide,
//! without headless and other-proxy objects) and this node's Node. They recover from lost
//! watches, `410 Gone` (by relisting), API server restarts and network errors by themselves,
//! with kube-rs's default backoff; the caches keep their last content meanwhile, and failures
//! are logged with `tracing`.
//!
//! # Brief overview
//!
//! * [`WatcherHandle::start`] spawns the watches and returns the handle and the [`Updates`]
//!   receiver. Dropping the handle stops the watches.
//! * [`Updates::next`] yields [`Update::Synced`] once every cache has completed its initial
//!   list — nothing may be programmed before — then [`Update::Changed`] with the [`Changes`]
//!   since the previous update: the affected Services as [`ServiceKey`]s (a slice counts for
//!   the Service in its `kubernetes.io/service-name` label) and whether the node's topology
//!   labels or addresses changed. Updates coalesce: a slow consumer gets one union, not a
//!   backlog.
//! * [`WatcherHandle::snapshot`] copies the current objects ([`Snapshot`]);
//!   [`Snapshot::translate`] turns them into `kproxy-model`'s [`kproxy_model::ProxyState`].
//!
//! ```no_run
//! # async fn daemon() -> Result<(), Box<dyn std::error::Error>> {
//! use kproxy_watcher::{Update, WatcherHandle};
//!
//! let client = kube::Client::try_default().await?;
//! let (watcher, mut updates) = WatcherHandle::start(client, "node-a")?;
//! while let Some(update) = updates.next().await {
//!     if let Update::Changed(changes) = &update {
//!         tracing::debug!(services = changes.services.len(), node = changes.node, "changed");
//!     }
//!     let translated = watcher.snapshot().translate(watcher.node_name());
//!     // compile translated.state and sync it to the kernel
//! #   let _ = translated;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The consumer is told only *which* Services changed; it reads their content from a snapshot.
//! This keeps one source of truth (the reflector stores) and makes a missed or merged
//! notification harmless.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod changes;
mod error;
mod snapshot;
mod watch;

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::task::JoinHandle;

pub use changes::{Changes, ServiceKey, Update, Updates};
pub use error::{Error, Result};
pub use snapshot::{Snapshot, Translated};

use changes::{Cache, Shared};

/// The label selector of the Service and EndpointSlice watches, as kube-proxy's: no headless
/// objects, none handed to another proxy.
pub const PROXIED_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// The running watches. Dropping it stops them and ends [`Updates`].
#[derive(Debug)]
pub struct WatcherHandle {
    node_name: String,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    node: Store<Node>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl WatcherHandle {
    /// Starts watching Services and EndpointSlices (label selector [`PROXIED_SELECTOR`]) and
    /// the Node named `node_name` (field selector `metadata.name=<node_name>`), on the current
    /// Tokio runtime.
    ///
    /// Fails only when `node_name` is not a valid object name or no runtime is running; the
    /// API server is contacted in the background.
    pub fn start(client: Client, node_name: impl Into<String>) -> Result<(WatcherHandle, Updates)> {
        let node_name = node_name.into();
        error::check_node_name(&node_name)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(Error::NoRuntime)?;
        let shared = Arc::new(Shared::default());
        let proxied = watcher::Config::default().labels(PROXIED_SELECTOR);
        let this_node = watcher::Config::default().fields(&format!("metadata.name={node_name}"));

        let (services, services_writer) = reflector::store();
        let (slices, slices_writer) = reflector::store();
        let (node, node_writer) = reflector::store();
        let tasks = vec![
            runtime.spawn(watch::run(
                Cache::Services,
                Api::<Service>::all(client.clone()),
                proxied.clone(),
                (services.clone(), services_writer),
                watch::Services,
                Arc::clone(&shared),
            )),
            runtime.spawn(watch::run(
                Cache::EndpointSlices,
                Api::<EndpointSlice>::all(client.clone()),
                proxied,
                (slices.clone(), slices_writer),
                watch::Slices::default(),
                Arc::clone(&shared),
            )),
            runtime.spawn(watch::run(
                Cache::Node,
                Api::<Node>::all(client),
                this_node,
                (node.clone(), node_writer),
                watch::NodeTopology::default(),
                Arc::clone(&shared),
            )),
        ];
        let updates = Updates {
            shared: Arc::clone(&shared),
        };
        let handle = WatcherHandle {
            node_name,
            services,
            slices,
            node,
            shared,
            tasks,
        };
        Ok((handle, updates))
    }

    /// The node this watcher was started for.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// True once every cache has completed its initial list.
    pub fn is_synced(&self) -> bool {
        self.shared.all_listed()
    }

    /// The current objects. Cheap: objects are shared, not copied.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            services: snapshot::sorted(self.services.state()),
            endpoint_slices: snapshot::sorted(self.slices.state()),
            node: self
                .node
                .state()
                .into_iter()
                .find(|n| n.metadata.name.as_deref() == Some(self.node_name.as_str())),
        }
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_model::k8s::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};

    #[test]
    fn the_selector_names_the_models_labels() {
        assert_eq!(
            PROXIED_SELECTOR,
            format!("!{HEADLESS_LABEL},!{SERVICE_PROXY_NAME_LABEL}")
        );
    }
}
