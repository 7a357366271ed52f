//! A fake Kubernetes API server for tests and benchmarks, speaking the real wire protocol.
//!
//! It listens on `127.0.0.1` (an ephemeral port) and serves HTTP/1.1 exactly as a client such as
//! kube-rs expects from a real API server, for the three resources kproxy reads: `v1` Services,
//! `discovery.k8s.io/v1` EndpointSlices and `v1` Nodes. It is the only fake in this project, so
//! what runs against it also runs against a cluster: there is no test-only client path.
//!
//! # Brief overview
//!
//! * [`FakeApiServer::start`] binds the port and returns the handle; dropping the handle stops
//!   the server and joins every thread it started.
//! * Tests write with [`FakeApiServer::apply`] and [`FakeApiServer::delete`] (plain Rust calls,
//!   not HTTP). Every write takes the next number of one global resourceVersion, as with etcd.
//! * Clients LIST (`labelSelector`, `fieldSelector`, `limit`/`continue`, `resourceVersion`)
//!   and WATCH (`watch=true`: a chunked stream of newline-delimited JSON events, with
//!   `BOOKMARK`s when `allowWatchBookmarks=true` and [`FakeApiServer::send_bookmarks`] is called).
//! * Failure injection: [`FakeApiServer::compact`] forgets history, so watches and paginated
//!   lists from older resourceVersions get `410 Gone` (`reason: Expired`; in-stream as an
//!   `ERROR` event for watches, as the real server does); [`FakeApiServer::drop_watches`] cuts
//!   every watch connection without a terminating chunk; [`FakeApiServer::stop`] and
//!   [`FakeApiServer::restart`] take the port away and bring it back, objects and history kept.
//! * [`FakeApiServer::requests`] and [`FakeApiServer::open_watches`] let tests assert what the
//!   client did ("it relisted after the 410", "its watch is back").
//!
//! Only what the standard library and serde_json provide is used: one thread accepts, one
//! thread serves each connection.
//!
//! ```
//! use kproxy_fakeapi::{FakeApiServer, Resource, Verb};
//! use serde_json::json;
//!
//! let server = FakeApiServer::start().expect("binds 127.0.0.1");
//! let stored = server
//!     .apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}))
//!     .expect("a valid object");
//! assert_eq!(stored["metadata"]["resourceVersion"], "1");
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.requests(Resource::Nodes, Verb::List), 0);
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod http;
mod selector;
mod serve;
mod store;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde::Serialize;
use serde_json::Value;

use serve::Shared;
use store::Key;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `v1` Service, at `/api/v1/services` and `/api/v1/namespaces/{ns}/services`.
    Services,
    /// `discovery.k8s.io/v1` EndpointSlice, at `/apis/discovery.k8s.io/v1/endpointslices` and
    /// `/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices`.
    EndpointSlices,
    /// `v1` Node (cluster-scoped), at `/api/v1/nodes`.
    Nodes,
}

impl Resource {
    /// The object kind: `Service`, `EndpointSlice`, `Node`.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Services => "Service",
            Resource::EndpointSlices => "EndpointSlice",
            Resource::Nodes => "Node",
        }
    }

    /// The `apiVersion` of its objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Services | Resource::Nodes => "v1",
            Resource::EndpointSlices => "discovery.k8s.io/v1",
        }
    }

    /// The plural name in URL paths.
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Services => "services",
            Resource::EndpointSlices => "endpointslices",
            Resource::Nodes => "nodes",
        }
    }

    /// True for namespaced resources.
    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Nodes)
    }

    fn list_kind(self) -> &'static str {
        match self {
            Resource::Services => "ServiceList",
            Resource::EndpointSlices => "EndpointSliceList",
            Resource::Nodes => "NodeList",
        }
    }

    fn all() -> [Resource; 3] {
        [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Nodes,
        ]
    }

    fn from_kind(kind: &str, api_version: &str) -> Option<Resource> {
        Resource::all()
            .into_iter()
            .find(|r| r.kind() == kind && r.api_version() == api_version)
    }

    fn from_plural(api_version: &str, plural: &str) -> Option<Resource> {
        Resource::all()
            .into_iter()
            .find(|r| r.plural() == plural && r.api_version() == api_version)
    }
}

/// What a counted request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// A collection GET without `watch=true` (each page counts).
    List,
    /// A collection GET with `watch=true`.
    Watch,
    /// A GET of one named object.
    Get,
}

/// Why [`FakeApiServer::apply`] refused an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyError {
    /// It did not serialize to a JSON object.
    NotAnObject,
    /// `kind`/`apiVersion` name no resource the fake serves (k8s-openapi types set both).
    UnknownKind {
        /// The object's `kind`.
        kind: String,
        /// The object's `apiVersion`.
        api_version: String,
    },
    /// No `metadata.name`.
    MissingName,
    /// Serializing the object failed.
    Serialize(String),
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::NotAnObject => f.write_str("not a JSON object"),
            ApplyError::UnknownKind { kind, api_version } => {
                write!(
                    f,
                    "the fake API server does not serve {api_version:?} {kind:?}"
                )
            }
            ApplyError::MissingName => f.write_str("no metadata.name"),
            ApplyError::Serialize(message) => write!(f, "cannot serialize the object: {message}"),
        }
    }
}

