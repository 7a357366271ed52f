//! The deployment files against the code they deploy: `manifests/` (typed k8s-openapi objects,
//! RBAC equal to what the watcher requests, probes on the binary's default health port, only
//! flags the binary has, a ConfigMap whose KubeProxyConfiguration the binary reads without a
//! warning, mounted where `--config` points, complete kustomizations and an iptables overlay
//! that changes only the mode, built with `kubectl kustomize` where kubectl is installed, and
//! an operations guide that names every flag) and the `Dockerfile` (two bookworm stages, a runtime stage that
//! installs exactly the shared libraries the binary links, CA certificates and iptables).
//! Fast; no root.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kproxy_watcher::API_ACCESS;
use serde::de::DeserializeOwned;
use serde::{Deserialize as _, Serialize};
use serde_json::Value;

/// The namespace every namespaced object lives in.
const NAMESPACE: &str = "kube-system";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn manifests_dir() -> PathBuf {
    root().join("manifests")
}

/// Where the objects are: `manifests/base/` (kustomize refuses an overlay inside its base, so
/// `manifests/kustomization.yaml` and `manifests/overlays/iptables/` both build on it).
fn base_dir() -> PathBuf {
    manifests_dir().join("base")
}

/// Every object in `manifests/base/`, typed.
#[derive(Default)]
struct Objects {
    config_maps: Vec<ConfigMap>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    bindings: Vec<ClusterRoleBinding>,
    daemon_sets: Vec<DaemonSet>,
}

/// The YAML files in `manifests/base/` (but `kustomization.yaml`), by file name, sorted.
fn yaml_files() -> Vec<String> {
    let dir = base_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .filter(|name| name != "kustomization.yaml")
        .collect();
    names.sort();
    names
}

/// Deserialises `document` as `T` and insists the typed object says everything the YAML
/// says: a field k8s-openapi does not know (a typo, a wrong level) would be dropped by the
/// round trip, and kubectl would drop or refuse it too.
fn typed<T: DeserializeOwned + Serialize>(document: &Value, whence: &str) -> T {
    let object: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{whence}: not a valid object: {e}"));
    let back = serde_json::to_value(&object).expect("serialising a k8s-openapi object");
    if let Some(path) = difference(document, &back, String::new()) {
        panic!("{whence}: {path} does not survive typing (an unknown or misplaced field?)");
    }
    object
}

/// The first path at which `yaml` and `typed` differ.
fn difference(yaml: &Value, typed: &Value, path: String) -> Option<String> {
    match (yaml, typed) {
        (Value::Object(a), Value::Object(b)) => a
            .iter()
            .find_map(|(key, value)| match b.get(key) {
                Some(other) => difference(value, other, format!("{path}.{key}")),
                None => Some(format!("{path}.{key}")),
            })
            .or_else(|| {
                b.keys()
                    .find(|key| !a.contains_key(*key))
                    .map(|key| format!("{path}.{key} (added)"))
            }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| difference(x, y, format!("{path}[{i}]"))),
        _ => (yaml != typed).then(|| format!("{path} ({yaml} became {typed})")),
    }
}

fn load() -> Objects {
    let mut objects = Objects::default();
    let files = yaml_files();
    assert!(!files.is_empty(), "no YAML files in manifests/base/");
    for file in files {
        let path = base_dir().join(&file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let whence = format!("manifests/base/{file}, document {}", index + 1);
            let yaml = serde_yaml::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{whence}: invalid YAML: {e}"));
            if yaml.is_null() {
                continue;
            }
            let json = serde_json::to_value(&yaml).unwrap_or_else(|e| panic!("{whence}: {e}"));
            let api_version = json["apiVersion"].as_str().unwrap_or_default();
            let kind = json["kind"].as_str().unwrap_or_default();
            match (api_version, kind) {
                ("v1", "ConfigMap") => objects.config_maps.push(typed(&json, &whence)),
                ("v1", "ServiceAccount") => objects.service_accounts.push(typed(&json, &whence)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    objects.cluster_roles.push(typed(&json, &whence))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    objects.bindings.push(typed(&json, &whence))
                }
                ("apps/v1", "DaemonSet") => objects.daemon_sets.push(typed(&json, &whence)),
                _ => panic!("{whence}: unexpected object {api_version:?} {kind:?}"),
            }
        }
    }
    objects
}

