//! The command line: flags in, a validated [`Config`] (or a child's [`Job`]) out.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::child::Job;

pub const USAGE: &str = "\
usage: kproxy-bench [--smoke] [--sizes N,N,...] [--only LIST] [--out DIR]
                    [--repeats N] [--connects N] [--cold-start SERVICESxENDPOINTS]

Measures kproxy at scale in throwaway network namespaces (root) and writes results.md,
results.json and SVG plots to DIR. Run it through `cargo xtask bench`.

  --smoke             ~500 Services, every measurement once, results under target/bench-smoke
                      (what CI runs; under a minute)
  --sizes N,N,...     cluster sizes in Services (default 1000,10000,50000); 10 endpoints each
  --only LIST         some of: compile,cold,incremental,cold-start,dataplane,daemon
  --out DIR           where results go (default docs/bench, or target/bench-smoke with --smoke)
  --repeats N         repetitions of each incremental change (default 20, at least 20)
  --connects N        TCP connects per dataplane measurement (default 2000)
  --cold-start SxE    the large cold start (default 44000x6; 500x6 with --smoke)";

/// What to run.
pub enum Command {
    /// The whole suite (the parent).
    Suite(Config),
    /// One measurement (a child, started by the parent).
    Measure(Job),
    Help,
}

/// The measurements, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measurement {
    Compile,
    Cold,
    Incremental,
    ColdStart,
    Dataplane,
    Daemon,
}

impl Measurement {
    pub const ALL: [Measurement; 6] = [
        Measurement::Compile,
        Measurement::Cold,
        Measurement::Incremental,
        Measurement::ColdStart,
        Measurement::Dataplane,
        Measurement::Daemon,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Measurement::Compile => "compile",
            Measurement::Cold => "cold",
            Measurement::Incremental => "incremental",
            Measurement::ColdStart => "cold-start",
            Measurement::Dataplane => "dataplane",
            Measurement::Daemon => "daemon",
        }
    }

    /// Needs root and network namespaces.
    pub fn needs_kernel(self) -> bool {
        self != Measurement::Compile
    }
}

/// A validated configuration of the suite.
#[derive(Debug, Clone)]
pub struct Config {
    pub smoke: bool,
    /// Cluster sizes in Services, ascending, no duplicates.
    pub sizes: Vec<usize>,
    pub endpoints: usize,
    pub only: Vec<Measurement>,
    pub out: PathBuf,
    pub repeats: usize,
    pub connects: usize,
    /// (Services, endpoints per Service) of the large cold start.
    pub cold_start: (usize, usize),
}

impl Config {
    pub fn runs(&self, measurement: Measurement) -> bool {
        self.only.contains(&measurement)
    }

