//! Watches the Kubernetes objects a kproxy node needs and keeps them cached.
//!
//! Three kube-rs watchers feeding translated caches: Services and EndpointSlices
//! (cluster-wide, without headless and other-proxy objects) and this node's Node. They recover from lost
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
//! * [`WatcherHandle::snapshot`] copies the current objects ([`Snapshot`]) as the model's
//!   specs (objects are translated once, when they arrive, and only the specs are cached);
//!   [`Snapshot::state`] joins them into `kproxy-model`'s [`kproxy_model::ProxyState`].
//!   [`WatcherHandle::service_snapshot`] does the same for one Service.
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
//!     let state = watcher.snapshot().state(watcher.node_name());
//!     // compile the state and sync it to the kernel
//! #   let _ = state;
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

mod cache;
mod changes;
mod error;
mod snapshot;
mod watch;

use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::task::JoinHandle;

pub use cache::{Slice, TRIGGER_TIME_ANNOTATION};
pub use changes::{Changes, ServiceKey, Update, Updates};
pub use error::{Error, Result};
pub use snapshot::Snapshot;

use cache::{Cached, CachedNode, CachedService, CachedSlice, Store};

use changes::{Cache, Shared};

/// The label selector of the Service and EndpointSlice watches, as kube-proxy's: no headless
/// objects, none handed to another proxy.
pub const PROXIED_SELECTOR: &str =
    "!service.kubernetes.io/headless,!service.kubernetes.io/service-proxy-name";

/// One kind of request the watcher makes to the API server: `verbs` on `resource` in API
/// `group`, as an RBAC rule names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccess {
    /// The API group: `""` for the core group.
    pub group: &'static str,
    /// The resource, plural and lower-case as in URL paths (`services`).
    pub resource: &'static str,
    /// The RBAC verbs (`list`, `watch`).
    pub verbs: &'static [&'static str],
}

/// Every request [`WatcherHandle::start`] makes: list and watch, cluster-wide, on Services,
/// EndpointSlices and Nodes (this node's only, by field selector, but RBAC cannot narrow a
/// list to one name). The kproxy ClusterRole in `manifests/` grants exactly this.
pub const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    ApiAccess {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
    },
];

/// The running watches. Dropping it stops them and ends [`Updates`].
#[derive(Debug)]
pub struct WatcherHandle {
    node_name: String,
    services: Arc<Store<CachedService>>,
    slices: Arc<Store<CachedSlice>>,
    slice_index: Arc<Mutex<watch::SliceIndex>>,
    node: Arc<Store<CachedNode>>,
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

