//! Measurement 6: the node daemon. `kproxy run` in a throwaway namespace against the fake API
//! server, as the `daemon_speed` example of the kproxy crate measures it (first full sync,
//! event → kernel latency of EndpointSlice changes, RSS, CPU). This runs that example's binary,
//! built beside this one (`cargo xtask bench` builds both), and reads its `--json` line.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// What `daemon_speed --json` prints (times in seconds, memory in MB).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Daemon {
    pub services: usize,
    pub endpoints: usize,
    pub changes: usize,
    pub first_sync: f64,
    pub event_p50: f64,
    pub event_p99: f64,
    pub event_max: f64,
    pub rss_first_sync_mb: f64,
    pub rss_after_changes_mb: f64,
    pub cpu_first_sync: f64,
    pub cpu_per_change: f64,
}

pub fn measure(services: usize) -> anyhow::Result<Daemon> {
    let example = example()?;
    eprintln!("bench: daemon, {services} Services ({})", example.display());
    let out = Command::new(&example)
        .args([&services.to_string(), "--json"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", example.display()))?;
    if !out.status.success() {
        bail!(
            "{} {services} --json failed ({})",
            example.display(),
            out.status
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .context("daemon_speed printed nothing")?;
    serde_json::from_str(line).context("decoding daemon_speed's result")
}

/// `target/<profile>/examples/daemon_speed`, beside this binary's `target/<profile>/`.
fn example() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding kproxy-bench's own binary")?;
    let profile = exe.parent().context("kproxy-bench has no directory")?;
    let example = profile.join("examples").join("daemon_speed");
    if !example.exists() {
        bail!(
            "{} is missing: build it with `cargo build [--release] -p kproxy --bin kproxy --example daemon_speed` (cargo xtask bench does)",
            example.display()
        );
    }
    Ok(example)
}
