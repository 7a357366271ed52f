//! Command-line flags. Names follow kube-proxy's where the meaning is the same.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{
    ArgMatches, Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum,
};

/// A Kubernetes Service proxy: compiles Services and EndpointSlices into nftables rules.
#[derive(Debug, Parser)]
#[command(name = "kproxy", version, about, propagate_version = true)]
pub struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the ruleset kproxy would program for the given manifests, without touching the
    /// kernel. Reads what `kubectl get svc,endpointslices,nodes -A -o yaml` prints.
    DryRun(DryRunArgs),
    /// Compile the manifests and program this network namespace's kernel once, over netlink,
    /// in one atomic transaction. Running it again with changed input sends only the
    /// difference. With `--proxy-mode iptables`: one `iptables-restore --noflush` per family.
    /// Either mode removes the other mode's leftovers.
    Apply(ApplyArgs),
    /// Remove every rule kproxy created, in both modes and both IP families.
    Cleanup(CleanupArgs),
    /// The node daemon: watch the API server and keep this network namespace's rules equal to
    /// its Services, EndpointSlices and Node (what kube-proxy does).
    Run(RunArgs),
    /// Trace one packet through the rules compiled from the manifests (or, with `--live`, the
    /// rules in this network namespace's kernel), without sending anything: every possible path
    /// with its probability, the rules it meets, DNAT and masquerade.
    Trace(TraceArgs),
    /// Print the version, the git commit it was built from, and the build's target and profile.
    Version,
    /// Print a shell completion script (e.g. `kproxy completions bash > /etc/bash_completion.d/kproxy`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Parses the process's arguments (exits on an error, as clap does).
pub fn parse() -> Cli {
    parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
}

/// Parses `argv` (program name first), noting which `run` flags the command line gave.
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let (Command::Run(args), Some(("run", sub))) = (&mut cli.command, matches.subcommand()) {
        args.given = given(sub);
    }
    Ok(cli)
}

/// Ids of the arguments whose value came from the command line.
fn given(matches: &ArgMatches) -> BTreeSet<String> {
    matches
        .ids()
        .filter(|id| matches.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

/// Flags of `kproxy run`, named as kube-proxy's.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, as kubeadm writes
    /// it). Flags given on the command line win over it; fields kproxy does not read are
    /// warned about by name.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// kubeconfig file with the API server's address and credentials. Default: `$KUBECONFIG`
    /// or `~/.kube/config`, else the in-cluster service account.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The API server's URL; overrides the kubeconfig's server.
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    #[command(flatten)]
    pub proxy: ProxyFlags,
    /// The shortest time between two syncs (Go duration, e.g. `1s`, `500ms`; `0` syncs on
    /// every change).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub min_sync_period: Duration,
    /// How long to wait before retrying a failed sync (Go duration); an update not applied
    /// within twice this makes /healthz fail.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// Where /healthz and /livez are served; empty disables them.
    #[arg(long, value_name = "IP:PORT", default_value = "0.0.0.0:10256", value_parser = parse_bind_address)]
    pub healthz_bind_address: BindAddress,
    /// Where /metrics (Prometheus text) is served; empty disables it.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:10249", value_parser = parse_bind_address)]
    pub metrics_bind_address: BindAddress,
    /// After the first full sync is in force, also remove kube-proxy's rules (its iptables-mode
    /// chains and its nftables tables `ip kube-proxy` and `ip6 kube-proxy`), for taking over a
    /// node from kube-proxy.
    #[arg(long)]
    pub cleanup_kube_proxy: bool,
    /// Ids of the flags above that the command line gave (filled by [`parse_from`]).
    #[arg(skip)]
    pub given: BTreeSet<String>,
}

/// A listening address, or none (the flag was empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

/// Flags of `kproxy trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Manifest file, directory (its *.yaml, *.yml and *.json files) or `-` for stdin.
    /// Repeatable. Not with `--live`.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "live"
    )]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub proxy: ProxyFlags,
    /// Compile the valid objects even when others are invalid (still exits non-zero).
    #[arg(long)]
    pub keep_going: bool,
    /// Trace through the rules in this network namespace's kernel (kproxy's tables read back
    /// over netlink, as a restarted kproxy adopts them) instead of compiling manifests: on a
    /// node, or under `ip netns exec`. `fib … type local` follows the kernel's local routes.
    #[arg(long, conflicts_with_all = [
        "files", "keep_going", "hostname_override", "cluster_cidr", "masquerade_all",
        "local_addresses",
    ])]
    pub live: bool,
    /// The packet's source, `IP` or `IP:PORT` (`[IPv6]:PORT`; port 40000 if none). Default with
    /// `--from node`: the node's primary IP of the destination's family (with `--live`: the
    /// source address the kernel's routes pick for the destination).
    #[arg(long, value_name = "IP[:PORT]")]
    pub src: Option<String>,
    /// The packet's destination: a ClusterIP, node address, external or load-balancer IP.
    #[arg(long, value_name = "IP:PORT")]
    pub dst: String,
    /// The transport protocol.
    #[arg(long, default_value = "tcp", value_parser = ["tcp", "udp", "sctp"])]
    pub proto: String,
    /// Where the packet comes from: a pod or an external client (it arrives on an interface),
    /// or a process on the node itself.
    #[arg(long = "from", default_value = "pod", value_parser = ["pod", "node", "external"])]
    pub from: String,
    /// Trace a packet of an established connection (`ct state established`) instead of the
    /// first one.
    #[arg(long)]
    pub established: bool,
    /// More addresses of this node (besides its primary IPs, 127.0.0.0/8 and ::1) for
    /// `fib daddr type local`. Repeatable.
    #[arg(long = "local-address", value_name = "IP")]
    pub local_addresses: Vec<std::net::IpAddr>,
    /// Output format: `text` for people, `json` for tools.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// Flags of `kproxy dry-run`.
