//! `--config FILE`: a KubeProxyConfiguration (`kubeproxy.config.k8s.io/v1alpha1`, as kubeadm
//! writes it into the `kube-proxy` ConfigMap), merged under the command line: a flag given on
//! the command line wins over the file, the file wins over the flag's default.
//!
//! Zero values (`""`, `0`, `0s`, `false`, `null`) mean "not set", as kube-proxy's defaulting
//! treats them; kubeadm writes every field that way. Every field that is set but that kproxy
//! does not read is warned about by name, and so is every field the format does not have:
//! nothing in the file is ignored silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::cli::{parse_bind_address, parse_duration, BindAddress, ProxyMode, RunArgs};

/// The `apiVersion`s accepted.
const API_VERSIONS: [&str; 2] = [
    "kubeproxy.config.k8s.io/v1alpha1",
    "kubeproxy.config.k8s.io/v1alpha2",
];

/// Fields of the format that kproxy does not read: warned about when set. A trailing `.`
/// covers a whole section.
const UNSUPPORTED: &[&str] = &[
    "bindAddress",
    "bindAddressHardFail",
    "clientConnection.acceptContentTypes",
    "clientConnection.contentType",
    "configSyncPeriod",
    "conntrack.",
    "detectLocal.",
    "detectLocalMode",
    "enableProfiling",
    "featureGates",
    "iptables.",
    "ipvs.",
    "linux.conntrack.",
    "linux.oomScoreAdj",
    "logging.",
    "nftables.masqueradeBit",
    "oomScoreAdj",
    "portRange",
    "showHiddenMetricsForVersion",
    "windowsRunAsService",
    "winkernel.",
    "windows.",
];

/// Unsupported fields whose value here is kube-proxy's default: not warned about (kubeadm
/// writes them).
const DEFAULTS: &[(&str, &str)] = &[("bindAddress", "0.0.0.0"), ("bindAddress", "::")];

/// What the file sets (`None`: not set, or set to a zero value).
#[derive(Debug, Default, PartialEq)]
pub struct FileConfig {
    pub mode: Option<ProxyMode>,
    pub hostname_override: Option<String>,
    pub cluster_cidr: Option<String>,
    /// Comma-separated, as the flag takes it.
    pub nodeport_addresses: Option<String>,
    pub masquerade_all: Option<bool>,
    pub sync_period: Option<Duration>,
    pub min_sync_period: Option<Duration>,
    pub healthz_bind_address: Option<BindAddress>,
    pub metrics_bind_address: Option<BindAddress>,
    pub kubeconfig: Option<PathBuf>,
    /// One line per field kproxy does not read or does not know.
    pub warnings: Vec<String>,
}

/// Reads and parses `path`.
pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading --config {}: {e}", path.display()))?;
    parse(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
}

