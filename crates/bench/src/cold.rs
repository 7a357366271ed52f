//! Measurement 2 (and 4): a cold apply. An empty namespace gets the whole ruleset in one
//! `Syncer::sync`; the kernel is then read back and its objects counted. Beside it (in a
//! child of its own, [`nft_floor`]), `nft -f` loads the renderer's text of the same ruleset
//! into another empty namespace: the kernel's floor for that ruleset. The large cold start
//! (44k × 6) is the same without `nft -f`; the parent checks the kernel log around each.
//!
//! One cold apply of 10,000 Services read anywhere from 0.95 to 1.28 s on the shared test host
//! within minutes, with the same binary, against a target of 1 s; the parent therefore runs the
//! sizes up to [`REPEATED_UP_TO`] [`RUNS`] times, each in a fresh child and namespace, and
//! reports the median.

use std::time::Instant;

use anyhow::{anyhow, Context};
use kproxy_compiler::compile;
use kproxy_syncer::Syncer;
use kproxy_testkit::NetNs;
use serde::{Deserialize, Serialize};

use crate::cluster::{options, Counts};

/// Cold applies per size, up to [`REPEATED_UP_TO`] Services.
pub const RUNS: usize = 3;
/// The largest size applied [`RUNS`] times; larger ones (50k: ~7 s each) run once.
pub const REPEATED_UP_TO: usize = 10_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cold {
    pub services: usize,
    pub endpoints: usize,
    pub compile: f64,
    /// The whole `Syncer::sync` call (read-back of the empty kernel, plan, transaction).
    pub apply: f64,
    /// Batch sent → kernel's answer.
    pub transaction: f64,
    /// Lowering the plan and writing the batch (`SyncReport::encode`; in `transaction` before
    /// 2026-12-04, absent from those results).
    #[serde(default)]
    pub encode: f64,
    pub messages: usize,
    pub bytes: usize,
    /// What the kernel holds afterwards (read back over netlink).
    pub kernel: Counts,
    /// `nft -f` of the rendered text, when measured (filled in by the parent).
    pub nft: Option<f64>,
    /// `apply` of every run of this size, in the order they ran, when the parent ran more
    /// than one; this record is the run with the median `apply` (filled in by the parent).
    #[serde(default)]
    pub runs: Vec<f64>,
}

pub fn measure(services: usize, endpoints: usize) -> anyhow::Result<Cold> {
    eprintln!("bench: cold apply, {services} × {endpoints}");
    let state = kproxy_synthetic::cluster(services, endpoints);
    let start = Instant::now();
    let desired = compile(&state, &options());
    let compile_time = start.elapsed();
    drop(state);

    let node = NetNs::new("bench-cold");
    let mut syncer = Syncer::default();
    let (report, apply, kernel) = node.exec(|| -> anyhow::Result<_> {
        let start = Instant::now();
        let report = syncer.sync(desired).context("cold apply")?;
        let apply = start.elapsed();
        let read = kproxy_syncer::netlink::read_tables().context("reading the tables back")?;
        Ok((report, apply, Counts::of(&read.ruleset)))
    })?;
    drop(syncer);
    drop(node);

    Ok(Cold {
        services,
        endpoints,
        compile: compile_time.as_secs_f64(),
        apply: apply.as_secs_f64(),
        transaction: report.transaction.as_secs_f64(),
        encode: report.encode.as_secs_f64(),
        messages: report.applied.messages,
        bytes: report.applied.bytes,
        kernel,
        nft: None,
        runs: Vec::new(),
    })
}

/// Seconds `nft -f` takes to load the rendered ruleset into an empty namespace.
pub fn nft_floor(services: usize, endpoints: usize) -> anyhow::Result<f64> {
    eprintln!("bench: nft -f, {services} × {endpoints}");
    let state = kproxy_synthetic::cluster(services, endpoints);
    let text = kproxy_compiler::render::nft::ruleset(&compile(&state, &options()));
    drop(state);
    let reference = NetNs::new("bench-nft");
    let start = Instant::now();
    reference
        .load(&text)
        .map_err(|e| anyhow!("nft -f of the rendered ruleset: {e}"))?;
    Ok(start.elapsed().as_secs_f64())
}
