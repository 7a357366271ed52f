//! JSON input: `kubectl get -o json` output is YAML too.

use super::{at, load, names};

#[test]
fn single_object() {
    let text = r#"{
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {
        "clusterIP": "10.96.0.10",
        "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53}]
    }
}
"#;
    let (manifests, errors) = load("svc.json", text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&manifests.services), ["default/web"]);
    assert_eq!(manifests.services[0].location, at("svc.json", 1, None));
    let spec = manifests.services[0].object.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    assert_eq!(ports[0].port, 53);
    assert_eq!(ports[0].protocol.as_deref(), Some("UDP"));
}

#[test]
fn list() {
    let text = r#"{
    "apiVersion": "v1",
    "kind": "List",
    "metadata": {"resourceVersion": ""},
    "items": [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"topology.kubernetes.io/zone": "z1"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.1.10"}]}
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "skipped", "namespace": "default"}
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "web-1", "namespace": "default"},
            "addressType": "IPv6",
            "endpoints": [{"addresses": ["fd00::1"], "conditions": {"ready": true}}]
        }
    ]
}"#;
    let (manifests, errors) = load("all.json", text);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(names(&manifests.nodes), ["n1"]);
    assert_eq!(names(&manifests.endpoint_slices), ["default/web-1"]);
    assert_eq!(manifests.nodes[0].location, at("all.json", 1, Some(0)));
    assert_eq!(
        manifests.endpoint_slices[0].location,
        at("all.json", 1, Some(2))
    );
    assert_eq!(manifests.endpoint_slices[0].object.address_type, "IPv6");
}