/// Parses a KubeProxyConfiguration.
pub fn parse(text: &str) -> Result<FileConfig, String> {
    let root: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let mut fields = Fields::default();
    match &root {
        Value::Mapping(_) => fields.flatten("", &root),
        _ => return Err("not a KubeProxyConfiguration (a mapping)".into()),
    }
    let api_version = fields.string("apiVersion")?;
    if !api_version
        .as_deref()
        .is_some_and(|v| API_VERSIONS.contains(&v))
    {
        return Err(format!(
            "apiVersion {api_version:?}: expected {}",
            API_VERSIONS.join(" or ")
        ));
    }
    let kind = fields.string("kind")?;
    if kind.as_deref() != Some("KubeProxyConfiguration") {
        return Err(format!("kind {kind:?}: expected KubeProxyConfiguration"));
    }
    let mut config = FileConfig::default();
    let mut warnings = Vec::new();
    config.mode = match fields.string("mode")?.as_deref() {
        None => None,
        Some("nftables") => Some(ProxyMode::Nftables),
        Some("iptables") => Some(ProxyMode::Iptables),
        Some(other) => {
            warnings.push(format!(
                "mode: {other:?} is not supported: kproxy programs nftables or iptables"
            ));
            None
        }
    };
    config.hostname_override = fields.string("hostnameOverride")?;
    config.cluster_cidr = fields.string("clusterCIDR")?;
    config.nodeport_addresses = fields.strings("nodePortAddresses")?.map(|v| v.join(","));
    // v1alpha1 keeps these per mode (`nftables.*`); v1alpha2 moved them up (`linux.` for
    // masqueradeAll). The nftables section wins when both are set.
    config.masquerade_all = fields
        .bool("nftables.masqueradeAll")?
        .or(fields.bool("linux.masqueradeAll")?)
        .or(fields.bool("masqueradeAll")?);
    config.sync_period = fields
        .duration("nftables.syncPeriod")?
        .or(fields.duration("syncPeriod")?);
    config.min_sync_period = fields
        .duration("nftables.minSyncPeriod")?
        .or(fields.duration("minSyncPeriod")?);
    config.healthz_bind_address = fields.bind_address("healthzBindAddress", 10256)?;
    config.metrics_bind_address = fields.bind_address("metricsBindAddress", 10249)?;
    config.kubeconfig = fields
        .string("clientConnection.kubeconfig")?
        .map(PathBuf::from);
    for field in ["clientConnection.qps", "clientConnection.burst"] {
        if fields.take(field).is_some() {
            warnings.push(format!(
                "{field} is not supported: the API client (kube-rs) has no client-side rate limit"
            ));
        }
    }
    // What is left was not read.
    for (path, value) in std::mem::take(&mut fields.leaves) {
        let known = UNSUPPORTED.iter().any(|u| match u.strip_suffix('.') {
            Some(section) => path == section || path.starts_with(u),
            None => path == *u,
        }) || fields.read.contains(&path);
        if !known {
            warnings.push(format!("{path}: unknown field"));
        } else if !is_zero(&value)
            && !DEFAULTS
                .iter()
                .any(|(p, d)| *p == path && value.as_str() == Some(*d))
        {
            warnings.push(format!("{path} is not supported by kproxy; ignored"));
        }
    }
    config.warnings = warnings;
    Ok(config)
}

impl FileConfig {
    /// Sets every field of `args` that the file sets and the command line does not give
    /// (`given`: clap argument ids whose value came from the command line).
    pub fn apply(&self, args: &mut RunArgs, given: &BTreeSet<String>) {
        let unset = |id: &str| !given.contains(id);
        fn set<T: Clone>(unset: bool, target: &mut T, value: &Option<T>) {
            if let (true, Some(value)) = (unset, value) {
                *target = value.clone();
            }
        }
        if unset("kubeconfig") {
            if let Some(path) = &self.kubeconfig {
                args.kubeconfig = Some(path.clone());
            }
        }
        let proxy = &mut args.proxy;
        set(unset("proxy_mode"), &mut proxy.proxy_mode, &self.mode);
        if unset("hostname_override") && self.hostname_override.is_some() {
            proxy.hostname_override = self.hostname_override.clone();
        }
        if unset("cluster_cidr") && self.cluster_cidr.is_some() {
            proxy.cluster_cidr = self.cluster_cidr.clone();
        }
        set(
            unset("nodeport_addresses"),
            &mut proxy.nodeport_addresses,
            &self.nodeport_addresses,
        );
        set(
            unset("masquerade_all"),
            &mut proxy.masquerade_all,
            &self.masquerade_all,
        );
        set(
            unset("sync_period"),
            &mut args.sync_period,
            &self.sync_period,
        );
        set(
            unset("min_sync_period"),
            &mut args.min_sync_period,
            &self.min_sync_period,
        );
        set(
            unset("healthz_bind_address"),
            &mut args.healthz_bind_address,
            &self.healthz_bind_address,
        );
        set(
            unset("metrics_bind_address"),
            &mut args.metrics_bind_address,
            &self.metrics_bind_address,
        );
    }
}

/// The file's leaves by dotted path (sequences are leaves), and which were read.
#[derive(Debug, Default)]
struct Fields {
    leaves: std::collections::BTreeMap<String, Value>,
    read: BTreeSet<String>,
}

