//! Shared by the syncer's tests: synthetic states, the changes applied to them, and a
//! normalised listing of the kernel's ruleset.

#![allow(dead_code)] // each test binary uses a different subset

pub mod listing;

use kproxy_compiler::ir::Ruleset;
use kproxy_compiler::{compile, Options};
use kproxy_model::{ProxyState, SessionAffinity, TrafficPolicy};

pub fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

pub fn rules(state: &ProxyState) -> Ruleset {
    compile(state, &options())
}

pub use kproxy_synthetic::is_plain as plain;

/// Adds a remote endpoint to the first plain ClusterIP Service port.
pub fn add_endpoint(state: &mut ProxyState) {
    kproxy_synthetic::toggle_endpoint(state, 0);
}

/// The state changes the kernel test walks through, each applied to the previous state.
pub fn steps() -> Vec<(&'static str, ProxyState)> {
    let base = kproxy_synthetic::cluster(60, 3);
    let mut steps = vec![("start", base.clone())];
    let mut state = base;

    add_endpoint(&mut state);
    steps.push(("add an endpoint", state.clone()));

    let port = &mut state.ports[3].families[0].endpoints;
    port.cluster.pop();
    steps.push(("remove an endpoint", state.clone()));

    let index = state
        .ports
        .iter()
        .position(plain)
        .expect("a plain ClusterIP port");
    let gone = state.ports.remove(index);
    steps.push(("remove a Service port", state.clone()));

    state.ports.insert(index, gone);
    steps.push(("add it back", state.clone()));

    for port in state.ports.iter_mut().take(10) {
        port.internal_policy = TrafficPolicy::Local;
        port.external_policy = TrafficPolicy::Local;
    }
    steps.push(("switch traffic policies to Local", state.clone()));

    for port in state.ports.iter_mut().skip(10).take(5) {
        port.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 60,
        };
    }
    steps.push(("turn on session affinity", state.clone()));

    for port in state.ports.iter_mut().skip(10).take(5) {
        port.affinity = SessionAffinity::ClientIp {
            timeout_seconds: 120,
        };
    }
    steps.push(("change the affinity timeout", state.clone()));

    for port in &mut state.ports {
        port.families
            .retain(|f| f.family == kproxy_model::IpFamily::V4);
    }
    steps.push(("drop IPv6", state.clone()));

    for port in state.ports.iter_mut().take(8) {
        for family in &mut port.families {
            family.endpoints.cluster.clear();
            family.endpoints.local.clear();
            family.endpoints.any_usable = false;
        }
    }
    steps.push(("scale Services to zero", state.clone()));
    steps
}
