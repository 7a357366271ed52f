//! Turns parsed documents into typed objects: unpacks lists, picks the kinds
//! kproxy needs, and decodes them with field paths for errors.

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::Resource;
use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value as Yaml};

use crate::location::Location;
use crate::path::{self, Segment};
use crate::{convert, Error, Located, Manifests};

/// The kinds kproxy reads; everything else is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wanted {
    Service,
    EndpointSlice,
    Node,
}

impl Wanted {
    const ALL: [Wanted; 3] = [Wanted::Service, Wanted::EndpointSlice, Wanted::Node];

    fn api_version(self) -> &'static str {
        match self {
            Wanted::Service => Service::API_VERSION,
            Wanted::EndpointSlice => EndpointSlice::API_VERSION,
            Wanted::Node => Node::API_VERSION,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Wanted::Service => Service::KIND,
            Wanted::EndpointSlice => EndpointSlice::KIND,
            Wanted::Node => Node::KIND,
        }
    }

    /// Whether objects of this kind live in a namespace (Nodes do not).
    fn namespaced(self) -> bool {
        !matches!(self, Wanted::Node)
    }

    fn by_kind(kind: &str) -> Option<Wanted> {
        Wanted::ALL.into_iter().find(|wanted| wanted.kind() == kind)
    }
}

/// Decodes one parsed document into `into`, reporting problems to `errors`.
pub(crate) fn document(
    mut value: Yaml,
    location: Location,
    into: &mut Manifests,
    errors: &mut Vec<Error>,
) {
    if let Err(source) = value.apply_merge() {
        errors.push(Error::Yaml { location, source });
        return;
    }
    match value {
        // Empty, comment-only and `null` documents.
        Yaml::Null => {}
        Yaml::Mapping(mapping) => match kind_of(&mapping, &location) {
            Ok(Some(kind)) if is_list(&kind, &mapping) => {
                list(mapping, &kind, &location, into, errors);
            }
            Ok(Some(_)) => object(Yaml::Mapping(mapping), &location, into, errors),
            Ok(None) => errors.push(Error::MissingKind { location }),
            Err(error) => errors.push(error),
        },
        other => errors.push(not_a_mapping(&other, location)),
    }
}

/// A `kind: List`, or a typed list such as `ServiceList` (a kind ending in
/// `List` that has an `items` sequence).
fn is_list(kind: &str, mapping: &Mapping) -> bool {
    kind == "List"
        || (kind.ends_with("List") && matches!(mapping.get("items"), Some(Yaml::Sequence(_))))
}

/// Decodes each item of a list as its own object.
///
/// Items of a typed list may leave out `apiVersion` and `kind` (the API
/// server omits them in `ServiceList`); they are taken from the list.
fn list(
    mut mapping: Mapping,
    kind: &str,
    location: &Location,
    into: &mut Manifests,
    errors: &mut Vec<Error>,
) {
    let items = match mapping.remove("items") {
        Some(Yaml::Sequence(items)) => items,
        None | Some(Yaml::Null) => Vec::new(),
        Some(other) => {
            errors.push(Error::Decode {
                location: location.clone(),
                object: Some(kind.to_owned()),
                path: "items".to_owned(),
                message: format!("expected a sequence, found {}", describe(&other)),
            });
            return;
        }
    };
    let item_kind = kind.strip_suffix("List").filter(|k| !k.is_empty());
    let list_api_version = mapping.get("apiVersion").and_then(Yaml::as_str);
    for (index, item) in items.into_iter().enumerate() {
        let location = location.with_item(index);
        let item = match (item, item_kind) {
            (Yaml::Mapping(mut item), Some(item_kind)) => {
                insert_default(&mut item, "kind", item_kind);
                if let Some(api_version) = list_api_version {
                    insert_default(&mut item, "apiVersion", api_version);
                }
                Yaml::Mapping(item)
            }
            (item, _) => item,
        };
        object(item, &location, into, errors);
    }
}

fn insert_default(mapping: &mut Mapping, key: &str, value: &str) {
    if !mapping.contains_key(key) {
        mapping.insert(Yaml::from(key), Yaml::from(value));
    }
}

/// Decodes one object (a whole document or one list item) if it is a kind
/// kproxy reads, and skips it otherwise.
fn object(value: Yaml, location: &Location, into: &mut Manifests, errors: &mut Vec<Error>) {
    let Yaml::Mapping(mapping) = &value else {
        errors.push(not_a_mapping(&value, location.clone()));
        return;
    };
    let wanted = match identify(mapping, location) {
        Ok(Some(wanted)) => wanted,
        Ok(None) => return,
        Err(error) => {
            errors.push(error);
            return;
        }
    };
    let name = object_name(wanted, mapping);
    let decoded = match wanted {
        Wanted::Service => decode(value).map(|object| {
            into.services.push(Located {
                location: location.clone(),
                object,
            })
        }),
        Wanted::EndpointSlice => decode(value).map(|object| {
            into.endpoint_slices.push(Located {
                location: location.clone(),
                object,
            })
        }),
        Wanted::Node => decode(value).map(|object| {
            into.nodes.push(Located {
                location: location.clone(),
                object,
            })
        }),
    };
    if let Err(failure) = decoded {
        errors.push(Error::Decode {
            location: location.clone(),
            object: Some(name),
            path: path::render(&failure.path),
            message: failure.message,
        });
    }
}