impl Fields {
    fn flatten(&mut self, prefix: &str, value: &Value) {
        match value {
            Value::Mapping(map) if !map.is_empty() || prefix.is_empty() => {
                for (key, value) in map {
                    let key = match key {
                        Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    self.flatten(&path, value);
                }
            }
            _ => {
                self.leaves.insert(prefix.to_string(), value.clone());
            }
        }
    }

    /// Removes a leaf; `None` when absent or zero.
    fn take(&mut self, path: &str) -> Option<Value> {
        let value = self.leaves.remove(path)?;
        self.read.insert(path.to_string());
        (!is_zero(&value)).then_some(value)
    }

    fn string(&mut self, path: &str) -> Result<Option<String>, String> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{path}: expected a string, got {}", show(&other))),
        }
    }

    fn strings(&mut self, path: &str) -> Result<Option<Vec<String>>, String> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::Sequence(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    other => Err(format!(
                        "{path}: expected a list of strings, got {}",
                        show(&other)
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(Value::String(s)) => Ok(Some(vec![s])),
            Some(other) => Err(format!("{path}: expected a list, got {}", show(&other))),
        }
    }

    fn bool(&mut self, path: &str) -> Result<Option<bool>, String> {
        match self.take(path) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(format!(
                "{path}: expected true or false, got {}",
                show(&other)
            )),
        }
    }

    fn duration(&mut self, path: &str) -> Result<Option<Duration>, String> {
        match self.string(path)? {
            None => Ok(None),
            Some(text) => parse_duration(&text)
                .map(Some)
                .map_err(|e| format!("{path}: {e}")),
        }
    }

    /// `IP:PORT`, or a bare IP (`default_port` added), as kube-proxy accepts.
    fn bind_address(
        &mut self,
        path: &str,
        default_port: u16,
    ) -> Result<Option<BindAddress>, String> {
        let Some(text) = self.string(path)? else {
            return Ok(None);
        };
        if let Ok(ip) = text.trim().parse::<std::net::IpAddr>() {
            return Ok(Some(BindAddress(Some((ip, default_port).into()))));
        }
        parse_bind_address(&text)
            .map(Some)
            .map_err(|e| format!("{path}: {e}"))
    }
}

/// The zero value of its type: what kube-proxy's defaulting replaces.
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty() || s == "0s" || s == "0",
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(map) => map.is_empty(),
        Value::Tagged(tagged) => is_zero(&tagged.value),
    }
}

