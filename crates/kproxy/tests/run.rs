//! `kproxy run` (the real binary) against the fake API server, both inside a throwaway network
//! namespace: the fake listens on the namespace's loopback, the daemon programs its kernel.
//! Every wait is bounded, so a broken daemon fails fast with its log.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kproxy_fakeapi::{FakeApiServer, Resource};
use kproxy_testkit::NetNs;
use serde_json::{json, Value};

use crate::support;

/// The longest any step waits for the daemon.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn node(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": "zone-a"}},
        "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
    })
}

fn service(name: &str, ip: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "http", "port": port, "protocol": "TCP", "targetPort": 8080}]},
    })
}

fn slice(name: &str, service: &str, addresses: &[&str]) -> Value {
    let on_a: Vec<(&str, &str)> = addresses.iter().map(|ip| (*ip, "node-a")).collect();
    slice_on(name, service, &on_a)
}

/// A slice whose endpoints are `(address, nodeName)`.
fn slice_on(name: &str, service: &str, endpoints: &[(&str, &str)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node)| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": node}))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

/// A `kproxy run` process inside a namespace, logging to a file; killed if the test fails.
pub(crate) struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(ns: &NetNs, args: &[&str]) -> Daemon {
        let log = std::env::temp_dir().join(format!("{}-run.log", ns.name()));
        let file = File::create(&log).expect("creating the daemon's log file");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns.name(),
                env!("CARGO_BIN_EXE_kproxy"),
                "run",
            ])
            .args(args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("starting kproxy run");
        Daemon {
            child: Some(child),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls `probe` every 50 ms until it returns `Some`, for at most [`WAIT`].
    pub(crate) fn eventually<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "kproxy run exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {WAIT:?} waiting for {what}; kproxy run's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and waits (bounded) for the exit.
    fn stop(&mut self, signal: &str) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let sent = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill {signal} failed");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().expect("waiting for kproxy run") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "kproxy run did not exit within {WAIT:?} of {signal}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A fake API server listening inside a namespace (bound from a thread inside it), dropped
/// from inside it too, so its connection threads end in the namespace they serve.
pub(crate) struct InNs<'a> {
    ns: &'a NetNs,
    api: Option<FakeApiServer>,
}

impl<'a> InNs<'a> {
    /// Brings the namespace's loopback up and serves `objects` on it.
    pub(crate) fn serving(ns: &'a NetNs, objects: impl IntoIterator<Item = Value>) -> InNs<'a> {
        ns.ip_batch("link set lo up\n");
        // Bound from a thread inside the namespace, so it listens on the namespace's loopback.
        let api = ns.exec(|| FakeApiServer::start().expect("fake API server"));
        for object in objects {
            api.apply(&object).expect("stored");
        }
        InNs { ns, api: Some(api) }
    }
}

impl std::ops::Deref for InNs<'_> {
    type Target = FakeApiServer;
    fn deref(&self) -> &FakeApiServer {
        self.api.as_ref().expect("running")
    }
}

impl Drop for InNs<'_> {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            self.ns.exec(move || drop(api));
        }
    }
}

