//! Connections, routing, LIST and WATCH: one thread per connection.
//!
//! A watch thread sleeps on the shared condition variable and wakes for every write, every
//! `send_bookmarks()`, `drop_watches()` and shutdown, and at least once a second to honour
//! `timeoutSeconds`. Socket writes happen outside the store's lock.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{self, Request};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{set_resource_version, Change, Key, Store};
use crate::{Resource, Verb};

/// A watch without `timeoutSeconds` ends after this long.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// Everything the handle and the connection threads share.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) changed: Condvar,
    pub(crate) connections: Mutex<Connections>,
}

/// Guarded by [`Shared::state`].
#[derive(Default)]
pub(crate) struct State {
    pub(crate) store: Store,
    pub(crate) requests: BTreeMap<(Resource, Verb), u64>,
    pub(crate) open_watches: BTreeMap<Resource, usize>,
    /// Incremented by `send_bookmarks()`.
    pub(crate) bookmarks: u64,
    /// Bookmarks written to watch streams, per resource.
    pub(crate) bookmarks_sent: BTreeMap<Resource, u64>,
    /// The `resourceVersion` parameter of the latest watch request, per resource.
    pub(crate) last_watch_from: BTreeMap<Resource, Option<String>>,
    /// Incremented by `drop_watches()` and `stop()`: older watches close abruptly.
    pub(crate) watch_epoch: u64,
    /// `stop()` is under way: connections end, and watches starting now close at once (they
    /// may have read the epoch after `stop()` bumped it).
    pub(crate) stopping: bool,
}

