//! Chain names and comments of iptables mode, compatible with kube-proxy's.
//!
//! iptables limits chain names to 28 characters, so per-Service-port chains are named by a
//! hash, exactly as kube-proxy names them: `KUBE-SVC-` + the first 16 characters of the base32
//! encoding of `sha256("<namespace>/<service>[:<port name>]<protocol>")`, and `KUBE-SEP-` with
//! the endpoint (`ip:port`, `[ip6]:port`) appended to the hashed string. The same Service port
//! therefore gets the same chain names from kproxy and kube-proxy, which keeps
//! `iptables-save | grep` habits and dashboards working, and lets one take over from the other.

use std::fmt::Write as _;
use std::net::SocketAddr;

use kproxy_model::ServicePortName;
use sha2::{Digest, Sha256};

/// `nat` and `filter`: the entry chain for ClusterIPs, externalIPs and load-balancer IPs.
pub const SERVICES: &str = "KUBE-SERVICES";
/// `nat`: NodePort dispatch; `filter`: NodePorts to reject or drop.
pub const NODEPORTS: &str = "KUBE-NODEPORTS";
/// `filter`: external destinations without (local) endpoints.
pub const EXTERNAL_SERVICES: &str = "KUBE-EXTERNAL-SERVICES";
/// `nat`: masquerade marked packets.
pub const POSTROUTING: &str = "KUBE-POSTROUTING";
/// `nat`: sets the masquerade mark.
pub const MARK_MASQ: &str = "KUBE-MARK-MASQ";
/// `filter`: accepts forwarded Service traffic on hosts whose FORWARD policy drops.
pub const FORWARD: &str = "KUBE-FORWARD";
/// `mangle`: sends load-balancer traffic with `loadBalancerSourceRanges` to its `KUBE-FW-`.
pub const PROXY_FIREWALL: &str = "KUBE-PROXY-FIREWALL";

/// Every top-level chain, as cleanup and leftover detection need them.
pub const TOP_LEVEL: [&str; 7] = [
    SERVICES,
    NODEPORTS,
    EXTERNAL_SERVICES,
    POSTROUTING,
    MARK_MASQ,
    FORWARD,
    PROXY_FIREWALL,
];

/// Prefixes of per-Service-port chains.
pub const SERVICE_PREFIXES: [&str; 5] = [
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-EXT-",
    "KUBE-FW-",
    "KUBE-SEP-",
];

/// Longest comment the kernel's comment match stores (`XT_MAX_COMMENT_LEN` − 1).
pub const MAX_COMMENT_LEN: usize = 255;

