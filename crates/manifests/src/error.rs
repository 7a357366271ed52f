//! The problems reading manifests can report, one per file or document.

use crate::location::Location;

/// One problem with the input.
///
/// Display is one line, `<location>: <object>: <what>`, e.g.
/// `svc.yaml: document 2: Service default/web: spec.ports[0].port: invalid type: string "http", expected i32`,
/// so that a list of errors reads like compiler diagnostics. The object is
/// `Kind namespace/name` (`Kind name` for a cluster-scoped Node) and is left
/// out when it is not known.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, directory or stdin could not be read.
    #[error("{file}: {source}")]
    Io {
        /// The path as displayed, or `<stdin>`.
        file: String,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// A document is not valid YAML (or JSON). Line numbers in `source` count
    /// from the start of the file.
    #[error("{location}: invalid YAML: {}", one_line(&.source.to_string()))]
    Yaml {
        /// The document that failed to parse.
        location: Location,
        /// The parser's error.
        source: serde_yaml::Error,
    },
    /// A document (or list item) is a mapping without `kind`, so it cannot be
    /// a Kubernetes object.
    #[error("{location}: missing field `kind`, so this is not a Kubernetes object")]
    MissingKind {
        /// The document or list item without `kind`.
        location: Location,
    },
    /// A document or object has the wrong shape: not a mapping, or a field of
    /// the wrong type.
    #[error("{location}: {}", decode_message(.object.as_deref(), .path, .message))]
    Decode {
        /// The document or list item.
        location: Location,
        /// `Kind namespace/name` (or `Kind name`), when it could be read.
        object: Option<String>,
        /// The field at fault, e.g. `spec.ports[0].port`; empty for the whole
        /// object.
        path: String,
        /// What is wrong with it.
        message: String,
    },
}

impl Error {
    /// Where the problem is, when it is inside a document (not for `Io`).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::Io { .. } => None,
            Error::Yaml { location, .. }
            | Error::MissingKind { location }
            | Error::Decode { location, .. } => Some(location),
        }
    }
}

/// `<object>: <path>: <message>`, leaving out the parts that are unknown.
fn decode_message(object: Option<&str>, path: &str, message: &str) -> String {
    let mut out = String::new();
    if let Some(object) = object {
        out.push_str(object);
        out.push_str(": ");
    }
    if !path.is_empty() {
        out.push_str(path);
        out.push_str(": ");
    }
    out.push_str(&one_line(message));
    out
}

/// Keeps Display to one line even if an underlying message has line breaks.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location() -> Location {
        Location {
            file: "svc.yaml".into(),
            document: 2,
            item: None,
        }
    }

    #[test]
    fn decode_display_has_all_parts() {
        let error = Error::Decode {
            location: location(),
            object: Some("Service default/web".into()),
            path: "spec.ports[0].port".into(),
            message: "invalid type: string \"http\", expected i32".into(),
        };
        assert_eq!(
            error.to_string(),
            "svc.yaml: document 2: Service default/web: spec.ports[0].port: \
             invalid type: string \"http\", expected i32"
        );
    }

    #[test]
    fn decode_display_leaves_out_unknown_parts() {
        let error = Error::Decode {
            location: location(),
            object: None,
            path: String::new(),
            message: "expected\na mapping".into(),
        };
        assert_eq!(
            error.to_string(),
            "svc.yaml: document 2: expected a mapping"
        );
    }

    #[test]
    fn missing_kind_display() {
        let error = Error::MissingKind {
            location: location(),
        };
        assert_eq!(
            error.to_string(),
            "svc.yaml: document 2: missing field `kind`, so this is not a Kubernetes object"
        );
        assert_eq!(error.location(), Some(&location()));
    }
}
