//! One measurement per child process: the parent sends a [`Job`] as JSON on the command line,
//! the child prints its result as one JSON line on stdout (progress goes to stderr).
//!
//! A child of its own gives each measurement a fresh heap, so `VmHWM` is that measurement's
//! peak, and whatever a measurement leaves behind (namespaces, threads, gigabytes of IR) ends
//! with its process.

use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A measurement a child runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Job {
    Compile {
        services: usize,
        endpoints: usize,
    },
    Cold {
        services: usize,
        endpoints: usize,
    },
    /// `nft -f` of the same ruleset: a child of its own, so the kernel log tells the two apart.
    Nft {
        services: usize,
        endpoints: usize,
    },
    Incremental {
        services: usize,
        endpoints: usize,
        repeats: usize,
    },
    Dataplane {
        sizes: Vec<usize>,
        connects: usize,
    },
}

/// Runs `job` in this process and prints its result (the child's side).
pub fn serve(job: &Job) -> anyhow::Result<()> {
    let line = match job {
        Job::Compile {
            services,
            endpoints,
        } => serde_json::to_string(&crate::compile::measure(*services, *endpoints))?,
        Job::Cold {
            services,
            endpoints,
        } => serde_json::to_string(&crate::cold::measure(*services, *endpoints)?)?,
        Job::Nft {
            services,
            endpoints,
        } => serde_json::to_string(&crate::cold::nft_floor(*services, *endpoints)?)?,
        Job::Incremental {
            services,
            endpoints,
            repeats,
        } => serde_json::to_string(&crate::incremental::measure(
            *services, *endpoints, *repeats,
        )?)?,
        Job::Dataplane { sizes, connects } => {
            serde_json::to_string(&crate::dataplane::measure(sizes, *connects)?)?
        }
    };
    println!("{line}");
    Ok(())
}

/// Runs `job` in a child process and decodes its result (the parent's side).
pub fn run<T: DeserializeOwned>(job: &Job) -> anyhow::Result<T> {
    let exe = std::env::current_exe().context("finding kproxy-bench's own binary")?;
    let arg = serde_json::to_string(job)?;
    let out = Command::new(exe)
        .args(["measure", &arg])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("starting a measurement")?;
    if !out.status.success() {
        bail!("the measurement {job:?} failed ({})", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .last()
        .with_context(|| format!("the measurement {job:?} printed no result"))?;
    serde_json::from_str(line).with_context(|| format!("decoding the result of {job:?}"))
}
