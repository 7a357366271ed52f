//! How fast `kproxy run` follows the API server: start to first full sync, event-to-kernel
//! latency of one EndpointSlice change, and the daemon's memory and CPU, at a cluster size.
//!
//! Runs as root; the daemon and the fake API server live in a throwaway network namespace.
//! Build the binary first, then run the example from the same profile:
//! `cargo build --release -p kproxy && cargo run --release -p kproxy --example daemon_speed --
//! 10000`. Prints a Markdown table row for docs/benchmarks.md; with `--json` after the size,
//! one JSON object instead (what `cargo xtask bench` reads).
//!
//! `KPROXY_BENCH_LOG` sets the daemon's `RUST_LOG` (default `warn`); `KPROXY_BENCH_VERBOSE`
//! prints every latency in the order of the changes.
//!
//! "In the kernel" is when the daemon's metrics report the sync that followed the change as
//! done: the sync count moves only after its transaction was acknowledged.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kproxy_fakeapi::FakeApiServer;
use kproxy_testkit::NetNs;
use serde_json::{json, Value};

const ENDPOINTS: usize = 10;
/// Enough for a p99 that is not simply the worst sample (nearest rank: the 198th of 200).
const CHANGES: usize = 200;
/// Index of the 99th percentile in the sorted latencies (nearest rank, ⌈0.99 n⌉).
const P99: usize = (CHANGES * 99).div_ceil(100) - 1;
const METRICS: &str = "127.0.0.1:10249";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let as_json = args.iter().any(|a| a == "--json");
    let services: usize = args
        .iter()
        .find(|a| *a != "--json")
        .map(|a| a.parse().expect("the number of Services"))
        .unwrap_or(10_000);
    let binary = kproxy_binary();
    let ns = NetNs::new("bench-daemon");
    ns.ip_batch("link set lo up\n");
    let api = ns.exec(|| FakeApiServer::start().expect("fake API server"));
    api.apply(&json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "192.168.10.11"}]},
    }))
    .expect("node");
    for i in 0..services {
        api.apply(&service(i)).expect("service");
        api.apply(&slice(i, ENDPOINTS)).expect("slice");
    }

    let start = Instant::now();
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(&binary)
        .args([
            "run",
            "--master",
            &api.url(),
            "--hostname-override",
            "node-a",
        ])
        .args(["--cluster-cidr", "10.0.0.0/10", "--min-sync-period", "0"])
        .args([
            "--metrics-bind-address",
            METRICS,
            "--healthz-bind-address",
            "",
        ])
        .env(
            "RUST_LOG",
            std::env::var("KPROXY_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .spawn()
        .expect("starting kproxy run");
    let synced = wait(&ns, Duration::from_secs(600), |m| count(m) >= 1.0);
    let first_sync = start.elapsed();
    let (rss_kib, cpu) = usage(&daemon);
    // After its first full sync the daemon removes the other proxy mode's leftovers once, on a
    // thread of its own (iptables-save and friends, which dump every table of the namespace):
    // let that finish, so the changes below measure the steady state.
    wait_for_no_children(&daemon, Duration::from_secs(60));

    let mut latencies = Vec::with_capacity(CHANGES);
    let mut syncs = count(&synced);
    for change in 0..CHANGES {
        // Pairs of changes on one Service: an endpoint added, then removed again.
        let i = (change / 2 * 7919) % services;
        let endpoints = if change % 2 == 0 {
            ENDPOINTS + 1
        } else {
            ENDPOINTS
        };
        let sent = Instant::now();
        api.apply(&slice(i, endpoints)).expect("slice change");
        let metrics = wait(&ns, Duration::from_secs(60), |m| count(m) > syncs);
        latencies.push(sent.elapsed());
        syncs = count(&metrics);
    }
    if std::env::var_os("KPROXY_BENCH_VERBOSE").is_some() {
        eprintln!("latencies in the order of the changes: {latencies:?}");
    }
    latencies.sort();
    let (rss_after_kib, cpu_after) = usage(&daemon);

    let _ = Command::new("kill").arg(daemon.id().to_string()).status();
    let _ = daemon.wait();
    ns.exec(move || drop(api));

    // Megabytes of 10^6 bytes in both outputs, as the targets are written (`VmRSS` is in KiB).
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    if as_json {
        println!(
            "{}",
            json!({
                "services": services,
                "endpoints": ENDPOINTS,
                "changes": CHANGES,
                "first_sync": first_sync.as_secs_f64(),
                "event_p50": latencies[CHANGES / 2].as_secs_f64(),
                "event_p99": latencies[P99].as_secs_f64(),
                "event_max": latencies[CHANGES - 1].as_secs_f64(),
                "rss_first_sync_mb": mb(rss_kib),
                "rss_after_changes_mb": mb(rss_after_kib),
                "cpu_first_sync": cpu.as_secs_f64(),
                "cpu_per_change": (cpu_after - cpu).as_secs_f64() / CHANGES as f64,
            })
        );
        return;
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1e3);
    println!("| Services × endpoints | first full sync | event → kernel p50 | p99 | max | RSS after first sync | RSS after {CHANGES} changes | CPU for the first sync | CPU per change |");
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {services} × {ENDPOINTS} | {:.2} s | {} | {} | {} | {:.0} MB | {:.0} MB | {:.2} s | {:.1} ms |",
        first_sync.as_secs_f64(),
        ms(latencies[CHANGES / 2]),
        ms(latencies[P99]),
        ms(latencies[CHANGES - 1]),
        mb(rss_kib),
        mb(rss_after_kib),
        cpu.as_secs_f64(),
        (cpu_after - cpu).as_secs_f64() * 1e3 / CHANGES as f64,
    );
}

