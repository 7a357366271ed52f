//! How long iptables mode takes to program the kernel, beside nftables mode on the same
//! cluster: cold apply (an empty namespace → every rule) and one endpoint change (a partial
//! restore), per iptables backend.
//!
//! Runs as root in throwaway network namespaces: `cargo run --release -p kproxy-syncer
//! --example iptables_speed -- 1000 10000`. Prints a Markdown table for docs/benchmarks.md.
//! The nf_tables backend of `iptables-restore` still grows faster than its input (29 s for a
//! cold apply at 10,000 Services, with the workarounds of `Tools::restore_full`; without them
//! it was quadratic, nine minutes), so it is measured only up to `KPROXY_BENCH_NFT_MAX`
//! Services (default 10,000).

use std::time::{Duration, Instant};

use kproxy_compiler::{compile, iptables, Options};
use kproxy_model::{IpFamily, ProxyState};
use kproxy_syncer::iptables::{IptablesSyncer, Tools, Variant};
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;

const ENDPOINTS: usize = 10;
const CHANGES: usize = 11;

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
    let nft_max: usize = std::env::var("KPROXY_BENCH_NFT_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    println!("| Services × endpoints | mode (backend) | rules (IPv4 + IPv6) | cold apply | endpoint change, median (max) of {CHANGES} | restore input per change (IPv4) |");
    println!("|---|---|---|---|---|---|");
    for services in sizes {
        let base = kproxy_synthetic::cluster(services, ENDPOINTS);
        nftables_row(services, &base, &options);
        for variant in [Variant::Legacy, Variant::Nft] {
            let tools = Tools { variant };
            if !installed(tools) {
                continue;
            }
            if variant == Variant::Nft && services > nft_max {
                println!(
                    "| {services} × {ENDPOINTS} | iptables ({variant:?}) | | not measured (over KPROXY_BENCH_NFT_MAX={nft_max}) | | |"
                );
                continue;
            }
            iptables_row(services, &base, &options, tools);
        }
    }
}

fn installed(tools: Tools) -> bool {
    std::process::Command::new(tools.program(IpFamily::V4, "-restore"))
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn nftables_row(services: usize, base: &ProxyState, options: &Options) {
    let mut state = base.clone();
    let node = NetNs::new("bench-ipt-nft");
    let mut syncer = Syncer::default();
    let desired = compile(&state, options);
    let start = Instant::now();
    node.exec(|| syncer.sync(desired)).expect("cold apply");
    let cold = start.elapsed();
    let mut changes = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        kproxy_synthetic::toggle_endpoint(&mut state, i);
        let desired = compile(&state, options);
        let start = Instant::now();
        node.exec(|| syncer.sync(desired)).expect("endpoint change");
        changes.push(start.elapsed());
    }
    changes.sort();
    println!(
        "| {services} × {ENDPOINTS} | nftables (netlink) | | {} | {} ({}) | |",
        ms(cold),
        ms(changes[CHANGES / 2]),
        ms(changes[CHANGES - 1]),
    );
}

fn iptables_row(services: usize, base: &ProxyState, options: &Options, tools: Tools) {
    let mut state = base.clone();
    let node = NetNs::new("bench-ipt");
    let mut syncer = IptablesSyncer::new(tools);
    let desired = iptables::compile(&state, options);
    let rules: usize = desired
        .families
        .iter()
        .flat_map(|f| &f.tables)
        .flat_map(|t| &t.chains)
        .map(|c| c.rules.len())
        .sum();
    let start = Instant::now();
    node.exec(|| syncer.sync(&desired)).expect("cold apply");
    let cold = start.elapsed();
    let mut changes = Vec::with_capacity(CHANGES);
    let mut input_lines = 0;
    let verbose = std::env::var_os("KPROXY_BENCH_VERBOSE").is_some();
    for i in 0..CHANGES {
        kproxy_synthetic::toggle_endpoint(&mut state, i);
        // The compile is included: iptables mode compiles the whole state each sync.
        let start = Instant::now();
        let desired = iptables::compile(&state, options);
        let compiled = start.elapsed();
        let report = node
            .exec(|| syncer.sync(&desired))
            .expect("endpoint change");
        changes.push(start.elapsed());
        // A family with nothing to change runs no restore and is not in the report.
        input_lines = report
            .families
            .iter()
            .find(|f| f.family == IpFamily::V4)
            .map_or(0, |f| f.input.lines().count());
        if verbose {
            let restores: Duration = report.families.iter().map(|f| f.restore).sum();
            let synced = start.elapsed() - compiled;
            eprintln!(
                "compile {compiled:?}, sync {synced:?} (restores {restores:?}, the rest {:?}), whole {:?}",
                synced.saturating_sub(restores),
                start.elapsed()
            );
            for f in &report.families {
                eprintln!(
                    "{:?} {}: restore {:?}, {} lines",
                    tools.variant,
                    f.family,
                    f.restore,
                    f.input.lines().count()
                );
            }
        }
    }
    changes.sort();
    println!(
        "| {services} × {ENDPOINTS} | iptables ({:?}) | {rules} | {} | {} ({}) | {input_lines} lines |",
        tools.variant,
        ms(cold),
        ms(changes[CHANGES / 2]),
        ms(changes[CHANGES - 1]),
    );
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    } else if d < Duration::from_secs(10) {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
