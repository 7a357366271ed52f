//! `kproxy cleanup`: remove everything kproxy programmed, in both modes and both families.

use std::process::ExitCode;

use anyhow::Context;
use kproxy_syncer::iptables::{self, Tools};

use crate::cli::CleanupArgs;

pub fn run(args: &CleanupArgs) -> anyhow::Result<ExitCode> {
    kproxy_syncer::cleanup().context("deleting kproxy's tables")?;
    println!("deleted kproxy's tables (ip and ip6), if there were any");
    let report = iptables::cleanup(Tools::detect(), args.cleanup_kube_proxy)
        .context("deleting iptables mode's chains")?;
    println!("{}", super::apply::describe_iptables_cleanup(&report));
    if args.cleanup_kube_proxy {
        super::apply::remove_kube_proxy_tables()?;
        println!("deleted kube-proxy's nftables tables (ip and ip6), if there were any");
    }
    Ok(ExitCode::SUCCESS)
}
