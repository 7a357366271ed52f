//! Field paths in error messages, e.g. `spec.ports[0].port`.

/// One step from an object into one of its fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// A mapping key (a field name).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Renders segments the way users write them in `kubectl explain`:
/// keys joined by `.`, indices as `[i]`. A key that would make the path
/// ambiguous (a label key like `kubernetes.io/service-name` contains `.`) is
/// written as `["key"]`.
pub(crate) fn render<'a>(segments: impl IntoIterator<Item = &'a Segment>) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Index(index) => {
                out.push('[');
                out.push_str(&index.to_string());
                out.push(']');
            }
            Segment::Key(key) if is_plain(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Key(key) => {
                out.push('[');
                // Debug quotes and escapes the key.
                out.push_str(&format!("{key:?}"));
                out.push(']');
            }
        }
    }
    out
}

/// The path of a serde_path_to_error error, as segments.
pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Segment::Index(*index),
            serde_path_to_error::Segment::Map { key } => Segment::Key(key.clone()),
            serde_path_to_error::Segment::Enum { variant } => Segment::Key(variant.clone()),
            serde_path_to_error::Segment::Unknown => Segment::Key("?".to_owned()),
        })
        .collect()
}

/// True if `key` can be written bare in a dotted path.
fn is_plain(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '$' || c == '?')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Segment {
        Segment::Key(name.to_owned())
    }

    #[test]
    fn keys_and_indices() {
        let path = [key("spec"), key("ports"), Segment::Index(0), key("port")];
        assert_eq!(render(&path), "spec.ports[0].port");
    }

    #[test]
    fn index_at_root_and_nested() {
        let path = [Segment::Index(2), Segment::Index(1), key("a")];
        assert_eq!(render(&path), "[2][1].a");
    }

    #[test]
    fn dotted_keys_are_quoted() {
        let path = [
            key("metadata"),
            key("labels"),
            key("kubernetes.io/service-name"),
        ];
        assert_eq!(
            render(&path),
            r#"metadata.labels["kubernetes.io/service-name"]"#
        );
    }

    #[test]
    fn empty_path_is_empty() {
        assert_eq!(render(&[]), "");
    }
}
