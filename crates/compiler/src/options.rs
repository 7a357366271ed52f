//! Node-wide settings that shape the rules (kube-proxy's flags of the same names).

use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_model::{IpFamily, NodeInfo};
use serde::Serialize;

/// Compiler settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Options {
    /// `--cluster-cidr`: pod networks. Traffic to a ClusterIP from outside them is masqueraded,
    /// and pods are recognised for the externalTrafficPolicy Local short-circuit.
    pub cluster_cidrs: Vec<IpNet>,
    /// `--nodeport-addresses`.
    pub nodeport_addresses: NodePortAddresses,
    /// `--masquerade-all`: masquerade all traffic to ClusterIPs.
    pub masquerade_all: bool,
}

/// Which local addresses accept NodePort traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodePortAddresses {
    /// The node's primary IPs (its InternalIPs); every local address when no Node object is seen.
    #[default]
    Primary,
    /// Local addresses inside these networks. A family without a network here uses every
    /// local address, as kube-proxy does.
    Cidrs(Vec<IpNet>),
}

/// How NodePort destinations are recognised in one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodePortMatch {
    /// Exactly these addresses (the node's primary IPs).
    Addresses(Vec<IpAddr>),
    /// Local addresses inside these networks.
    LocalIn(Vec<IpNet>),
    /// Every local address.
    AnyLocal,
}

impl Options {
    /// The cluster CIDRs of one family.
    pub(crate) fn cluster_cidrs(&self, family: IpFamily) -> Vec<IpNet> {
        self.cluster_cidrs
            .iter()
            .filter(|n| IpFamily::of_net(n) == family)
            .copied()
            .collect()
    }

    pub(crate) fn nodeport_match(&self, family: IpFamily, node: &NodeInfo) -> NodePortMatch {
        match &self.nodeport_addresses {
            NodePortAddresses::Primary => {
                let ips: Vec<IpAddr> = node
                    .primary_ips
                    .iter()
                    .filter(|ip| IpFamily::of(**ip) == family && !ip.is_loopback())
                    .copied()
                    .collect();
                if node.seen {
                    NodePortMatch::Addresses(ips)
                } else {
                    NodePortMatch::AnyLocal
                }
            }
            NodePortAddresses::Cidrs(cidrs) => {
                let of_family: Vec<IpNet> = cidrs
                    .iter()
                    .filter(|n| IpFamily::of_net(n) == family)
                    .copied()
                    .collect();
                if of_family.is_empty() || of_family.iter().any(|n| n.prefix_len() == 0) {
                    NodePortMatch::AnyLocal
                } else {
                    NodePortMatch::LocalIn(of_family)
                }
            }
        }
    }
}