fn service(i: usize) -> Value {
    let ip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{i}"), "namespace": "bench"},
        "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                 "ipFamilies": ["IPv4"], "ports": [{"port": 80, "protocol": "TCP", "targetPort": 8080}]},
    })
}

fn slice(i: usize, endpoints: usize) -> Value {
    let endpoints: Vec<Value> = (0..endpoints)
        .map(|e| {
            let n = i * 16 + e;
            json!({"addresses": [format!("10.{}.{}.{}", 1 + n / 65_536, (n / 256) % 256, n % 256)],
                   "conditions": {"ready": true},
                   "nodeName": if e % 3 == 0 { "node-a" } else { "node-b" }})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{i}-1"), "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"port": 8080, "protocol": "TCP"}],
    })
}

/// `target/<profile>/kproxy`, beside this example's own directory.
fn kproxy_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the example's path");
    let profile = exe
        .parent()
        .and_then(|examples| examples.parent())
        .expect("target/<profile>/examples");
    let binary = profile.join("kproxy");
    assert!(
        binary.exists(),
        "{} is missing: cargo build --release -p kproxy",
        binary.display()
    );
    binary
}

fn count(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kubeproxy_sync_proxy_rules_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` every millisecond until `done` holds.
fn wait(ns: &NetNs, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(metrics) = ns.exec(scrape) {
            if done(&metrics) {
                return metrics;
            }
        }
        assert!(Instant::now() < deadline, "the daemon did not sync in time");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until the daemon (`ip netns exec` execs it, so the child is the daemon) has had no
/// child process for 200 ms.
fn wait_for_no_children(daemon: &Child, limit: Duration) {
    let deadline = Instant::now() + limit;
    let children_of = |pid: u32| -> Vec<u32> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        if !children_of(daemon.id()).is_empty() {
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= Duration::from_millis(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn scrape() -> Option<String> {
    let mut stream = TcpStream::connect(METRICS).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
}

/// Resident memory (KiB) and CPU time of the daemon process.
fn usage(daemon: &Child) -> (u64, Duration) {
    let pid = daemon.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime are the 12th and
    // 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    (rss, Duration::from_millis(ticks * 10))
}
