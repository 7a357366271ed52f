//! `cargo xtask bench`: the compiler's speed and memory (numbers go to docs/benchmarks.md).

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
    Ok(())
}
