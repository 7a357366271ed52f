//! `kproxy trace`: the life of one packet through the rules compiled from manifests.
//!
//! The manifests are compiled exactly as `dry-run` compiles them; the ruleset is then interpreted
//! by `kproxy-trace`. `fib … type local` is true for the node's primary IPs (from its Node
//! object), any `--local-address`, `127.0.0.0/8` and `::1`.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use anyhow::{bail, Context};
use kproxy_model::Protocol;
use kproxy_trace::{LocalAddresses, Origin, Packet};

use super::compile::compile;
use crate::cli::{OutputFormat, TraceArgs};

/// The source port when `--src` has none.
const DEFAULT_SRC_PORT: u16 = 40000;

pub fn run(args: &TraceArgs) -> anyhow::Result<ExitCode> {
    let dst: SocketAddr = args
        .dst
        .parse()
        .with_context(|| format!("--dst {:?} is not IP:PORT", args.dst))?;
    let origin = match args.from.as_str() {
        "pod" => Origin::Pod,
        "node" => Origin::Node,
        "external" => Origin::External,
        other => bail!("--from {other:?} is not pod, node or external"),
    };
    let proto = match args.proto.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "sctp" => Protocol::Sctp,
        other => bail!("--proto {other:?} is not tcp, udp or sctp"),
    };
    let src = args.src.as_deref().map(parse_src).transpose()?;
    let Ok(compiled) = compile(&args.input)? else {
        return Ok(ExitCode::FAILURE);
    };
    let primary = &compiled.state.node.primary_ips;
    let (src, src_port) = match (src, origin) {
        (Some(src), _) => src,
        (None, Origin::Node) => {
            let Some(ip) = primary.iter().find(|ip| ip.is_ipv4() == dst.is_ipv4()) else {
                bail!("--src is needed: the node has no primary IP of the destination's family");
            };
            (*ip, DEFAULT_SRC_PORT)
        }
        (None, _) => bail!("--src is needed with --from {}", args.from),
    };
    let packet = Packet {
        src,
        src_port,
        dst: dst.ip(),
        dst_port: dst.port(),
        proto,
        origin,
        ct_new: !args.established,
    };
    let local = LocalAddresses::new(
        primary
            .iter()
            .copied()
            .chain(args.local_addresses.iter().copied()),
    );
    let traced = kproxy_trace::trace(&compiled.ruleset, &packet, &local)?;
    let text = match args.output {
        OutputFormat::Text => kproxy_trace::render_text(&traced),
        OutputFormat::Json => {
            serde_json::to_string_pretty(&traced).context("encoding the trace as JSON")? + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(if compiled.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`.
fn parse_src(text: &str) -> anyhow::Result<(IpAddr, u16)> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok((addr.ip(), addr.port()));
    }
    let ip = text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .with_context(|| format!("--src {text:?} is not IP or IP:PORT"))?;
    Ok((ip, DEFAULT_SRC_PORT))
}
