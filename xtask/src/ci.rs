//! `cargo xtask ci`: the one command CI (and a developer before pushing) runs.

/// Tidy, formatting, lints, then every test of the workspace, including the kernel tests in
/// throwaway network namespaces (they need root and `nft`, `ip`; `.ci/run` installs them),
/// and README.md's first quick-start command in a fresh clone.
pub fn run() -> anyhow::Result<()> {
    crate::tidy::run()?;
    crate::run("cargo", &["fmt", "--all", "--", "--check"], &[])?;
    crate::run(
        "cargo",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    crate::run("cargo", &["test", "--workspace", "--all-targets"], &[])?;
    // The kernel benchmarks at a smoke size, so their code never rots (the full runs are
    // `cargo xtask bench`). They need root, like the kernel tests, and skip with them.
    if std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1") {
        eprintln!("ci: KPROXY_SKIP_KERNEL_TESTS=1: benchmark smoke runs skipped");
    } else {
        for (package, example) in [
            ("kproxy-syncer", "apply_speed"),
            ("kproxy-syncer", "iptables_speed"),
            ("kproxy", "daemon_speed"),
        ] {
            crate::run(
                "cargo",
                &["run", "-p", package, "--example", example, "--", "200"],
                &[],
            )?;
        }
    }
    // Doc tests are not part of --all-targets.
    crate::run("cargo", &["test", "--workspace", "--doc"], &[])?;
    // Last, as a user would: README.md's command 1 in a fresh clone of HEAD (the dependencies
    // come from this target directory; only the workspace's crates are built again).
    crate::readme::run_in_a_fresh_clone(&crate::project_root())?;
    eprintln!("ci: all checks passed");
    Ok(())
}