    /// The dataplane sizes: 100 Services (the baseline) and every size that fits the node's
    /// routed Service CIDR (a /16: the probe Service's address is near its end).
    pub fn dataplane_sizes(&self) -> Vec<usize> {
        let mut sizes: Vec<usize> = std::iter::once(100)
            .chain(self.sizes.iter().copied())
            .filter(|&n| n <= crate::dataplane::MAX_SERVICES)
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
}

pub fn parse(args: &[String]) -> anyhow::Result<Command> {
    if let [first, job] = args {
        if first == "measure" {
            let job = serde_json::from_str(job).context("decoding the job of a child")?;
            return Ok(Command::Measure(job));
        }
    }
    let mut smoke = false;
    let mut sizes = None;
    let mut only = None;
    let mut out = None;
    let mut repeats = 20;
    let mut connects = 2000;
    let mut cold_start = None;
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--smoke" => smoke = true,
            "--sizes" => sizes = Some(numbers(value()?).context("--sizes")?),
            "--only" => only = Some(measurements(value()?)?),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--repeats" => repeats = number(value()?).context("--repeats")?,
            "--connects" => connects = number(value()?).context("--connects")?,
            "--cold-start" => cold_start = Some(shape(value()?)?),
            "--help" | "-h" | "help" => return Ok(Command::Help),
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    let mut sizes = sizes.unwrap_or_else(|| {
        if smoke {
            vec![500]
        } else {
            vec![1000, 10_000, 50_000]
        }
    });
    sizes.sort_unstable();
    sizes.dedup();
    if sizes.is_empty() || sizes[0] == 0 {
        bail!("--sizes needs at least one size, each at least 1");
    }
    if let Some(&too_big) = sizes
        .iter()
        .find(|&&n| n > kproxy_synthetic::MAX_SERVICES / 2)
    {
        bail!("--sizes: {too_big} Services do not fit the synthetic cluster's address ranges");
    }
    if repeats < 20 {
        bail!("--repeats: at least 20 (the issue asks for medians and maxima of 20 or more)");
    }
    if connects < 100 {
        bail!("--connects: at least 100 (percentiles of fewer say little)");
    }
    Ok(Command::Suite(Config {
        smoke,
        sizes,
        endpoints: 10,
        only: only.unwrap_or_else(|| Measurement::ALL.to_vec()),
        out: out.unwrap_or_else(|| default_out(smoke)),
        repeats,
        connects,
        cold_start: cold_start.unwrap_or(if smoke { (500, 6) } else { (44_000, 6) }),
    }))
}

/// `docs/bench` of this source tree; with `--smoke`, `bench-smoke` in the target directory
/// (CI must not rewrite the docs).
fn default_out(smoke: bool) -> PathBuf {
    if smoke {
        let target = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
        if let Some(target) = target {
            return target.join("bench-smoke");
        }
        return std::env::temp_dir().join("kproxy-bench-smoke");
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/bench")
}

fn number(text: &str) -> anyhow::Result<usize> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    digits
        .parse()
        .with_context(|| format!("{text:?} is not a number"))
}

fn numbers(text: &str) -> anyhow::Result<Vec<usize>> {
    text.split(',').map(|n| number(n.trim())).collect()
}

fn shape(text: &str) -> anyhow::Result<(usize, usize)> {
    let (services, endpoints) = text
        .split_once('x')
        .with_context(|| format!("--cold-start {text:?}: expected SERVICESxENDPOINTS"))?;
    Ok((
        number(services).context("--cold-start")?,
        number(endpoints).context("--cold-start")?,
    ))
}

fn measurements(text: &str) -> anyhow::Result<Vec<Measurement>> {
    let mut chosen: Vec<Measurement> = Vec::new();
    for name in text.split(',').map(str::trim) {
        let Some(m) = Measurement::ALL.into_iter().find(|m| m.name() == name) else {
            let known: Vec<&str> = Measurement::ALL.iter().map(|m| m.name()).collect();
            bail!(
                "--only: unknown measurement {name:?} (known: {})",
                known.join(",")
            );
        };
        chosen.push(m);
    }
    // Keep the suite's order whatever the order given.
    Ok(Measurement::ALL
        .into_iter()
        .filter(|m| chosen.contains(m))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suite(args: &[&str]) -> Config {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        match parse(&args) {
            Ok(Command::Suite(config)) => config,
            Ok(_) => panic!("not a suite"),
            Err(e) => panic!("{e:#}"),
        }
    }

    #[test]
    fn defaults_are_the_issues_sizes() {
        let config = suite(&[]);
        assert_eq!(config.sizes, [1000, 10_000, 50_000]);
        assert_eq!(config.cold_start, (44_000, 6));
        assert_eq!(config.only, Measurement::ALL);
        assert_eq!(config.dataplane_sizes(), [100, 1000, 10_000, 50_000]);
    }

    #[test]
    fn smoke_is_small_and_sizes_are_sorted() {
        let config = suite(&["--smoke"]);
        assert_eq!(config.sizes, [500]);
        assert_eq!(config.cold_start, (500, 6));
        let config = suite(&["--sizes", "10_000,1000,1000", "--only", "daemon,compile"]);
        assert_eq!(config.sizes, [1000, 10_000]);
        assert_eq!(config.only, [Measurement::Compile, Measurement::Daemon]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for args in [
            &["--sizes", "ten"][..],
            &["--sizes"],
            &["--only", "everything"],
            &["--repeats", "3"],
            &["--cold-start", "44000"],
            &["--frobnicate"],
        ] {
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            assert!(parse(&args).is_err(), "{args:?}");
        }
    }
}