/// Exactly one object of a kind.
fn one<'a, T>(objects: &'a [T], kind: &str) -> &'a T {
    assert_eq!(
        objects.len(),
        1,
        "manifests/base/ should hold exactly one {kind}"
    );
    &objects[0]
}

fn pod_spec(daemon_set: &DaemonSet) -> &PodSpec {
    let spec = daemon_set.spec.as_ref().expect("DaemonSet spec");
    spec.template.spec.as_ref().expect("pod spec")
}

fn container(daemon_set: &DaemonSet) -> &Container {
    let [container] = pod_spec(daemon_set).containers.as_slice() else {
        panic!("the DaemonSet should run exactly one container");
    };
    container
}

fn kproxy_help(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .args(args)
        .output()
        .expect("running kproxy");
    assert!(
        output.status.success(),
        "kproxy {args:?} failed: {output:?}"
    );
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// The long flags `kproxy run --help` lists (without the dashes).
fn run_flags() -> BTreeSet<String> {
    flags_of(&["run"])
}

/// The long flags `kproxy <command> --help` lists (without the dashes).
fn flags_of(command: &[&str]) -> BTreeSet<String> {
    let mut args = command.to_vec();
    args.push("--help");
    kproxy_help(&args)
        .lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(|line| line.split([' ', ',']))
        .filter_map(|token| token.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches("...").to_string())
        .collect()
}

/// The `[default: …]` of one flag in `kproxy run --help`.
fn run_default(flag: &str) -> String {
    let help = kproxy_help(&["run", "--help"]);
    let start = help
        .lines()
        .position(|line| line.trim_start().starts_with(&format!("--{flag} ")))
        .unwrap_or_else(|| panic!("run --help has no --{flag}"));
    help.lines()
        .skip(start + 1)
        .take_while(|line| !line.trim_start().starts_with('-'))
        .find_map(|line| line.trim().strip_prefix("[default: "))
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or_else(|| panic!("run --help shows no default for --{flag}"))
        .to_string()
}

/// The value of `--<flag>=…` in the container's arguments.
fn arg_value<'a>(container: &'a Container, flag: &str) -> Option<&'a str> {
    let prefix = format!("--{flag}=");
    container
        .args
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find_map(|arg| arg.strip_prefix(&prefix))
}

/// The KubeProxyConfiguration the DaemonSet's `--config` reads: the path, and the text the
/// ConfigMap mounted there holds under that file name. Panics unless the path is inside a
/// read-only mount of the ConfigMap (a whole-volume mount: a `subPath` mount never sees an
/// edited ConfigMap) and the ConfigMap has the key.
fn mounted_configuration(objects: &Objects) -> (String, String) {
    let daemon_set = one(&objects.daemon_sets, "DaemonSet");
    let config_map = one(&objects.config_maps, "ConfigMap");
    let container = container(daemon_set);
    let path = arg_value(container, "config").expect("the container passes --config=PATH");
    let path = Path::new(path);
    let (Some(dir), Some(file)) = (path.parent(), path.file_name()) else {
        panic!("--config={}: not a path to a file", path.display());
    };
    assert!(path.is_absolute(), "--config={}: relative", path.display());
    let mount = container
        .volume_mounts
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|mount| Path::new(&mount.mount_path) == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
    assert!(mount.sub_path.is_none(), "{}: a subPath mount", mount.name);
    assert_eq!(mount.read_only, Some(true), "{}: not read-only", mount.name);
    let volume = pod_spec(daemon_set)
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|volume| volume.name == mount.name)
        .unwrap_or_else(|| panic!("no volume {:?}", mount.name));
    let source = volume
        .config_map
        .as_ref()
        .unwrap_or_else(|| panic!("volume {:?} is not a ConfigMap", volume.name));
    assert_eq!(Some(&source.name), config_map.metadata.name.as_ref());
    assert!(
        source.items.is_none(),
        "volume {:?}: items rename the ConfigMap's files",
        volume.name
    );
    let key = file.to_str().expect("a UTF-8 file name");
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get(key))
        .unwrap_or_else(|| {
            panic!(
                "the ConfigMap has no key {key:?} (--config={})",
                path.display()
            )
        });
    (path.display().to_string(), text.clone())
}

