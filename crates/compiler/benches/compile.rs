//! Compile and render time for synthetic clusters of 1k and 10k Services × 10 endpoints.
//!
//! `cargo bench -p kproxy-compiler --bench compile`. The state (and, for `render`, the IR) is
//! built once, outside the timed loop, and each iteration's output is freed outside it too.
//! See `docs/benchmarks.md`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use kproxy_compiler::{compile, render, Options};

const ENDPOINTS: usize = 10;

fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

fn bench(c: &mut Criterion) {
    let options = options();
    for services in [1_000, 10_000] {
        let state = kproxy_synthetic::cluster(services, ENDPOINTS);
        let ruleset = compile(&state, &options);
        // Reported as e.g. `10000x10/compile`: Services × endpoints per Service, then the step.
        let mut group = c.benchmark_group(format!("{services}x{ENDPOINTS}"));
        group.throughput(Throughput::Elements(services as u64));
        group.warm_up_time(Duration::from_secs(1));
        if services >= 10_000 {
            // ~100-200 ms per iteration: ten flat samples of a few iterations each.
            group
                .sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .measurement_time(Duration::from_secs(8));
        } else {
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(4));
        }
        // Outputs are dropped outside the timed loop (`iter_with_large_drop`), so the three
        // add up; freeing a 10k-Service IR is a separate cost, which `peak_memory` reports.
        group.bench_function("compile", |b| {
            b.iter_with_large_drop(|| compile(black_box(&state), &options));
        });
        group.bench_function("render", |b| {
            b.iter_with_large_drop(|| render::nft::ruleset(black_box(&ruleset)));
        });
        group.bench_function("compile+render", |b| {
            b.iter_with_large_drop(|| {
                let ruleset = compile(black_box(&state), &options);
                let text = render::nft::ruleset(&ruleset);
                (ruleset, text)
            });
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
