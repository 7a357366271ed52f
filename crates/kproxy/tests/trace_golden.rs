//! Golden traces: `kproxy trace` on every case under `testdata/trace`, against reviewed
//! `expected.txt` files.
//!
//! A case's `args` file holds the command line after `kproxy trace` (lines starting with `#` are
//! comments; the rest is split on whitespace), run from the repository root, so inputs are named
//! by path (`-f testdata/golden/<case>/input.yaml`) rather than copied. `UPDATE_EXPECT=1` (or
//! `UPDATE_GOLDEN=1`, which `cargo xtask golden --bless` sets: this module's name contains
//! `golden::`) rewrites the expected files; review them with `git diff testdata/trace`.

use std::process::Command;

use crate::support::{self, golden};

/// The command line stored in a case's `args` file.
fn args(case: &std::path::Path) -> Vec<String> {
    let path = case.join("args");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .flat_map(str::split_whitespace)
        .map(str::to_string)
        .collect()
}

#[test]
fn traces_match_their_expected_files() {
    let cases = support::cases("trace");
    assert!(
        cases.len() >= 9,
        "expected at least 9 trace cases, found {}",
        cases.len()
    );
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in &cases {
        let name = support::name(case);
        let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
            .arg("trace")
            .args(args(case))
            .current_dir(support::testdata().join(".."))
            .output()
            .expect("running kproxy");
        if !out.status.success() {
            failures.push(format!(
                "{name}: trace failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        let expected = case.join("expected.txt");
        if update {
            std::fs::write(&expected, &stdout)
                .unwrap_or_else(|e| panic!("writing {}: {e}", expected.display()));
            continue;
        }
        if let Err(diff) = golden::check(&expected, &stdout) {
            failures.push(format!("{name}: {diff}"));
        }
    }
    golden::assert_all(failures);
}

#[test]
fn trace_json_is_the_typed_trace() {
    let root = support::testdata().join("..");
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(["trace", "-f", "testdata/golden/clusterip-basic/input.yaml"])
        .args([
            "--hostname-override",
            "node-a",
            "--cluster-cidr",
            "10.244.0.0/16",
        ])
        .args([
            "--src",
            "10.244.1.5",
            "--dst",
            "10.96.100.10:80",
            "-o",
            "json",
        ])
        .current_dir(root)
        .output()
        .expect("running kproxy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let outcomes = json["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes.len(), 3);
    for outcome in outcomes {
        assert_eq!(outcome["probability"]["numerator"], 1);
        assert_eq!(outcome["probability"]["denominator"], 3);
        assert_eq!(outcome["disposition"]["disposition"], "accepted");
        assert_eq!(outcome["disposition"]["masquerade"], false);
    }
    assert_eq!(outcomes[0]["disposition"]["dnat"], "10.244.1.10:8080");
}
