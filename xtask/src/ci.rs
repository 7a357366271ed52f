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
    // The benchmark suite at a smoke size (~500 Services, under a minute), so its code never
    // rots; the full run is `cargo xtask bench`. It needs root, like the kernel tests, and
    // skips with them. Its results go to the target directory, not docs/.
    if std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1") {
        eprintln!("ci: KPROXY_SKIP_KERNEL_TESTS=1: benchmark smoke run skipped");
    } else {
        crate::bench::run(&["--smoke"])?;
        // The iptables mode is not in the bench suite yet: its own smoke run.
        crate::run(
            "cargo",
            &[
                "run",
                "-p",
                "kproxy-syncer",
                "--example",
                "iptables_speed",
                "--",
                "200",
            ],
            &[],
        )?;
    }
    // Doc tests are not part of --all-targets.
    crate::run("cargo", &["test", "--workspace", "--doc"], &[])?;
    // Last, as a user would: README.md's command 1 in a fresh clone of HEAD (the dependencies
    // come from this target directory; only the workspace's crates are built again).
    crate::readme::run_in_a_fresh_clone(&crate::project_root())?;
    eprintln!("ci: all checks passed");
    Ok(())
}
