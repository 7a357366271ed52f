//! Command-line flags. Names follow kube-proxy's where the meaning is the same.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// difference.
    Apply(InputArgs),
    /// Remove every table kproxy created (both IP families).
    Cleanup,
}

/// Flags of `kproxy dry-run`.
#[derive(Debug, Args)]
pub struct DryRunArgs {
    #[command(flatten)]
    pub input: InputArgs,
    /// Output format: `text` is `nft -f` input; `json` is the typed ruleset IR.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
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
#[derive(Debug, Args)]
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
    /// nftables (the default and, for now, the only mode).
    Nftables,
}

/// `dry-run --output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// The ruleset as `nft -f` input.
    Text,
    /// The ruleset IR as JSON.
    Json,
}
