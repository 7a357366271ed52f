//! Translation tests: skip rules, API defaults, and errors naming object and field.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::*;
use crate::{SessionAffinity, TrafficPolicy};

fn svc(json: serde_json::Value) -> Service {
    serde_json::from_value(json).expect("test Service")
}

#[test]
fn skipped_services_say_why() {
    let headless =
        svc(serde_json::json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}));
    assert_eq!(service(&headless), Ok(Err(Skip::Headless)));
    let external =
        svc(serde_json::json!({"metadata": {"name": "e"}, "spec": {"type": "ExternalName"}}));
    assert_eq!(service(&external), Ok(Err(Skip::ExternalName)));
    let other = svc(
        serde_json::json!({"metadata": {"name": "o", "labels": {SERVICE_PROXY_NAME_LABEL: "x"}},
        "spec": {"clusterIP": "10.96.0.1"}}),
    );
    assert_eq!(service(&other), Ok(Err(Skip::OtherProxy("x".into()))));
    let unallocated =
        svc(serde_json::json!({"metadata": {"name": "u"}, "spec": {"ports": [{"port": 80}]}}));
    assert_eq!(service(&unallocated), Ok(Err(Skip::NoClusterIp)));
}

#[test]
fn defaults_follow_the_api() {
    let s = svc(serde_json::json!({"metadata": {"name": "web"}, "spec": {
        "clusterIP": "10.96.0.1", "ports": [{"port": 80}], "sessionAffinity": "ClientIP"}}));
    let spec = service(&s).unwrap().unwrap();
    assert_eq!(&*spec.namespace, "default");
    assert_eq!(spec.ports[0].protocol, crate::Protocol::Tcp);
    assert_eq!(
        spec.affinity,
        SessionAffinity::ClientIp {
            timeout_seconds: 10_800
        }
    );
    assert_eq!(spec.internal_policy, TrafficPolicy::Cluster);
}

#[test]
fn every_bad_field_is_reported_with_its_path() {
    let s = svc(
        serde_json::json!({"metadata": {"name": "web", "namespace": "prod"}, "spec": {
        "type": "LoadBalancer", "clusterIPs": ["10.96.0.1", "10.96.0.2"],
        "ports": [{"port": 80, "protocol": "ICMP"}, {"port": 0, "nodePort": 70000}],
        "loadBalancerSourceRanges": ["nope"], "externalTrafficPolicy": "Sometimes"}}),
    );
    let errors: Vec<String> = service(&s)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "Service prod/web: spec.clusterIPs: more than one V4 address",
            "Service prod/web: spec.ports[0].protocol: unsupported protocol \"ICMP\" (TCP, UDP or SCTP)",
            "Service prod/web: spec.ports[1].port: 0 is out of range 1..=65535",
            "Service prod/web: spec.ports[1].nodePort: 70000 is out of range 1..=65535",
            "Service prod/web: spec.loadBalancerSourceRanges[0]: \"nope\" is not a CIDR",
            "Service prod/web: spec.externalTrafficPolicy: unknown value \"Sometimes\" (Cluster or Local)",
        ]
    );
}

#[test]
fn slice_conditions_take_api_defaults_and_addresses_must_match_the_family() {
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s", "labels": {SERVICE_NAME_LABEL: "web"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.1"]},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
        ],
        "ports": [{"port": 8080}]
    }))
    .expect("test slice");
    let spec = endpoint_slice(&slice).unwrap().unwrap();
    let c0 = spec.endpoints[0].conditions;
    assert!(c0.ready && c0.serving && !c0.terminating);
    let c1 = spec.endpoints[1].conditions;
    assert!(
        !c1.ready && !c1.serving && c1.terminating,
        "serving defaults to ready"
    );

    let mut mixed = slice.clone();
    mixed.endpoints[0].addresses = vec!["fd00::1".into()];
    let errors = endpoint_slice(&mixed).unwrap_err();
    assert_eq!(errors[0].field, "endpoints[0].addresses[0]");
}
