//! `v1` Node → [`NodeInfo`].

use k8s_openapi::api::core::v1::Node;

use super::check::Check;
use super::ZONE_LABEL;
use crate::{IpFamily, NodeInfo, ObjectKind};

/// Translates a Node: its zone and the first InternalIP of each family.
pub fn node(node: &Node) -> Result<NodeInfo, Vec<crate::FieldError>> {
    let mut check = Check::new(ObjectKind::Node, &node.metadata);
    let zone = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(ZONE_LABEL))
        .cloned();
    let mut primary_ips = Vec::new();
    let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
    for (i, address) in addresses.into_iter().flatten().enumerate() {
        if address.type_ != "InternalIP" {
            continue;
        }
        let Some(ip) = check.ip(format!("status.addresses[{i}].address"), &address.address) else {
            continue;
        };
        if !primary_ips
            .iter()
            .any(|p| IpFamily::of(*p) == IpFamily::of(ip))
        {
            primary_ips.push(ip);
        }
    }
    primary_ips.sort();
    let name = check.object().name.clone();
    check.finish(NodeInfo {
        name,
        zone,
        primary_ips,
        seen: true,
    })
}
