//! The watcher against the fake API server over real HTTP: initial sync, changes, relist after
//! 410, reconnects, bookmarks and node topology. Every wait is bounded, so a bug fails fast.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::Duration;

use kproxy_fakeapi::{FakeApiServer, Resource, Verb};
use kproxy_watcher::{ServiceKey, Update, Updates, WatcherHandle};
use serde_json::{json, Value};

/// The longest any test waits for one outcome.
const WAIT: Duration = Duration::from_secs(10);

fn client(server: &FakeApiServer) -> kube::Client {
    let url = server.url().parse().expect("the fake's URL is a valid URI");
    kube::Client::try_from(kube::Config::new(url)).expect("a client for the fake")
}

fn service(namespace: &str, name: &str, port: u16, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]},
    })
}

fn slice(namespace: &str, name: &str, service: &str, addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn node(name: &str, zone: &str, ip: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone},
                     "annotations": annotations},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    })
}

fn key(namespace: &str, name: &str) -> ServiceKey {
    ServiceKey::new(namespace, name)
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// Starts the watcher and waits for `Synced`, which must be the first update.
async fn synced(server: &FakeApiServer) -> (WatcherHandle, Updates) {
    let (watcher, mut updates) = WatcherHandle::start(client(server), "node-a").expect("starts");
    let first = within("the initial sync", updates.next()).await;
    assert_eq!(first, Some(Update::Synced));
    assert!(watcher.is_synced());
    (watcher, updates)
}

/// Collects `Changed` updates until their union names every Service in `expected`; returns the
/// union (which may hold more).
async fn changed_services(updates: &mut Updates, expected: &[ServiceKey]) -> BTreeSet<ServiceKey> {
    let mut seen = BTreeSet::new();
    within(&format!("changes naming {expected:?}"), async {
        while !expected.iter().all(|k| seen.contains(k)) {
            match updates.next().await {
                Some(Update::Changed(changes)) => seen.extend(changes.services),
                other => panic!("unexpected update {other:?}"),
            }
        }
    })
    .await;
    seen
}

/// Polls until `condition` holds.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn service_names(watcher: &WatcherHandle) -> Vec<String> {
    let snapshot = watcher.snapshot();
    snapshot
        .services
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect()
}

