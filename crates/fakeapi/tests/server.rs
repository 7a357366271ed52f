//! The fake API server over plain HTTP/1.1 (a tiny std::net client, no kube): LIST with
//! selectors and pagination, watch stream framing, bookmarks, 410 Expired, cut connections and
//! restarts.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use kproxy_fakeapi::{FakeApiServer, Resource, Verb};
use serde_json::{json, Value};

/// Every read gives up after this long, so a bug fails the test instead of hanging it.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How a chunked stream ended.
#[derive(Debug, PartialEq, Eq)]
enum StreamEnd {
    /// The terminating `0` chunk.
    Clean,
    /// The connection closed mid-stream.
    Cut,
}

impl Client {
    fn connect(server: &FakeApiServer) -> Client {
        let writer = TcpStream::connect(server.addr()).expect("connects");
        writer
            .set_read_timeout(Some(READ_TIMEOUT))
            .expect("sets a read timeout");
        let reader = BufReader::new(writer.try_clone().expect("clones the socket"));
        Client { reader, writer }
    }

    fn send(&mut self, path: &str) -> Response {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n");
        self.writer
            .write_all(request.as_bytes())
            .expect("sends the request");
        let mut status_line = String::new();
        self.reader
            .read_line(&mut status_line)
            .expect("reads the status line");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("reads a header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        Response { status, headers }
    }

    /// A complete JSON response.
    fn get(&mut self, path: &str) -> (u16, Value) {
        let response = self.send(path);
        let length: usize = response
            .header("content-length")
            .expect("a Content-Length")
            .parse()
            .expect("a number");
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).expect("reads the body");
        (
            response.status,
            serde_json::from_slice(&body).expect("a JSON body"),
        )
    }

    /// Starts a watch and checks the response head.
    fn watch(&mut self, path: &str) {
        let response = self.send(path);
        assert_eq!(response.status, 200);
        assert_eq!(response.header("transfer-encoding"), Some("chunked"));
        assert_eq!(response.header("content-type"), Some("application/json"));
    }

    /// The next watch event: exactly one JSON line per chunk.
    fn next_event(&mut self) -> Result<Value, StreamEnd> {
        let mut size_line = String::new();
        match self.reader.read_line(&mut size_line) {
            Ok(0) => return Err(StreamEnd::Cut),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Err(StreamEnd::Cut),
            Err(e) => panic!("reading a chunk size: {e}"),
        }
        let size = usize::from_str_radix(size_line.trim_end(), 16).expect("a hex chunk size");
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).expect("reads the chunk");
        assert!(chunk.ends_with(b"\r\n"), "chunk ends with CRLF");
        chunk.truncate(size);
        if size == 0 {
            return Err(StreamEnd::Clean);
        }
        assert!(
            chunk.ends_with(b"\n"),
            "one newline-terminated line per chunk"
        );
        assert_eq!(chunk.iter().filter(|b| **b == b'\n').count(), 1);
        Ok(serde_json::from_slice(&chunk).expect("a JSON event"))
    }

    fn expect_event(&mut self) -> Value {
        self.next_event()
            .expect("an event, not the end of the stream")
    }
}

