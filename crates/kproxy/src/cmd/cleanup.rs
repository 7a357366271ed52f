//! `kproxy cleanup`: remove everything kproxy programmed, in both families.

use std::process::ExitCode;

use anyhow::Context;

pub fn run() -> anyhow::Result<ExitCode> {
    kproxy_syncer::cleanup().context("deleting kproxy's tables")?;
    println!("deleted kproxy's tables (ip and ip6), if there were any");
    Ok(ExitCode::SUCCESS)
}
