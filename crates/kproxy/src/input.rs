//! Manifests → the desired state for this node, with one message per problem.
//!
//! Every problem names where it was found (file, document) and what is wrong (object, field),
//! so a user can fix the input without guessing.

use kproxy_manifests::{Located, Manifests};
use kproxy_model::k8s::{self, Skip};
use kproxy_model::{FieldError, NodeInfo, ProxyState};

/// The state built from the valid objects, plus every problem found.
pub struct Loaded {
    pub state: ProxyState,
    pub problems: Vec<String>,
}

/// Translates and joins all objects for node `node_name`.
pub fn build(manifests: &Manifests, node_name: &str) -> Loaded {
    let mut problems = Vec::new();
    let services = translate(&manifests.services, k8s::service, &mut problems);
    let slices = translate(
        &manifests.endpoint_slices,
        k8s::endpoint_slice,
        &mut problems,
    );

    let mut node = NodeInfo::named(node_name);
    for located in &manifests.nodes {
        if located.object.metadata.name.as_deref() != Some(node_name) {
            continue;
        }
        match k8s::node(&located.object) {
            Ok(info) => {
                node = info;
                break;
            }
            Err(errors) => report(&located.location, errors, &mut problems),
        }
    }
    if !node.seen {
        tracing::info!(
            node = node_name,
            "no Node object for this node: NodePorts use every local address"
        );
    }
    Loaded {
        state: ProxyState::build(node, &services, &slices),
        problems,
    }
}

fn translate<K, T>(
    objects: &[Located<K>],
    convert: impl Fn(&K) -> k8s::Translation<T>,
    problems: &mut Vec<String>,
) -> Vec<T> {
    let mut out = Vec::with_capacity(objects.len());
    for located in objects {
        match convert(&located.object) {
            Ok(Ok(spec)) => out.push(spec),
            Ok(Err(skip)) => log_skip(&located.location, &skip),
            Err(errors) => report(&located.location, errors, problems),
        }
    }
    out
}

fn log_skip(location: &kproxy_manifests::Location, skip: &Skip) {
    if skip.is_surprising() {
        tracing::warn!("{location}: skipped: {skip}");
    } else {
        tracing::debug!("{location}: skipped: {skip}");
    }
}

fn report(
    location: &kproxy_manifests::Location,
    errors: Vec<FieldError>,
    problems: &mut Vec<String>,
) {
    problems.extend(errors.into_iter().map(|e| format!("{location}: {e}")));
}