fn show(value: &Value) -> String {
    serde_yaml::to_string(value)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `kubeadm init` puts in the kube-proxy ConfigMap (v1.33), with a cluster's values.
    const KUBEADM: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: ""
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
kind: KubeProxyConfiguration
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
    text:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: 0.0.0.0:10249
mode: nftables
nftables:
  masqueradeAll: true
  masqueradeBit: null
  minSyncPeriod: 2s
  syncPeriod: 45s
nodePortAddresses:
- 192.168.0.0/16
- fd00::/64
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"#;

    fn run_args(flags: &[&str]) -> (RunArgs, BTreeSet<String>) {
        let mut argv = vec!["kproxy", "run"];
        argv.extend(flags);
        let cli = crate::cli::parse_from(&argv).expect("flags parse");
        match cli.command {
            crate::cli::Command::Run(args) => {
                let given = args.given.clone();
                (args, given)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_what_kubeadm_writes() {
        let config = parse(KUBEADM).expect("parses");
        assert_eq!(config.mode, Some(ProxyMode::Nftables));
        assert_eq!(config.hostname_override, None, "empty is unset");
        assert_eq!(config.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(
            config.nodeport_addresses.as_deref(),
            Some("192.168.0.0/16,fd00::/64")
        );
        assert_eq!(config.masquerade_all, Some(true));
        assert_eq!(config.sync_period, Some(Duration::from_secs(45)));
        assert_eq!(config.min_sync_period, Some(Duration::from_secs(2)));
        assert_eq!(config.healthz_bind_address, None, "empty is the default");
        assert_eq!(
            config.metrics_bind_address,
            Some(BindAddress(Some("0.0.0.0:10249".parse().unwrap())))
        );
        assert_eq!(
            config.kubeconfig,
            Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
        );
        // Every unsupported field kubeadm writes has its zero value: nothing to warn about.
        assert_eq!(config.warnings, Vec::<String>::new());

        let (mut args, given) = run_args(&[]);
        config.apply(&mut args, &given);
        assert_eq!(args.sync_period, Duration::from_secs(45));
        assert_eq!(args.min_sync_period, Duration::from_secs(2));
        assert!(args.proxy.masquerade_all);
        assert_eq!(args.proxy.cluster_cidr.as_deref(), Some("10.244.0.0/16"));
        assert_eq!(args.proxy.nodeport_addresses, "192.168.0.0/16,fd00::/64");
        assert_eq!(
            args.healthz_bind_address,
            BindAddress(Some("0.0.0.0:10256".parse().unwrap())),
            "the flag's default stays"
        );
        assert_eq!(
            args.metrics_bind_address,
            BindAddress(Some("0.0.0.0:10249".parse().unwrap()))
        );
        assert_eq!(
            args.kubeconfig,
            Some(PathBuf::from("/var/lib/kube-proxy/kubeconfig.conf"))
        );
    }

    #[test]
    fn warns_about_unknown_and_unsupported_fields_by_name() {
        let text = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  qps: 50
  burst: 100
conntrack:
  maxPerCore: 32768
ipvs:
  scheduler: rr
portRange: ""
mode: ipvs
noSuchField: 1
nftables:
  alsoUnknown: yes
"#;
        let config = parse(text).expect("parses");
        assert_eq!(
            config.warnings,
            vec![
                "mode: \"ipvs\" is not supported: kproxy programs nftables or iptables",
                "clientConnection.qps is not supported: the API client (kube-rs) has no \
                 client-side rate limit",
                "clientConnection.burst is not supported: the API client (kube-rs) has no \
                 client-side rate limit",
                "conntrack.maxPerCore is not supported by kproxy; ignored",
                "ipvs.scheduler is not supported by kproxy; ignored",
                "nftables.alsoUnknown: unknown field",
                "noSuchField: unknown field",
            ]
        );
        assert_eq!(config.mode, None);
    }

    #[test]
    fn rejects_what_is_not_a_kube_proxy_configuration() {
        for (text, needle) in [
            ("kind: KubeProxyConfiguration\n", "apiVersion"),
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
                "kind",
            ),
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nnftables:\n  syncPeriod: soon\n",
                "nftables.syncPeriod",
            ),
            (
                "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmetricsBindAddress: here\n",
                "metricsBindAddress",
            ),
            ("- a list\n", "mapping"),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(needle), "{text}: {error}");
        }
    }

    #[test]
    fn flags_on_the_command_line_win_over_the_file() {
        let config = parse(KUBEADM).expect("parses");
        let (mut args, given) = run_args(&[
            "--sync-period",
            "10s",
            "--cluster-cidr",
            "10.0.0.0/8",
            "--metrics-bind-address",
            "",
            "--kubeconfig",
            "/etc/mine",
            // Given, though equal to the default: still wins.
            "--min-sync-period",
            "1s",
        ]);
        config.apply(&mut args, &given);
        assert_eq!(args.sync_period, Duration::from_secs(10));
        assert_eq!(args.min_sync_period, Duration::from_secs(1));
        assert_eq!(args.proxy.cluster_cidr.as_deref(), Some("10.0.0.0/8"));
        assert_eq!(args.metrics_bind_address, BindAddress(None));
        assert_eq!(args.kubeconfig, Some(PathBuf::from("/etc/mine")));
        // Not given: the file's.
        assert!(args.proxy.masquerade_all);
        assert_eq!(args.proxy.nodeport_addresses, "192.168.0.0/16,fd00::/64");
    }
}
