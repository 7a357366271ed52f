//! Integration tests for reading manifests: one binary, one module per
//! input shape, so the (slow to link) test binary is built once.

mod directory;
mod errors;
mod json;
mod kubectl;
mod multi_document;

use kproxy_manifests::{load_str, Error, Location, Manifests};

/// Loads one in-memory file.
fn load(file: &str, text: &str) -> (Manifests, Vec<Error>) {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    load_str(file, text, &mut manifests, &mut errors);
    (manifests, errors)
}

/// A location, for comparing with `Located::location`.
fn at(file: &str, document: usize, item: Option<usize>) -> Location {
    Location {
        file: file.to_owned(),
        document,
        item,
    }
}

/// `namespace/name` of anything with ObjectMeta, for compact assertions.
fn names<
    T: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    objects: &[kproxy_manifests::Located<T>],
) -> Vec<String> {
    objects
        .iter()
        .map(|located| {
            let meta = located.object.metadata();
            match &meta.namespace {
                Some(namespace) => format!("{namespace}/{}", meta.name.as_deref().unwrap_or("")),
                None => meta.name.clone().unwrap_or_default(),
            }
        })
        .collect()
}
