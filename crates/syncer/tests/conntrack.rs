//! Conntrack cleanup against the kernel: entries are created with the `conntrack` CLI in a
//! throwaway network namespace, the library runs on a thread inside that namespace, and
//! `conntrack -L` shows which entries are left.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use kproxy_syncer::conntrack::{
    clear_stale_flows, delete_flows, dump_flows, Cleared, Destination, IpFamily, Protocol,
    ServiceTarget,
};
use kproxy_testkit::{kernel_tests_skipped, NetNs};

/// One conntrack entry to create: `proto orig_src -> orig_dst`, replied to by `reply_src`.
struct Entry {
    name: &'static str,
    proto: &'static str,
    src: &'static str,
    dst: &'static str,
    reply_src: &'static str,
    zone: Option<u16>,
    stale: bool,
}

const fn entry(
    name: &'static str,
    proto: &'static str,
    src: &'static str,
    dst: &'static str,
    reply_src: &'static str,
    stale: bool,
) -> Entry {
    Entry {
        name,
        proto,
        src,
        dst,
        reply_src,
        zone: None,
        stale,
    }
}

/// Every case of the cleanup rules, both families. Source ports are unique per family, which
/// is how a `conntrack -L` line maps back to its case.
#[rustfmt::skip]
const ENTRIES: &[Entry] = &[
    //    case                                              proto   original source    original destination  reply source       stale
    entry("service, removed endpoint",                      "udp",  "10.0.0.1:40001",  "10.96.0.10:53",      "10.244.1.9:53",   true),
    entry("service, serving endpoint",                      "udp",  "10.0.0.1:40002",  "10.96.0.10:53",      "10.244.1.5:53",   false),
    entry("nodeport, removed endpoint",                     "udp",  "192.0.2.1:40003", "172.18.0.2:30053",   "10.244.1.9:53",   true),
    entry("nodeport on another address, removed endpoint",  "udp",  "192.0.2.1:40004", "127.0.0.1:30053",    "10.244.1.9:53",   true),
    entry("nodeport, serving endpoint",                     "udp",  "192.0.2.1:40005", "172.18.0.2:30053",   "10.244.1.5:53",   false),
    entry("tcp, removed endpoint",                          "tcp",  "10.0.0.1:40006",  "10.96.0.10:53",      "10.244.1.9:53",   false),
    entry("unrelated udp",                                  "udp",  "10.0.0.1:40007",  "8.8.8.8:53",         "8.8.8.8:53",      false),
    entry("service with zero endpoints",                    "udp",  "10.0.0.1:40008",  "10.96.0.20:123",     "10.244.2.2:123",  true),
    entry("sctp, removed endpoint",                         "sctp", "10.0.0.1:40009",  "10.96.0.30:9000",    "10.244.3.3:9000", true),
    entry("sctp, serving endpoint",                         "sctp", "10.0.0.1:40010",  "10.96.0.30:9000",    "10.244.3.4:9000", false),
    entry("service, never DNATed",                          "udp",  "10.0.0.1:40011",  "10.96.0.10:53",      "10.96.0.10:53",   true),
    entry("service, other port",                            "udp",  "10.0.0.1:40012",  "10.96.0.10:54",      "10.244.1.9:54",   false),
    entry("service, endpoint moved to another port",        "udp",  "10.0.0.1:40013",  "10.96.0.10:53",      "10.244.1.5:5353", true),
    Entry { zone: Some(5), ..entry(
          "service, removed endpoint, zone 5",              "udp",  "10.0.0.1:40014",  "10.96.0.10:53",      "10.244.1.9:53",   true) },
    entry("v6 service, removed endpoint",                   "udp",  "[fd00::1]:40001", "[fd00:96::10]:53",   "[fd00:244::9]:53", true),
    entry("v6 service, serving endpoint",                   "udp",  "[fd00::1]:40002", "[fd00:96::10]:53",   "[fd00:244::5]:53", false),
    entry("v6 nodeport, removed endpoint",                  "udp",  "[fd00:192::1]:40003", "[fd00:18::2]:30053", "[fd00:244::9]:53", true),
    entry("v6 nodeport, serving endpoint",                  "udp",  "[fd00:192::1]:40004", "[fd00:18::2]:30053", "[fd00:244::5]:53", false),
    entry("v6 tcp, removed endpoint",                       "tcp",  "[fd00::1]:40005", "[fd00:96::10]:53",   "[fd00:244::9]:53", false),
    entry("v6 unrelated udp",                               "udp",  "[fd00::1]:40006", "[2001:db8::53]:53",  "[2001:db8::53]:53", false),
    entry("v6 udp to the v4 nodeport's number",             "udp",  "[fd00::1]:40007", "[fd00:18::2]:30054", "[fd00:244::9]:53", false),
];