/// A KubeProxyConfiguration as YAML (a mapping).
fn configuration_fields(text: &str) -> serde_yaml::Mapping {
    match serde_yaml::from_str(text) {
        Ok(serde_yaml::Value::Mapping(fields)) => fields,
        other => panic!("the KubeProxyConfiguration is not a YAML mapping: {other:?}"),
    }
}

/// A string field of a KubeProxyConfiguration; `None` when absent or empty (unset).
fn configuration_string(text: &str, field: &str) -> Option<String> {
    configuration_fields(text)
        .get(field)
        .and_then(serde_yaml::Value::as_str)
        .filter(|value| !value.is_empty())
        .map(str::to_string)
}

/// The warnings kproxy's own reader (`cmd/run/config_file.rs`) has for `text`, run through the
/// binary: `kproxy run --config FILE --<bad_flag>=not-a-cidr`. kproxy has no library target,
/// and `run` validates the compiling flags right after reading the file, so the bad flag stops
/// it there, before it listens, touches the kernel or calls the API server. The flag given
/// wins over the file; the file's values for the other flags are validated on the way, so
/// the one error must be the bad flag's.
fn warnings_of_kproxy_reading(text: &str, bad_flag: &str) -> Vec<String> {
    static FILES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!(
        "kproxy-manifests-test-{}-{n}.conf",
        std::process::id()
    ));
    std::fs::write(&file, text).expect("writing the configuration to a temporary file");
    let output = Command::new(env!("CARGO_BIN_EXE_kproxy"))
        .arg("run")
        .arg(format!("--config={}", file.display()))
        .arg(format!("--{bad_flag}=not-a-cidr"))
        .env_remove("RUST_LOG")
        .output()
        .expect("running kproxy");
    std::fs::remove_file(&file).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "kproxy run: {stderr}");
    assert!(
        stderr.contains("INFO read the KubeProxyConfiguration"),
        "kproxy did not read the file: {stderr}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|line| line.strip_prefix("error: "))
        .collect();
    assert_eq!(
        errors,
        [format!("--{bad_flag}: \"not-a-cidr\" is not a CIDR")],
        "{stderr}"
    );
    stderr
        .lines()
        .filter_map(|line| {
            line.split_once(" WARN ")
                .map(|(_, warning)| warning.to_string())
        })
        .collect()
}

/// Whether `kproxy run --proxy-mode` takes `mode`.
fn run_has_mode(mode: &str) -> bool {
    let help = kproxy_help(&["run", "--help"]);
    let start = help
        .lines()
        .position(|line| line.trim_start().starts_with("--proxy-mode "))
        .expect("run --help has --proxy-mode");
    help.lines()
        .skip(start + 1)
        .take_while(|line| !line.trim_start().starts_with("--"))
        .any(|line| line.trim_start().starts_with(&format!("- {mode}:")))
}

#[test]
fn every_manifest_is_a_typed_object_in_kube_system() {
    let objects = load();
    let config_map = one(&objects.config_maps, "ConfigMap");
    let account = one(&objects.service_accounts, "ServiceAccount");
    one(&objects.cluster_roles, "ClusterRole");
    one(&objects.bindings, "ClusterRoleBinding");
    let daemon_set = one(&objects.daemon_sets, "DaemonSet");
    for namespace in [
        &config_map.metadata.namespace,
        &account.metadata.namespace,
        &daemon_set.metadata.namespace,
    ] {
        assert_eq!(namespace.as_deref(), Some(NAMESPACE));
    }
}