fn service(namespace: &str, name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| {
            format!(
                "{}/{}",
                item["metadata"]["namespace"].as_str().unwrap_or(""),
                item["metadata"]["name"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn rv(object: &Value) -> u64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .expect("a resourceVersion")
        .parse()
        .expect("numeric")
}

const KPROXY_SELECTOR: &str =
    "%21service.kubernetes.io%2Fheadless%2C%21service.kubernetes.io%2Fservice-proxy-name";

#[test]
fn list_applies_label_selectors_and_reports_the_global_resource_version() {
    let server = FakeApiServer::start().expect("starts");
    server
        .apply(&service("a", "web", json!({})))
        .expect("stored");
    server
        .apply(&service(
            "a",
            "dns",
            json!({"service.kubernetes.io/headless": ""}),
        ))
        .expect("stored");
    server
        .apply(&service(
            "b",
            "other",
            json!({"service.kubernetes.io/service-proxy-name": "x"}),
        ))
        .expect("stored");
    server
        .apply(&service("b", "api", json!({"tier": "back"})))
        .expect("stored");
    server
        .apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a"}}))
        .expect("stored");

    let mut client = Client::connect(&server);
    let (status, all) = client.get("/api/v1/services");
    assert_eq!(status, 200);
    assert_eq!(all["kind"], "ServiceList");
    assert_eq!(all["apiVersion"], "v1");
    assert_eq!(names(&all), ["a/dns", "a/web", "b/api", "b/other"]);
    assert_eq!(
        all["metadata"]["resourceVersion"], "5",
        "one counter across kinds"
    );
    assert!(
        all["items"][0].get("kind").is_none(),
        "list items carry no kind, as on a real server"
    );
    assert!(all["items"][0]["metadata"]["uid"].is_string());
    assert!(all["items"][0]["metadata"]["creationTimestamp"].is_string());

    // Same keep-alive connection for every request below.
    let (_, proxied) = client.get(&format!("/api/v1/services?labelSelector={KPROXY_SELECTOR}"));
    assert_eq!(names(&proxied), ["a/web", "b/api"]);
    let (_, tier) = client.get("/api/v1/services?labelSelector=tier%3Dback");
    assert_eq!(names(&tier), ["b/api"]);
    let (_, namespaced) = client.get("/api/v1/namespaces/a/services");
    assert_eq!(names(&namespaced), ["a/dns", "a/web"]);
    let (_, by_name) = client.get("/api/v1/services?fieldSelector=metadata.name%3Dapi");
    assert_eq!(names(&by_name), ["b/api"]);
    let (_, nodes) = client.get("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-a");
    assert_eq!(nodes["kind"], "NodeList");
    assert_eq!(names(&nodes), ["/node-a"]);
    let (_, no_node) = client.get("/api/v1/nodes?fieldSelector=metadata.name%3Dnode-b");
    assert_eq!(names(&no_node), Vec::<String>::new());
    let (status, bad) = client.get("/api/v1/nodes?fieldSelector=spec.podCIDR%3Dx");
    assert_eq!(status, 400);
    assert_eq!(bad["reason"], "BadRequest");
    let (status, one) = client.get("/api/v1/namespaces/b/services/api");
    assert_eq!(
        (status, one["metadata"]["name"].clone()),
        (200, json!("api"))
    );
    let (status, missing) = client.get("/api/v1/namespaces/b/services/nope");
    assert_eq!(
        (status, missing["reason"].clone()),
        (404, json!("NotFound"))
    );

    assert_eq!(server.requests(Resource::Services, Verb::List), 5);
    assert_eq!(server.requests(Resource::Services, Verb::Get), 2);
    assert_eq!(server.requests(Resource::Nodes, Verb::List), 3);
}

#[test]
fn pages_are_a_consistent_snapshot_and_expire_with_compaction() {
    let server = FakeApiServer::start().expect("starts");
    for name in ["s1", "s2", "s3"] {
        server
            .apply(&service("ns", name, json!({})))
            .expect("stored");
    }
    let mut client = Client::connect(&server);
    let (_, first) = client.get("/api/v1/services?limit=2");
    assert_eq!(names(&first), ["ns/s1", "ns/s2"]);
    assert_eq!(first["metadata"]["remainingItemCount"], 1);
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("a continue token")
        .to_string();

    // Changes after the first page do not show in later pages of the same list.
    server
        .delete(Resource::Services, "ns", "s3")
        .expect("existed");
    server
        .apply(&service("ns", "s4", json!({})))
        .expect("stored");
    let (status, second) = client.get(&format!("/api/v1/services?limit=2&continue={token}"));
    assert_eq!(status, 200);
    assert_eq!(names(&second), ["ns/s3"]);
    assert_eq!(
        second["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert!(second["metadata"].get("continue").is_none(), "last page");

    server.compact();
    let (status, expired) = client.get(&format!("/api/v1/services?limit=2&continue={token}"));
    assert_eq!(status, 410);
    assert_eq!(expired["kind"], "Status");
    assert_eq!(expired["reason"], "Expired");
    assert_eq!(expired["code"], 410);
    let (status, exact) =
        client.get("/api/v1/services?resourceVersion=3&resourceVersionMatch=Exact");
    assert_eq!((status, exact["reason"].clone()), (410, json!("Expired")));
    let (_, fresh) = client.get("/api/v1/services");
    assert_eq!(names(&fresh), ["ns/s1", "ns/s2", "ns/s4"]);
}

#[test]
fn selector_pages_walk_every_match_without_counting_the_rest() {
    let server = FakeApiServer::start().expect("starts");
    for i in 0..7 {
        let labels = if i % 3 == 0 {
            json!({"service.kubernetes.io/headless": ""})
        } else {
            json!({})
        };
        server
            .apply(&service("ns", &format!("s{i}"), labels))
            .expect("stored");
    }
    server
        .apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .expect("stored");
    let mut client = Client::connect(&server);
    let mut seen = Vec::new();
    let mut query =
        "/api/v1/services?limit=2&labelSelector=%21service.kubernetes.io%2Fheadless".to_string();
    loop {
        let (status, page) = client.get(&query);
        assert_eq!(status, 200);
        assert_eq!(page["kind"], "ServiceList");
        // Like the real API server: no count of a selector's remaining matches.
        assert!(page["metadata"].get("remainingItemCount").is_none());
        for item in page["items"].as_array().expect("items") {
            assert!(item.get("kind").is_none() && item.get("apiVersion").is_none());
            assert!(item["spec"]["clusterIP"].is_string(), "the whole object");
        }
        seen.extend(names(&page));
        match page["metadata"]["continue"].as_str() {
            Some(token) => {
                query = format!(
                    "/api/v1/services?limit=2&labelSelector=%21service.kubernetes.io%2Fheadless&continue={token}"
                )
            }
            None => break,
        }
    }
    // s0, s3 and s6 are headless; the Node (another resource) sorts after them in the store.
    assert_eq!(seen, ["ns/s1", "ns/s2", "ns/s4", "ns/s5"]);
}

#[test]
fn watch_streams_every_change_after_the_resource_version_one_chunk_per_event() {
    let server = FakeApiServer::start().expect("starts");
    let web = server
        .apply(&service("ns", "web", json!({})))
        .expect("stored");
    let mut client = Client::connect(&server);
    client.watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={}&allowWatchBookmarks=true&timeoutSeconds=30&labelSelector={KPROXY_SELECTOR}",
        rv(&web)
    ));
    // Node writes take resourceVersions too but are not Service events.
    server
        .apply(&json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .expect("stored");
    server
        .apply(&service("ns", "api", json!({})))
        .expect("stored");
    let mut changed = service("ns", "web", json!({}));
    changed["spec"]["ports"][0]["port"] = json!(8080);
    server.apply(&changed).expect("stored");
    server
        .delete(Resource::Services, "ns", "api")
        .expect("existed");
    // Gaining the headless label takes it out of the selector: DELETED for this watch.
    server
        .apply(&service(
            "ns",
            "web",
            json!({"service.kubernetes.io/headless": ""}),
        ))
        .expect("stored");

    let added = client.expect_event();
    assert_eq!(added["type"], "ADDED");
    assert_eq!(
        added["object"]["kind"], "Service",
        "watch objects carry kind and apiVersion"
    );
    assert_eq!(added["object"]["metadata"]["name"], "api");
    assert_eq!(rv(&added["object"]), 3);
    let modified = client.expect_event();
    assert_eq!(modified["type"], "MODIFIED");
    assert_eq!(modified["object"]["spec"]["ports"][0]["port"], 8080);
    assert_eq!(rv(&modified["object"]), 4);
    let deleted = client.expect_event();
    assert_eq!(deleted["type"], "DELETED");
    assert_eq!(deleted["object"]["metadata"]["name"], "api");
    assert_eq!(
        rv(&deleted["object"]),
        5,
        "a deleted object carries the deletion's version"
    );
    let left = client.expect_event();
    assert_eq!(
        (left["type"].clone(), rv(&left["object"])),
        (json!("DELETED"), 6)
    );
    assert_eq!(left["object"]["metadata"]["name"], "web");

    server.send_bookmarks();
    let bookmark = client.expect_event();
    assert_eq!(
        bookmark,
        json!({"type": "BOOKMARK", "object": {"kind": "Service", "apiVersion": "v1",
                                              "metadata": {"resourceVersion": "6"}}})
    );
    wait_for(|| server.bookmarks_sent(Resource::Services) == 1);
    assert_eq!(server.open_watches(Resource::Services), 1);
    assert_eq!(server.requests(Resource::Services, Verb::Watch), 1);
    assert_eq!(
        server.last_watch_from(Resource::Services),
        Some(Some("1".to_string()))
    );
    assert_eq!(server.last_watch_from(Resource::Nodes), None);
}

#[test]
fn watch_without_a_resource_version_starts_with_the_current_objects() {
    let server = FakeApiServer::start().expect("starts");
    server
        .apply(&service("ns", "web", json!({})))
        .expect("stored");
    let mut client = Client::connect(&server);
    client.watch("/api/v1/namespaces/ns/services?watch=true&resourceVersion=0&timeoutSeconds=1");
    let added = client.expect_event();
    assert_eq!(
        (
            added["type"].clone(),
            added["object"]["metadata"]["name"].clone()
        ),
        (json!("ADDED"), json!("web"))
    );
    // No allowWatchBookmarks: no bookmark.
    server.send_bookmarks();
    assert_eq!(
        client.next_event(),
        Err(StreamEnd::Clean),
        "timeoutSeconds ends the stream cleanly"
    );
}

#[test]
fn watch_from_a_compacted_resource_version_gets_an_expired_error_event() {
    let server = FakeApiServer::start().expect("starts");
    let web = server
        .apply(&service("ns", "web", json!({})))
        .expect("stored");
    server
        .apply(&service("ns", "api", json!({})))
        .expect("stored");
    server.compact();
    let mut client = Client::connect(&server);
    client.watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={}",
        rv(&web)
    ));
    let error = client.expect_event();
    assert_eq!(error["type"], "ERROR");
    assert_eq!(error["object"]["kind"], "Status");
    assert_eq!(error["object"]["code"], 410);
    assert_eq!(error["object"]["reason"], "Expired");
    assert_eq!(client.next_event(), Err(StreamEnd::Clean));

    // From the current version there is nothing to miss.
    let mut client = Client::connect(&server);
    client.watch(&format!(
        "/api/v1/services?watch=true&resourceVersion={}",
        server.resource_version()
    ));
    server
        .delete(Resource::Services, "ns", "web")
        .expect("existed");
    assert_eq!(client.expect_event()["type"], "DELETED");
}

#[test]
fn dropped_watches_are_cut_without_a_terminating_chunk() {
    let server = FakeApiServer::start().expect("starts");
    let mut watch = Client::connect(&server);
    watch.watch("/api/v1/nodes?watch=true&resourceVersion=0&fieldSelector=metadata.name%3Dnode-a");
    let mut lister = Client::connect(&server);
    let (status, _) = lister.get("/api/v1/nodes");
    assert_eq!(status, 200);
    wait_for(|| server.open_watches(Resource::Nodes) == 1);
    server.drop_watches();
    assert_eq!(watch.next_event(), Err(StreamEnd::Cut));
    wait_for(|| server.open_watches(Resource::Nodes) == 0);
    // Plain keep-alive connections survive.
    let (status, _) = lister.get("/api/v1/nodes");
    assert_eq!(status, 200);
}

#[test]
fn stop_refuses_connections_and_restart_serves_the_same_objects_on_the_same_port() {
    let server = FakeApiServer::start().expect("starts");
    server
        .apply(&service("ns", "web", json!({})))
        .expect("stored");
    let mut watch = Client::connect(&server);
    watch.watch("/api/v1/services?watch=true&resourceVersion=1");
    wait_for(|| server.open_watches(Resource::Services) == 1);
    server.stop();
    assert_eq!(watch.next_event(), Err(StreamEnd::Cut));
    let refused = TcpStream::connect(server.addr()).expect_err("nothing listens while stopped");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    server
        .delete(Resource::Services, "ns", "web")
        .expect("writes work while stopped");
    server.restart().expect("binds the same port");
    let mut client = Client::connect(&server);
    let (_, list) = client.get("/api/v1/services");
    assert_eq!(names(&list), Vec::<String>::new());
    assert_eq!(list["metadata"]["resourceVersion"], "2");
    client.watch("/api/v1/services?watch=true&resourceVersion=1");
    assert_eq!(
        client.expect_event()["type"],
        "DELETED",
        "history survives a restart"
    );
}

#[test]
fn typed_objects_and_bad_input() {
    use k8s_openapi::api::core::v1::Node;
    let server = FakeApiServer::start().expect("starts");
    let mut node = Node::default();
    node.metadata.name = Some("node-a".into());
    let stored = server.apply(&node).expect("a typed object is accepted");
    assert_eq!(stored["kind"], "Node");
    assert!(stored["metadata"].get("namespace").is_none());
    let error = server
        .apply(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}))
        .expect_err("pods are not served");
    assert_eq!(
        error.to_string(),
        "the fake API server does not serve \"v1\" \"Pod\""
    );
    assert!(server
        .apply(&json!({"apiVersion": "v1", "kind": "Service"}))
        .is_err());
    let defaulted = server
        .apply(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
        .expect("stored");
    assert_eq!(defaulted["metadata"]["namespace"], "default");
    let mut client = Client::connect(&server);
    let (status, body) = client.get("/apis/apps/v1/deployments");
    assert_eq!((status, body["code"].clone()), (404, json!(404)));
    let (status, _) = client.get("/api/v1/services?labelSelector=a%3D%28");
    assert_eq!(status, 400);
}

/// Polls until `condition` holds; fails after 5 seconds.
fn wait_for(condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not reached in time"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
