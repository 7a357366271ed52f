//! Splits a file into YAML documents and parses each on its own.
//!
//! serde_yaml can iterate a multi-document stream, but it stops at the first
//! syntax error. Splitting first lets one broken document be reported while
//! the ones after it are still read. Splitting on lines is exact: YAML
//! forbids a line starting with `---` or `...` (followed by a space or the
//! end of the line) inside any document's content, so those lines are always
//! markers.

/// One YAML document of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Document<'a> {
    /// 1-based index in the file, counting empty and comment-only documents.
    pub(crate) index: usize,
    /// 0-based line in the file where `text` starts.
    pub(crate) first_line: usize,
    /// The document's text, including its `---` line if it has one.
    pub(crate) text: &'a str,
}

impl Document<'_> {
    /// Parses the document. A document with no content is `Null`.
    ///
    /// On a syntax error the document is parsed again behind `first_line`
    /// blank lines, so that the line in the error counts from the start of
    /// the file rather than from the start of the document. This costs time
    /// only for broken documents.
    pub(crate) fn parse(&self) -> Result<serde_yaml::Value, serde_yaml::Error> {
        match serde_yaml::from_str(self.text) {
            Ok(value) => Ok(value),
            Err(error) if self.first_line == 0 => Err(error),
            Err(error) => {
                let mut padded = "\n".repeat(self.first_line);
                padded.push_str(self.text);
                match serde_yaml::from_str::<serde_yaml::Value>(&padded) {
                    Err(shifted) => Err(shifted),
                    Ok(_) => Err(error),
                }
            }
        }
    }
}

/// Splits `text` into documents.
///
/// A `---` line starts a document, which counts even when it turns out
/// empty. Text before the first `---` (or after a `...` end marker) counts
/// only if it holds more than blank lines, comments and directives, matching
/// how a YAML parser numbers documents.
pub(crate) fn split(text: &str) -> Vec<Document<'_>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut splitter = Splitter {
        text,
        documents: Vec::new(),
        start: 0,
        first_line: 0,
        explicit: false,
    };
    let mut offset = 0;
    for (line_number, line) in text.split_inclusive('\n').enumerate() {
        let end = offset + line.len();
        if is_marker(line, "---") {
            splitter.finish(offset);
            splitter.restart(offset, line_number, true);
        } else if is_marker(line, "...") {
            splitter.finish(end);
            splitter.restart(end, line_number + 1, false);
        }
        offset = end;
    }
    splitter.finish(text.len());
    splitter.documents
}

/// State while splitting: the document being collected.
struct Splitter<'a> {
    text: &'a str,
    documents: Vec<Document<'a>>,
    /// Byte offset where the current document starts.
    start: usize,
    /// Line where the current document starts.
    first_line: usize,
    /// Whether the current document was opened by `---`.
    explicit: bool,
}

impl<'a> Splitter<'a> {
    /// Ends the current document at byte `end`, keeping it if it counts.
    fn finish(&mut self, end: usize) {
        let text = self.text.get(self.start..end).unwrap_or("");
        if self.explicit || has_content(text) {
            self.documents.push(Document {
                index: self.documents.len() + 1,
                first_line: self.first_line,
                text,
            });
        }
    }

    fn restart(&mut self, start: usize, first_line: usize, explicit: bool) {
        self.start = start;
        self.first_line = first_line;
        self.explicit = explicit;
    }
}

/// True if `line` is the marker (`---` or `...`) alone or followed by
/// whitespace, as YAML defines document markers.
fn is_marker(line: &str, marker: &str) -> bool {
    match line.strip_prefix(marker) {
        Some(rest) => rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']),
        None => false,
    }
}

/// True if `text` holds anything besides blank lines, comments, directives
/// and end markers.
fn has_content(text: &str) -> bool {
    text.lines().any(|line| {
        let trimmed = line.trim();
        !trimmed.is_empty()
            && !trimmed.starts_with('#')
            && !line.starts_with('%')
            && !is_marker(line, "...")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(text: &str) -> Vec<(usize, usize, &str)> {
        split(text)
            .into_iter()
            .map(|d| (d.index, d.first_line, d.text))
            .collect()
    }

    #[test]
    fn single_document_without_marker() {
        assert_eq!(texts("a: 1\nb: 2\n"), vec![(1, 0, "a: 1\nb: 2\n")]);
    }

    #[test]
    fn leading_marker_and_comments_do_not_add_a_document() {
        let text = "# header\n---\na: 1\n";
        assert_eq!(texts(text), vec![(1, 1, "---\na: 1\n")]);
    }

    #[test]
    fn empty_and_comment_only_documents_are_counted() {
        let text = "a: 1\n---\n---\n# only a comment\n---\nb: 2\n---\n";
        assert_eq!(
            texts(text),
            vec![
                (1, 0, "a: 1\n"),
                (2, 1, "---\n"),
                (3, 2, "---\n# only a comment\n"),
                (4, 4, "---\nb: 2\n"),
                (5, 6, "---\n"),
            ]
        );
    }

    #[test]
    fn marker_needs_whitespace_after_it() {
        let text = "a: |\n  x\n----\n---x: 1\n--- \t\nb: 1\n";
        let docs = texts(text);
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].2, "a: |\n  x\n----\n---x: 1\n");
        assert_eq!(docs[1], (2, 4, "--- \t\nb: 1\n"));
    }

    #[test]
    fn crlf_and_bom() {
        let text = "\u{feff}a: 1\r\n---\r\nb: 2\r\n";
        assert_eq!(
            texts(text),
            vec![(1, 0, "a: 1\r\n"), (2, 1, "---\r\nb: 2\r\n")]
        );
    }

    #[test]
    fn end_marker_ends_a_document() {
        let text = "a: 1\n...\nb: 2\n...\n---\nc: 3\n";
        assert_eq!(
            texts(text),
            vec![
                (1, 0, "a: 1\n...\n"),
                (2, 2, "b: 2\n...\n"),
                (3, 4, "---\nc: 3\n")
            ]
        );
    }

    #[test]
    fn empty_text_has_no_documents() {
        assert!(split("").is_empty());
        assert!(split("\n# nothing\n").is_empty());
    }

    #[test]
    fn parse_empty_document_is_null() {
        for document in split("---\n---\n# comment\n") {
            assert_eq!(document.parse().ok(), Some(serde_yaml::Value::Null));
        }
    }

    #[test]
    fn parse_error_line_counts_from_file_start() {
        let text = "a: 1\n---\nb: [1,\n";
        let documents = split(text);
        let error = documents[1].parse().err().map(|e| e.location());
        let line = error.flatten().map(|l| l.line());
        // `b: [1,` is on line 3 of the file; the unclosed flow sequence is
        // reported at or after it, never at the document-relative line 2.
        assert!(matches!(line, Some(l) if l >= 3), "{line:?}");
    }
}
