//! `kproxy run` carrying real traffic: the daemon, fed by the fake API server inside the
//! topology's node namespace, programs that kernel; pods connect through the rules it keeps in
//! step with Service and EndpointSlice changes (partial syncs).

use kproxy_fakeapi::Resource;
use kproxy_testkit::traffic::Tally;

use super::manifests::{local, remote, Service, NODE};
use super::{at, topology, Mode};
use crate::run::{http_get, kproxy_table, node, Daemon, InNs};

const PODS: [(&str, &str); 4] = [
    ("client", "10.244.1.5"),
    ("a", "10.244.1.10"),
    ("b", "10.244.2.11"),
    ("d", "10.244.2.12"),
];

/// The pods answering `count` TCP and `count` UDP exchanges, if none failed.
fn answering(client: &kproxy_testkit::topology::Host, count: usize) -> Option<Vec<String>> {
    let to = at("10.96.0.10", None);
    let tcp = Tally::of(&client.tcp_repeat(to, count));
    let udp = Tally::of(&client.udp_repeat(to, count));
    let names = |t: &Tally| {
        t.names()
            .into_iter()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    (tcp.failures.is_empty() && udp.failures.is_empty() && names(&tcp) == names(&udp))
        .then(|| names(&tcp))
}

/// `name`'s value in Prometheus text, summed over its label sets.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The IPv4 rules the daemon programmed in `mode`, if any.
fn kernel_rules(topo: &super::Node, mode: Mode) -> Option<String> {
    match mode {
        Mode::Nftables => kproxy_table(topo.node()),
        // A fresh namespace has rules in neither backend, so kproxy picks nf_tables.
        Mode::Iptables => {
            let out = topo.node().run("iptables-nft-save", &["-t", "nat"]);
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        }
    }
}

fn run_carries_traffic_and_follows_endpoint_changes_and_deletes(mode: Mode) {
    let Some(topo) = topology(mode, "tr-run", &PODS, &[]) else {
        return;
    };
    let (a, b, d) = (topo.pod("a"), topo.pod("b"), topo.pod("d"));
    let web = Service::new("web", &["10.96.0.10"]);
    let mut objects = vec![node(NODE, &topo.node_ipv4().to_string())];
    objects.extend(web.clone().endpoints([local(a), remote(b)]).objects());
    // The node was programmed in the other mode before (a switch of --proxy-mode): the
    // daemon's first full sync must leave only its own mode's rules.
    let other = match mode {
        Mode::Nftables => Mode::Iptables,
        Mode::Iptables => Mode::Nftables,
    };
    let mut flags = super::manifests::FLAGS.to_vec();
    flags.extend(["--proxy-mode", other.flag()]);
    super::program(
        topo.node(),
        &super::manifests::render(&topo, &[web.clone().endpoints([remote(d)])]),
        &flags,
    );
    assert!(kernel_rules(&topo, other).is_some_and(|rules| rules.contains("10.96.0.10")));
    let api = InNs::serving(topo.node(), objects);
    let url = api.url();
    let mut daemon = Daemon::start(
        topo.node(),
        &[
            "--master",
            &url,
            "--hostname-override",
            NODE,
            "--cluster-cidr",
            "10.244.0.0/16,fd00:10:244::/56",
            "--min-sync-period",
            "0",
            "--healthz-bind-address",
            "127.0.0.1:10256",
            "--metrics-bind-address",
            "127.0.0.1:10249",
            "--proxy-mode",
            mode.flag(),
        ],
    );
    let client = topo.pod("client");

    // After the caches sync, the first (full) sync: both endpoints answer, TCP and UDP.
    daemon.eventually("a and b answering", || {
        answering(client, 24).filter(|names| names == &["a", "b"])
    });
    daemon.eventually("the other mode's rules gone", || {
        (!kernel_rules(&topo, other)
            .is_some_and(|rules| rules.contains("KUBE-SERVICES") || rules.contains("10.96.0.10")))
        .then_some(())
    });

    // The slice now lists d alone: a partial sync moves every new connection there.
    for object in web.clone().endpoints([remote(d)]).objects() {
        api.apply(&object).expect("stored");
    }
    daemon.eventually("only d answering", || {
        answering(client, 24).filter(|names| names == &["d"])
    });

    // Deleting the Service takes its address out of the kernel.
    api.delete(Resource::EndpointSlices, "default", "web-0")
        .expect("the slice existed");
    api.delete(Resource::Services, "default", "web")
        .expect("the Service existed");
    daemon.eventually("web's rules gone", || {
        kernel_rules(&topo, mode).filter(|rules| !rules.contains("10.96.0.10"))
    });

    // The cluster autoscaler marks the node for deletion: /healthz (which load balancers
    // probe) turns 503 with nodeEligible false, /livez (the pod's liveness) stays 200.
    let mut doomed = node(NODE, &topo.node_ipv4().to_string());
    doomed["spec"] = serde_json::json!({"taints": [
        {"key": "ToBeDeletedByClusterAutoscaler", "value": "1764580000", "effect": "NoSchedule"},
    ]});
    api.apply(&doomed).expect("stored");
    let body = daemon.eventually("/healthz 503", || {
        http_get(topo.node(), "127.0.0.1:10256", "/healthz")
            .filter(|(code, _)| *code == 503)
            .map(|(_, body)| body)
    });
    assert!(body.contains(r#""nodeEligible":false"#), "{body}");
    let (code, body) = daemon.eventually("/livez", || {
        http_get(topo.node(), "127.0.0.1:10256", "/livez")
    });
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("nodeEligible"), "{body}");

    // Full syncs: the first, and the one after the node changed; the rest went through
    // partial ones.
    let full = "kubeproxy_sync_full_proxy_rules_duration_seconds_count";
    let text = daemon.eventually("the second full sync in /metrics", || {
        http_get(topo.node(), "127.0.0.1:10249", "/metrics")
            .filter(|(code, text)| *code == 200 && metric(text, full) == 2.0)
            .map(|(_, text)| text)
    });
    let partial = metric(
        &text,
        "kubeproxy_sync_partial_proxy_rules_duration_seconds_count",
    );
    assert!(partial >= 2.0, "{text}");
}

super::in_both_modes!(run_carries_traffic_and_follows_endpoint_changes_and_deletes);
