//! `kproxy trace`: the life of one packet through the rules compiled from manifests, or with
//! `--live` through the rules in this network namespace's kernel.
//!
//! The manifests are compiled exactly as `dry-run` compiles them; the ruleset is then interpreted
//! by `kproxy-trace`. `fib … type local` is true for the node's primary IPs (from its Node
//! object), any `--local-address`, `127.0.0.0/8` and `::1`.
//!
//! `--live` reads kproxy's tables back from the kernel with the syncer's read-back (the one a
//! restarted kproxy adopts its rules with), so it needs no manifests and works on a real node;
//! the Services show in the chain names and comments, which the compiler derives from them.
//! Local addresses are the kernel's local routes. What the kernel does not give back: elements
//! of dynamic sets (session-affinity clients), which the trace still assumes empty, and the
//! conntrack table (an established connection keeps the NAT its first packet got).

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;

use anyhow::{bail, Context};
use kproxy_compiler::ir::Ruleset;
use kproxy_model::Protocol;
use kproxy_trace::{LocalAddresses, Origin, Packet};

use super::compile::compile;
use crate::cli::{InputArgs, OutputFormat, TraceArgs};
use crate::local_routes;

/// The source port when `--src` has none.
const DEFAULT_SRC_PORT: u16 = 40000;

/// The rules to trace through and what they need.
struct Rules {
    ruleset: Ruleset,
    local: LocalAddresses,
    /// Where `--from node` packets start without `--src`.
    node_source: NodeSource,
    /// Problems with individual objects (compiled with `--keep-going`): exit non-zero.
    problems: usize,
    /// Printed first (text output only).
    header: Option<String>,
}

/// The node's own source address for a destination.
enum NodeSource {
    /// Its primary IP of the destination's family (from its Node object).
    Primary(Vec<IpAddr>),
    /// The address this namespace's routes pick.
    Routes,
}

impl NodeSource {
    fn for_destination(&self, dst: SocketAddr) -> anyhow::Result<IpAddr> {
        match self {
            NodeSource::Primary(ips) => match ips.iter().find(|ip| ip.is_ipv4() == dst.is_ipv4()) {
                Some(ip) => Ok(*ip),
                None => {
                    bail!("--src is needed: the node has no primary IP of the destination's family")
                }
            },
            NodeSource::Routes => route_source(dst),
        }
    }
}

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
    let rules = if args.live {
        live()?
    } else {
        match compiled(args)? {
            Some(rules) => rules,
            None => return Ok(ExitCode::FAILURE),
        }
    };
    let (src, src_port) = match (src, origin) {
        (Some(src), _) => src,
        (None, Origin::Node) => (rules.node_source.for_destination(dst)?, DEFAULT_SRC_PORT),
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
    let traced = kproxy_trace::trace(&rules.ruleset, &packet, &rules.local)?;
    let text = match args.output {
        OutputFormat::Text => {
            rules.header.unwrap_or_default() + &kproxy_trace::render_text(&traced)
        }
        OutputFormat::Json => {
            serde_json::to_string_pretty(&traced).context("encoding the trace as JSON")? + "\n"
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .context("writing to stdout")?;
    stdout.flush().context("writing to stdout")?;
    Ok(if rules.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The rules compiled from the manifests; `None` when nothing compiled (already reported).
fn compiled(args: &TraceArgs) -> anyhow::Result<Option<Rules>> {
    let input = InputArgs {
        files: args.files.clone(),
        proxy: args.proxy.clone(),
        keep_going: args.keep_going,
    };
    let Ok(compiled) = compile(&input)? else {
        return Ok(None);
    };
    let primary = compiled.state.node.primary_ips;
    let local = LocalAddresses::new(
        primary
            .iter()
            .copied()
            .chain(args.local_addresses.iter().copied()),
    );
    Ok(Some(Rules {
        ruleset: compiled.ruleset,
        local,
        node_source: NodeSource::Primary(primary),
        problems: compiled.problems.len(),
        header: None,
    }))
}

/// The rules in this network namespace's kernel, read back into the IR.
fn live() -> anyhow::Result<Rules> {
    let read = kproxy_syncer::netlink::read_tables()
        .context("reading kproxy's tables from the kernel (this needs CAP_NET_ADMIN)")?;
    if let Some((family, reason)) = read.unreadable.first() {
        bail!(
            "the {} kproxy table holds rules kproxy does not write, so it cannot be traced: {}",
            kproxy_compiler::render::nft::family(*family),
            reason.0
        );
    }
    if read.ruleset.tables.is_empty() {
        bail!("this network namespace has no kproxy tables (is kproxy running here, or is this the right namespace?)");
    }
    let local = LocalAddresses::from_networks(local_routes::read()?);
    let families: Vec<&str> = read
        .ruleset
        .tables
        .iter()
        .map(|t| kproxy_compiler::render::nft::family(t.family))
        .collect();
    Ok(Rules {
        header: Some(format!(
            "rules: kproxy's tables in this network namespace's kernel ({}), read back over netlink\n",
            families.join(", ")
        )),
        ruleset: read.ruleset,
        local,
        node_source: NodeSource::Routes,
        problems: 0,
    })
}

/// The source address this namespace's routes pick for `dst`: a UDP socket connected to it
/// (which sends nothing) is bound to exactly that address.
fn route_source(dst: SocketAddr) -> anyhow::Result<IpAddr> {
    let any: SocketAddr = if dst.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).context("opening a UDP socket to look up a route")?;
    socket
        .connect(dst)
        .with_context(|| format!("no route to {dst} here: give --src"))?;
    Ok(socket
        .local_addr()
        .context("reading the socket's address")?
        .ip())
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