/// `nft list table ip kproxy` in `ns`, if the table exists.
pub(crate) fn kproxy_table(ns: &NetNs) -> Option<String> {
    let out = ns.run("nft", &["list", "table", "ip", "kproxy"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One HTTP/1.1 GET from inside `ns`: status code and body.
pub(crate) fn http_get(ns: &NetNs, addr: &str, path: &str) -> Option<(u16, String)> {
    http_exchange(ns, addr, path)
        .ok()
        .map(|(code, _, body)| (code, body))
}

/// One HTTP/1.1 GET from inside `ns`: status code, head and body, or the connect error.
fn http_exchange(ns: &NetNs, addr: &str, path: &str) -> std::io::Result<(u16, String, String)> {
    ns.exec(|| {
        let bad = || std::io::Error::other("malformed response");
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(WAIT))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(bad)?;
        Ok((code, head.to_string(), body.to_string()))
    })
}

/// A scrape of Prometheus text (0.0.4 or OpenMetrics), parsed: sample name with its label
/// set as written (`name{a="b"}`) → value; every sample's metric has a `# TYPE` line.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut types = std::collections::BTreeMap::new();
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // `name{labels} value [timestamp]`; label values here contain no spaces or braces.
        let (series, rest) = match line.find('}') {
            Some(end) => (&line[..=end], line[end + 1..].trim()),
            None => line.split_once(' ').expect("name value"),
        };
        let value = rest.split_whitespace().next().expect("a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_count", "_sum", "_total", "_created"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.contains_key(*base))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "{line:?} has no # TYPE");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

/// Scrapes `/metrics` at `addr` in `ns`.
fn scrape(ns: &NetNs, addr: &str) -> Option<std::collections::BTreeMap<String, f64>> {
    let (code, body) = http_get(ns, addr, "/metrics")?;
    assert_eq!(code, 200, "{body}");
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    Some(parse_metrics(&body))
}

/// A Service port's rules carry its name as their comment (they share bucket chains).
const WEB_RULES: &str = "comment \"default/web:http\"";
const API_RULES: &str = "comment \"default/api:http\"";

#[test]
fn run_follows_the_api_server_serves_healthz_and_exits_on_sigterm() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run");
    let api = InNs::serving(
        &ns,
        [
            node("node-a", "192.168.10.11"),
            service("web", "10.96.100.10", 80),
            slice("web-1", "web", &["10.244.1.10"]),
            service("api", "10.96.100.11", 81),
            slice("api-1", "api", &["10.244.1.20"]),
        ],
    );
    let url = api.url();
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--master",
            &url,
            "--hostname-override",
            "node-a",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--min-sync-period",
            "100ms",
            "--sync-period",
            "2s",
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
        ],
    );

    // The caches sync, then the rules appear.
    let table = daemon.eventually("the Services' rules", || {
        kproxy_table(&ns).filter(|t| t.contains(WEB_RULES) && t.contains(API_RULES))
    });
    assert!(table.contains("10.244.1.10 . 8080"), "{table}");
    assert!(table.contains("10.244.1.20 . 8080"), "{table}");

    // Health, in kube-proxy's shape.
    for path in ["/healthz", "/livez"] {
        let (code, body) = daemon.eventually(path, || http_get(&ns, "127.0.0.1:10256", path));
        assert_eq!(code, 200, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        // As kube-proxy: only /healthz says whether the node is being deleted.
        let eligible = if path == "/healthz" {
            Value::Bool(true)
        } else {
            Value::Null
        };
        assert_eq!(body["nodeEligible"], eligible, "{path}: {body}");
        for field in ["lastUpdated", "currentTime"] {
            let time = body[field].as_str().unwrap_or_default();
            assert!(
                time.len() >= 20 && time.as_bytes()[10] == b'T' && time.ends_with('Z'),
                "{path}: {field} is not RFC 3339: {body}"
            );
        }
        assert_ne!(
            body["lastUpdated"], "0001-01-01T00:00:00Z",
            "synced: {body}"
        );
    }
    let (code, _) = http_get(&ns, "127.0.0.1:10256", "/nothing").expect("an answer");
    assert_eq!(code, 404);

    // Metrics after the first sync.
    let before = daemon.eventually("/metrics after a sync", || {
        scrape(&ns, "127.0.0.1:10249")
            .filter(|m| m.get("kubeproxy_sync_proxy_rules_duration_seconds_count") >= Some(&1.0))
    });
    for series in [
        "kubeproxy_sync_full_proxy_rules_duration_seconds_count",
        "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
        "kproxy_sync_operations_count",
        "kproxy_sync_transaction_bytes_sum",
        "kproxy_sync_transaction_seconds_count",
    ] {
        assert!(before.get(series) > Some(&0.0), "{series}: {before:?}");
    }
    for series in [
        "kproxy_sync_failures_total",
        "kproxy_conntrack_entries_deleted_total",
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_total",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}",
        "kubeproxy_network_programming_duration_seconds_count",
    ] {
        assert_eq!(before.get(series), Some(&0.0), "{series}: {before:?}");
    }
    let bucket = "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"+Inf\"}";
    assert_eq!(
        before.get(bucket),
        before.get("kubeproxy_sync_proxy_rules_duration_seconds_count"),
        "{before:?}"
    );
    assert_eq!(
        http_get(&ns, "127.0.0.1:10249", "/other").map(|(code, _)| code),
        Some(404)
    );

    // An endpoint added to a slice reaches the kernel's endpoint map. The slice carries the
    // time of the change that triggered it, as the EndpointSlice controller writes it.
    let mut changed = slice("web-1", "web", &["10.244.1.10", "10.244.2.20"]);
    changed["metadata"]["annotations"] =
        json!({"endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z"});
    api.apply(&changed).expect("stored");
    daemon.eventually("the new endpoint", || {
        kproxy_table(&ns).filter(|t| t.contains("10.244.2.20 . 8080"))
    });

    // ... and moves the sync metrics: one more sync, a partial one, counted as an endpoint
    // change (the Service object did not change).
    let count = "kubeproxy_sync_proxy_rules_duration_seconds_count";
    let after = daemon.eventually("/metrics after the slice change", || {
        scrape(&ns, "127.0.0.1:10249").filter(|m| {
            m.get(count) > before.get(count)
                && m.get("kubeproxy_sync_proxy_rules_endpoint_changes_total") >= Some(&1.0)
        })
    });
    assert!(
        after.get("kubeproxy_sync_partial_proxy_rules_duration_seconds_count") >= Some(&1.0),
        "{after:?}"
    );
    // One trigger time arrived and was measured: from the start of 2026 to now, over a day.
    assert_eq!(
        after.get("kubeproxy_network_programming_duration_seconds_count"),
        Some(&1.0),
        "{after:?}"
    );
    assert!(
        after.get("kubeproxy_network_programming_duration_seconds_sum") > Some(&86_400.0),
        "{after:?}"
    );
    assert_eq!(
        after.get("kubeproxy_sync_proxy_rules_service_changes_total"),
        Some(&0.0),
        "{after:?}"
    );
    assert!(
        after.get("kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds") > Some(&0.0),
        "{after:?}"
    );
    assert!(
        after.get("kproxy_sync_operations_count") > before.get("kproxy_sync_operations_count"),
        "{after:?}"
    );

    // A deleted Service disappears; the other stays.
    api.delete(Resource::Services, "default", "api")
        .expect("deleted");
    api.delete(Resource::EndpointSlices, "default", "api-1")
        .expect("deleted");
    let table = daemon.eventually("the deleted Service's chain to go", || {
        kproxy_table(&ns).filter(|t| !t.contains(API_RULES) && !t.contains("10.244.1.20 . 8080"))
    });
    assert!(table.contains(WEB_RULES), "{table}");

    // SIGTERM: exit 0, rules left in force.
    let status = daemon.stop("-TERM");
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("caches synced"), "{log}");
    assert!(
        log.contains("kind=\"full\"") || log.contains("kind=full"),
        "{log}"
    );
    let after = kproxy_table(&ns).expect("the table survives the daemon");
    assert!(
        after.contains(WEB_RULES) && after.contains("10.244.2.20 . 8080"),
        "{after}"
    );
}

