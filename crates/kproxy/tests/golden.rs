//! Golden tests: `kproxy dry-run` on every case under `testdata/golden` and `testdata/errors`
//! (nftables, and iptables mode's `expected.iptables`), and every golden ruleset loaded into a
//! real kernel inside a throwaway network namespace.

use kproxy_testkit::NetNs;

use crate::support::{self, golden};

#[test]
fn rulesets_match_their_golden_files() {
    let cases = support::cases("golden");
    assert!(
        cases.len() >= 25,
        "expected at least 25 golden cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let out = support::dry_run(case, &[]);
        let name = support::name(case);
        if !out.status.success() {
            failures.push(format!(
                "{name}: dry-run failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        if let Err(diff) = golden::check(&case.join("expected.nft"), &stdout) {
            failures.push(format!("{name}: {diff}"));
        }
    }
    golden::assert_all(failures);
}

#[test]
fn bad_input_fails_with_one_line_per_problem() {
    let mut failures = Vec::new();
    for case in support::cases("errors") {
        let name = support::name(&case);
        let out = support::dry_run(&case, &[]);
        if out.status.success() {
            failures.push(format!("{name}: dry-run succeeded on bad input"));
        }
        if !out.stdout.is_empty() {
            failures.push(format!("{name}: printed a ruleset without --keep-going"));
        }
        let stderr = String::from_utf8_lossy(&out.stderr)
            .replace(case.to_str().expect("UTF-8 path"), "<case>");
        if let Err(diff) = golden::check(&case.join("expected.stderr"), &stderr) {
            failures.push(format!("{name}: {diff}"));
        }

        let out = support::dry_run(&case, &["--keep-going"]);
        if out.status.success() {
            failures.push(format!("{name}: --keep-going must still exit non-zero"));
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        if let Err(diff) = golden::check(&case.join("expected-keep-going.nft"), &stdout) {
            failures.push(format!("{name}: {diff}"));
        }

        let out = support::dry_run(&case, &["--keep-going", "--proxy-mode", "iptables"]);
        if out.status.success() {
            failures.push(format!(
                "{name}: --keep-going must still exit non-zero (iptables)"
            ));
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        if let Err(diff) = golden::check(&case.join("expected-keep-going.iptables"), &stdout) {
            failures.push(format!("{name}: {diff}"));
        }
    }
    golden::assert_all(failures);
}

#[test]
fn golden_rulesets_load_into_the_kernel() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("golden");
    let mut failures = Vec::new();
    let files = support::cases("golden")
        .into_iter()
        .chain(support::cases("errors"))
        .flat_map(|case| {
            [
                case.join("expected.nft"),
                case.join("expected-keep-going.nft"),
            ]
        })
        .filter(|path| path.exists());
    for file in files {
        let path = file.to_str().expect("UTF-8 path");
        // Check mode first (what the issue asks), then a real load: the kernel must accept
        // every object, not just the parser.
        for args in [
            &["-c", "-f", path][..],
            &["-f", path],
            &["flush", "ruleset"],
        ] {
            let out = ns.run("nft", args);
            if !out.status.success() {
                failures.push(format!(
                    "nft {} failed:\n{}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
                break;
            }
        }
    }
    golden::assert_all(failures);
}

/// `dry-run --proxy-mode iptables` on every golden case against its `expected.iptables`.
#[test]
fn iptables_rules_match_their_golden_files() {
    let mut failures = Vec::new();
    for case in support::cases("golden") {
        let out = support::dry_run(&case, &["--proxy-mode", "iptables"]);
        let name = support::name(&case);
        if !out.status.success() {
            failures.push(format!(
                "{name}: dry-run --proxy-mode iptables failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
        if let Err(diff) = golden::check(&case.join("expected.iptables"), &stdout) {
            failures.push(format!("{name}: {diff}"));
        }
    }
    golden::assert_all(failures);
}

/// The restore binary (`iptables-restore`, `ip6tables-restore`) and input of each family's
/// section of a dry-run's iptables output.
fn iptables_sections(text: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let binary = rest.split_whitespace().next().unwrap_or_default();
            if binary.ends_with("tables-restore") {
                sections.push((binary.to_string(), String::new()));
                continue;
            }
        }
        if let Some((_, input)) = sections.last_mut() {
            input.push_str(line);
            input.push('\n');
        }
    }
    sections
}

/// Every `expected.iptables` is accepted by `iptables-restore --test` (and `ip6tables-restore
/// --test`) and then really loaded, with each iptables backend this host has (nf_tables and
/// legacy), inside a throwaway namespace; the host's netfilter is never touched.
#[test]
fn golden_iptables_rules_load_into_the_kernel() {
    if kproxy_testkit::kernel_tests_skipped() {
        return;
    }
    let ns = NetNs::new("golden-ipt");
    let variants: Vec<&str> = ["nft", "legacy"]
        .into_iter()
        .filter(|v| {
            std::process::Command::new(format!("iptables-{v}-restore"))
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    assert!(
        !variants.is_empty(),
        "no iptables-restore (install iptables)"
    );
    let mut failures = Vec::new();
    let mut loaded = 0;
    let golden = support::cases("golden")
        .into_iter()
        .map(|case| (case.join("expected.iptables"), true));
    // Error cases with a fatal flag print nothing, even with --keep-going.
    let errors = support::cases("errors")
        .into_iter()
        .map(|case| (case.join("expected-keep-going.iptables"), false));
    for (path, required) in golden.chain(errors) {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let sections = iptables_sections(&text);
        if sections.is_empty() && required {
            failures.push(format!("{}: no restore sections", path.display()));
        }
        for (binary, input) in &sections {
            for variant in &variants {
                let program =
                    binary.replace("tables-restore", &format!("tables-{variant}-restore"));
                let empty = "*nat\nCOMMIT\n*filter\nCOMMIT\n*mangle\nCOMMIT\n";
                // Check mode (what the issue asks), a real load, then a flush for the next case.
                for (args, input) in [
                    (&["--test"][..], input.as_str()),
                    (&[], input),
                    (&[], empty),
                ] {
                    let out = ns.run_with_input(&program, args, input);
                    if !out.status.success() {
                        failures.push(format!(
                            "{}: {program} {} failed:\n{}",
                            path.display(),
                            args.join(" "),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                        break;
                    }
                }
                loaded += 1;
            }
        }
    }
    assert!(loaded >= 25, "only {loaded} sections loaded");
    golden::assert_all(failures);
}

/// docs/semantics.md quotes the rules each feature produces; every quoted line must still be
/// in some golden ruleset (nftables or iptables), so the documentation cannot drift from what
/// the compiler emits.
/// Lines with `…` are abridged on purpose and skipped; one-line blocks (`chain x { a; b }`)
/// and element lists are checked part by part; `# …` comments are ignored.
#[test]
fn semantics_doc_quotes_the_golden_files() {
    let doc_path = support::testdata().join("../docs/semantics.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/semantics.md");
    let mut golden_lines = std::collections::BTreeSet::new();
    for case in support::cases("golden") {
        for file in ["expected.nft", "expected.iptables"] {
            let text = std::fs::read_to_string(case.join(file)).expect("a golden file");
            golden_lines.extend(text.lines().map(|l| normalise(l).to_string()));
        }
    }
    let mut quoted = 0;
    let mut missing = Vec::new();
    for block in doc.split("```").skip(1).step_by(2) {
        for line in block.lines().skip(1) {
            for part in quoted_parts(line) {
                quoted += 1;
                if !golden_lines.contains(part) {
                    missing.push(part.to_string());
                }
            }
        }
    }
    assert!(
        quoted >= 20,
        "only {quoted} quoted lines found in {doc_path:?}"
    );
    assert!(
        missing.is_empty(),
        "docs/semantics.md quotes lines no golden file has (update the doc):\n{}",
        missing.join("\n")
    );
}

/// A line as compared: trimmed, without a trailing comma.
fn normalise(line: &str) -> &str {
    line.trim().trim_end_matches(',')
}

/// The checkable parts of one quoted line.
fn quoted_parts(line: &str) -> Vec<&str> {
    let line = line.split(" #").next().unwrap_or(line).trim();
    if line.is_empty() || line.contains('…') || line == "}" {
        return Vec::new();
    }
    // `chain x { a; b }`, `set x { … }`, `elements = { a, b }`: the header and each part.
    if let Some((head, rest)) = line.split_once(" { ") {
        if let Some(body) = rest.strip_suffix(" }") {
            let separator = if head == "elements =" { ',' } else { ';' };
            let mut parts: Vec<&str> = body.split(separator).map(normalise).collect();
            if head != "elements =" {
                parts.push(line.split_at(head.len() + 2).0);
            }
            return parts.into_iter().filter(|p| !p.is_empty()).collect();
        }
    }
    vec![normalise(line)]
}