#[test]
fn the_cluster_role_grants_exactly_what_the_watcher_requests() {
    let objects = load();
    let role = one(&objects.cluster_roles, "ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role.rules.as_deref().unwrap_or_default() {
        assert!(rule.resource_names.is_none(), "{rule:?}: resourceNames");
        assert!(
            rule.non_resource_urls.is_none(),
            "{rule:?}: nonResourceURLs"
        );
        for group in rule.api_groups.as_deref().unwrap_or_default() {
            for resource in rule.resources.as_deref().unwrap_or_default() {
                for verb in &rule.verbs {
                    for name in [group, resource, verb] {
                        assert!(!name.contains('*'), "{rule:?}: wildcard {name:?}");
                    }
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    let needed: BTreeSet<(String, String, String)> = API_ACCESS
        .iter()
        .flat_map(|access| {
            access.verbs.iter().map(|verb| {
                (
                    access.group.to_string(),
                    access.resource.to_string(),
                    verb.to_string(),
                )
            })
        })
        .collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&needed).collect();
    assert!(missing.is_empty(), "the ClusterRole lacks {missing:?}");
    assert!(
        extra.is_empty(),
        "the ClusterRole grants more than kproxy uses: {extra:?}"
    );
}

#[test]
fn the_binding_gives_the_role_to_the_daemon_sets_service_account() {
    let objects = load();
    let role = one(&objects.cluster_roles, "ClusterRole");
    let binding = one(&objects.bindings, "ClusterRoleBinding");
    let account = one(&objects.service_accounts, "ServiceAccount");
    let daemon_set = one(&objects.daemon_sets, "DaemonSet");

    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());

    let pod = daemon_set
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert_eq!(pod.service_account_name, account.metadata.name);
    let [subject] = binding.subjects.as_deref().unwrap_or_default() else {
        panic!("the binding should have exactly one subject");
    };
    assert_eq!(subject.kind, "ServiceAccount");
    assert_eq!(Some(&subject.name), account.metadata.name.as_ref());
    assert_eq!(subject.namespace, account.metadata.namespace);
    assert_eq!(subject.namespace, daemon_set.metadata.namespace);
}

#[test]
fn probes_use_the_binarys_health_port() {
    let objects = load();
    let container = container(one(&objects.daemon_sets, "DaemonSet"));
    let args = container.args.as_deref().unwrap_or_default();
    assert!(
        !args.iter().any(|a| a.starts_with("--healthz-bind-address")),
        "the manifests rely on the default --healthz-bind-address"
    );
    let default = run_default("healthz-bind-address");
    let address: SocketAddr = default
        .parse()
        .unwrap_or_else(|e| panic!("default --healthz-bind-address {default:?}: {e}"));
    // The configuration file may repeat the default, but not move it.
    let (path, text) = mounted_configuration(&objects);
    if let Some(configured) = configuration_string(&text, "healthzBindAddress") {
        assert_eq!(
            configured.parse::<SocketAddr>().ok(),
            Some(address),
            "{path}: healthzBindAddress {configured:?} is not the binary's default {default}"
        );
    }
    let port = IntOrString::Int(i32::from(address.port()));
    for (probe, path) in [
        (&container.readiness_probe, "/healthz"),
        (&container.liveness_probe, "/livez"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("no httpGet probe for {path}"));
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.port, port, "{path}: the binary serves on {default}");
        assert!(
            get.host.is_none(),
            "{path}: the kubelet must probe the pod's (node's) IP"
        );
    }
}

#[test]
fn the_container_runs_kproxy_run_with_flags_it_has() {
    let objects = load();
    let container = container(one(&objects.daemon_sets, "DaemonSet"));
    assert_eq!(
        container.command.as_deref(),
        Some(&[dockerfile_entrypoint()][..]),
        "command should be the image's ENTRYPOINT"
    );
    let args = container.args.as_deref().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    let flags = run_flags();
    for arg in &args[1..] {
        let flag = arg
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("{arg:?}: write flags as --name=value"));
        let name = flag.split('=').next().unwrap();
        assert!(
            flags.contains(name),
            "kproxy run has no --{name} (it has {flags:?})"
        );
    }
    for flag in ["config", "hostname-override"] {
        assert!(arg_value(container, flag).is_some(), "--{flag} is not set");
    }
    let (path, text) = mounted_configuration(&objects);
    assert!(
        arg_value(container, "cluster-cidr").is_some()
            || configuration_string(&text, "clusterCIDR").is_some(),
        "neither --cluster-cidr nor clusterCIDR in {path} is set"
    );
    // `$(NAME)` in args is expanded by the kubelet only when NAME is in env.
    let env: BTreeSet<&str> = container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|var| var.name.as_str())
        .collect();
    for arg in args {
        let mut rest = arg.as_str();
        while let Some(start) = rest.find("$(") {
            let end = rest[start..].find(')').expect("unclosed $(") + start;
            let name = &rest[start + 2..end];
            assert!(
                env.contains(name),
                "{arg:?} uses $({name}), which env does not set"
            );
            rest = &rest[end..];
        }
    }
    let node_name = container
        .env
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|var| var.name == "NODE_NAME")
        .and_then(|var| var.value_from.as_ref())
        .and_then(|from| from.field_ref.as_ref())
        .map(|field| field.field_path.as_str());
    assert_eq!(node_name, Some("spec.nodeName"));
}

