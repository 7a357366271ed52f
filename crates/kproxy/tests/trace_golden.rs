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
    check_cases("trace", &["trace"], "expected.txt", 14, |_, _| Ok(()));
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

/// Flags of a case's command line that say what to compile (with a value, or without).
const INPUT_FLAGS: [&str; 6] = [
    "-f",
    "--filename",
    "--hostname-override",
    "--cluster-cidr",
    "--nodeport-addresses",
    "--proxy-mode",
];
const INPUT_SWITCHES: [&str; 2] = ["--masquerade-all", "--keep-going"];

/// A trace case's command line split into what `apply` needs and what describes the packet.
fn split_input(args: &[String]) -> (Vec<String>, Vec<String>) {
    let (mut input, mut packet) = (Vec::new(), Vec::new());
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if INPUT_FLAGS.contains(&arg.as_str()) {
            input.push(arg.clone());
            input.extend(args.next().cloned());
        } else if INPUT_SWITCHES.contains(&arg.as_str()) {
            input.push(arg.clone());
        } else {
            packet.push(arg.clone());
        }
    }
    (input, packet)
}

/// `kproxy trace --live` on a node: every golden trace case's manifests programmed into a
/// throwaway namespace with `kproxy apply`, then the same packet traced through the rules read
/// back from its kernel. The result must be the reviewed offline trace, line for line, after
/// the line that says where the rules came from. The namespace's one interface holds the
/// cases' node address (192.168.10.11) and IPv6 is off on it, so the kernel's local addresses
/// are exactly the offline trace's (the Node's InternalIP, 127.0.0.0/8, ::1).
#[test]
fn live_traces_of_applied_rules_equal_the_offline_traces() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = kproxy_testkit::NetNs::new("trace-live");
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1");
    ns.ip_batch(
        "link set lo up\n\
         link add k0 type veth peer name k1\n\
         addr add 192.168.10.11/24 dev k0\n\
         link set k0 up\n\
         link set k1 up\n\
         route add default via 192.168.10.1 dev k0 onlink\n",
    );
    let root = support::testdata().join("..");
    let in_ns = |args: &[&str]| {
        Command::new("ip")
            .args(["netns", "exec", ns.name(), env!("CARGO_BIN_EXE_kproxy")])
            .args(args)
            .current_dir(&root)
            .output()
            .expect("running kproxy in the namespace")
    };
    let empty = in_ns(&[
        "trace",
        "--live",
        "--src",
        "10.0.0.1",
        "--dst",
        "10.0.0.2:80",
    ]);
    let stderr = String::from_utf8_lossy(&empty.stderr);
    assert!(
        !empty.status.success() && stderr.contains("no kproxy tables"),
        "{stderr}"
    );
    let mut failures = Vec::new();
    let cases = support::cases("trace");
    for case in &cases {
        let name = support::name(case);
        let (input, packet) = split_input(&args(case));
        assert!(
            !packet.iter().any(|a| a == "--local-address"),
            "{name}: --local-address has no --live equivalent"
        );
        let input: Vec<&str> = input.iter().map(String::as_str).collect();
        let applied = in_ns(&[&["apply"], input.as_slice()].concat());
        assert!(
            applied.status.success(),
            "{name}: apply: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        let packet: Vec<&str> = packet.iter().map(String::as_str).collect();
        let live = in_ns(&[&["trace", "--live"], packet.as_slice()].concat());
        if !live.status.success() {
            failures.push(format!(
                "{name}: trace --live failed: {}",
                String::from_utf8_lossy(&live.stderr)
            ));
            continue;
        }
        let stdout = String::from_utf8(live.stdout).expect("UTF-8 output");
        let Some((header, trace)) = stdout.split_once('\n') else {
            failures.push(format!("{name}: no output"));
            continue;
        };
        if header != "rules: kproxy's tables in this network namespace's kernel (ip), read back over netlink" {
            failures.push(format!("{name}: unexpected first line {header:?}"));
        }
        let expected = std::fs::read_to_string(case.join("expected.txt")).expect("expected.txt");
        if trace != expected {
            let diff = similar::TextDiff::from_lines(expected.as_str(), trace)
                .unified_diff()
                .header("offline (expected.txt)", "--live")
                .to_string();
            failures.push(format!("{name}: the live trace differs:\n{diff}"));
        }
    }
    assert!(cases.len() >= 9, "only {} trace cases", cases.len());
    golden::assert_all(failures);
}

#[test]
fn trace_takes_manifests_or_live_not_both() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kproxy"))
            .arg("trace")
            .args(args)
            .current_dir(support::testdata().join(".."))
            .output()
            .expect("running kproxy");
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let neither = run(&["--src", "10.244.1.5", "--dst", "10.96.100.10:80"]);
    assert!(neither.contains("--filename <PATH>"), "{neither}");
    let both = run(&[
        "--live",
        "-f",
        "testdata/golden/clusterip-basic/input.yaml",
        "--dst",
        "10.96.100.10:80",
    ]);
    assert!(both.contains("cannot be used with"), "{both}");
    let flags = run(&[
        "--live",
        "--cluster-cidr",
        "10.244.0.0/16",
        "--dst",
        "10.96.100.10:80",
    ]);
    assert!(flags.contains("cannot be used with"), "{flags}");
}