/// Which wanted kind an object is, by `apiVersion` and `kind`; `Ok(None)`
/// (after a debug message) for kinds kproxy does not read.
fn identify(mapping: &Mapping, location: &Location) -> Result<Option<Wanted>, Error> {
    let Some(kind) = kind_of(mapping, location)? else {
        return Err(Error::MissingKind {
            location: location.clone(),
        });
    };
    let api_version = match mapping.get("apiVersion") {
        Some(Yaml::String(api_version)) => Some(api_version.as_str()),
        None => None,
        Some(other) => {
            return Err(Error::Decode {
                location: location.clone(),
                object: Some(kind),
                path: "apiVersion".to_owned(),
                message: format!("expected a string, found {}", describe(other)),
            });
        }
    };
    match (Wanted::by_kind(&kind), api_version) {
        (Some(wanted), Some(api_version)) if wanted.api_version() == api_version => {
            Ok(Some(wanted))
        }
        // A Service without apiVersion is a mistake, not some other
        // resource: say so rather than silently dropping it.
        (Some(wanted), None) => Err(Error::Decode {
            location: location.clone(),
            object: Some(object_name(wanted, mapping)),
            path: "apiVersion".to_owned(),
            message: format!("missing field, expected {:?}", wanted.api_version()),
        }),
        _ => {
            tracing::debug!(
                location = %location,
                api_version = api_version.unwrap_or(""),
                kind = %kind,
                "skipping object: kproxy does not read this kind",
            );
            Ok(None)
        }
    }
}

/// Why an object did not decode.
struct Failure {
    path: Vec<Segment>,
    message: String,
}

/// Converts to JSON and deserializes, keeping the path of the failing field.
fn decode<T: DeserializeOwned>(value: Yaml) -> Result<T, Failure> {
    let json = convert::to_json(value).map_err(|e| Failure {
        path: e.path,
        message: e.message,
    })?;
    serde_path_to_error::deserialize(json).map_err(|e| Failure {
        path: path::from_serde(e.path()),
        message: e.inner().to_string(),
    })
}

/// The object's `kind`: `Ok(None)` if absent, an error if not a string.
fn kind_of(mapping: &Mapping, location: &Location) -> Result<Option<String>, Error> {
    match mapping.get("kind") {
        None | Some(Yaml::Null) => Ok(None),
        Some(Yaml::String(kind)) if kind.is_empty() => Ok(None),
        Some(Yaml::String(kind)) => Ok(Some(kind.clone())),
        Some(other) => Err(Error::Decode {
            location: location.clone(),
            object: None,
            path: "kind".to_owned(),
            message: format!("expected a string, found {}", describe(other)),
        }),
    }
}

/// `Kind namespace/name`, `Kind name` or `Kind` alone, read from the raw
/// value so that objects that fail to decode can still be named.
fn object_name(wanted: Wanted, mapping: &Mapping) -> String {
    let metadata = mapping.get("metadata");
    let field = |key: &str| {
        metadata
            .and_then(|m| m.get(key))
            .and_then(Yaml::as_str)
            .filter(|s| !s.is_empty())
    };
    match (
        field("namespace").filter(|_| wanted.namespaced()),
        field("name"),
    ) {
        (Some(namespace), Some(name)) => format!("{} {namespace}/{name}", wanted.kind()),
        (None, Some(name)) => format!("{} {name}", wanted.kind()),
        (_, None) => wanted.kind().to_owned(),
    }
}

fn not_a_mapping(value: &Yaml, location: Location) -> Error {
    Error::Decode {
        location,
        object: None,
        path: String::new(),
        message: format!(
            "expected a Kubernetes object (a mapping), found {}",
            describe(value)
        ),
    }
}

/// A short description of a value's type, for messages.
fn describe(value: &Yaml) -> &'static str {
    match value {
        Yaml::Null => "null",
        Yaml::Bool(_) => "a boolean",
        Yaml::Number(_) => "a number",
        Yaml::String(_) => "a string",
        Yaml::Sequence(_) => "a sequence",
        Yaml::Mapping(_) => "a mapping",
        Yaml::Tagged(_) => "a tagged value",
    }
}