#[test]
fn the_daemon_set_runs_on_every_node_with_the_least_privilege() {
    let objects = load();
    let daemon_set = one(&objects.daemon_sets, "DaemonSet");
    let spec = daemon_set.spec.as_ref().unwrap();
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        spec.selector.match_labels,
        spec.template.metadata.as_ref().unwrap().labels
    );
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let tolerations = pod.tolerations.as_deref().unwrap_or_default();
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "no toleration of every taint: {tolerations:?}"
    );
    let strategy = spec.update_strategy.as_ref().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy.rolling_update.as_ref().unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );

    let container = container(daemon_set);
    assert!(
        container
            .lifecycle
            .as_ref()
            .is_none_or(|l| l.pre_stop.is_none()),
        "no preStop: the rules must survive a restart"
    );
    let security = container
        .security_context
        .as_ref()
        .expect("securityContext");
    assert_eq!(security.privileged, Some(false));
    assert_eq!(security.run_as_user, Some(0));
    let capabilities = security.capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities.drop.as_deref(), Some(&["ALL".to_string()][..]));
    let added: BTreeSet<&str> = capabilities
        .add
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(added, BTreeSet::from(["NET_ADMIN", "NET_RAW"]));

    // Sized from docs/benchmarks.md, "The node daemon": the request holds 50,000 Services
    // once synced (149-156 MB RSS), the limit their first full sync (a 612 MB heap peak);
    // no CPU limit.
    let resources = container.resources.as_ref().expect("resources");
    let requests = resources.requests.as_ref().expect("requests");
    assert_eq!(requests["cpu"].0, "100m");
    assert_eq!(requests["memory"].0, "256Mi");
    let limits = resources.limits.as_ref().expect("limits");
    assert_eq!(limits["memory"].0, "1Gi");
    assert!(!limits.contains_key("cpu"), "a CPU limit only delays syncs");
}

#[test]
fn the_daemon_set_mounts_the_config_map_where_config_points() {
    let objects = load();
    let (path, text) = mounted_configuration(&objects);
    assert_eq!(path, "/etc/kproxy/config.conf");
    assert_eq!(
        configuration_string(&text, "kind").as_deref(),
        Some("KubeProxyConfiguration")
    );
}

#[test]
fn kproxy_reads_the_config_maps_configuration_without_a_warning() {
    let objects = load();
    let (path, text) = mounted_configuration(&objects);
    for bad_flag in ["cluster-cidr", "nodeport-addresses"] {
        let warnings = warnings_of_kproxy_reading(&text, bad_flag);
        assert!(
            warnings.is_empty(),
            "kproxy warns about {path} (configmap.yaml): {warnings:#?}"
        );
    }
}

