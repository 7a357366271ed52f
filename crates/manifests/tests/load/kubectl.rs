//! The output of `kubectl get svc,endpointslices,nodes -A -o yaml`.

use super::{at, load, names};

const KUBECTL_OUTPUT: &str = include_str!("../fixtures/kubectl-get-all.yaml");
const FILE: &str = "cluster.yaml";

#[test]
fn reads_every_item_with_its_location() {
    let (manifests, errors) = load(FILE, KUBECTL_OUTPUT);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        names(&manifests.services),
        ["default/web", "default/kubernetes"]
    );
    assert_eq!(names(&manifests.endpoint_slices), ["default/web-8xk2p"]);
    assert_eq!(names(&manifests.nodes), ["worker-a"]);

    let locations = [
        &manifests.services[0].location,
        &manifests.services[1].location,
        &manifests.endpoint_slices[0].location,
        &manifests.nodes[0].location,
    ];
    assert_eq!(
        locations,
        [
            &at(FILE, 1, Some(0)),
            &at(FILE, 1, Some(1)),
            &at(FILE, 1, Some(2)),
            &at(FILE, 1, Some(3)),
        ]
    );
    assert_eq!(
        manifests.endpoint_slices[0].location.to_string(),
        "cluster.yaml: document 1, items[2]"
    );
}

#[test]
fn service_fields() {
    let (manifests, _) = load(FILE, KUBECTL_OUTPUT);
    let web = &manifests.services[0].object;
    let spec = web.spec.as_ref().expect("web has a spec");
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.112.40"));
    assert_eq!(
        spec.cluster_ips.as_deref(),
        Some(&["10.96.112.40".to_owned(), "fd00:10:96::7a2c".to_owned()][..])
    );
    assert_eq!(
        spec.ip_families.as_deref(),
        Some(&["IPv4".to_owned(), "IPv6".to_owned()][..])
    );
    assert_eq!(spec.ip_family_policy.as_deref(), Some("PreferDualStack"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    let ports = spec.ports.as_deref().unwrap_or_default();
    assert_eq!(ports.len(), 2);
    assert_eq!(ports[0].name.as_deref(), Some("http"));
    assert_eq!(ports[0].port, 80);
    assert_eq!(
        ports[0].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into()))
    );
    assert_eq!(
        ports[1].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(9090))
    );
    let managed = web.metadata.managed_fields.as_deref().unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(
        managed[0].manager.as_deref(),
        Some("kubectl-client-side-apply")
    );
    assert!(web.status.is_some());
}

#[test]
fn endpoint_slice_fields() {
    let (manifests, _) = load(FILE, KUBECTL_OUTPUT);
    let slice = &manifests.endpoint_slices[0].object;
    assert_eq!(slice.address_type, "IPv4");
    let labels = slice.metadata.labels.as_ref().expect("slice has labels");
    assert_eq!(
        labels.get("kubernetes.io/service-name").map(String::as_str),
        Some("web")
    );
    let owners = slice
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Service", "web")
    );
    assert_eq!(owners[0].controller, Some(true));

    assert_eq!(slice.endpoints.len(), 2);
    let ready = &slice.endpoints[0];
    assert_eq!(ready.addresses, ["10.244.1.17"]);
    assert_eq!(ready.node_name.as_deref(), Some("worker-a"));
    assert_eq!(ready.zone.as_deref(), Some("eu-west-1a"));
    let conditions = ready.conditions.as_ref().expect("conditions");
    assert_eq!(
        (conditions.ready, conditions.serving, conditions.terminating),
        (Some(true), Some(true), Some(false))
    );
    let zones = ready
        .hints
        .as_ref()
        .and_then(|hints| hints.for_zones.as_deref())
        .unwrap_or_default();
    assert_eq!(zones.len(), 1);
    assert_eq!(zones[0].name, "eu-west-1a");

    let terminating = slice.endpoints[1].conditions.as_ref().expect("conditions");
    assert_eq!(
        (
            terminating.ready,
            terminating.serving,
            terminating.terminating
        ),
        (Some(false), Some(true), Some(true))
    );

    let ports = slice.ports.as_deref().unwrap_or_default();
    let ports: Vec<_> = ports
        .iter()
        .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref()))
        .collect();
    assert_eq!(
        ports,
        [
            (Some("http"), Some(8080), Some("TCP")),
            (Some("metrics"), Some(9090), Some("TCP"))
        ]
    );
}

#[test]
fn node_fields() {
    let (manifests, _) = load(FILE, KUBECTL_OUTPUT);
    let node = &manifests.nodes[0].object;
    let labels = node.metadata.labels.as_ref().expect("node has labels");
    assert_eq!(
        labels
            .get("topology.kubernetes.io/zone")
            .map(String::as_str),
        Some("eu-west-1a")
    );
    let status = node.status.as_ref().expect("node has status");
    let addresses: Vec<_> = status
        .addresses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|a| (a.type_.as_str(), a.address.as_str()))
        .collect();
    assert_eq!(
        addresses,
        [("InternalIP", "172.18.0.3"), ("Hostname", "worker-a")]
    );
    assert_eq!(status.conditions.as_ref().map(Vec::len), Some(3));
    assert_eq!(status.images.as_ref().map(Vec::len), Some(2));
    let capacity = status.capacity.as_ref().expect("capacity");
    assert_eq!(capacity.get("pods").map(|q| q.0.as_str()), Some("110"));
    let allocatable = status.allocatable.as_ref().expect("allocatable");
    assert_eq!(
        allocatable.get("ephemeral-storage").map(|q| q.0.as_str()),
        Some("95491281146")
    );
}