/// Objects the API server holds but kproxy cannot use — a Service with an unparsable
/// ClusterIP, a slice with a garbage address — are logged with their name and field and
/// skipped; every other Service is programmed. Fixing the object programs it.
#[test]
fn run_skips_invalid_objects_from_the_api_and_programs_the_rest() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run-bad");
    let api = InNs::serving(
        &ns,
        [
            node("node-a", "192.168.10.11"),
            service("web", "10.96.100.10", 80),
            slice("web-1", "web", &["10.244.1.10"]),
            service("api", "10.96.100.300", 81),
            slice("api-1", "api", &["10.244.1.20"]),
            service("db", "10.96.100.12", 82),
            slice("db-1", "db", &["not-an-address"]),
        ],
    );
    let url = api.url();
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--master",
            &url,
            "--hostname-override",
            "node-a",
            "--min-sync-period",
            "0",
            "--healthz-bind-address",
            "",
            "--metrics-bind-address",
            "",
        ],
    );

    let table = daemon.eventually("the valid Service's chain", || {
        kproxy_table(&ns).filter(|t| t.contains(WEB_RULES))
    });
    assert!(table.contains("10.244.1.10 . 8080"), "{table}");
    assert!(!table.contains(API_RULES), "{table}");
    assert!(!table.contains("10.96.100.300"), "{table}");
    let log_file = daemon.log.clone();
    let log = daemon.eventually("the warnings", || {
        let log = std::fs::read_to_string(&log_file).unwrap_or_default();
        (log.contains("Service default/api") && log.contains("EndpointSlice default/db-1"))
            .then_some(log)
    });
    for (object, field) in [
        ("Service default/api", "spec.clusterIP"),
        ("EndpointSlice default/db-1", "endpoints[0].addresses[0]"),
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(object))
            .unwrap_or_else(|| panic!("no warning names {object}:\n{log}"));
        assert!(line.contains(field), "{object}: {line}");
    }

    // Fixed in the API, the Service is programmed.
    api.apply(&service("api", "10.96.100.11", 81))
        .expect("stored");
    let table = daemon.eventually("the fixed Service", || {
        kproxy_table(&ns).filter(|t| t.contains(API_RULES) && t.contains("10.244.1.20 . 8080"))
    });
    assert!(table.contains(WEB_RULES), "{table}");
    let status = daemon.stop("-TERM");
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
}

