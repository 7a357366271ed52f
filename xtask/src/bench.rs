//! `cargo xtask bench [ARGS]`: kproxy at scale, end to end (crates/bench): compile and plan,
//! cold apply beside `nft -f`, partial updates, the 44k × 6 cold start and its kernel log,
//! dataplane connect latency and the daemon. Results and plots go to docs/bench/ (with
//! `--smoke`, to the target directory). Needs root: everything runs in throwaway network
//! namespaces.
//!
//! This task only builds and starts the bench binary; the bench is a crate of its own because
//! it links the compiler, syncer and testkit, which xtask must not depend on. The iptables
//! mode is not in the suite yet: the full bench also runs its `iptables_speed` example.

/// Builds the bench and the daemon example it runs, then runs the bench with `args`
/// (`--smoke`, `--sizes 1000,10000`, ...; `--help` lists them). The full bench builds in
/// release mode; `--smoke` uses the dev profile, which CI has already built.
pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let smoke = args.contains(&"--smoke");
    let profile: &[&str] = if smoke { &[] } else { &["--release"] };
    let mut build = vec!["build"];
    build.extend_from_slice(profile);
    build.extend_from_slice(&[
        "-p",
        "kproxy",
        "--bin",
        "kproxy",
        "--example",
        "daemon_speed",
    ]);
    crate::run("cargo", &build, &[])?;
    let mut bench = vec!["run"];
    bench.extend_from_slice(profile);
    bench.extend_from_slice(&["-p", "kproxy-bench", "--"]);
    bench.extend_from_slice(args);
    crate::run("cargo", &bench, &[])?;
    if smoke {
        return Ok(());
    }
    crate::run(
        "cargo",
        &[
            "run",
            "--release",
            "-p",
            "kproxy-syncer",
            "--example",
            "iptables_speed",
            "--",
            "1000",
            "10000",
        ],
        &[],
    )
}
