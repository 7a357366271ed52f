//! Every chain and set name, and every comment: deterministic, readable, within kernel limits.
//!
//! Names are derived only from namespace, Service, protocol and port, so they are stable across
//! runs and nodes, and a reader can find a Service's chains with `nft list table ip kproxy | grep`.
//! nftables rejects names over 255 bytes and comments over 128 bytes; one such object would make
//! the whole transaction fail (this took down every Service in kube-proxy once). Valid Kubernetes
//! names always fit, but names are still shortened with a hash suffix when they would not, so no
//! input can produce an unloadable ruleset.

use std::fmt::Write as _;
use std::net::SocketAddr;

use kproxy_model::ServicePortName;

/// Longest name nftables accepts for tables, chains and sets (`NFT_NAME_MAXLEN` - 1).
pub const MAX_NAME_LEN: usize = 255;
/// Longest comment nft accepts.
pub const MAX_COMMENT_LEN: usize = 128;
/// Longest Service-port id. Leaves room for a prefix and an endpoint suffix (`__`, an IPv6
/// address, `/` and a port), as per-endpoint affinity sets once needed; kept so that names stay
/// stable across versions (a restarted kproxy adopts its predecessor's chains by name).
const MAX_ID_LEN: usize = MAX_NAME_LEN - "affinity-".len() - "__".len() - 46;

/// The per-Service-port part of every name: `namespace/service/protocol/port`, where port is the
/// port name, or the number for an unnamed port.
pub fn port_id(name: &ServicePortName, port: u16) -> String {
    let mut id = String::with_capacity(name.namespace.len() + name.service.len() + 24);
    let _ = write!(id, "{}/{}/{}/", name.namespace, name.service, name.protocol);
    if name.port.is_empty() {
        let _ = write!(id, "{port}");
    } else {
        id.push_str(&name.port);
    }
    bounded(id, MAX_ID_LEN)
}

/// The chain holding DNAT to the cluster-wide endpoint set.
pub fn service_chain(id: &str) -> String {
    format!("service-{id}")
}

/// The chain holding DNAT to the node-local endpoint set.
pub fn local_chain(id: &str) -> String {
    format!("local-{id}")
}

/// The chain for traffic to a NodePort, externalIP or load-balancer IP.
pub fn external_chain(id: &str) -> String {
    format!("external-{id}")
}

/// The name of the one set holding every client's session affinity, in each table.
pub const AFFINITY_SET: &str = "affinity";

/// The 64 bits that stand for one endpoint of one Service port in the affinity set's keys
/// (`client . high . low`): the first eight bytes of `sha256("<port id>__<endpoint>")`.
///
/// A key must tell apart every (Service port, endpoint) pair of the table, and stay the same
/// across syncs and restarts, or clients would lose their affinity. Two pairs sharing 64 bits
/// (about one chance in 10^8 at a million endpoints) would only send a client back to an
/// endpoint of the right Service port that it had not picked.
pub fn affinity_key(id: &str, endpoint: SocketAddr) -> [u32; 2] {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{id}__{endpoint}").as_bytes());
    let word =
        |i: usize| u32::from_be_bytes([digest[i], digest[i + 1], digest[i + 2], digest[i + 3]]);
    [word(0), word(4)]
}

/// One shard of the endpoint maps (see [`crate::endpoint_maps`]): `endpoints-` and three hex
/// digits.
pub fn endpoint_map(shard: u32) -> String {
    format!("endpoints-{shard:03x}")
}

/// The comment naming a Service port: `namespace/service:port`.
pub fn port_comment(name: &ServicePortName) -> String {
    comment(&name.to_string())
}

/// Makes any text a valid comment: no quotes, at most [`MAX_COMMENT_LEN`] bytes.
pub fn comment(text: &str) -> String {
    let is_clean = |c: char| c != '"' && !c.is_control();
    if text.len() <= MAX_COMMENT_LEN && text.chars().all(is_clean) {
        return text.to_string();
    }
    let clean: String = text
        .chars()
        .map(|c| if c == '"' || c.is_control() { '_' } else { c })
        .collect();
    if clean.len() <= MAX_COMMENT_LEN {
        return clean;
    }
    let mut cut = MAX_COMMENT_LEN - 3;
    while !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &clean[..cut])
}

/// Keeps characters nft accepts in identifiers; replaces others; and, if anything was replaced
/// or the result is longer than `max`, shortens it and appends a hash of the original, so two
/// different inputs still get different names.
fn bounded(raw: String, max: usize) -> String {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/');
    if raw.len() <= max && raw.chars().all(valid) {
        return raw;
    }
    let clean: String = raw
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .collect();
    let hash = fnv1a(raw.as_bytes());
    let suffix = format!("-{hash:016x}");
    let keep = max.min(clean.len() + suffix.len()) - suffix.len();
    format!("{}{suffix}", &clean[..keep.min(clean.len())])
}

/// FNV-1a, 64 bit: tiny, stable across releases and platforms (unlike `std`'s hasher).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
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

    #[test]
    fn ids_read_as_the_service_port() {
        assert_eq!(
            port_id(&name("default", "web", "http"), 80),
            "default/web/tcp/http"
        );
        assert_eq!(
            port_id(&name("default", "web", ""), 8080),
            "default/web/tcp/8080"
        );
    }

    #[test]
    fn longest_valid_kubernetes_names_fit_every_limit() {
        let ns = "n".repeat(63);
        let svc = "s".repeat(63);
        let n = name(&ns, &svc, "abcdefghijklmno");
        let id = port_id(&n, 65535);
        assert!(!id.contains('-'), "valid names are used unchanged: {id}");
        for name in [service_chain(&id), local_chain(&id), external_chain(&id)] {
            assert!(name.len() <= MAX_NAME_LEN, "{} bytes: {name}", name.len());
        }
        let comment = port_comment(&n);
        assert_eq!(comment.len(), MAX_COMMENT_LEN);
        assert!(comment.ends_with("..."));
    }

    #[test]
    fn oversized_or_odd_names_are_bounded_and_stay_distinct() {
        let a = port_id(&name(&"x".repeat(300), "a", "p"), 1);
        let b = port_id(&name(&"x".repeat(300), "b", "p"), 1);
        assert!(a.len() <= MAX_ID_LEN && b.len() <= MAX_ID_LEN);
        assert_ne!(a, b);
        let odd = port_id(&name("ns", "we b\"x", "p"), 1);
        assert!(odd.starts_with("ns/we_b_x/tcp/p-"), "{odd}");
        assert_eq!(comment("a\"b"), "a_b");
        let multibyte = comment(&"é".repeat(100));
        assert!(multibyte.len() <= MAX_COMMENT_LEN);
    }

    #[test]
    fn affinity_keys_tell_ports_and_endpoints_apart() {
        let ep: SocketAddr = "[fd00::1]:80".parse().unwrap();
        let other: SocketAddr = "[fd00::2]:80".parse().unwrap();
        let key = affinity_key("ns/s/tcp/p", ep);
        assert_eq!(key, affinity_key("ns/s/tcp/p", ep), "stable");
        assert_ne!(key, affinity_key("ns/s/tcp/q", ep), "another port");
        assert_ne!(key, affinity_key("ns/s/tcp/p", other), "another endpoint");
        // Pinned (sha256 of "ns/s/tcp/p__10.0.0.1:80" by Python's hashlib): a changed key
        // would cost every client its affinity on upgrade.
        assert_eq!(
            affinity_key("ns/s/tcp/p", "10.0.0.1:80".parse().unwrap()),
            [0xf8b4_da10, 0x9ac8_d0d5]
        );
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
