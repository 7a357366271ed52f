//! Reads Kubernetes manifests into k8s-openapi types, offline.
//!
//! `kproxy dry-run -f PATH` has no API server to watch, so this crate plays
//! the watcher's part: it reads files, directories or stdin in the shape
//! `kubectl get svc,endpointslices,nodes -A -o yaml` prints them (a
//! `kind: List`, multi-document YAML, JSON, or any mix) and hands back the
//! Services, EndpointSlices and Nodes it found. It does not interpret them;
//! that is the compiler's job.
//!
//! Input is usually hand-edited or concatenated from several clusters, so a
//! bad document never hides the good ones: [`load`] returns everything that
//! decoded *and* one [`Error`] per problem, each naming the file, the YAML
//! document, the list item and the object, so the user can find it.
//!
//! Objects are decoded, not validated: k8s-openapi fills in missing required
//! fields with defaults (an EndpointSlice without `addressType` decodes with
//! an empty one), and deciding what that means is left to the compiler.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod convert;
mod decode;
mod document;
mod error;
mod input;
mod location;
mod path;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

pub use error::Error;
pub use input::Input;
pub use location::Location;

/// An object together with where it was found.
///
/// Consumers keep the location so that later problems (for example a Service
/// the compiler cannot program) can still point at the line of input.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<T> {
    /// Where the object was read from.
    pub location: Location,
    /// The decoded object.
    pub object: T,
}

/// Everything relevant read from the inputs, in input order.
///
/// Input order is kept (files in command-line order, directory entries
/// sorted by name, documents and list items in file order) so that output
/// derived from it is deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// Objects of `apiVersion: v1`, `kind: Service`.
    pub services: Vec<Located<Service>>,
    /// Objects of `apiVersion: discovery.k8s.io/v1`, `kind: EndpointSlice`.
    pub endpoint_slices: Vec<Located<EndpointSlice>>,
    /// Objects of `apiVersion: v1`, `kind: Node`.
    pub nodes: Vec<Located<Node>>,
}

/// Reads all inputs.
///
/// Problems with individual files or documents do not stop the others: the
/// result holds everything that decoded, plus one [`Error`] per unreadable
/// file or bad document, in input order. `Input::Stdin` is read once, at its
/// first occurrence; later occurrences add nothing.
pub fn load(inputs: &[Input]) -> (Manifests, Vec<Error>) {
    let mut manifests = Manifests::default();
    let mut errors = Vec::new();
    let mut stdin_read = false;
    for input in inputs {
        match input {
            Input::Stdin if stdin_read => {
                tracing::debug!("stdin given more than once; it was already read");
            }
            Input::Stdin => {
                stdin_read = true;
                match input::read_stdin() {
                    Ok(text) => load_str(input::STDIN_NAME, &text, &mut manifests, &mut errors),
                    Err(error) => errors.push(error),
                }
            }
            Input::Path(path) => {
                for file in input::files(path, &mut errors) {
                    let name = file.display().to_string();
                    match input::read_file(&file, &name) {
                        Ok(text) => load_str(&name, &text, &mut manifests, &mut errors),
                        Err(error) => errors.push(error),
                    }
                }
            }
        }
    }
    (manifests, errors)
}

/// Reads one file's text already in memory; `file` is the name shown in
/// locations and errors.
///
/// [`load`] uses it for every file, and tests use it directly. Decoded objects
/// are appended to `into` and problems to `errors`, so several texts can be
/// gathered into one [`Manifests`].
pub fn load_str(file: &str, text: &str, into: &mut Manifests, errors: &mut Vec<Error>) {
    for document in document::split(text) {
        let location = Location {
            file: file.to_owned(),
            document: document.index,
            item: None,
        };
        match document.parse() {
            Ok(value) => decode::document(value, location, into, errors),
            Err(source) => errors.push(Error::Yaml { location, source }),
        }
    }
}