#[test]
fn run_rejects_bad_flags_before_starting() {
    for (flag, value) in [
        ("--min-sync-period", "soon"),
        ("--sync-period", "30"),
        ("--healthz-bind-address", "10256"),
    ] {
        let out = support::kproxy(&["run", "--master", "http://127.0.0.1:1", flag, value]);
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
    }
    let out = support::kproxy(&[
        "run",
        "--master",
        "http://127.0.0.1:1",
        "--cluster-cidr",
        "10.0.0.0/8,10.1.0.0/16",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster-cidr: more than one"), "{stderr}");
}

#[test]
fn run_is_unhealthy_while_it_cannot_sync_and_stops_on_sigint() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run-unhealthy");
    ns.ip_batch("link set lo up\n");
    // Nothing listens on port 1: the caches never sync, so the initial sync stays owed.
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--master",
            "http://127.0.0.1:1",
            "--hostname-override",
            "node-a",
            "--sync-period",
            "200ms",
            "--healthz-bind-address",
            "127.0.0.1:10256",
        ],
    );
    let (code, body) = daemon.eventually("/healthz to fail", || {
        http_get(&ns, "127.0.0.1:10256", "/healthz").filter(|(code, _)| *code == 503)
    });
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(code, 503);
    assert_eq!(body["lastUpdated"], "0001-01-01T00:00:00Z", "{body}");
    assert!(
        kproxy_table(&ns).is_none(),
        "nothing is programmed before the caches sync"
    );
    let status = daemon.stop("-INT");
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
}

/// A LoadBalancer Service with `externalTrafficPolicy: Local` and a healthCheckNodePort.
fn local_lb_service(name: &str, ip: &str, health_check_node_port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer", "clusterIP": ip, "clusterIPs": [ip],
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "externalTrafficPolicy": "Local",
                 "healthCheckNodePort": health_check_node_port,
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                            "nodePort": 30080}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}},
    })
}

