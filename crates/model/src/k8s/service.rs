//! `v1` Service → [`ServiceSpec`].

use k8s_openapi::api::core::v1::Service;

use super::check::Check;
use super::{Skip, Translation, SERVICE_PROXY_NAME_LABEL};
use crate::{
    IpFamily, ObjectKind, OutsideAddresses, PortSpec, ServiceSpec, SessionAffinity, TrafficPolicy,
};

/// kube-proxy's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_TIMEOUT: i32 = 10_800;
/// The API server's upper bound for the affinity timeout (1 day).
const MAX_AFFINITY_TIMEOUT: i32 = 86_400;

/// Translates a Service, or says why it gets no rules.
pub fn service(svc: &Service) -> Translation<ServiceSpec> {
    let mut check = Check::new(ObjectKind::Service, &svc.metadata);
    if let Some(proxy) = svc
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SERVICE_PROXY_NAME_LABEL))
    {
        return check.finish(Err(Skip::OtherProxy(proxy.clone())));
    }
    let spec = svc.spec.clone().unwrap_or_default();
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return check.finish(Err(Skip::ExternalName));
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return check.finish(Err(Skip::Headless));
    }

    let cluster_ips = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| check.ip(format!("spec.clusterIPs[{i}]"), ip))
            .collect::<Vec<_>>(),
        _ => match spec.cluster_ip.as_deref() {
            Some(ip) if !ip.is_empty() => check.ip("spec.clusterIP", ip).into_iter().collect(),
            _ => return check.finish(Err(Skip::NoClusterIp)),
        },
    };
    for family in IpFamily::ALL {
        if cluster_ips
            .iter()
            .filter(|ip| IpFamily::of(**ip) == family)
            .count()
            > 1
        {
            check.fail(
                "spec.clusterIPs",
                format!("more than one {family:?} address"),
            );
        }
    }

    let has_node_ports = matches!(kind, "NodePort" | "LoadBalancer");
    let mut ports = Vec::new();
    for (i, port) in spec.ports.iter().flatten().enumerate() {
        let name = check.port_name(format!("spec.ports[{i}].name"), port.name.as_deref());
        let protocol = check.protocol(
            format!("spec.ports[{i}].protocol"),
            port.protocol.as_deref(),
        );
        let number = check.port(format!("spec.ports[{i}].port"), port.port);
        let node_port = if has_node_ports {
            check.optional_port(format!("spec.ports[{i}].nodePort"), port.node_port)
        } else {
            None
        };
        if let (Some(protocol), Some(port)) = (protocol, number) {
            ports.push(PortSpec {
                name,
                protocol,
                port,
                node_port,
            });
        }
    }

    let external_ips = spec
        .external_ips
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, ip)| check.ip(format!("spec.externalIPs[{i}]"), ip))
        .collect();

    let is_load_balancer = kind == "LoadBalancer";
    let mut load_balancer_ips = Vec::new();
    let mut source_ranges = Vec::new();
    if is_load_balancer {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for (i, ingress) in ingress.into_iter().flatten().enumerate() {
            // `ipMode: Proxy` means the load balancer proxies to NodePorts itself: traffic
            // arrives with a node destination, so the ingress IP must not be captured here.
            if ingress.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(ip) = ingress.ip.as_deref() {
                load_balancer_ips
                    .extend(check.ip(format!("status.loadBalancer.ingress[{i}].ip"), ip));
            }
        }
        for (i, range) in spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .enumerate()
        {
            source_ranges.extend(check.cidr(format!("spec.loadBalancerSourceRanges[{i}]"), range));
        }
    }

    let internal_policy = policy(
        &mut check,
        "spec.internalTrafficPolicy",
        spec.internal_traffic_policy.as_deref(),
    );
    let external_policy = policy(
        &mut check,
        "spec.externalTrafficPolicy",
        spec.external_traffic_policy.as_deref(),
    );

    let affinity = match spec.session_affinity.as_deref().unwrap_or("None") {
        "None" => SessionAffinity::None,
        "ClientIP" => {
            let timeout = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
            match u32::try_from(timeout) {
                Ok(timeout_seconds) if (1..=MAX_AFFINITY_TIMEOUT).contains(&timeout) => {
                    SessionAffinity::ClientIp { timeout_seconds }
                }
                _ => {
                    check.fail(
                        "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                        format!("{timeout} is out of range 1..={MAX_AFFINITY_TIMEOUT}"),
                    );
                    SessionAffinity::None
                }
            }
        }
        other => {
            check.fail(
                "spec.sessionAffinity",
                format!("unknown value {other:?} (None or ClientIP)"),
            );
            SessionAffinity::None
        }
    };

    let health_check_node_port = if is_load_balancer && external_policy == TrafficPolicy::Local {
        check.optional_port("spec.healthCheckNodePort", spec.health_check_node_port)
    } else {
        None
    };

    let object = check.object().clone();
    // Exactly sized: a cache keeps every Service, and a filtered collect or a pushed Vec of
    // one makes room for four (~10 MB at 50,000 Services).
    check.finish(Ok(ServiceSpec {
        namespace: crate::interned::shared(&object.namespace),
        name: object.name.into(),
        cluster_ips: exact(cluster_ips),
        ports: exact(ports),
        outside: OutsideAddresses {
            external_ips: exact(external_ips),
            load_balancer_ips: exact(load_balancer_ips),
            source_ranges: exact(source_ranges),
        }
        .boxed(),
        internal_policy,
        external_policy,
        affinity,
        health_check_node_port,
    }))
}

fn exact<T>(mut values: Vec<T>) -> Vec<T> {
    values.shrink_to_fit();
    values
}

fn policy(check: &mut Check, field: &str, value: Option<&str>) -> TrafficPolicy {
    match value.unwrap_or("Cluster") {
        "Cluster" => TrafficPolicy::Cluster,
        "Local" => TrafficPolicy::Local,
        other => {
            check.fail(field, format!("unknown value {other:?} (Cluster or Local)"));
            TrafficPolicy::Cluster
        }
    }
}
