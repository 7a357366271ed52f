//! Raw flags → validated compiler options.

use ipnet::IpNet;
use kproxy_compiler::{NodePortAddresses, Options};
use kproxy_model::IpFamily;

use crate::cli::ProxyFlags;

/// Validates the flags that shape the rules; returns one message per bad flag value.
pub fn options(flags: &ProxyFlags) -> Result<Options, Vec<String>> {
    let mut problems = Vec::new();
    let cluster_cidrs = match &flags.cluster_cidr {
        Some(text) => cidrs("--cluster-cidr", text, &mut problems),
        None => Vec::new(),
    };
    for family in IpFamily::ALL {
        if cluster_cidrs
            .iter()
            .filter(|n| IpFamily::of_net(n) == family)
            .count()
            > 1
        {
            problems.push(format!("--cluster-cidr: more than one {family:?} network"));
        }
    }
    let nodeport_addresses = match flags.nodeport_addresses.trim() {
        "primary" | "" => NodePortAddresses::Primary,
        text => NodePortAddresses::Cidrs(cidrs("--nodeport-addresses", text, &mut problems)),
    };
    if problems.is_empty() {
        Ok(Options {
            cluster_cidrs,
            nodeport_addresses,
            masquerade_all: flags.masquerade_all,
        })
    } else {
        Err(problems)
    }
}

fn cidrs(flag: &str, text: &str, problems: &mut Vec<String>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<IpNet>() {
            Ok(net) => out.push(net.trunc()),
            Err(_) => problems.push(format!("{flag}: {part:?} is not a CIDR")),
        }
    }
    out
}
