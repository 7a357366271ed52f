//! `cargo xtask bench`: the compiler's speed and memory, and the syncer's apply times (numbers
//! go to docs/benchmarks.md). The apply benchmark programs throwaway network namespaces, so it
//! needs root.

pub fn run() -> anyhow::Result<()> {
    crate::run(
        "cargo",
        &["bench", "-p", "kproxy-compiler", "--bench", "compile"],
        &[],
    )?;
    for services in ["1000", "10000", "50000"] {
        crate::run(
            "cargo",
            &[
                "run",
                "--release",
                "-p",
                "kproxy-compiler",
                "--example",
                "peak_memory",
                "--",
                services,
                "10",
            ],
            &[],
        )?;
    }
    crate::run(
        "cargo",
        &[
            "run",
            "--release",
            "-p",
            "kproxy-syncer",
            "--example",
            "apply_speed",
            "--",
            "1000",
            "3000",
            "10000",
        ],
        &[],
    )?;
    Ok(())
}