#[test]
fn the_iptables_overlay_sets_only_the_mode() {
    let dir = manifests_dir().join("overlays/iptables");
    let text = std::fs::read_to_string(dir.join("kustomization.yaml"))
        .expect("manifests/overlays/iptables/kustomization.yaml");
    let kustomization: Value = serde_yaml::from_str(&text).expect("kustomization.yaml is YAML");
    assert_eq!(kustomization["kind"], "Kustomization");
    assert_eq!(
        kustomization["resources"],
        serde_json::json!(["../../base"])
    );
    let patches = kustomization["patches"]
        .as_array()
        .expect("patches: a list");
    let [patch] = patches.as_slice() else {
        panic!("the overlay should have exactly one patch: {patches:?}");
    };
    let file = patch["path"].as_str().expect("a patch file");
    let patch_text = std::fs::read_to_string(dir.join(file)).expect("the overlay's patch");
    let yaml: serde_yaml::Value = serde_yaml::from_str(&patch_text).expect("the patch is YAML");
    let json = serde_json::to_value(&yaml).expect("the patch as JSON");
    let patch: ConfigMap = typed(&json, &format!("manifests/overlays/iptables/{file}"));

    let objects = load();
    let base = one(&objects.config_maps, "ConfigMap");
    assert_eq!(patch.metadata.name, base.metadata.name);
    assert_eq!(patch.metadata.namespace, base.metadata.namespace);
    let (path, base_text) = mounted_configuration(&objects);
    let key = Path::new(&path).file_name().unwrap().to_str().unwrap();
    let data = patch.data.as_ref().expect("the patch sets data");
    assert_eq!(
        data.keys().collect::<Vec<_>>(),
        [key],
        "the patch should replace only {key}"
    );
    let overlay_text = &data[key];
    let mut expected = configuration_fields(&base_text);
    expected.insert("mode".into(), "iptables".into());
    assert_eq!(
        configuration_fields(overlay_text),
        expected,
        "the overlay's configuration should be the base's with mode: iptables"
    );

    let warnings = warnings_of_kproxy_reading(overlay_text, "cluster-cidr");
    if run_has_mode("iptables") {
        assert!(warnings.is_empty(), "{warnings:#?}");
    } else {
        // The iptables mode is being built; until --proxy-mode takes it, kproxy says so and
        // programs nftables.
        let [warning] = warnings.as_slice() else {
            panic!("expected one warning about the mode: {warnings:#?}");
        };
        assert!(
            warning.contains("mode: \"iptables\" is not supported"),
            "{warning}"
        );
    }
}

