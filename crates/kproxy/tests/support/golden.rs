//! Compare output with a reviewed golden file, or rewrite it with `UPDATE_GOLDEN=1`
//! (`cargo xtask golden --bless`). Review the result with `git diff testdata/`.

use std::path::Path;

use similar::TextDiff;

/// True when golden files should be rewritten instead of compared.
pub fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

/// Compares `actual` with the file at `path`. Returns a readable diff on mismatch.
pub fn check(path: &Path, actual: &str) -> Result<(), String> {
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected == actual {
        return Ok(());
    }
    if updating() {
        std::fs::write(path, actual).map_err(|e| format!("writing {}: {e}", path.display()))?;
        eprintln!("updated {}", path.display());
        return Ok(());
    }
    let diff = TextDiff::from_lines(expected.as_str(), actual)
        .unified_diff()
        .context_radius(3)
        .header(&path.display().to_string(), "actual output")
        .to_string();
    Err(format!(
        "{} differs from the output (run `cargo xtask golden --bless` if the change is intended, then review `git diff testdata/`):\n{diff}",
        path.display()
    ))
}

/// Panics with every failure at once, so one run shows all broken cases.
pub fn assert_all(failures: Vec<String>) {
    if !failures.is_empty() {
        panic!(
            "{} failure(s):\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}
