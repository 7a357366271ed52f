//! `kproxy dry-run`: print the ruleset for manifests (nft text, or iptables-restore input with
//! `--proxy-mode iptables`), touching nothing.
//!
//! `--output dot` lives here rather than in a `graph` subcommand: it is one more rendering of
//! the same compiled ruleset (beside `nft -f` text and the JSON IR), from the same input, with
//! the same exit codes; a separate command would repeat every input flag for no new behaviour.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;

use anyhow::{bail, Context};
use kproxy_compiler::ir::Value;
use kproxy_compiler::{buckets, MapName};
use kproxy_model::ProxyState;
use kproxy_trace::Focus;

use super::compile::{compile, Compiled};
use crate::cli::{DryRunArgs, DryRunFormat, ProxyMode};

pub fn run(args: &DryRunArgs) -> anyhow::Result<ExitCode> {
    if args.service.is_some() && args.output != DryRunFormat::Dot {
        bail!("--service only applies to --output dot");
    }
    let Ok(compiled) = compile(&args.input)? else {
        return Ok(ExitCode::FAILURE);
    };
    let Compiled {
        ruleset,
        node_name,
        service_ports,
        problems,
        state,
        options,
    } = compiled;
    let text = match (args.input.proxy.proxy_mode, args.output) {
        (ProxyMode::Nftables, DryRunFormat::Text) => {
            let mut text = format!(
                "# kproxy ruleset for node {node_name}: {service_ports} Service ports. Load with `nft -f`.\n",
            );
            text.push_str(&kproxy_compiler::render::nft::ruleset(&ruleset));
            text
        }
        (ProxyMode::Nftables, DryRunFormat::Json) => {
            serde_json::to_string_pretty(&ruleset).context("encoding the ruleset as JSON")? + "\n"
        }
        (ProxyMode::Nftables, DryRunFormat::Dot) => {
            let focus = match &args.service {
                Some(service) => Some(focus(&state, service)?),
                None => None,
            };
            kproxy_trace::render_dot(&ruleset, focus.as_ref())
        }
        (ProxyMode::Iptables, DryRunFormat::Text) => {
            let rules = kproxy_compiler::iptables::compile(&state, &options);
            let mut text = format!(
                "# kproxy iptables rules for node {node_name}: {service_ports} Service ports. Each family's section is one `iptables-restore --noflush` input.\n",
            );
            text.push_str(&kproxy_compiler::iptables::render::ruleset(&rules));
            text
        }
        (ProxyMode::Iptables, DryRunFormat::Json) => {
            let rules = kproxy_compiler::iptables::compile(&state, &options);
            serde_json::to_string_pretty(&rules).context("encoding the iptables rules as JSON")?
                + "\n"
        }
        (ProxyMode::Iptables, DryRunFormat::Dot) => {
            bail!("--output dot draws nftables mode's ruleset; it has no iptables rendering")
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The objects of Service `namespace/name`: the bucket chains its rules are in, and the keys its
/// addresses and ports (and their buckets) have in the sets and maps.
fn focus(state: &ProxyState, service: &str) -> anyhow::Result<Focus> {
    let Some((namespace, name)) = service.split_once('/') else {
        bail!("--service {service:?} is not NAMESPACE/NAME");
    };
    let mut focus = Focus::default();
    let mut found = false;
    for port in state
        .ports
        .iter()
        .filter(|p| &*p.name.namespace == namespace && &*p.name.service == name)
    {
        found = true;
        let proto = Value::Proto(port.name.protocol);
        // Its rules live in the bucket chains of its keys (beside other Services' rules).
        let bucket = |focus: &mut Focus, map: MapName, key: Vec<Value>| {
            let (chain, element) = buckets::bucket_of_key(map, &key);
            focus.chains.insert(chain);
            focus.keys.insert(element);
            focus.keys.insert(key);
        };
        if let Some(node_port) = port.node_port {
            bucket(
                &mut focus,
                MapName::ServiceNodePorts,
                vec![proto, Value::Port(node_port)],
            );
        }
        for family in &port.families {
            let addresses: BTreeSet<_> = std::iter::once(family.cluster_ip)
                .chain(family.external_ips().iter().copied())
                .chain(family.load_balancer_ips().iter().copied())
                .collect();
            for addr in addresses {
                focus.keys.insert(vec![Value::Addr(addr)]);
                bucket(
                    &mut focus,
                    MapName::ServiceIps,
                    vec![Value::Addr(addr), proto, Value::Port(port.port)],
                );
            }
        }
    }
    if !found {
        bail!("no Service {namespace}/{name} with ports in the input");
    }
    Ok(focus)
}
