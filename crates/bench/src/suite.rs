//! The parent: runs the chosen measurements one after the other, each in a child process,
//! notes the kernel log around each, and writes the results.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::child::{self, Job};
use crate::cli::{Config, Measurement};
use crate::cold::Cold;
use crate::compile::Compiled;
use crate::daemon::Daemon;
use crate::dataplane::Dataplane;
use crate::incremental::Incrementals;
use crate::kernel_log::{self, News};
use crate::machine::{self, Machine};

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub smoke: bool,
    pub sizes: Vec<usize>,
    pub endpoints: usize,
    pub compile: Vec<Compiled>,
    pub cold: Vec<Cold>,
    pub incremental: Vec<Incrementals>,
    pub cold_start: Option<Cold>,
    pub dataplane: Option<Dataplane>,
    pub daemon: Vec<Daemon>,
    /// The kernel log during each kernel measurement, by its label.
    pub kernel_log: Vec<(String, News)>,
    /// Measurements that failed, with why.
    pub failures: Vec<String>,
    /// Measurements not run, with why (not chosen with --only, or kernel tests skipped).
    pub skipped: Vec<String>,
}

pub fn run(config: &Config) -> anyhow::Result<ExitCode> {
    let skip_kernel = std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1");
    let mut chosen = config.only.clone();
    let mut skipped: Vec<String> = Measurement::ALL
        .into_iter()
        .filter(|m| !config.runs(*m))
        .map(|m| format!("{}: not chosen (--only)", m.name()))
        .collect();
    if skip_kernel {
        for m in chosen.iter().filter(|m| m.needs_kernel()) {
            skipped.push(format!("{}: KPROXY_SKIP_KERNEL_TESTS=1", m.name()));
        }
        chosen.retain(|m| !m.needs_kernel());
    } else if chosen.iter().any(|m| m.needs_kernel()) && !is_root() {
        bail!("the kernel measurements program network namespaces: run as root (or set KPROXY_SKIP_KERNEL_TESTS=1 for the compile measurement alone)");
    }
    crate::leftovers::remove();

    let mut results = Results {
        machine: Machine::probe(),
        smoke: config.smoke,
        sizes: config.sizes.clone(),
        endpoints: config.endpoints,
        compile: Vec::new(),
        cold: Vec::new(),
        incremental: Vec::new(),
        cold_start: None,
        dataplane: None,
        daemon: Vec::new(),
        kernel_log: Vec::new(),
        failures: Vec::new(),
        skipped,
    };
    let endpoints = config.endpoints;
    for measurement in chosen {
        match measurement {
            Measurement::Compile => {
                for &services in &config.sizes {
                    let job = Job::Compile {
                        services,
                        endpoints,
                    };
                    if let Some(r) = results.child(&format!("compile {services}"), &job) {
                        results.compile.push(r);
                    }
                }
            }
            Measurement::Cold => {
                for &services in &config.sizes {
                    let job = Job::Cold {
                        services,
                        endpoints,
                    };
                    let runs = if services <= crate::cold::REPEATED_UP_TO {
                        crate::cold::RUNS
                    } else {
                        1
                    };
                    let mut applies: Vec<Cold> = (1..=runs)
                        .filter_map(|run| {
                            let label = if runs == 1 {
                                format!("cold apply {services} (netlink)")
                            } else {
                                format!("cold apply {services} (netlink), run {run} of {runs}")
                            };
                            results.child::<Cold>(&label, &job)
                        })
                        .collect();
                    if applies.is_empty() {
                        continue;
                    }
                    let in_order: Vec<f64> = applies.iter().map(|c| c.apply).collect();
                    applies.sort_by(|a, b| a.apply.total_cmp(&b.apply));
                    let mut cold = applies.swap_remove(applies.len() / 2);
                    if in_order.len() > 1 {
                        cold.runs = in_order;
                    }
                    let job = Job::Nft {
                        services,
                        endpoints,
                    };
                    cold.nft = results.child(&format!("nft -f {services}"), &job);
                    results.cold.push(cold);
                }
            }
            Measurement::Incremental => {
                for &services in &config.sizes {
                    let job = Job::Incremental {
                        services,
                        endpoints,
                        repeats: config.repeats,
                    };
                    if let Some(r) = results.child(&format!("incremental {services}"), &job) {
                        results.incremental.push(r);
                    }
                }
            }
            Measurement::ColdStart => {
                let (services, endpoints) = config.cold_start;
                let job = Job::Cold {
                    services,
                    endpoints,
                };
                let label = format!("cold start {services} × {endpoints}");
                results.cold_start = results.child(&label, &job);
            }
            Measurement::Dataplane => {
                let job = Job::Dataplane {
                    sizes: config.dataplane_sizes(),
                    connects: config.connects,
                };
                results.dataplane = results.child("dataplane", &job);
            }
            Measurement::Daemon => {
                for &services in &config.sizes {
                    let label = format!("daemon {services}");
                    let mark = kernel_log::mark();
                    match crate::daemon::measure(services) {
                        Ok(r) => results.daemon.push(r),
                        Err(e) => results.failures.push(format!("{label}: {e:#}")),
                    }
                    results.kernel_log.push((label, mark.news()));
                }
            }
        }
    }
    crate::leftovers::remove();
    results.machine.load_at_end = machine::load();
    write(config, &results)?;
    if results.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for failure in &results.failures {
            eprintln!("bench: FAILED {failure}");
        }
        Ok(ExitCode::FAILURE)
    }
}

impl Results {
    /// Runs `job` in a child, noting the kernel log around it and recording a failure.
    fn child<T: DeserializeOwned>(&mut self, label: &str, job: &Job) -> Option<T> {
        eprintln!("bench: == {label}");
        let mark = kernel_log::mark();
        let result = child::run(job);
        if !matches!(job, Job::Compile { .. }) {
            self.kernel_log.push((label.to_string(), mark.news()));
        }
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.failures.push(format!("{label}: {e:#}"));
                None
            }
        }
    }
}

fn write(config: &Config, results: &Results) -> anyhow::Result<()> {
    let out = &config.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let verdicts = crate::targets::evaluate(results);
    let markdown = crate::report::markdown(results, &verdicts);
    write_file(&out.join("results.md"), &markdown)?;
    let json = serde_json::to_string_pretty(results)?;
    write_file(&out.join("results.json"), &(json + "\n"))?;
    for (name, chart) in crate::report::charts(results) {
        write_file(
            &out.join(format!("{name}.svg")),
            &crate::svg::render(&chart),
        )?;
    }
    println!("{markdown}");
    eprintln!("bench: results in {}", out.display());
    Ok(())
}

fn write_file(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
