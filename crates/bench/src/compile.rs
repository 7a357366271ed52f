//! Measurement 1: the cost of the desired state before any kernel work. Building the
//! synthetic state, compiling it (`kproxy_compiler::compile`), planning the cold apply against
//! an empty kernel (`kproxy_syncer::plan`), and the process's peak resident memory.
//! `Incremental::new` (the per-port compile the daemon's partial syncs start from) is timed
//! after the peak is read, so the peak is that of compile + plan.

use std::time::Instant;

use kproxy_compiler::{compile, Incremental};
use serde::{Deserialize, Serialize};

use crate::cluster::options;
use crate::stats::proc_status_mb;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Compiled {
    pub services: usize,
    pub endpoints: usize,
    /// Seconds to build the synthetic `ProxyState`.
    pub state: f64,
    pub compile: f64,
    pub plan: f64,
    pub operations: usize,
    /// `Incremental::new` on the same state.
    pub incremental_new: f64,
    /// Resident memory with the state built, before compiling.
    pub rss_state_mb: f64,
    /// Peak resident memory of the process after compile + plan (`VmHWM`; state included).
    pub peak_rss_mb: f64,
}

pub fn measure(services: usize, endpoints: usize) -> Compiled {
    eprintln!("bench: compile + plan, {services} × {endpoints}");
    let options = options();
    let start = Instant::now();
    let state = kproxy_synthetic::cluster(services, endpoints);
    let state_time = start.elapsed();
    let rss_state_mb = proc_status_mb("VmRSS");

    let start = Instant::now();
    let ruleset = compile(&state, &options);
    let compile_time = start.elapsed();
    let start = Instant::now();
    let plan = kproxy_syncer::plan(None, &ruleset, &[]);
    let plan_time = start.elapsed();
    let peak_rss_mb = proc_status_mb("VmHWM");
    let operations = plan.operations.len();
    drop(plan);
    drop(ruleset);

    let start = Instant::now();
    let incremental = Incremental::new(&state, &options);
    let incremental_new = start.elapsed();
    drop(incremental);

    Compiled {
        services,
        endpoints,
        state: state_time.as_secs_f64(),
        compile: compile_time.as_secs_f64(),
        plan: plan_time.as_secs_f64(),
        operations,
        incremental_new: incremental_new.as_secs_f64(),
        rss_state_mb,
        peak_rss_mb,
    }
}
