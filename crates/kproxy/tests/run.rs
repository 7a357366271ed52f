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

fn node(name: &str, ip: &str) -> Value {
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
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": "node-a"}))
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
struct Daemon {
    child: Option<Child>,
    log: PathBuf,
}

impl Daemon {
    fn start(ns: &NetNs, args: &[&str]) -> Daemon {
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
    fn eventually<T>(&mut self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
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

/// A fake API server listening inside a namespace. It must be stopped from inside too: `stop`
/// wakes its accept loop by connecting to its address, which only the namespace can reach.
struct InNs<'a> {
    ns: &'a NetNs,
    api: Option<FakeApiServer>,
}

impl<'a> InNs<'a> {
    fn start(ns: &'a NetNs) -> InNs<'a> {
        // Bound from a thread inside the namespace, so it listens on the namespace's loopback.
        let api = ns.exec(|| FakeApiServer::start().expect("fake API server"));
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
fn kproxy_table(ns: &NetNs) -> Option<String> {
    let out = ns.run("nft", &["list", "table", "ip", "kproxy"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One HTTP/1.1 GET from inside `ns`: status code and body.
fn http_get(ns: &NetNs, addr: &str, path: &str) -> Option<(u16, String)> {
    ns.exec(|| {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(WAIT)).ok()?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    })
}

const WEB_CHAIN: &str = "service-default/web/tcp/http";
const API_CHAIN: &str = "service-default/api/tcp/http";

#[test]
fn run_follows_the_api_server_serves_healthz_and_exits_on_sigterm() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("run");
    ns.ip_batch("link set lo up\n");
    let api = InNs::start(&ns);
    for object in [
        node("node-a", "192.168.10.11"),
        service("web", "10.96.100.10", 80),
        slice("web-1", "web", &["10.244.1.10"]),
        service("api", "10.96.100.11", 81),
        slice("api-1", "api", &["10.244.1.20"]),
    ] {
        api.apply(&object).expect("stored");
    }
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
        ],
    );

    // The caches sync, then the rules appear.
    let table = daemon.eventually("the Services' chains", || {
        kproxy_table(&ns).filter(|t| t.contains(WEB_CHAIN) && t.contains(API_CHAIN))
    });
    assert!(table.contains("10.244.1.10 . 8080"), "{table}");
    assert!(table.contains("10.244.1.20 . 8080"), "{table}");

    // Health, in kube-proxy's shape.
    for path in ["/healthz", "/livez"] {
        let (code, body) = daemon.eventually(path, || http_get(&ns, "127.0.0.1:10256", path));
        assert_eq!(code, 200, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(body["nodeEligible"], true, "{path}: {body}");
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

    // An endpoint added to a slice reaches the kernel's endpoint map.
    api.apply(&slice("web-1", "web", &["10.244.1.10", "10.244.2.20"]))
        .expect("stored");
    daemon.eventually("the new endpoint", || {
        kproxy_table(&ns).filter(|t| t.contains("10.244.2.20 . 8080"))
    });

    // A deleted Service disappears; the other stays.
    api.delete(Resource::Services, "default", "api")
        .expect("deleted");
    api.delete(Resource::EndpointSlices, "default", "api-1")
        .expect("deleted");
    let table = daemon.eventually("the deleted Service's chain to go", || {
        kproxy_table(&ns).filter(|t| !t.contains(API_CHAIN) && !t.contains("10.244.1.20 . 8080"))
    });
    assert!(table.contains(WEB_CHAIN), "{table}");

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
        after.contains(WEB_CHAIN) && after.contains("10.244.2.20 . 8080"),
        "{after}"
    );
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
