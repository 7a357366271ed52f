//! How long programming the kernel takes: cold apply over netlink beside `nft -f` of the same
//! ruleset (the kernel's own floor), and one endpoint change, at several cluster sizes.
//!
//! Runs as root in throwaway network namespaces: `cargo run --release -p kproxy-syncer
//! --example apply_speed -- 1000 10000 50000`. Prints a Markdown table for
//! docs/benchmarks.md.

use std::time::{Duration, Instant};

use kproxy_compiler::{compile, Options};
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;

const ENDPOINTS: usize = 10;
const CHANGES: usize = 21;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("cluster sizes are numbers of Services"))
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1000, 10_000]
    } else {
        sizes
    };
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    println!("| Services × endpoints | netlink messages | batch size | cold apply (netlink) | `nft -f` same ruleset | endpoint change: transaction, median (max) of {CHANGES} | plan, median | whole sync, median (max) |");
    println!("|---|---|---|---|---|---|---|---|");
    for services in sizes {
        let mut state = kproxy_synthetic::cluster(services, ENDPOINTS);
        let desired = compile(&state, &options);

        let text = kproxy_compiler::render::nft::ruleset(&desired);
        let node = NetNs::new("bench-apply");
        let mut syncer = Syncer::default();
        let start = Instant::now();
        let cold = node.exec(|| syncer.sync(desired)).expect("cold apply");
        let cold_time = start.elapsed();

        let reference = NetNs::new("bench-nft");
        let start = Instant::now();
        reference.load(&text).expect("nft -f");
        let nft_time = start.elapsed();

        let mut changes = Vec::with_capacity(CHANGES);
        let mut transactions = Vec::with_capacity(CHANGES);
        let mut plans = Vec::with_capacity(CHANGES);
        for i in 0..CHANGES {
            kproxy_synthetic::toggle_endpoint(&mut state, i);
            let desired = compile(&state, &options);
            let start = Instant::now();
            let report = node.exec(|| syncer.sync(desired)).expect("endpoint change");
            changes.push(start.elapsed());
            transactions.push(report.transaction);
            plans.push(report.plan);
            assert_eq!(report.operations, 2, "an endpoint change is two operations");
        }
        changes.sort();
        transactions.sort();
        plans.sort();
        println!(
            "| {services} × {ENDPOINTS} | {} | {:.1} MB | {} | {} | {} ({}) | {} | {} ({}) |",
            cold.applied.messages,
            cold.applied.bytes as f64 / 1e6,
            ms(cold_time),
            ms(nft_time),
            ms(transactions[CHANGES / 2]),
            ms(transactions[CHANGES - 1]),
            ms(plans[CHANGES / 2]),
            ms(changes[CHANGES / 2]),
            ms(changes[CHANGES - 1]),
        );
    }
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}
