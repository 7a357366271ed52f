//! Directory and file inputs through `load`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use kproxy_manifests::{load, Error, Input};

use super::names;

/// A fresh directory under the system temp dir, removed when dropped (even
/// if the test fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let name = format!(
            "kproxy-manifests-test-{}-{nanos}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn node(name: &str) -> String {
    format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n")
}

fn file_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn directory_reads_manifest_files_sorted_by_name() {
    let dir = TempDir::new();
    dir.write("b.yaml", &node("from-b"));
    dir.write(
        "a.yml",
        &format!("{}---\n{}", node("from-a-1"), node("from-a-2")),
    );
    dir.write(
        "c.json",
        r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "from-c"}}"#,
    );
    dir.write("notes.txt", &node("from-txt"));
    dir.write("README", &node("from-readme"));
    std::fs::create_dir(dir.0.join("sub.yaml")).expect("create subdirectory");
    std::fs::write(dir.0.join("sub.yaml").join("d.yaml"), node("nested")).expect("write");

    let (manifests, errors) = load(&[Input::Path(dir.0.clone())]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        names(&manifests.nodes),
        ["from-a-1", "from-a-2", "from-b", "from-c"]
    );
    let files: Vec<_> = manifests
        .nodes
        .iter()
        .map(|n| (file_name(&n.location.file), n.location.document))
        .collect();
    assert_eq!(
        files,
        [
            ("a.yml".to_owned(), 1),
            ("a.yml".to_owned(), 2),
            ("b.yaml".to_owned(), 1),
            ("c.json".to_owned(), 1)
        ]
    );
    // Locations show the path as given, joined with the file name.
    assert_eq!(
        manifests.nodes[0].location.file,
        dir.0.join("a.yml").display().to_string()
    );
}

#[test]
fn explicit_file_is_read_whatever_its_extension() {
    let dir = TempDir::new();
    let txt = dir.write("notes.txt", &node("from-txt"));
    let yaml = dir.write("x.yaml", &node("from-yaml"));
    let (manifests, errors) = load(&[Input::Path(yaml), Input::Path(txt.clone())]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&manifests.nodes), ["from-yaml", "from-txt"]);
    assert_eq!(manifests.nodes[1].location.file, txt.display().to_string());
}

#[test]
fn unreadable_input_is_an_io_error_and_the_rest_is_read() {
    let dir = TempDir::new();
    let missing = dir.0.join("missing.yaml");
    let good = dir.write("good.yaml", &node("good"));
    let (manifests, errors) = load(&[Input::Path(missing.clone()), Input::Path(good)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    match &errors[0] {
        Error::Io { file, source } => {
            assert_eq!(file, &missing.display().to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(errors[0]
        .to_string()
        .starts_with(&format!("{}: ", missing.display())));
    assert_eq!(names(&manifests.nodes), ["good"]);
}

#[test]
fn empty_directory_and_no_inputs_give_nothing() {
    let dir = TempDir::new();
    let (manifests, errors) = load(&[Input::Path(dir.0.clone())]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(manifests, Default::default());
    let (manifests, errors) = load(&[]);
    assert!(errors.is_empty());
    assert_eq!(manifests, Default::default());
}