/// Open connections, so `drop_watches()` and `stop()` can close their sockets.
#[derive(Default)]
pub(crate) struct Connections {
    next_id: u64,
    /// The socket and whether it carries a watch.
    sockets: HashMap<u64, (TcpStream, bool)>,
    threads: Vec<JoinHandle<()>>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn connections(&self) -> MutexGuard<'_, Connections> {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Shuts down the sockets of open watches (or of every connection).
    pub(crate) fn close_sockets(&self, watches_only: bool) {
        for (socket, is_watch) in self.connections().sockets.values() {
            if *is_watch || !watches_only {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
    }

    /// Waits for every connection thread to end.
    pub(crate) fn join_connections(&self) {
        let threads = std::mem::take(&mut self.connections().threads);
        for thread in threads {
            let _ = thread.join();
        }
    }

    fn set_watching(&self, id: u64) {
        if let Some(entry) = self.connections().sockets.get_mut(&id) {
            entry.1 = true;
        }
    }
}

/// Accepts connections until `stop` is set. The listener is polled rather than woken by a
/// connection, so `stop` works from any thread, in any network namespace.
pub(crate) fn accept_loop(shared: Arc<Shared>, listener: TcpListener, stop: Arc<AtomicBool>) {
    let polling = listener.set_nonblocking(true).is_ok();
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let stream = match stream {
            Ok(stream) if !polling || stream.set_nonblocking(false).is_ok() => stream,
            _ => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let Ok(registered) = stream.try_clone() else {
            continue;
        };
        let mut connections = shared.connections();
        connections.threads.retain(|t| !t.is_finished());
        let id = connections.next_id;
        connections.next_id += 1;
        connections.sockets.insert(id, (registered, false));
        let for_thread = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("fakeapi-conn".into())
            .spawn(move || {
                serve_connection(&for_thread, stream, id);
                for_thread.connections().sockets.remove(&id);
            });
        match spawned {
            Ok(thread) => connections.threads.push(thread),
            Err(_) => {
                connections.sockets.remove(&id);
            }
        }
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut out = stream;
    while let Ok(Some(request)) = http::read_request(&mut reader) {
        if shared.lock().stopping {
            return;
        }
        let close = request.close;
        let written = match handle(shared, &request) {
            Reply::Json(code, body) => http::write_json(&mut out, code, &body.to_string(), close),
            Reply::Text(code, body) => http::write_json(&mut out, code, &body, close),
            Reply::Watch(watch) => {
                shared.set_watching(id);
                let _ = serve_watch(shared, &mut out, &watch);
                return;
            }
        };
        if written.is_err() || close {
            return;
        }
    }
}

enum Reply {
    Json(u16, Value),
    /// JSON already serialized.
    Text(u16, String),
    Watch(Box<Watch>),
}

/// What a request is for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Version,
    Collection {
        resource: Resource,
        namespace: Option<String>,
    },
    Object {
        resource: Resource,
        namespace: String,
        name: String,
    },
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api", "v1", rest @ ..] => ("v1", rest),
        ["apis", group, version, rest @ ..] => {
            if format!("{group}/{version}") != "discovery.k8s.io/v1" {
                return None;
            }
            ("discovery.k8s.io/v1", rest)
        }
        _ => return None,
    };
    let resource_of = |plural: &str| Resource::from_plural(group_version, plural);
    match rest {
        [plural] => Some(Route::Collection {
            resource: resource_of(plural)?,
            namespace: None,
        }),
        ["namespaces", namespace, plural] => {
            let resource = resource_of(plural).filter(|r| r.namespaced())?;
            Some(Route::Collection {
                resource,
                namespace: Some((*namespace).to_string()),
            })
        }
        [plural, name] => {
            let resource = resource_of(plural).filter(|r| !r.namespaced())?;
            Some(Route::Object {
                resource,
                namespace: String::new(),
                name: (*name).to_string(),
            })
        }
        ["namespaces", namespace, plural, name] => {
            let resource = resource_of(plural).filter(|r| r.namespaced())?;
            Some(Route::Object {
                resource,
                namespace: (*namespace).to_string(),
                name: (*name).to_string(),
            })
        }
        _ => None,
    }
}

fn handle(shared: &Shared, request: &Request) -> Reply {
    if request.method != "GET" {
        let message = format!(
            "the fake API server only serves GET, not {}",
            request.method
        );
        return Reply::Json(405, http::status(405, "MethodNotAllowed", &message));
    }
    match route(&request.path) {
        Some(Route::Version) => Reply::Json(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-kproxy-fakeapi"}),
        ),
        Some(Route::Object {
            resource,
            namespace,
            name,
        }) => {
            let mut state = shared.lock();
            *state.requests.entry((resource, Verb::Get)).or_default() += 1;
            let key = Key {
                resource,
                namespace,
                name,
            };
            match state.store.get(&key) {
                Some(object) => Reply::Json(200, object.clone()),
                None => {
                    let message = format!("{} \"{}\" not found", resource.plural(), key.name);
                    Reply::Json(404, http::status(404, "NotFound", &message))
                }
            }
        }
        Some(Route::Collection {
            resource,
            namespace,
        }) => {
            let watching = matches!(request.param("watch"), Some("true" | "1"));
            let verb = if watching { Verb::Watch } else { Verb::List };
            {
                let mut state = shared.lock();
                *state.requests.entry((resource, verb)).or_default() += 1;
                if watching {
                    let from = request.param("resourceVersion").map(str::to_string);
                    state.last_watch_from.insert(resource, from);
                }
            }
            let bad_request =
                |message: String| Reply::Json(400, http::status(400, "BadRequest", &message));
            let filter = match Filter::new(resource, namespace, request) {
                Ok(filter) => filter,
                Err(message) => return bad_request(message),
            };
            if watching {
                match Watch::new(filter, request) {
                    Ok(watch) => Reply::Watch(Box::new(watch)),
                    Err(message) => bad_request(message),
                }
            } else {
                let (code, body) = list(&shared.lock().store, &filter, request);
                Reply::Text(code, body)
            }
        }
        None => {
            let message = format!(
                "the server could not find the requested resource {}",
                request.path
            );
            Reply::Json(404, http::status(404, "NotFound", &message))
        }
    }
}

/// Which objects a LIST or WATCH sees.
struct Filter {
    resource: Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn new(
        resource: Resource,
        namespace: Option<String>,
        request: &Request,
    ) -> Result<Filter, String> {
        Ok(Filter {
            resource,
            namespace,
            labels: LabelSelector::parse(request.param("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(request.param("fieldSelector").unwrap_or(""))?,
        })
    }

    /// A label or field selector narrows the list.
    fn has_selector(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    fn matches(&self, key: &Key, object: &Value) -> bool {
        key.resource == self.resource
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }
}

/// One page of a list, as JSON text.
fn list(store: &Store, filter: &Filter, request: &Request) -> (u16, String) {
    let bad = |message: String| (400, http::status(400, "BadRequest", &message).to_string());
    let limit = match request.param("limit").map(str::parse::<usize>) {
        None | Some(Ok(0)) => None,
        Some(Ok(limit)) => Some(limit),
        Some(Err(_)) => return bad("limit must be a non-negative integer".into()),
    };
    let (rv, after) = match request.param("continue").filter(|c| !c.is_empty()) {
        Some(token) => match parse_continue(token) {
            Some((rv, key)) => (rv, Some(key)),
            None => return bad(format!("invalid continue token {token:?}")),
        },
        None => match (
            request.param("resourceVersion"),
            request.param("resourceVersionMatch"),
        ) {
            (Some(rv), Some("Exact")) => match rv.parse::<u64>() {
                Ok(rv) if rv > store.rv => {
                    let message =
                        format!("Too large resource version: {rv}, current: {}", store.rv);
                    return (504, http::status(504, "Timeout", &message).to_string());
                }
                Ok(rv) => (rv, None),
                Err(_) => return bad(format!("invalid resourceVersion {rv:?}")),
            },
            _ => (store.rv, None),
        },
    };
    let Some(objects) = store.objects_after(filter.resource, rv, after.as_ref()) else {
        let message = if after.is_some() {
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .to_string()
        } else {
            format!("too old resource version: {rv} ({})", store.compacted)
        };
        return (410, http::status(410, "Expired", &message).to_string());
    };
    let mut matching = objects.filter(|(key, object)| filter.matches(key, object));
    let page: Vec<(&Key, &Value)> = match limit {
        Some(limit) => matching.by_ref().take(limit).collect(),
        None => matching.by_ref().collect(),
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    // Like the real API server, the rest is counted only for lists without a selector (it
    // cannot count a selector's matches without evaluating it on every remaining object).
    let more = if filter.has_selector() {
        matching.next().is_some()
    } else {
        let remaining = matching.count();
        if remaining > 0 {
            metadata["remainingItemCount"] = json!(remaining);
        }
        remaining > 0
    };
    if more {
        if let Some((key, _)) = page.last() {
            metadata["continue"] = Value::String(format!("{rv}/{}/{}", key.namespace, key.name));
        }
    }
    let resource = filter.resource;
    let body = ListBody {
        kind: resource.list_kind(),
        api_version: resource.api_version(),
        metadata: &metadata,
        items: page.into_iter().map(|(_, object)| Item(object)).collect(),
    };
    match serde_json::to_string(&body) {
        Ok(text) => (200, text),
        Err(error) => (
            500,
            http::status(500, "InternalError", &error.to_string()).to_string(),
        ),
    }
}

/// A list response, serialized straight from the stored objects.
#[derive(serde::Serialize)]
struct ListBody<'a> {
    kind: &'a str,
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    metadata: &'a Value,
    items: Vec<Item<'a>>,
}

/// A stored object as a list item: without `kind` and `apiVersion`, serialized in place (a
/// page of 500 objects was deep-copied only to drop those two fields).
struct Item<'a>(&'a Value);

impl serde::Serialize for Item<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.as_object() {
            Some(fields) => serializer.collect_map(
                fields
                    .iter()
                    .filter(|(name, _)| *name != "kind" && *name != "apiVersion"),
            ),
            None => self.0.serialize(serializer),
        }
    }
}

/// `rv/namespace/name` → (rv, (namespace, name)).
fn parse_continue(token: &str) -> Option<(u64, (String, String))> {
    let mut parts = token.splitn(3, '/');
    let rv = parts.next()?.parse().ok()?;
    let namespace = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    Some((rv, (namespace, name)))
}

/// One watch request, parsed.
struct Watch {
    filter: Filter,
    /// `None`: start with the current objects as ADDED events.
    from: Option<u64>,
    bookmarks: bool,
    initial_events_end: bool,
    timeout: Duration,
}

impl Watch {
    fn new(filter: Filter, request: &Request) -> Result<Watch, String> {
        let from = match request.param("resourceVersion") {
            None | Some("" | "0") => None,
            Some(rv) => Some(
                rv.parse::<u64>()
                    .map_err(|_| format!("invalid resourceVersion {rv:?}"))?,
            ),
        };
        let initial_events_end = request.param("sendInitialEvents") == Some("true");
        let timeout = match request.param("timeoutSeconds") {
            None => DEFAULT_WATCH_TIMEOUT,
            Some(seconds) => Duration::from_secs(
                seconds
                    .parse()
                    .map_err(|_| format!("invalid timeoutSeconds {seconds:?}"))?,
            ),
        };
        Ok(Watch {
            from: if initial_events_end { None } else { from },
            filter,
            bookmarks: request.param("allowWatchBookmarks") == Some("true"),
            initial_events_end,
            timeout,
        })
    }