#[test]
fn the_operations_guide_names_every_flag() {
    let guide =
        std::fs::read_to_string(root().join("docs/operations.md")).expect("docs/operations.md");
    let mut missing = Vec::new();
    for command in ["run", "dry-run", "apply", "trace"] {
        for flag in flags_of(&[command]) {
            if !["help", "version"].contains(&flag.as_str())
                && !guide.contains(&format!("--{flag}"))
            {
                missing.push(format!("kproxy {command} --{flag}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operations.md does not mention {missing:?}"
    );
}

fn kustomization(dir: &Path) -> Value {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let kustomization: Value =
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    assert_eq!(kustomization["kind"], "Kustomization", "{}", path.display());
    kustomization
}

#[test]
fn the_kustomizations_list_exactly_the_yaml_files() {
    // `kubectl apply -k manifests/` is the base, nothing added.
    let top = kustomization(&manifests_dir());
    assert_eq!(top["resources"], serde_json::json!(["base"]));
    for key in ["patches", "images", "namespace", "configMapGenerator"] {
        assert!(
            top.get(key).is_none(),
            "manifests/kustomization.yaml: {key}"
        );
    }
    let kustomization = kustomization(&base_dir());
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources: a list")
        .iter()
        .map(|r| r.as_str().expect("a file name"))
        .collect();
    let unique: BTreeSet<&str> = listed.iter().copied().collect();
    assert_eq!(
        unique.len(),
        listed.len(),
        "a file listed twice: {listed:?}"
    );
    let present = yaml_files();
    let present: BTreeSet<&str> = present.iter().map(String::as_str).collect();
    assert_eq!(
        unique, present,
        "manifests/base/kustomization.yaml resources vs the YAML files present"
    );
}

/// `kubectl kustomize DIR`'s objects, or `None` without kubectl.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 YAML");
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|document| {
                let yaml = serde_yaml::Value::deserialize(document).expect("kustomize's YAML");
                serde_json::to_value(yaml).expect("as JSON")
            })
            .collect(),
    )
}

/// The objects of `manifests/base/`, as written (untyped).
fn base_documents() -> Vec<Value> {
    let mut documents = Vec::new();
    for file in yaml_files() {
        let text = std::fs::read_to_string(base_dir().join(&file)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let yaml = serde_yaml::Value::deserialize(document).unwrap();
            if !yaml.is_null() {
                documents.push(serde_json::to_value(yaml).unwrap());
            }
        }
    }
    documents
}

fn sorted(mut documents: Vec<Value>) -> Vec<Value> {
    documents.sort_by_key(|d| format!("{}/{}", d["kind"], d["metadata"]["name"]));
    documents
}

#[test]
fn kustomize_builds_the_base_and_the_overlay() {
    let Some(base) = kustomize(&manifests_dir()) else {
        eprintln!("SKIPPED: no kubectl here; cannot run kubectl kustomize");
        return;
    };
    assert_eq!(
        sorted(base.clone()),
        sorted(base_documents()),
        "kubectl kustomize manifests/ should give exactly the objects of manifests/base/"
    );
    let overlay = kustomize(&manifests_dir().join("overlays/iptables")).expect("kubectl");
    let mut expected = sorted(base);
    let config_map = expected
        .iter_mut()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    let mut fields = configuration_fields(config_map["data"]["config.conf"].as_str().unwrap());
    fields.insert("mode".into(), "iptables".into());
    let mut overlay = sorted(overlay);
    let built = overlay
        .iter_mut()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("the overlay's ConfigMap");
    assert_eq!(
        configuration_fields(built["data"]["config.conf"].as_str().unwrap()),
        fields,
        "the overlay's configuration: the base's with mode: iptables"
    );
    // Comments inside the text may differ; the rest must not.
    built["data"]["config.conf"] = Value::Null;
    config_map["data"]["config.conf"] = Value::Null;
    assert_eq!(
        overlay, expected,
        "the overlay changes only the configuration"
    );
}

/// The Dockerfile's stages: each `FROM` line and the instructions after it, with line
/// continuations joined.
fn dockerfile_stages() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                instructions.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for instruction in instructions {
        if instruction.to_ascii_uppercase().starts_with("FROM ") {
            stages.push((instruction, Vec::new()));
        } else {
            let (_, body) = stages
                .last_mut()
                .expect("an instruction before the first FROM");
            body.push(instruction);
        }
    }
    stages
}

/// The packages an instruction list installs with `apt-get install`.
fn apt_installs(instructions: &[String]) -> BTreeSet<String> {
    let mut packages = BTreeSet::new();
    for instruction in instructions {
        for command in instruction.split("&&") {
            let words: Vec<&str> = command.split_whitespace().collect();
            if let Some(at) = words.windows(2).position(|w| w == ["apt-get", "install"]) {
                packages.extend(
                    words[at + 2..]
                        .iter()
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                );
            }
        }
    }
    packages
}

fn dockerfile_entrypoint() -> String {
    let (_, runtime) = dockerfile_stages().pop().expect("a stage");
    let entrypoint = runtime
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("ENTRYPOINT "))
        .expect("the runtime stage has an ENTRYPOINT");
    let argv: Vec<String> =
        serde_json::from_str(entrypoint).expect("ENTRYPOINT in exec (JSON) form");
    let [program] = <[String; 1]>::try_from(argv).expect("ENTRYPOINT is just the binary");
    program
}

