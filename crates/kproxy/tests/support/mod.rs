//! Helpers shared by the integration tests.

pub mod golden;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's `testdata/` directory.
pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata")
}

/// The case directories under `testdata/<group>`, sorted by name.
pub fn cases(group: &str) -> Vec<PathBuf> {
    let dir = testdata().join(group);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// The flags stored in a case's `flags` file (one line, whitespace-separated).
pub fn flags(case: &Path) -> Vec<String> {
    let path = case.join("flags");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.split_whitespace().map(str::to_string).collect()
}

/// Runs the kproxy binary built for this test run.
pub fn kproxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .output()
        .expect("running kproxy")
}

/// Runs `kproxy dry-run -f <case>/input.yaml <flags> <extra>`.
pub fn dry_run(case: &Path, extra: &[&str]) -> Output {
    let input = case.join("input.yaml");
    let flags = flags(case);
    let mut args = vec!["dry-run", "-f", input.to_str().expect("UTF-8 path")];
    args.extend(flags.iter().map(String::as_str));
    args.extend(extra);
    kproxy(&args)
}

/// The case's name, for messages.
pub fn name(case: &Path) -> String {
    case.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
