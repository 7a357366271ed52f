//! `cargo xtask tidy`: source hygiene that rustfmt and clippy do not check.
//!
//! * every Rust file starts with a `//!` doc comment saying what it is for;
//! * no trailing whitespace;
//! * no `#[ignore]` or `#[should_panic]`: a test either runs and asserts, or does not exist;
//! * `unsafe` only in FFI modules (`ffi.rs`: the syncer's libnftnl calls, the daemon's
//!   `malloc_trim`) and benchmark allocators;
//! * every golden case has its input, flags and expected output (`expected.nft`,
//!   `expected.iptables`);
//! * `.ci/run` runs exactly README.md's test command (quick start, command 2).

use std::path::{Path, PathBuf};

use anyhow::bail;

pub fn run() -> anyhow::Result<()> {
    let problems = check(&crate::project_root());
    if problems.is_empty() {
        eprintln!("tidy: ok");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("tidy: {problem}");
    }
    bail!("tidy found {} problem(s)", problems.len())
}

fn check(root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "xtask"] {
        rust_files(&root.join(dir), &mut files);
    }
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            problems.push(format!("{}: unreadable", file.display()));
            continue;
        };
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        problems.extend(check_source(&shown, &text));
    }
    match (
        std::fs::read_to_string(root.join("README.md")),
        std::fs::read_to_string(root.join(".ci/run")),
    ) {
        (Ok(readme), Ok(script)) => {
            problems.extend(crate::readme::check_ci_script(&readme, &script))
        }
        _ => problems.push("README.md or .ci/run: unreadable".to_string()),
    }
    for case in dirs(&root.join("testdata/golden")) {
        for needed in ["input.yaml", "flags", "expected.nft", "expected.iptables"] {
            if !case.join(needed).exists() {
                problems.push(format!("{}: missing {needed}", case.display()));
            }
        }
    }
    problems
}

fn check_source(shown: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if !text.starts_with("//!") {
        problems.push(format!("{shown}: does not start with a `//!` comment"));
    }
    let unsafe_allowed = shown.ends_with("/ffi.rs") || shown.contains("/examples/peak_memory");
    let banned = [["#[", "ignore"].concat(), ["#[", "should_panic"].concat()];
    for (number, line) in text.lines().enumerate() {
        let at = || format!("{shown}:{}", number + 1);
        if line.ends_with(' ') || line.ends_with('\t') {
            problems.push(format!("{}: trailing whitespace", at()));
        }
        for word in &banned {
            if line.trim_start().starts_with(word.as_str()) {
                problems.push(format!("{}: {word}] is not allowed", at()));
            }
        }
        if !unsafe_allowed && code_words(line).any(|w| w == "unsafe") {
            problems.push(format!("{}: `unsafe` outside an FFI module", at()));
        }
    }
    problems
}

/// The words of a line's code: string literals and `//` comments removed (roughly, which is
/// enough for a keyword check).
fn code_words(line: &str) -> impl Iterator<Item = &str> {
    let code = line.split("//").next().unwrap_or_default();
    code.split('"')
        .step_by(2)
        .flat_map(|part| part.split(|c: char| !c.is_alphanumeric() && c != '_'))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tree_is_tidy() {
        let problems = check(&crate::project_root());
        assert!(
            problems.is_empty(),
            "run `cargo xtask tidy`:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_checks_catch_what_they_claim_to() {
        let bad = format!(
            "fn f() {{}} \n{}]\nfn g() {{ {} {{}} }}\n",
            ["#[", "ignore"].concat(),
            ["un", "safe"].concat()
        );
        let problems = check_source("crates/x/src/a.rs", &bad);
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(check_source("crates/x/src/a.rs", "//! ok\n// unsafe in a comment\n").is_empty());
    }
}