    /// The event a change produces for this watch, if any: an object that starts or stops
    /// matching the selectors is ADDED or DELETED, as the real watch cache reports it.
    fn event(&self, change: &Change) -> Option<String> {
        let seen = |object: &Option<Value>| {
            object
                .as_ref()
                .is_some_and(|o| self.filter.matches(&change.key, o))
        };
        let before = change.before.as_ref().filter(|_| seen(&change.before));
        let after = change.after.as_ref().filter(|_| seen(&change.after));
        let (kind, object) = match (before, after) {
            (None, None) => return None,
            (None, Some(after)) => ("ADDED", after.clone()),
            (Some(_), Some(after)) => ("MODIFIED", after.clone()),
            (Some(before), None) => {
                let mut gone = before.clone();
                set_resource_version(&mut gone, change.rv);
                ("DELETED", gone)
            }
        };
        Some(json!({"type": kind, "object": object}).to_string())
    }

    fn bookmark(&self, rv: u64, initial_events_end: bool) -> String {
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let resource = self.filter.resource;
        json!({"type": "BOOKMARK", "object": {
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": metadata,
        }})
        .to_string()
    }
}

/// Counts an open watch for as long as it lives.
struct OpenWatch<'a> {
    shared: &'a Shared,
    resource: Resource,
}

