//! Golden tests: `kproxy dry-run` on every case under `testdata/golden` and `testdata/errors`,
//! and every golden ruleset loaded into a real kernel inside a throwaway network namespace.

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
