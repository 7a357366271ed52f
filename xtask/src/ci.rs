//! `cargo xtask ci`: the one command CI (and a developer before pushing) runs.

/// Tidy, formatting, lints, then every test of the workspace, including the kernel tests in
/// throwaway network namespaces (they need root and `nft`, `ip`; `.ci/run` installs them).
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
    // Doc tests are not part of --all-targets.
    crate::run("cargo", &["test", "--workspace", "--doc"], &[])?;
    eprintln!("ci: all checks passed");
    Ok(())
}