/// True for a chain name iptables mode creates (top-level or per Service port).
pub fn is_kproxy_chain(name: &str) -> bool {
    TOP_LEVEL.contains(&name) || SERVICE_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `KUBE-SVC-…`: DNAT to the cluster-wide endpoints.
pub fn cluster_chain(port: &ServicePortName) -> String {
    hashed("KUBE-SVC-", port_text(port).as_bytes())
}

/// `KUBE-SVL-…`: DNAT to the endpoints on this node (Local traffic policies).
pub fn local_chain(port: &ServicePortName) -> String {
    hashed("KUBE-SVL-", port_text(port).as_bytes())
}

/// `KUBE-EXT-…`: NodePort, externalIP and load-balancer traffic (externalTrafficPolicy).
pub fn external_chain(port: &ServicePortName) -> String {
    hashed("KUBE-EXT-", port_text(port).as_bytes())
}

/// `KUBE-FW-…` (mangle): loadBalancerSourceRanges of a Service port's load-balancer IPs.
pub fn firewall_chain(port: &ServicePortName) -> String {
    hashed("KUBE-FW-", port_text(port).as_bytes())
}

/// `KUBE-SEP-…`: one endpoint of a Service port (its DNAT, hairpin mark and affinity list).
pub fn endpoint_chain(port: &ServicePortName, endpoint: SocketAddr) -> String {
    EndpointNamer::new(port).name(endpoint)
}

/// Names the `KUBE-SEP-` chains of one Service port. The port's part of the hashed text is
/// written once and each endpoint appended to it: formatting that text was a third of a
/// compile (10,000 endpoints at 1,000 Services).
pub struct EndpointNamer {
    /// `<namespace>/<service>[:<port name>]<protocol>`, then the last endpoint named.
    text: String,
    /// Where the endpoint starts in `text`.
    port_len: usize,
}

impl EndpointNamer {
    /// A namer for `port`'s endpoints.
    pub fn new(port: &ServicePortName) -> EndpointNamer {
        let text = port_text(port);
        EndpointNamer {
            port_len: text.len(),
            text,
        }
    }

    /// The `KUBE-SEP-` chain of `endpoint`.
    pub fn name(&mut self, endpoint: SocketAddr) -> String {
        self.text.truncate(self.port_len);
        let _ = write!(self.text, "{endpoint}");
        hashed("KUBE-SEP-", self.text.as_bytes())
    }
}

fn port_text(port: &ServicePortName) -> String {
    format!("{port}{}", port.protocol)
}

/// `prefix` and the first 16 characters of base32(sha256(bytes)), RFC 4648 alphabet, as Go's
/// `base32.StdEncoding` writes it: 16 characters are exactly the first 10 bytes of the hash.
fn hashed(prefix: &str, bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(prefix.len() + 16);
    out.push_str(prefix);
    for group in digest[..10].chunks(5) {
        let bits = group.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(char::from(ALPHABET[((bits >> (i * 5)) & 31) as usize]));
        }
    }
    out
}

/// Makes any text a comment `iptables-restore` reads back unchanged: no quotes, backslashes or
/// control characters, at most [`MAX_COMMENT_LEN`] bytes (cut with `...`).
pub fn comment(text: &str) -> String {
    let clean = |c: char| c != '"' && c != '\\' && !c.is_control();
    let text: String = text
        .chars()
        .map(|c| if clean(c) { c } else { '_' })
        .collect();
    if text.len() <= MAX_COMMENT_LEN {
        return text;
    }
    let mut cut = MAX_COMMENT_LEN - 3;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_model::Protocol;

    fn name(ns: &str, svc: &str, port: &str) -> ServicePortName {
        ServicePortName {
            namespace: ns.into(),
            service: svc.into(),
            port: port.into(),
            protocol: Protocol::Tcp,
        }
    }

    /// The names kube-proxy's own tests expect for `ns1/svc1:p80` and endpoint 10.180.0.1:80
    /// (pkg/proxy/iptables/proxier_test.go).
    #[test]
    fn names_equal_kube_proxys() {
        let port = name("ns1", "svc1", "p80");
        assert_eq!(cluster_chain(&port), "KUBE-SVC-XPGD46QRK7WJZT7O");
        assert_eq!(
            endpoint_chain(&port, "10.180.0.1:80".parse().unwrap()),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn chain_kinds_share_the_hash_and_fit_the_kernel_limit() {
        let port = name(&"n".repeat(63), &"s".repeat(63), "abcdefghijklmno");
        let hash = &cluster_chain(&port)["KUBE-SVC-".len()..];
        for chain in [
            cluster_chain(&port),
            local_chain(&port),
            external_chain(&port),
            firewall_chain(&port),
            endpoint_chain(&port, "[ffff::1]:65535".parse().unwrap()),
        ] {
            assert!(chain.len() <= 28, "{chain}");
            assert!(is_kproxy_chain(&chain), "{chain}");
        }
        assert!(local_chain(&port).ends_with(hash));
        assert_ne!(cluster_chain(&port), cluster_chain(&name("a", "b", "")));
        assert!(!is_kproxy_chain("KUBE-FIREWALL") && !is_kproxy_chain("INPUT"));
    }

    #[test]
    fn comments_are_bounded_and_unquoted() {
        assert_eq!(comment("a\"b\\c\n"), "a_b_c_");
        let long = comment(&"é".repeat(200));
        assert!(long.len() <= MAX_COMMENT_LEN && long.ends_with("..."));
    }
}