fn targets() -> Vec<ServiceTarget> {
    let t = |protocol, destination, serving: &[&str]| ServiceTarget {
        protocol,
        destination,
        serving: serving.iter().map(|s| s.parse().unwrap()).collect(),
    };
    let service = |s: &str| Destination::Service(s.parse().unwrap());
    let node_port = |family, port| Destination::NodePort { family, port };
    let (udp, sctp, v4, v6) = (Protocol::Udp, Protocol::Sctp, IpFamily::V4, IpFamily::V6);
    vec![
        t(udp, service("10.96.0.10:53"), &["10.244.1.5:53"]),
        t(udp, service("10.96.0.20:123"), &[]),
        t(sctp, service("10.96.0.30:9000"), &["10.244.3.4:9000"]),
        t(udp, node_port(v4, 30053), &["10.244.1.5:53"]),
        // IPv4 only: IPv6 flows to the same port number are not its business.
        t(udp, node_port(v4, 30054), &["10.244.1.5:53"]),
        t(udp, service("[fd00:96::10]:53"), &["[fd00:244::5]:53"]),
        t(udp, node_port(v6, 30053), &["[fd00:244::5]:53"]),
    ]
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// `conntrack -I` for one entry (an unreplied entry, as a first UDP packet would leave).
fn insert(ns: &NetNs, e: &Entry) {
    let (src, dst, reply_src) = (sa(e.src), sa(e.dst), sa(e.reply_src));
    let mut args: Vec<String> = ["-I", "-p", e.proto, "-t", "120"]
        .map(String::from)
        .to_vec();
    let pairs = [
        ("-s", src.ip().to_string()),
        ("-d", dst.ip().to_string()),
        ("--sport", src.port().to_string()),
        ("--dport", dst.port().to_string()),
        ("-r", reply_src.ip().to_string()),
        ("-q", src.ip().to_string()),
        ("--reply-port-src", reply_src.port().to_string()),
        ("--reply-port-dst", src.port().to_string()),
    ];
    for (flag, value) in pairs {
        args.extend([flag.to_string(), value]);
    }
    match e.proto {
        "tcp" => args.extend(["--state", "ESTABLISHED"].map(String::from)),
        "sctp" => args.extend(
            [
                "--state",
                "ESTABLISHED",
                "--orig-vtag",
                "1",
                "--reply-vtag",
                "2",
            ]
            .map(String::from),
        ),
        _ => {}
    }
    if let Some(zone) = e.zone {
        args.extend(["-w".to_string(), zone.to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = ns.run("conntrack", &args);
    assert!(
        out.status.success(),
        "conntrack {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `conntrack -L` lists: (protocol, original source, original destination, reply source).
fn listed(ns: &NetNs) -> BTreeSet<(String, SocketAddr, SocketAddr, SocketAddr)> {
    let mut all = BTreeSet::new();
    for family in ["ipv4", "ipv6"] {
        let out = ns.run("conntrack", &["-L", "-f", family]);
        assert!(
            out.status.success(),
            "conntrack -L: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let values = |key: &str| -> Vec<&str> {
                words
                    .iter()
                    .filter_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                    .collect()
            };
            let (src, dst, sport, dport) = (
                values("src"),
                values("dst"),
                values("sport"),
                values("dport"),
            );
            let addr =
                |ip: &str, port: &str| SocketAddr::new(ip.parse().unwrap(), port.parse().unwrap());
            all.insert((
                words[0].to_string(),
                addr(src[0], sport[0]),
                addr(dst[0], dport[0]),
                addr(src[1], sport[1]),
            ));
        }
    }
    all
}

fn key(e: &Entry) -> (String, SocketAddr, SocketAddr, SocketAddr) {
    (e.proto.to_string(), sa(e.src), sa(e.dst), sa(e.reply_src))
}

#[test]
fn conntrack_stale_udp_and_sctp_flows_are_deleted_and_nothing_else() {
    if kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("conntrack");
    for e in ENTRIES {
        insert(&ns, e);
    }
    assert_eq!(
        listed(&ns),
        ENTRIES.iter().map(key).collect(),
        "conntrack -L before cleanup lists every entry created"
    );

    let cleared = ns
        .exec(|| clear_stale_flows(&targets()))
        .expect("clear_stale_flows");

    let stale = ENTRIES.iter().filter(|e| e.stale).count();
    assert_eq!(
        (
            cleared.undecodable,
            cleared.stale,
            cleared.deleted,
            cleared.already_gone
        ),
        (0, stale, stale, 0)
    );
    // The kernel filters the dumps by protocol (since 5.9): no TCP entry crosses to userspace.
    let not_tcp = ENTRIES.iter().filter(|e| e.proto != "tcp").count();
    assert_eq!(cleared.scanned, not_tcp);
    let left = listed(&ns);
    for e in ENTRIES {
        assert_eq!(
            left.contains(&key(e)),
            !e.stale,
            "{}: expected {}",
            e.name,
            if e.stale { "deleted" } else { "kept" }
        );
    }
    assert_eq!(left.len(), ENTRIES.len() - stale);

    // A second cleanup finds nothing left to do.
    let again = ns.exec(|| clear_stale_flows(&targets())).unwrap();
    assert_eq!((again.stale, again.deleted), (0, 0));
    assert_eq!(again.scanned, not_tcp - stale);
}

#[test]
fn conntrack_dump_reports_tuples_ids_and_zones() {
    if kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("conntrack-dump");
    for e in ENTRIES {
        insert(&ns, e);
    }
    let (v4, v6) = ns.exec(|| {
        (
            dump_flows(IpFamily::V4).unwrap(),
            dump_flows(IpFamily::V6).unwrap(),
        )
    });
    assert_eq!(v4.len() + v6.len(), ENTRIES.len());
    assert!(v4.iter().all(|f| f.family() == IpFamily::V4));
    assert!(v6.iter().all(|f| f.family() == IpFamily::V6));
    let proto = |p: &str| match p {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        _ => unreachable!(),
    };
    for e in ENTRIES {
        let f = v4
            .iter()
            .chain(&v6)
            .find(|f| f.original.src == sa(e.src) && f.original.dst == sa(e.dst))
            .unwrap_or_else(|| panic!("{} not dumped", e.name));
        assert_eq!(f.protocol, proto(e.proto), "{}", e.name);
        assert_eq!(f.reply.src, sa(e.reply_src), "{}", e.name);
        assert_eq!(f.reply.dst, sa(e.src), "{}", e.name);
        assert_eq!(f.zone, e.zone.unwrap_or(0), "{}", e.name);
        assert!(f.id.is_some(), "{}", e.name);
    }
}

#[test]
fn conntrack_delete_checks_the_id_and_treats_gone_entries_as_done() {
    if kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("conntrack-id");
    let e = &ENTRIES[0];
    insert(&ns, e);
    let dumped = ns.exec(|| dump_flows(IpFamily::V4).unwrap());
    assert_eq!(dumped.len(), 1);

    // Same tuple, another id (a newer entry): the kernel answers ENOENT and keeps it.
    let mut other = dumped[0];
    other.id = other.id.map(|id| id ^ 1);
    assert_eq!(ns.exec(|| delete_flows(&[other])).unwrap(), (0, 1));
    assert_eq!(
        listed(&ns),
        BTreeSet::from([key(e)]),
        "an entry with another id survives"
    );

    // The right id deletes it; deleting it again finds it gone, which is not an error.
    assert_eq!(ns.exec(|| delete_flows(&dumped)).unwrap(), (1, 0));
    assert!(listed(&ns).is_empty());
    assert_eq!(ns.exec(|| delete_flows(&dumped)).unwrap(), (0, 1));
}

#[test]
fn conntrack_many_stale_flows_are_deleted_in_chunks() {
    if kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("conntrack-many");
    // 300 clients of a Service whose only endpoint moved: more deletes than one chunk.
    let mut script = String::new();
    for port in 20000..20300 {
        script.push_str(&format!(
            "-I -p udp -s 10.0.0.1 -d 10.96.0.10 --sport {port} --dport 53 -r 10.244.1.9 \
             -q 10.0.0.1 --reply-port-src 53 --reply-port-dst {port} -t 120\n"
        ));
    }
    let path = std::env::temp_dir().join(format!("kproxy-conntrack-{}.txt", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let out = ns.run("conntrack", &["-R", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(
        out.status.success(),
        "conntrack -R: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    insert(&ns, &ENTRIES[1]); // still serving: kept

    let targets = [ServiceTarget {
        protocol: Protocol::Udp,
        destination: Destination::Service(sa("10.96.0.10:53")),
        serving: BTreeSet::from([sa("10.244.1.5:53")]),
    }];
    let cleared = ns.exec(|| clear_stale_flows(&targets)).unwrap();
    assert_eq!(
        (cleared.scanned, cleared.stale, cleared.deleted),
        (301, 300, 300)
    );
    assert_eq!(listed(&ns), BTreeSet::from([key(&ENTRIES[1])]));
}

#[test]
fn conntrack_no_targets_touch_nothing() {
    if kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("conntrack-none");
    insert(&ns, &ENTRIES[0]);
    assert_eq!(
        ns.exec(|| clear_stale_flows(&[])).unwrap(),
        Cleared::default()
    );
    assert_eq!(listed(&ns).len(), 1);
}
