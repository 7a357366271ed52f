//! Behaviour of the command line beyond the golden files: input forms and output formats.

use std::io::Write as _;

use crate::support;
use std::process::{Command, Stdio};

fn demo() -> String {
    support::testdata()
        .join("examples/demo.yaml")
        .to_string_lossy()
        .into_owned()
}

const FLAGS: [&str; 4] = [
    "--hostname-override",
    "node-a",
    "--cluster-cidr",
    "10.244.0.0/16,fd00:10:244::/56",
];

fn dry_run(extra: &[&str]) -> std::process::Output {
    let demo = demo();
    let mut args = vec!["dry-run", "-f", &demo];
    args.extend(FLAGS);
    args.extend(extra);
    support::kproxy(&args)
}

#[test]
fn stdin_and_file_give_the_same_ruleset() {
    let from_file = dry_run(&[]);
    assert!(from_file.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(["dry-run", "-f", "-"])
        .args(FLAGS)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning kproxy");
    let text = std::fs::read(demo()).expect("reading demo");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&text)
        .expect("writing stdin");
    let from_stdin = child.wait_with_output().expect("waiting for kproxy");
    assert!(from_stdin.status.success());
    assert_eq!(from_stdin.stdout, from_file.stdout);
}

#[test]
fn a_directory_is_read_in_file_name_order() {
    let dir = support::testdata().join("examples");
    let out = support::kproxy(&[
        "dry-run",
        "-f",
        dir.to_str().expect("UTF-8"),
        FLAGS[0],
        FLAGS[1],
        FLAGS[2],
        FLAGS[3],
    ]);
    assert!(out.status.success());
    assert_eq!(out.stdout, dry_run(&[]).stdout);
}

#[test]
fn json_output_is_the_ir_of_the_text_output() {
    let out = dry_run(&["--output", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    let tables = json["tables"].as_array().expect("tables");
    let families: Vec<&str> = tables
        .iter()
        .map(|t| t["family"].as_str().expect("family"))
        .collect();
    assert_eq!(families, ["ip", "ip6"]);

    let text = String::from_utf8(dry_run(&[]).stdout).expect("UTF-8");
    let chains_in_text = text
        .lines()
        .filter(|l| l.trim_start().starts_with("chain "))
        .count();
    let chains_in_json: usize = tables
        .iter()
        .map(|t| t["chains"].as_array().expect("chains").len())
        .sum();
    assert_eq!(chains_in_text, chains_in_json);
    let first_rule = &tables[0]["chains"][0]["rules"][0];
    assert_eq!(first_rule["action"]["verdict"]["jump"], "firewall-check");
}

#[test]
fn bad_flags_name_the_flag() {
    let out = dry_run(&["--nodeport-addresses", "10.0.0.0/99"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--nodeport-addresses: \"10.0.0.0/99\" is not a CIDR"),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_an_error_naming_it() {
    let out = support::kproxy(&[
        "dry-run",
        "-f",
        "/nonexistent/kproxy.yaml",
        "--hostname-override",
        "n",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/kproxy.yaml"));
}

#[test]
fn version_names_the_release_commit_and_build() {
    let out = support::kproxy(&["version"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let prefix = format!("kproxy {} (commit ", env!("CARGO_PKG_VERSION"));
    let rest = text
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{text:?} does not start with {prefix:?}"));
    let (commit, rest) = rest.split_once(", ").expect("commit, target, profile");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit:?}"
    );
    assert!(
        rest.contains("linux") && rest.trim_end().ends_with("build)"),
        "{rest:?}"
    );
}

#[test]
fn completions_cover_every_subcommand_and_flag() {
    for shell in ["bash", "zsh", "fish"] {
        let out = support::kproxy(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).expect("UTF-8");
        for word in [
            "dry-run",
            "apply",
            "run",
            "trace",
            "hostname-override",
            "min-sync-period",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = support::kproxy(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell is an error");
}