#[derive(Debug, Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: `text` is `nft -f` input (with `--proxy-mode iptables`: one
    /// `iptables-restore` input per family); `json` is the typed ruleset IR; `dot` is the
    /// graph of chains, verdict maps and endpoints for Graphviz (`| dot -Tsvg > rules.svg`).
    #[arg(short, long, value_enum, default_value_t = DryRunFormat::Text)]
    pub output: DryRunFormat,
    /// With `--output dot`: only the part of the graph one Service's packets can take, from the
    /// hooks down to its endpoints (`NAMESPACE/NAME`).
    #[arg(long, value_name = "NAMESPACE/NAME")]
    pub service: Option<String>,
}

/// `dry-run --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DryRunFormat {
    /// The ruleset as `nft -f` input.
    Text,
    /// The ruleset IR as JSON.
    Json,
    /// The chain graph as Graphviz `dot`.
    Dot,
}

/// Flags of `kproxy apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Also remove kube-proxy's rules: its iptables-mode rules (its jumps to `KUBE-SERVICES`
    /// and the other chains both proxies name alike) and its nftables tables (`ip kube-proxy`,
    /// `ip6 kube-proxy`), for taking over a node from kube-proxy.
    #[arg(long)]
    pub cleanup_kube_proxy: bool,
}

/// Flags of `kproxy cleanup`.
#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Also remove kube-proxy's rules, iptables and nftables (see `apply --cleanup-kube-proxy`).
    #[arg(long)]
    pub cleanup_kube_proxy: bool,
}

/// Where the Services come from and how to compile them: shared by `dry-run` and `apply`.
#[derive(Debug, Args)]
pub struct InputArgs {
    /// Manifest file, directory (its *.yaml, *.yml and *.json files) or `-` for stdin.
    /// Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    #[command(flatten)]
    pub proxy: ProxyFlags,
    /// Compile the valid objects even when others are invalid (still exits non-zero).
    #[arg(long)]
    pub keep_going: bool,
}

/// Flags that shape the rules, shared by every command that compiles.
#[derive(Debug, Clone, Args)]
pub struct ProxyFlags {
    /// Which backend's rules to produce.
    #[arg(long, value_enum, default_value_t = ProxyMode::Nftables)]
    pub proxy_mode: ProxyMode,
    /// The name of this node (endpoints with this nodeName are local). Default: the host name.
    #[arg(long, value_name = "NAME")]
    pub hostname_override: Option<String>,
    /// Pod networks, comma-separated, at most one per IP family. Traffic to a ClusterIP from
    /// outside them is masqueraded.
    #[arg(long, value_name = "CIDRS")]
    pub cluster_cidr: Option<String>,
    /// Where NodePorts listen: `primary` (the node's InternalIPs) or comma-separated CIDRs
    /// (local addresses inside them).
    #[arg(long, value_name = "CIDRS|primary", default_value = "primary")]
    pub nodeport_addresses: String,
    /// Masquerade all traffic to ClusterIPs.
    #[arg(long)]
    pub masquerade_all: bool,
}

/// The netfilter backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyMode {
    /// nftables (the default): kproxy's own tables, programmed over netlink.
    Nftables,
    /// iptables: kube-proxy's chains (`KUBE-SERVICES`, `KUBE-SVC-…`, …) in the `nat` and
    /// `filter` tables, loaded with `iptables-restore --noflush` (and `ip6tables-restore`).
    Iptables,
}

/// `trace --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Plain text for people.
    Text,
    /// JSON for tools.
    Json,
}

/// Parses a Go duration: `0`, or a sequence of decimal numbers with units (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), e.g. `1s`, `1.5s`, `1m30s`, `250ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?} is not a duration (e.g. 1s, 500ms, 1m30s)");
    if text.is_empty() {
        return Err(bad());
    }
    let mut rest = text;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// Parses `IP:PORT` (`[IPv6]:PORT`); empty means none.
pub fn parse_bind_address(text: &str) -> Result<BindAddress, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(BindAddress(None));
    }
    text.parse()
        .map(|addr| BindAddress(Some(addr)))
        .map_err(|_| format!("{text:?} is not IP:PORT"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1s"), Ok(ms(1000)));
        assert_eq!(parse_duration("250ms"), Ok(ms(250)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(ms(90_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "1", "s", "1x", "-1s", "1s2"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(parse_bind_address(""), Ok(BindAddress(None)));
        assert_eq!(
            parse_bind_address("0.0.0.0:10256"),
            Ok(BindAddress(Some("0.0.0.0:10256".parse().unwrap())))
        );
        assert!(parse_bind_address("[::]:10256").unwrap().0.is_some());
        assert!(parse_bind_address("0.0.0.0").is_err());
    }
}