impl Drop for OpenWatch<'_> {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(open) = state.open_watches.get_mut(&self.resource) {
            *open = open.saturating_sub(1);
        }
    }
}

/// How a watch ends.
enum End {
    /// Terminating chunk: the client resumes from its last resourceVersion.
    Clean,
    /// Socket shut down mid-stream, as when a connection is lost.
    Abrupt,
}

fn serve_watch(shared: &Shared, out: &mut TcpStream, watch: &Watch) -> io::Result<()> {
    let deadline = Instant::now() + watch.timeout;
    let mut lines = Vec::new();
    let (mut scanned, epoch, mut bookmarks) = {
        let mut state = shared.lock();
        *state.open_watches.entry(watch.filter.resource).or_default() += 1;
        let scanned = match watch.from {
            Some(rv) => rv,
            None => {
                for (key, object) in state.store.current(watch.filter.resource) {
                    if watch.filter.matches(key, object) {
                        lines.push(json!({"type": "ADDED", "object": object}).to_string());
                    }
                }
                if watch.initial_events_end {
                    lines.push(watch.bookmark(state.store.rv, true));
                }
                state.store.rv
            }
        };
        (scanned, state.watch_epoch, state.bookmarks)
    };
    let _open = OpenWatch {
        shared,
        resource: watch.filter.resource,
    };
    http::write_stream_head(out)?;
    // Bookmarks in `lines`, counted once written.
    let mut queued_bookmarks = 0;
    loop {
        if !lines.is_empty() {
            http::write_chunks(out, &lines)?;
            lines.clear();
        }
        if queued_bookmarks > 0 {
            *shared
                .lock()
                .bookmarks_sent
                .entry(watch.filter.resource)
                .or_default() += queued_bookmarks;
            queued_bookmarks = 0;
        }
        let mut state = shared.lock();
        let end = loop {
            if state.watch_epoch != epoch || state.stopping {
                break Some(End::Abrupt);
            }
            match state.store.changes_since(scanned) {
                None => {
                    let message = format!(
                        "too old resource version: {scanned} ({})",
                        state.store.compacted
                    );
                    let error = http::status(410, "Expired", &message);
                    lines.push(json!({"type": "ERROR", "object": error}).to_string());
                    break Some(End::Clean);
                }
                Some(changes) => lines.extend(changes.filter_map(|change| watch.event(change))),
            }
            scanned = scanned.max(state.store.rv);
            if state.bookmarks != bookmarks {
                bookmarks = state.bookmarks;
                if watch.bookmarks {
                    lines.push(watch.bookmark(scanned, false));
                    queued_bookmarks += 1;
                }
            }
            if !lines.is_empty() {
                break None;
            }
            let now = Instant::now();
            if now >= deadline {
                break Some(End::Clean);
            }
            let wait = (deadline - now).min(Duration::from_secs(1));
            state = shared
                .changed
                .wait_timeout(state, wait)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        };
        drop(state);
        match end {
            None => continue,
            Some(End::Clean) => {
                http::write_chunks(out, &lines)?;
                return http::write_last_chunk(out);
            }
            Some(End::Abrupt) => {
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let collection = |resource, namespace: Option<&str>| {
            Some(Route::Collection {
                resource,
                namespace: namespace.map(str::to_string),
            })
        };
        assert_eq!(
            route("/api/v1/services"),
            collection(Resource::Services, None)
        );
        assert_eq!(
            route("/api/v1/namespaces/ns/services"),
            collection(Resource::Services, Some("ns"))
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/endpointslices"),
            collection(Resource::EndpointSlices, None)
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices"),
            collection(Resource::EndpointSlices, Some("ns"))
        );
        assert_eq!(route("/api/v1/nodes"), collection(Resource::Nodes, None));
        assert_eq!(
            route("/api/v1/nodes/node-a"),
            Some(Route::Object {
                resource: Resource::Nodes,
                namespace: String::new(),
                name: "node-a".into()
            })
        );
        assert_eq!(route("/api/v1/namespaces/ns/nodes"), None);
        assert_eq!(route("/api/v1/services/x"), None);
        assert_eq!(route("/apis/apps/v1/deployments"), None);
        assert_eq!(route("/api/v1/pods"), None);
    }

    #[test]
    fn continue_tokens_round_trip() {
        assert_eq!(
            parse_continue("7/ns/web"),
            Some((7, ("ns".into(), "web".into())))
        );
        assert_eq!(
            parse_continue("7//node-a"),
            Some((7, (String::new(), "node-a".into())))
        );
        assert_eq!(parse_continue("x/ns/web"), None);
        assert_eq!(parse_continue("7"), None);
    }
}
