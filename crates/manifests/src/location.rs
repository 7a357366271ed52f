//! Where an object was found, so every message can point back at the input.

use std::fmt;

/// Where one object was found: shown in every error message.
///
/// A manifest file can hold many documents and a `kind: List` many items, so
/// the file name alone would not let the user find a bad object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The path as displayed, or `<stdin>`.
    pub file: String,
    /// 1-based index of the YAML document in that file. Empty and comment-only
    /// documents are counted too, so the number matches what a reader counts
    /// by `---` separators.
    pub document: usize,
    /// 0-based index inside a list's `items`, when the object came from a
    /// `kind: List` (or a typed list such as `ServiceList`).
    pub item: Option<usize>,
}

impl Location {
    /// The same location, narrowed to item `index` of a list.
    pub(crate) fn with_item(&self, index: usize) -> Location {
        Location {
            item: Some(index),
            ..self.clone()
        }
    }
}

impl fmt::Display for Location {
    /// `svc.yaml: document 2`, or `svc.yaml: document 1, items[3]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_document_only() {
        let location = Location {
            file: "svc.yaml".into(),
            document: 2,
            item: None,
        };
        assert_eq!(location.to_string(), "svc.yaml: document 2");
    }

    #[test]
    fn display_list_item() {
        let location = Location {
            file: "<stdin>".into(),
            document: 1,
            item: None,
        }
        .with_item(3);
        assert_eq!(location.to_string(), "<stdin>: document 1, items[3]");
    }
}
