//! `kproxy-bench`: kproxy at scale, measured end to end, written up as Markdown and SVG.
//!
//! # Brief overview
//!
//! `cargo xtask bench` builds and runs this binary. The parent process ([`suite`]) runs each
//! measurement in a child process of the same binary (`kproxy-bench measure <job>`,
//! [`child`]), so every measurement starts with a fresh heap (its peak RSS is its own) and
//! its throwaway network namespaces go away with it. A child prints one JSON line; the parent
//! collects them into [`suite::Results`], checks the kernel log around every kernel
//! measurement ([`kernel_log`]), compares the numbers with the targets ([`targets`])
//! and writes `results.md`, `results.json` and the plots ([`report`], [`svg`]).
//!
//! The measurements, one module each:
//!
//! * [`compile`]: state → IR → cold plan, time and peak memory;
//! * [`cold`]: empty kernel → full ruleset with `Syncer::sync`, beside `nft -f` of the same
//!   text, and the objects the kernel then holds; also the large cold start with its kernel log;
//! * [`incremental`]: one endpoint or Service changed, through `Incremental::update` and
//!   `Syncer::sync_change`;
//! * [`dataplane`]: TCP connect latency from a pod to a ClusterIP, beside the pod IP;
//! * [`daemon`]: `kproxy run` against the fake API server (the `daemon_speed` example).
//!
//! Every kernel measurement programs throwaway namespaces ([`kproxy_testkit::NetNs`]); none
//! touches the host namespace's netfilter.
#![forbid(unsafe_code)]

mod child;
mod cli;
mod cluster;
mod cold;
mod compile;
mod daemon;
mod dataplane;
mod incremental;
mod kernel_log;
mod leftovers;
mod machine;
mod report;
mod stats;
mod suite;
mod svg;
mod targets;

use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("kproxy-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match cli::parse(&args)? {
        cli::Command::Suite(config) => suite::run(&config),
        cli::Command::Measure(job) => {
            child::serve(&job)?;
            Ok(ExitCode::SUCCESS)
        }
        cli::Command::Help => {
            println!("{}", cli::USAGE);
            Ok(ExitCode::SUCCESS)
        }
    }
}
