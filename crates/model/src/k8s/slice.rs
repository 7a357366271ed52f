//! `discovery.k8s.io/v1` EndpointSlice → [`SliceSpec`].

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::check::Check;
use super::{Skip, Translation, HEADLESS_LABEL, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL};
use crate::{
    EndpointConditions, IpFamily, ObjectKind, SliceEndpoint, SlicePort, SliceSpec, TopologyHints,
};

/// Translates an EndpointSlice, or says why it is ignored.
pub fn endpoint_slice(slice: &EndpointSlice) -> Translation<SliceSpec> {
    let mut check = Check::new(ObjectKind::EndpointSlice, &slice.metadata);
    let labels = slice.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key));
    if let Some(proxy) = label(SERVICE_PROXY_NAME_LABEL) {
        return check.finish(Err(Skip::OtherProxy(proxy.clone())));
    }
    if label(HEADLESS_LABEL).is_some() {
        return check.finish(Err(Skip::Headless));
    }
    let Some(service) = label(SERVICE_NAME_LABEL).cloned() else {
        return check.finish(Err(Skip::NoServiceName));
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return check.finish(Err(Skip::Fqdn)),
        other => {
            check.fail(
                "addressType",
                format!("unknown value {other:?} (IPv4, IPv6 or FQDN)"),
            );
            return check.finish(Err(Skip::Fqdn));
        }
    };

    // Sized once: a cache keeps every slice, and a pushed Vec of ten would hold sixteen.
    let mut ports = Vec::with_capacity(slice.ports.as_ref().map_or(0, Vec::len));
    for (i, port) in slice.ports.iter().flatten().enumerate() {
        let name = check.port_name(format!("ports[{i}].name"), port.name.as_deref());
        let protocol = check.protocol(format!("ports[{i}].protocol"), port.protocol.as_deref());
        // A port without a number means "all ports", which Services never use.
        let Some(number) = port.port else { continue };
        let number = check.port(format!("ports[{i}].port"), number);
        if let (Some(protocol), Some(port)) = (protocol, number) {
            ports.push(SlicePort {
                name,
                protocol,
                port,
            });
        }
    }

    let mut endpoints = Vec::with_capacity(slice.endpoints.len());
    for (i, endpoint) in slice.endpoints.iter().enumerate() {
        let field = format!("endpoints[{i}].addresses[0]");
        let Some(text) = endpoint.addresses.first() else {
            check.fail(format!("endpoints[{i}].addresses"), "empty");
            continue;
        };
        let Some(addr) = check.ip(&field, text) else {
            continue;
        };
        if IpFamily::of(addr) != family {
            check.fail(
                field,
                format!("{text:?} does not match addressType {}", slice.address_type),
            );
            continue;
        }
        let conditions = endpoint.conditions.as_ref();
        let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
        let hints = endpoint.hints.as_ref();
        endpoints.push(SliceEndpoint::new(
            addr,
            EndpointConditions {
                ready,
                serving: conditions.and_then(|c| c.serving).unwrap_or(ready),
                terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
            },
            endpoint.node_name.as_deref(),
            TopologyHints {
                zones: hints
                    .and_then(|h| h.for_zones.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|z| z.name.clone())
                    .collect(),
                nodes: hints
                    .and_then(|h| h.for_nodes.as_ref())
                    .into_iter()
                    .flatten()
                    .map(|n| n.name.clone())
                    .collect(),
            },
        ));
    }

    let object = check.object().clone();
    check.finish(Ok(SliceSpec {
        namespace: crate::interned::shared(&object.namespace),
        name: object.name.into(),
        service: service.into(),
        family,
        ports,
        endpoints,
    }))
}