fn first_port(watcher: &WatcherHandle, name: &str) -> Option<i32> {
    let snapshot = watcher.snapshot();
    let service = snapshot.services.iter().find(|s| &*s.name == name)?;
    Some(i32::from(service.ports.first()?.port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_list_then_synced_with_a_complete_filtered_snapshot() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&service("default", "web", 80, json!({})))
        .expect("stored");
    server
        .apply(&service(
            "default",
            "dns",
            53,
            json!({"service.kubernetes.io/headless": ""}),
        ))
        .expect("stored");
    server
        .apply(&service(
            "default",
            "other",
            80,
            json!({"service.kubernetes.io/service-proxy-name": "x"}),
        ))
        .expect("stored");
    server
        .apply(&slice("default", "web-1", "web", &["10.244.0.5"]))
        .expect("stored");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    server
        .apply(&node("node-b", "z2", "192.168.0.11", json!({})))
        .expect("stored");

    let (watcher, _updates) = synced(&server).await;
    assert_eq!(
        service_names(&watcher),
        ["default/web"],
        "headless and other-proxy Services are not watched"
    );
    let snapshot = watcher.snapshot();
    assert_eq!(snapshot.endpoint_slices.len(), 1);
    assert_eq!(
        snapshot
            .node
            .as_ref()
            .and_then(|n| n.metadata.name.as_deref()),
        Some("node-a")
    );
    for resource in [
        Resource::Services,
        Resource::EndpointSlices,
        Resource::Nodes,
    ] {
        assert_eq!(
            server.requests(resource, Verb::List),
            1,
            "{resource:?} listed once"
        );
    }

    let translated = snapshot.state(watcher.node_name());
    assert_eq!(translated.node.zone.as_deref(), Some("z1"));
    assert_eq!(translated.ports.len(), 1);
    let port = &translated.ports[0];
    let endpoints = format!("{:?}", port.families);
    assert!(
        endpoints.contains("10.244.0.5"),
        "the slice's endpoint is joined to web: {endpoints}"
    );

    // After the list, each cache keeps a watch open.
    eventually("three open watches", || {
        [
            Resource::Services,
            Resource::EndpointSlices,
            Resource::Nodes,
        ]
        .iter()
        .all(|r| server.open_watches(*r) == 1)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_slice_changes_reach_the_snapshot_and_name_the_service() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    let (watcher, mut updates) = synced(&server).await;
    assert!(service_names(&watcher).is_empty());

    // A headless Service is never reported; the next one is.
    server
        .apply(&service(
            "apps",
            "headless",
            80,
            json!({"service.kubernetes.io/headless": ""}),
        ))
        .expect("stored");
    server
        .apply(&service("apps", "web", 80, json!({})))
        .expect("stored");
    let seen = changed_services(&mut updates, &[key("apps", "web")]).await;
    assert_eq!(seen, [key("apps", "web")].into());
    assert_eq!(service_names(&watcher), ["apps/web"]);

    server
        .apply(&service("apps", "web", 8443, json!({})))
        .expect("stored");
    changed_services(&mut updates, &[key("apps", "web")]).await;
    assert_eq!(first_port(&watcher, "web"), Some(8443));

    // A slice change names its Service, not the slice.
    server
        .apply(&slice("apps", "web-xyz", "web", &["10.244.1.1"]))
        .expect("stored");
    let seen = changed_services(&mut updates, &[key("apps", "web")]).await;
    assert_eq!(seen, [key("apps", "web")].into());
    assert_eq!(watcher.snapshot().endpoint_slices.len(), 1);
    server
        .apply(&slice("apps", "api-abc", "api", &["10.244.2.1"]))
        .expect("stored");
    changed_services(&mut updates, &[key("apps", "api")]).await;
    // One Service's objects, without the others'.
    let web = watcher.service_snapshot(&key("apps", "web"));
    assert_eq!(web.services.len(), 1);
    let slice_names: Vec<_> = web
        .endpoint_slices
        .iter()
        .map(|s| s.spec.name.to_string())
        .collect();
    assert_eq!(slice_names, ["web-xyz"]);
    assert!(web.node.is_some(), "the node comes with it");
    let api = watcher.service_snapshot(&key("apps", "api"));
    assert!(
        api.services.is_empty(),
        "api has a slice but no Service yet"
    );
    assert_eq!(api.endpoint_slices.len(), 1);
    server
        .apply(&slice(
            "apps",
            "web-xyz",
            "web",
            &["10.244.1.1", "10.244.1.2"],
        ))
        .expect("stored");
    changed_services(&mut updates, &[key("apps", "web")]).await;
    let web = watcher.service_snapshot(&key("apps", "web"));
    assert_eq!(web.endpoint_slices[0].spec.endpoints.len(), 2);

    server
        .delete(Resource::EndpointSlices, "apps", "web-xyz")
        .expect("existed");
    changed_services(&mut updates, &[key("apps", "web")]).await;
    assert_eq!(
        watcher.snapshot().endpoint_slices.len(),
        1,
        "the deleted slice left the cache"
    );
    assert!(watcher
        .service_snapshot(&key("apps", "web"))
        .endpoint_slices
        .is_empty());

    server
        .delete(Resource::Services, "apps", "web")
        .expect("existed");
    changed_services(&mut updates, &[key("apps", "web")]).await;
    assert!(
        service_names(&watcher).is_empty(),
        "the deleted Service left the cache"
    );
    assert!(watcher
        .service_snapshot(&key("apps", "web"))
        .services
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relists_after_an_api_server_restart_with_compacted_history() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    server
        .apply(&service("ns", "a", 80, json!({})))
        .expect("stored");
    server
        .apply(&service("ns", "b", 80, json!({})))
        .expect("stored");
    server
        .apply(&slice("ns", "b-1", "b", &["10.244.0.9"]))
        .expect("stored");
    let (watcher, mut updates) = synced(&server).await;
    eventually("a services watch", || {
        server.open_watches(Resource::Services) == 1
    })
    .await;
    let lists_before = server.requests(Resource::Services, Verb::List);

    server.stop();
    // Changes while the API server is down and its history is compacted: the watch cannot
    // resume (410 Expired) and must relist.
    server
        .delete(Resource::Services, "ns", "b")
        .expect("existed");
    server
        .delete(Resource::EndpointSlices, "ns", "b-1")
        .expect("existed");
    server
        .apply(&service("ns", "a", 81, json!({})))
        .expect("stored");
    server
        .apply(&service("ns", "c", 80, json!({})))
        .expect("stored");
    server.compact();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        service_names(&watcher),
        ["ns/a", "ns/b"],
        "the cache keeps its content while the server is down"
    );
    server.restart().expect("the same port again");

    let seen = changed_services(
        &mut updates,
        &[key("ns", "a"), key("ns", "b"), key("ns", "c")],
    )
    .await;
    assert_eq!(
        seen,
        [key("ns", "a"), key("ns", "b"), key("ns", "c")].into()
    );
    assert!(
        server.requests(Resource::Services, Verb::List) > lists_before,
        "relisted after 410"
    );
    assert_eq!(
        service_names(&watcher),
        ["ns/a", "ns/c"],
        "b was deleted while the watch was broken"
    );
    assert_eq!(first_port(&watcher, "a"), Some(81));
    eventually("the slice deletion seen by the slice relist", || {
        watcher.snapshot().endpoint_slices.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_dropped_watches_and_resumes_without_relisting() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    let (watcher, mut updates) = synced(&server).await;
    eventually("a services watch", || {
        server.open_watches(Resource::Services) == 1
    })
    .await;
    let lists = server.requests(Resource::Services, Verb::List);
    let watches = server.requests(Resource::Services, Verb::Watch);
    server.drop_watches();
    server
        .apply(&service("ns", "late", 80, json!({})))
        .expect("stored");
    changed_services(&mut updates, &[key("ns", "late")]).await;
    assert_eq!(service_names(&watcher), ["ns/late"]);
    assert!(
        server.requests(Resource::Services, Verb::Watch) > watches,
        "watched again"
    );
    assert_eq!(
        server.requests(Resource::Services, Verb::List),
        lists,
        "resumed from its resourceVersion, no relist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_move_the_resume_point_past_unrelated_writes() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    server
        .apply(&service("ns", "web", 80, json!({})))
        .expect("stored");
    let (_watcher, _updates) = synced(&server).await;
    eventually("a services watch", || {
        server.open_watches(Resource::Services) == 1
    })
    .await;
    // Writes to other resources advance the global resourceVersion.
    server
        .apply(&node("node-b", "z1", "192.168.0.11", json!({})))
        .expect("stored");
    server
        .apply(&node("node-c", "z1", "192.168.0.12", json!({})))
        .expect("stored");
    let current = server.resource_version();
    server.send_bookmarks();
    eventually("a bookmark on the services watch", || {
        server.bookmarks_sent(Resource::Services) >= 1
    })
    .await;
    let lists = server.requests(Resource::Services, Verb::List);
    let watches = server.requests(Resource::Services, Verb::Watch);
    // History before the bookmark is gone: only a client that took the bookmark can resume.
    server.compact();
    server.drop_watches();
    eventually("a new services watch", || {
        server.requests(Resource::Services, Verb::Watch) > watches
    })
    .await;
    assert_eq!(
        server.last_watch_from(Resource::Services),
        Some(Some(current.to_string()))
    );
    eventually("the services watch open again", || {
        server.open_watches(Resource::Services) == 1
    })
    .await;
    assert_eq!(
        server.requests(Resource::Services, Verb::List),
        lists,
        "no relist"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_topology_and_address_changes_set_the_node_flag_and_nothing_else_does() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    let (watcher, mut updates) = synced(&server).await;

    // A heartbeat-like change reaches the cache but is not a topology change.
    server
        .apply(&node(
            "node-a",
            "z1",
            "192.168.0.10",
            json!({"heartbeat": "1"}),
        ))
        .expect("stored");
    eventually("the annotated node in the cache", || {
        watcher
            .snapshot()
            .node
            .and_then(|n| n.metadata.annotations.clone())
            .is_some_and(|a| a.contains_key("heartbeat"))
    })
    .await;
    let quiet = tokio::time::timeout(Duration::from_millis(300), updates.next()).await;
    assert!(
        quiet.is_err(),
        "no update for a non-topology change, got {quiet:?}"
    );
    // Other nodes are not watched at all.
    server
        .apply(&node("node-b", "z9", "192.168.0.11", json!({})))
        .expect("stored");

    server
        .apply(&node(
            "node-a",
            "z2",
            "192.168.0.10",
            json!({"heartbeat": "1"}),
        ))
        .expect("stored");
    let update = within("the zone change", updates.next()).await;
    let Some(Update::Changed(changes)) = update else {
        panic!("expected a change, got {update:?}");
    };
    assert!(changes.node && changes.services.is_empty(), "{changes:?}");
    let translated = watcher.snapshot().state(watcher.node_name());
    assert_eq!(translated.node.zone.as_deref(), Some("z2"));

    server
        .apply(&node(
            "node-a",
            "z2",
            "192.168.0.20",
            json!({"heartbeat": "1"}),
        ))
        .expect("stored");
    let update = within("the address change", updates.next()).await;
    assert!(
        matches!(&update, Some(Update::Changed(c)) if c.node),
        "{update:?}"
    );
    let translated = watcher.snapshot().state(watcher.node_name());
    assert_eq!(
        translated.node.primary_ips,
        ["192.168.0.20".parse::<std::net::IpAddr>().expect("an IP")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_node_names_are_refused_and_dropping_the_handle_ends_updates() {
    let server = FakeApiServer::start().expect("fake API server");
    let error = WatcherHandle::start(client(&server), "Node,A").expect_err("not an object name");
    assert!(error.to_string().contains("invalid node name"), "{error}");
    let (watcher, mut updates) = synced(&server).await;
    drop(watcher);
    assert_eq!(within("the end of updates", updates.next()).await, None);
}

/// Collects `Changed` updates until one names `service`; returns the trigger times they carried.
async fn trigger_times_until(updates: &mut Updates, service: &ServiceKey) -> Vec<String> {
    let mut times = Vec::new();
    within(&format!("a change naming {service}"), async {
        loop {
            match updates.next().await {
                Some(Update::Changed(changes)) => {
                    times.extend(changes.trigger_times);
                    if changes.services.contains(service) {
                        break;
                    }
                }
                other => panic!("unexpected update {other:?}"),
            }
        }
    })
    .await;
    times
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_trigger_time_is_reported_once_when_its_value_arrives() {
    let server = FakeApiServer::start().expect("fake API server");
    server
        .apply(&node("node-a", "z1", "192.168.0.10", json!({})))
        .expect("stored");
    let annotated = |addresses: &[&str], time: Option<&str>| {
        let mut object = slice("apps", "web-xyz", "web", addresses);
        if let Some(time) = time {
            object["metadata"]["annotations"] =
                json!({"endpoints.kubernetes.io/last-change-trigger-time": time});
        }
        object
    };
    // Present at the initial list: not a change to program.
    server
        .apply(&annotated(&["10.244.1.1"], Some("2026-12-02T10:00:00Z")))
        .expect("stored");
    let (_watcher, mut updates) = synced(&server).await;
    let web = key("apps", "web");

    server
        .apply(&annotated(&["10.244.1.2"], Some("2026-12-02T10:00:05Z")))
        .expect("stored");
    let times = trigger_times_until(&mut updates, &web).await;
    assert_eq!(times, ["2026-12-02T10:00:05Z"]);

    // Another version with the same trigger time (a status edit) starts nothing new.
    server
        .apply(&annotated(&["10.244.1.3"], Some("2026-12-02T10:00:05Z")))
        .expect("stored");
    let times = trigger_times_until(&mut updates, &web).await;
    assert!(times.is_empty(), "{times:?}");

    // Without the annotation: nothing; with a new one: that one.
    server
        .apply(&annotated(&["10.244.1.4"], None))
        .expect("stored");
    assert!(trigger_times_until(&mut updates, &web).await.is_empty());
    server
        .apply(&annotated(&["10.244.1.5"], Some("2026-12-02T10:00:09Z")))
        .expect("stored");
    let times = trigger_times_until(&mut updates, &web).await;
    assert_eq!(times, ["2026-12-02T10:00:09Z"]);
}
