//! `cargo xtask bench`: the compiler's speed and memory, the syncer's apply times (nftables and
//! iptables mode) and the daemon's sync latency and memory (numbers go to docs/benchmarks.md).
//! The apply and daemon benchmarks program throwaway network namespaces, so they need root.

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
            "10000",
            "50000",
        ],
        &[],
    )?;
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
    )?;
    // The daemon benchmark runs the release binary, built first.
    crate::run("cargo", &["build", "--release", "-p", "kproxy"], &[])?;
    for services in ["1000", "10000"] {
        crate::run(
            "cargo",
            &[
                "run",
                "--release",
                "-p",
                "kproxy",
                "--example",
                "daemon_speed",
                "--",
                services,
            ],
            &[],
        )?;
    }
    Ok(())
}