impl std::error::Error for ApplyError {}

/// A running fake API server. Dropping it stops the server and joins its threads.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    listening: Mutex<Option<Listening>>,
}

/// The accept thread and the flag that stops it.
struct Listening {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl FakeApiServer {
    /// Binds `127.0.0.1` on an ephemeral port and starts serving, with no objects.
    pub fn start() -> io::Result<FakeApiServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let addr = listener.local_addr()?;
        let server = FakeApiServer {
            shared: Arc::new(Shared::default()),
            addr,
            listening: Mutex::new(None),
        };
        server.listen(listener)?;
        Ok(server)
    }

    fn listen(&self, listener: TcpListener) -> io::Result<()> {
        self.shared.lock().stopping = false;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::clone(&self.shared);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("fakeapi-accept".into())
            .spawn(move || serve::accept_loop(shared, listener, thread_stop))?;
        *self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Listening { stop, thread });
        Ok(())
    }

    /// The base URL, `http://127.0.0.1:<port>`, for a client's configuration.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Creates or updates an object (a `serde_json::Value` or a k8s-openapi object) and returns
    /// it as stored, with `metadata.resourceVersion`, `uid` and `creationTimestamp` set.
    /// Namespaced objects without a namespace go to `default`. An update that changes nothing
    /// keeps the stored resourceVersion and notifies no watch.
    pub fn apply<T: Serialize>(&self, object: &T) -> Result<Value, ApplyError> {
        let value =
            serde_json::to_value(object).map_err(|e| ApplyError::Serialize(e.to_string()))?;
        let stored = self.shared.lock().store.apply(value)?;
        self.shared.changed.notify_all();
        Ok(stored)
    }

    /// Deletes an object (`namespace` is ignored for Nodes); returns its last state, or `None`
    /// when it did not exist.
    pub fn delete(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = Key::of(resource, namespace, name);
        let deleted = self.shared.lock().store.delete(&key);
        self.shared.changed.notify_all();
        deleted
    }

    /// The stored object, if any.
    pub fn get(&self, resource: Resource, namespace: &str, name: &str) -> Option<Value> {
        let key = Key::of(resource, namespace, name);
        self.shared.lock().store.get(&key).cloned()
    }

    /// The latest resourceVersion handed out (0 before the first write).
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().store.rv
    }

    /// Sends a `BOOKMARK` at the current resourceVersion on every open watch that asked for
    /// bookmarks (after any events not yet sent).
    pub fn send_bookmarks(&self) {
        self.shared.lock().bookmarks += 1;
        self.shared.changed.notify_all();
    }

    /// Forgets the change history: a later watch or `continue` from an older resourceVersion
    /// gets `410 Expired`, and so does an open watch that has not yet sent every change.
    pub fn compact(&self) {
        self.shared.lock().store.compact();
        self.shared.changed.notify_all();
    }

    /// Cuts every open watch connection abruptly (no terminating chunk), as a lost connection
    /// would. Clients may reconnect at once.
    pub fn drop_watches(&self) {
        self.shared.lock().watch_epoch += 1;
        self.shared.changed.notify_all();
        self.shared.close_sockets(true);
    }

    /// Stops serving: the port refuses connections and every open connection is cut, as when
    /// the API server goes down. Objects and history are kept. Does nothing when stopped.
    pub fn stop(&self) {
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(listening) = listening else {
            return;
        };
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.watch_epoch += 1;
        }
        self.shared.changed.notify_all();
        listening.stop.store(true, Ordering::SeqCst);
        let _ = listening.thread.join();
        self.shared.close_sockets(false);
        self.shared.join_connections();
    }

    /// Stops (if running) and serves again on the same port, as an API server restart does.
    pub fn restart(&self) -> io::Result<()> {
        self.stop();
        let listener = TcpListener::bind(self.addr)?;
        self.listen(listener)
    }

    /// How many requests of `verb` were made for `resource` so far.
    pub fn requests(&self, resource: Resource, verb: Verb) -> u64 {
        self.shared
            .lock()
            .requests
            .get(&(resource, verb))
            .copied()
            .unwrap_or(0)
    }

    /// How many `BOOKMARK` events were written to watches of `resource` so far.
    pub fn bookmarks_sent(&self, resource: Resource) -> u64 {
        self.shared
            .lock()
            .bookmarks_sent
            .get(&resource)
            .copied()
            .unwrap_or(0)
    }

    /// The `resourceVersion` the latest watch of `resource` asked to start from (`Some(None)`:
    /// the request had none; `None`: no watch yet). Shows where a client resumed.
    pub fn last_watch_from(&self, resource: Resource) -> Option<Option<String>> {
        self.shared.lock().last_watch_from.get(&resource).cloned()
    }

    /// How many watches of `resource` are open now.
    pub fn open_watches(&self, resource: Resource) -> usize {
        self.shared
            .lock()
            .open_watches
            .get(&resource)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish()
    }
}
