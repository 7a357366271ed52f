//! The node kproxy runs on.

use std::net::IpAddr;

use serde::Serialize;

/// What kproxy needs to know about its own node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NodeInfo {
    /// The node name: `--hostname-override`, or the host name. Endpoints whose `nodeName` equals
    /// it are local.
    pub name: String,
    /// The `topology.kubernetes.io/zone` label, used for topology hints.
    pub zone: Option<String>,
    /// The first `InternalIP` of each family from `status.addresses`: where NodePorts listen by
    /// default. Empty when no Node object was seen.
    pub primary_ips: Vec<IpAddr>,
    /// A Node object for this node was seen. Without it, NodePorts listen on every local address.
    pub seen: bool,
}

impl NodeInfo {
    /// A node known only by name (no Node object seen).
    pub fn named(name: impl Into<String>) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ..NodeInfo::default()
        }
    }
}
