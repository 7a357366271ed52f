//! Golden traces: `kproxy trace` on every case under `testdata/trace`, against reviewed
//! `expected.txt` files; and golden graphs: `kproxy dry-run --output dot` on every case under
//! `testdata/graph`, against `expected.dot` (each also parsed by Graphviz's `dot` when it is
//! installed).
//!
//! A case's `args` file holds the command line after `kproxy trace` (after `kproxy dry-run
//! --output dot` for graphs; lines starting with `#` are
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

/// Runs `kproxy <command> <args>` for every case of `testdata/<group>` and compares stdout
/// with the case's `expected` file; `check` sees each output too.
fn check_cases(
    group: &str,
    command: &[&str],
    expected: &str,
    at_least: usize,
    check: impl Fn(&str, &str) -> Result<(), String>,
) {
    let cases = support::cases(group);
    assert!(
        cases.len() >= at_least,
        "expected at least {at_least} {group} cases, found {}",
        cases.len()
    );
    let update = std::env::var_os("UPDATE_EXPECT").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for case in &cases {
        let name = support::name(case);
        let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
            .args(command)
            .args(args(case))
            .current_dir(support::testdata().join(".."))
            .output()
            .expect("running kproxy");
        if !out.status.success() {
            failures.push(format!(
                "{name}: kproxy {} failed:\n{}",
                command.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        if let Err(problem) = check(&name, &stdout) {
            failures.push(format!("{name}: {problem}"));
        }
        let expected = case.join(expected);
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
fn traces_match_their_expected_files() {
    check_cases("trace", &["trace"], "expected.txt", 9, |_, _| Ok(()));
}

/// True when Graphviz's `dot` can be run.
fn graphviz() -> bool {
    Command::new("dot").arg("-V").output().is_ok()
}

#[test]
fn graphs_match_their_expected_files_and_graphviz_reads_them() {
    let graphviz = graphviz();
    if !graphviz {
        eprintln!("Graphviz is not installed: graphs are compared but not parsed by `dot`");
    }
    check_cases(
        "graph",
        &["dry-run", "--output", "dot"],
        "expected.dot",
        4,
        |name, dot| {
            if !graphviz {
                return Ok(());
            }
            let mut child = Command::new("dot")
                .arg("-Tplain")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("running dot: {e}"))?;
            std::io::Write::write_all(
                &mut child.stdin.take().expect("piped stdin"),
                dot.as_bytes(),
            )
            .map_err(|e| format!("writing to dot: {e}"))?;
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() || !stderr.trim().is_empty() {
                return Err(format!("dot -Tplain refused the graph of {name}: {stderr}"));
            }
            // `-Tplain` lists one `node` line per node: every node declared was laid out.
            let declared = dot
                .lines()
                .filter(|l| l.trim_start().starts_with('"') && !l.contains(" -> "))
                .count();
            let laid_out = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("node "))
                .count();
            if declared != laid_out {
                return Err(format!(
                    "{declared} nodes declared, dot laid out {laid_out}"
                ));
            }
            Ok(())
        },
    );
}

#[test]
fn graph_of_an_unknown_service_is_an_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(["dry-run", "-o", "dot", "--service", "default/nope"])
        .args(["-f", "testdata/golden/clusterip-basic/input.yaml"])
        .args(["--hostname-override", "node-a"])
        .current_dir(support::testdata().join(".."))
        .output()
        .expect("running kproxy");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Service default/nope"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(["dry-run", "--service", "default/web"])
        .args(["-f", "testdata/golden/clusterip-basic/input.yaml"])
        .current_dir(support::testdata().join(".."))
        .output()
        .expect("running kproxy");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--service only applies to --output dot"),
        "{stderr}"
    );
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