#[test]
fn run_serves_health_check_node_ports_as_services_change() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run-hcnp");
    let api = InNs::serving(&ns, [node("node-a", "192.168.10.11")]);
    // The node name and the metrics address come from a KubeProxyConfiguration; the
    // command line's --min-sync-period wins over the file's.
    let config = std::env::temp_dir().join(format!("{}-config.yaml", ns.name()));
    std::fs::write(
        &config,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         hostnameOverride: node-a\nmetricsBindAddress: 127.0.0.1:10249\n\
         healthzBindAddress: 127.0.0.1:10256\nnftables:\n  minSyncPeriod: 1m\n\
         notAField: 1\n",
    )
    .expect("writing the config file");
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--master",
            &api.url(),
            "--config",
            config.to_str().unwrap(),
            "--min-sync-period",
            "0",
            "--healthz-bind-address",
            "",
        ],
    );
    daemon.eventually("the first sync", || {
        scrape(&ns, "127.0.0.1:10249")
            .filter(|m| m.get("kubeproxy_sync_proxy_rules_duration_seconds_count") >= Some(&1.0))
    });
    let check = "127.0.0.1:30100";
    assert_eq!(
        http_exchange(&ns, check, "/").map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "no server before the Service exists"
    );

    // A Service with a local ready endpoint: 200, one local endpoint.
    api.apply(&local_lb_service("lb", "10.96.100.20", 30100))
        .expect("stored");
    api.apply(&slice_on(
        "lb-1",
        "lb",
        &[("10.244.1.30", "node-a"), ("10.244.2.30", "node-b")],
    ))
    .expect("stored");
    let (code, head, body) = daemon.eventually("the health check to pass", || {
        http_exchange(&ns, check, "/")
            .ok()
            .filter(|(code, _, _)| *code == 200)
    });
    assert_eq!(code, 200);
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(
        body,
        json!({"service": {"namespace": "default", "name": "lb"},
               "localEndpoints": 1, "serviceProxyHealthy": true})
    );
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("X-Load-Balancing-Endpoint-Weight: 1")),
        "{head}"
    );
    // Local policy with a local endpoint: nothing is counted as lacking one.
    let metrics = scrape(&ns, "127.0.0.1:10249").expect("metrics");
    assert_eq!(
        metrics.get(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}"
        ),
        Some(&0.0),
        "{metrics:?}"
    );

    // The local endpoint goes: 503, none local.
    api.apply(&slice_on("lb-1", "lb", &[("10.244.2.30", "node-b")]))
        .expect("stored");
    let (_, head, body) = daemon.eventually("the health check to fail", || {
        http_exchange(&ns, check, "/")
            .ok()
            .filter(|(code, _, _)| *code == 503)
    });
    let body: Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(body["localEndpoints"], 0, "{body}");
    assert_eq!(body["serviceProxyHealthy"], true, "{body}");
    assert!(
        head.lines()
            .any(|l| l.eq_ignore_ascii_case("X-Load-Balancing-Endpoint-Weight: 0")),
        "{head}"
    );
    let metrics = daemon.eventually("the no-local-endpoints gauge", || {
        scrape(&ns, "127.0.0.1:10249").filter(|m| {
            m.get(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}",
            ) == Some(&1.0)
        })
    });
    assert_eq!(
        metrics.get(
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}"
        ),
        Some(&0.0),
        "{metrics:?}"
    );

    // The port moves with the Service.
    api.apply(&local_lb_service("lb", "10.96.100.20", 30101))
        .expect("stored");
    daemon.eventually("the health check on the new port", || {
        http_exchange(&ns, "127.0.0.1:30101", "/")
            .ok()
            .filter(|(code, _, _)| *code == 503)
    });
    assert_eq!(
        http_exchange(&ns, check, "/").map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "the old port is closed"
    );

    // The Service goes: so does its server.
    api.delete(Resource::Services, "default", "lb")
        .expect("deleted");
    daemon.eventually("the health check server to close", || {
        match http_exchange(&ns, "127.0.0.1:30101", "/") {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    });
    assert!(
        http_get(&ns, "127.0.0.1:10256", "/healthz").is_none(),
        "--healthz-bind-address \"\" wins over the file"
    );
    let status = daemon.stop("-TERM");
    assert!(status.success(), "exit {status}:\n{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("notAField: unknown field"), "{log}");
    let _ = std::fs::remove_file(&config);
}

#[test]
fn run_rejects_a_bad_config_file() {
    let dir = std::env::temp_dir().join(format!("kproxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n\
         nftables:\n  syncPeriod: soon\n",
    )
    .expect("writing");
    let missing = dir.join("missing.yaml");
    for (path, needle) in [
        (&bad, "nftables.syncPeriod"),
        (&missing, "reading --config"),
    ] {
        let out = support::kproxy(&[
            "run",
            "--master",
            "http://127.0.0.1:1",
            "--config",
            path.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kproxy run --cleanup-kube-proxy` on a node kube-proxy's nftables mode left: once kproxy's
/// own rules are in force, kube-proxy's tables go; other tables stay.
#[test]
fn run_with_cleanup_kube_proxy_removes_kube_proxys_tables_after_its_first_sync() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run-kp");
    ns.load(
        "table ip kube-proxy {\n chain services {\n  type nat hook prerouting priority dstnat; policy accept;\n }\n}\n\
         table inet other {\n chain c {\n }\n}\n",
    )
    .expect("kube-proxy's table loads");
    let api = InNs::serving(
        &ns,
        [
            node("node-a", "192.168.10.11"),
            service("web", "10.96.100.10", 80),
            slice("web-1", "web", &["10.244.1.10"]),
        ],
    );
    let url = api.url();
    let mut daemon = Daemon::start(
        &ns,
        &[
            "--master",
            &url,
            "--hostname-override",
            "node-a",
            "--min-sync-period",
            "0",
            "--healthz-bind-address",
            "",
            "--metrics-bind-address",
            "",
            "--cleanup-kube-proxy",
        ],
    );
    let tables = daemon.eventually("kube-proxy's table gone, kproxy's there", || {
        let out = ns.run("nft", &["list", "tables"]);
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        (listed.contains("table ip kproxy") && !listed.contains("kube-proxy")).then_some(listed)
    });
    assert!(tables.contains("table inet other"), "{tables}");
    let status = daemon.stop("-TERM");
    assert!(status.success(), "{status}");
}