        let slice_index = Arc::new(Mutex::new(watch::SliceIndex::default()));
        let services = Arc::new(Store::default());
        let slices = Arc::new(Store::default());
        let node = Arc::new(Store::default());
        let tasks = vec![
            runtime.spawn(watch::run(
                Cache::Services,
                Api::<Service>::all(client.clone()),
                proxied.clone(),
                Arc::clone(&services),
                CachedService::of,
                watch::Services,
                Arc::clone(&shared),
            )),
            runtime.spawn(watch::run(
                Cache::EndpointSlices,
                Api::<EndpointSlice>::all(client.clone()),
                proxied,
                Arc::clone(&slices),
                CachedSlice::of,
                watch::Slices::new(Arc::clone(&slice_index)),
                Arc::clone(&shared),
            )),
            runtime.spawn(watch::run(
                Cache::Node,
                Api::<Node>::all(client),
                this_node,
                Arc::clone(&node),
                CachedNode::of,
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
            slice_index,
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

    /// The current objects. Specs are shared, not copied, but the lists cost time in the
    /// number of objects: a partial sync takes [`service_snapshot`](Self::service_snapshot)s.
    pub fn snapshot(&self) -> Snapshot {
        // Ignored and invalid objects (no spec) are dropped by the filter_maps below.
        let mut services: Vec<Arc<CachedService>> = self.services.all();
        services.sort_by(|a, b| a.key().cmp(b.key()));
        let mut slices: Vec<Arc<CachedSlice>> = self.slices.all();
        slices.sort_by(|a, b| a.key().cmp(b.key()));
        Snapshot {
            services: services.iter().filter_map(|s| s.spec.clone()).collect(),
            endpoint_slices: slices.iter().filter_map(|s| s.slice.clone()).collect(),
            node: self.node(),
        }
    }

    /// The current objects of one Service: the Service if it exists, its EndpointSlices (by
    /// label, in name order) and the node. Costs what the Service has, not what the cluster
    /// has.
    pub fn service_snapshot(&self, key: &ServiceKey) -> Snapshot {
        let slice_names = self
            .slice_index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slices_of(key);
        let namespace = Arc::clone(&key.namespace);
        let endpoint_slices = slice_names
            .into_iter()
            .filter_map(|name| self.slices.get(&(Arc::clone(&namespace), name)))
            .filter_map(|cached| cached.slice.clone())
            .collect();
        Snapshot {
            services: self
                .services
                .get(&(namespace, Arc::clone(&key.name)))
                .and_then(|cached| cached.spec.clone())
                .into_iter()
                .collect(),
            endpoint_slices,
            node: self.node(),
        }
    }

    /// This node's Node object, if the API server has one.
    pub fn node(&self) -> Option<Arc<Node>> {
        // Cluster-scoped: the key's namespace is empty.
        self.node
            .get(&("".into(), self.node_name.as_str().into()))
            .map(|cached| Arc::clone(&cached.node))
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

    /// `API_ACCESS`'s entry for the resource of `K`, by k8s-openapi's group and plural.
    fn access_for<K: k8s_openapi::Resource>() -> &'static ApiAccess {
        let mut matching = API_ACCESS
            .iter()
            .filter(|a| a.group == K::GROUP && a.resource == K::URL_PATH_SEGMENT);
        let access = matching
            .next()
            .unwrap_or_else(|| panic!("API_ACCESS has no entry for {}", K::KIND));
        assert!(matching.next().is_none(), "{} listed twice", K::KIND);
        access
    }

    #[test]
    fn api_access_names_the_watched_types() {
        // The three types `start` builds an `Api` for, and nothing else.
        let watched = [
            access_for::<Service>(),
            access_for::<EndpointSlice>(),
            access_for::<Node>(),
        ];
        assert_eq!(API_ACCESS.len(), watched.len());
        for access in API_ACCESS {
            assert_eq!(access.verbs, ["list", "watch"], "{access:?}");
        }
    }

    /// The fake's resources, with the group of the k8s-openapi type the watcher uses.
    const RESOURCES: &[(kproxy_fakeapi::Resource, &str)] = &[
        (
            kproxy_fakeapi::Resource::Services,
            <Service as k8s_openapi::Resource>::GROUP,
        ),
        (
            kproxy_fakeapi::Resource::EndpointSlices,
            <EndpointSlice as k8s_openapi::Resource>::GROUP,
        ),
        (
            kproxy_fakeapi::Resource::Nodes,
            <Node as k8s_openapi::Resource>::GROUP,
        ),
    ];

    /// The fake's request kinds, by RBAC verb.
    const VERBS: &[(kproxy_fakeapi::Verb, &str)] = &[
        (kproxy_fakeapi::Verb::List, "list"),
        (kproxy_fakeapi::Verb::Watch, "watch"),
        (kproxy_fakeapi::Verb::Get, "get"),
    ];

    fn declared(fake: kproxy_fakeapi::Resource, group: &str) -> &'static ApiAccess {
        API_ACCESS
            .iter()
            .find(|a| a.group == group && a.resource == fake.plural())
            .unwrap_or_else(|| panic!("API_ACCESS has no entry for {}", fake.plural()))
    }

    /// The verbs of `API_ACCESS` against the requests the watcher really makes, counted by
    /// the fake API server: from start through the initial list, a change and a relist.
    #[test]
    fn api_access_is_what_the_watcher_requests() {
        use kproxy_fakeapi::FakeApiServer;
        use std::time::Duration;

        let server = FakeApiServer::start().expect("the fake API server starts");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let url = server.url().parse().expect("the fake's URL is a URI");
            let client = Client::try_from(kube::Config::new(url)).expect("a client");
            let (_watcher, mut updates) = WatcherHandle::start(client, "node-a").expect("start");
            let wait = Duration::from_secs(10);
            let first = tokio::time::timeout(wait, updates.next()).await;
            assert!(matches!(first, Ok(Some(Update::Synced))), "{first:?}");
            // A relist (after 410) and re-opened watches must use the same verbs.
            server.compact();
            server.drop_watches();
            server
                .apply(&serde_json::json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
                }))
                .expect("apply a Service");
            let changed = tokio::time::timeout(wait, updates.next()).await;
            assert!(
                matches!(changed, Ok(Some(Update::Changed(_)))),
                "{changed:?}"
            );
            // Watches open after their lists, in the background: wait for every declared
            // request, then a little longer for any undeclared one.
            let all_declared_made = || {
                RESOURCES.iter().all(|&(fake, group)| {
                    declared(fake, group).verbs.iter().all(|name| {
                        VERBS
                            .iter()
                            .any(|&(v, n)| n == *name && server.requests(fake, v) > 0)
                    })
                })
            };
            let deadline = tokio::time::Instant::now() + wait;
            while !all_declared_made() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "declared requests never made"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        for &(fake, group) in RESOURCES {
            let declared = declared(fake, group);
            for &(verb, name) in VERBS {
                let made = server.requests(fake, verb) > 0;
                assert_eq!(
                    made,
                    declared.verbs.contains(&name),
                    "{} {name}: requested {made}, declared {:?}",
                    fake.plural(),
                    declared.verbs
                );
            }
        }
    }
}