#[test]
fn the_dockerfile_has_two_bookworm_stages_and_no_nft() {
    let stages = dockerfile_stages();
    assert_eq!(stages.len(), 2, "exactly two FROM stages");
    assert!(stages[0].0.contains("rust:1-bookworm"), "{}", stages[0].0);
    assert!(
        stages[1].0.contains("debian:bookworm-slim"),
        "{}",
        stages[1].0
    );
    for (from, instructions) in &stages {
        let installed = apt_installs(instructions);
        assert!(
            !installed.contains("nftables") && !installed.contains("nft"),
            "{from}: installs nft ({installed:?}); kproxy speaks netlink itself"
        );
    }
    assert_eq!(dockerfile_entrypoint(), "/usr/local/bin/kproxy");
}

/// The Debian package holding `path`, by `dpkg -S`; `None` when dpkg knows no owner.
fn owning_package(path: &Path) -> Option<String> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(real) = path.canonicalize() {
        candidates.push(real);
    }
    // Merged /usr: dpkg may know the file under the other prefix.
    if let Ok(rest) = path.strip_prefix("/lib") {
        candidates.push(Path::new("/usr/lib").join(rest));
    }
    candidates.into_iter().find_map(|candidate| {
        let output = Command::new("dpkg")
            .arg("-S")
            .arg(&candidate)
            .output()
            .ok()?;
        let text = String::from_utf8(output.stdout).ok()?;
        let owner = text.lines().next()?.split(": ").next()?;
        // `libnftnl11:amd64` → `libnftnl11`.
        Some(owner.split(':').next()?.to_string()).filter(|_| output.status.success())
    })
}

/// Packages the runtime stage installs that the binary does not link, and why.
const NOT_LINKED: [(&str, &str); 2] = [
    (
        "ca-certificates",
        "API servers whose certificate a public CA signed",
    ),
    (
        "iptables",
        "iptables-restore for the iptables mode (being built)",
    ),
];

#[test]
fn the_runtime_image_installs_the_libraries_the_binary_links_and_no_others() {
    let binary = env!("CARGO_BIN_EXE_kproxy");
    let Ok(ldd) = Command::new("ldd").arg(binary).output() else {
        eprintln!("SKIPPED: no ldd here; cannot list the binary's shared libraries");
        return;
    };
    if Command::new("dpkg").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no dpkg here; cannot map shared libraries to Debian packages");
        return;
    }
    assert!(ldd.status.success(), "ldd {binary}: {ldd:?}");
    let ldd = String::from_utf8(ldd.stdout).expect("UTF-8 ldd output");
    // `libnftnl.so.11 => /lib/x86_64-linux-gnu/libnftnl.so.11 (0x…)`; the vDSO and the
    // dynamic loader have no `=> path`.
    let libraries: Vec<(&str, &Path)> = ldd
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.trim().split_once(" => ")?;
            Some((name, Path::new(rest.split_whitespace().next()?)))
        })
        .collect();
    assert!(
        libraries
            .iter()
            .any(|(name, _)| name.starts_with("libnftnl")),
        "ldd lists no libnftnl: {ldd}"
    );
    // In every Debian image, debian:bookworm-slim included.
    let base = ["libc6", "libgcc-s1"];
    let (_, runtime) = dockerfile_stages().pop().expect("a runtime stage");
    let installed = apt_installs(&runtime);
    let mut linked = BTreeSet::new();
    for (name, path) in libraries {
        let package = owning_package(path)
            .unwrap_or_else(|| panic!("dpkg knows no package for {name} ({})", path.display()));
        if base.contains(&package.as_str()) {
            continue;
        }
        assert!(
            installed.contains(&package),
            "the binary links {name} from package {package}, which the Dockerfile's runtime \
             stage does not install (it installs {installed:?})"
        );
        linked.insert(package);
    }
    let not_linked: BTreeSet<String> = NOT_LINKED.iter().map(|(p, _)| p.to_string()).collect();
    let extra: Vec<&String> = installed
        .iter()
        .filter(|package| !linked.contains(*package) && !not_linked.contains(*package))
        .collect();
    assert!(
        extra.is_empty(),
        "the runtime stage installs {extra:?}, which the binary does not link (nor is it in \
         NOT_LINKED: {NOT_LINKED:?})"
    );
    for (package, why) in NOT_LINKED {
        assert!(
            installed.contains(package),
            "the runtime stage should install {package} ({why})"
        );
    }
}
