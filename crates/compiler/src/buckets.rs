//! Dispatch buckets: every Service port's rules live in a fixed number of chains.
//!
//! The compiler thinks in one chain per Service port and role (`service-…`, `local-…`,
//! `external-…`), but the kernel never sees those chains. Every transaction's commit visits
//! every chain of the table (`nf_tables_commit` readies each chain's next rule generation),
//! so with a chain per port one endpoint change at 50,000 Services cost 7–9 ms of walking
//! ~74,000 chains, and the cost grew with the cluster. Instead the keys of the two dispatch
//! maps (`service-ips`: address, protocol, port; `service-nodeports`: protocol, NodePort) become
//! sets, and a packet whose key is in one goes to one of [`SERVICE_IP_BUCKETS`] or
//! [`NODEPORT_BUCKETS`] chains, picked by the low bits of its address or port. Each bucket holds,
//! for every key in it, the rules of the chain that key led to, each guarded by as much of the
//! key as tells it from the bucket's other keys (`ip daddr 10.96.0.10 th dport 9153 …`).
//!
//! The bucket maps have at most 1,024 elements because the kernel validates a table by walking
//! it from the base chains: a map keyed by the full key, each element naming a bucket, would
//! make every element validate its bucket again, multiplying the walk by the keys per bucket.
//!
//! Inlining a chain is exact here: a port chain is entered only by `goto` (from its map element
//! or from another of its port's chains), every port chain ends in a rule that always ends the
//! packet's walk (DNAT, reject, drop or `goto`), and the guards of two keys in one bucket never
//! both match a packet, so the rules of other keys that a packet passes over cannot act on it.
//! A packet looks at about one bucket's worth of guards (70 keys at 50,000 Services) after the
//! two lookups; nearly all fail on their first comparison.

use std::collections::{BTreeMap, HashMap};

use crate::ir::{Chain, DataType, Expr, Map, Match, Rule, Set, Value, Verdict, VerdictElement};
use crate::table::MapName;

/// How many low bits of a Service address pick its bucket.
pub const SERVICE_IP_BITS: u8 = 10;
/// Chains holding the rules of ClusterIPs, externalIPs and load-balancer IPs (those that
/// hold any).
pub const SERVICE_IP_BUCKETS: u16 = 1 << SERVICE_IP_BITS;
/// The map from an address's low bits to its bucket chain.
pub const SERVICE_IP_BUCKETS_MAP: &str = "service-ip-buckets";
/// How many low bits of a NodePort pick its bucket.
pub const NODEPORT_BITS: u8 = 10;
/// Chains holding the rules of NodePorts (those that hold any).
pub const NODEPORT_BUCKETS: u16 = 1 << NODEPORT_BITS;
/// The map from a NodePort's low bits to its bucket chain.
pub const NODEPORT_BUCKETS_MAP: &str = "service-nodeport-buckets";

/// The bucket a dispatch-map key belongs to: the low bits of its address (a Service address)
/// or port (a NodePort), which the packet path computes with one mask (`ip daddr & 0.0.3.255`,
/// `th dport & 1023`). ClusterIPs are allocated at random and NodePorts in sequence, so both
/// spread evenly; an address that many Service ports share (an externalIP or a load balancer's)
/// keeps all of them in one bucket.
pub fn bucket_of(map: MapName, key: &[Value]) -> u16 {
    let (low, count) = match (map, key) {
        (MapName::ServiceIps, [Value::Addr(std::net::IpAddr::V4(ip)), ..]) => {
            (u128::from(u32::from(*ip)), SERVICE_IP_BUCKETS)
        }
        (MapName::ServiceIps, [Value::Addr(std::net::IpAddr::V6(ip)), ..]) => {
            (u128::from(*ip), SERVICE_IP_BUCKETS)
        }
        (MapName::ServiceNodePorts, [_, Value::Port(port)]) => {
            (u128::from(*port), NODEPORT_BUCKETS)
        }
        _ => (0, 1),
    };
    u16::try_from(low % u128::from(count)).unwrap_or(0)
}

/// Whether `map`'s keys select rules in bucket chains (rather than being a verdict map).
pub fn dispatches(map: MapName) -> bool {
    matches!(map, MapName::ServiceIps | MapName::ServiceNodePorts)
}

/// The name of a bucket chain: the map's name and three hex digits.
pub fn chain_name(map: MapName, bucket: u16) -> String {
    format!("{}-{bucket:03x}", map.as_str())
}

/// The guards of a bucket's keys: for each key, the matches that tell its packets from those
/// of the bucket's other keys. Only packets whose key is in the map's set reach a bucket, and
/// they reach their key's bucket, so a guard compares only the fields some other key shares the rest with: the
/// address alone when no other key has it, the port too when one does, the protocol only
/// when another key has the same address and port (a DNS Service's TCP and UDP 53). Most
/// guards are one comparison; every field compared costs two expressions per rule to load.
pub fn guards(map: MapName, keys: &[&[Value]]) -> Vec<Vec<Match>> {
    // Key fields in their maps' order, and which of them to compare first.
    let (fields, order): (&[Expr], &[usize]) = match map {
        MapName::ServiceIps | MapName::NoEndpointServices => {
            (&[Expr::DestAddr, Expr::L4Proto, Expr::DestPort], &[0, 2, 1])
        }
        MapName::ServiceNodePorts | MapName::NoEndpointNodePorts => {
            (&[Expr::L4Proto, Expr::DestPort], &[1, 0])
        }
    };
    // Sorted by the fields in `order`, keys that agree on the first fields are neighbours:
    // a key needs `depth` fields when a neighbour agrees with it on the first `depth - 1`.
    let agree = |a: &[Value], b: &[Value], depth: usize| {
        order[..depth].iter().all(|&f| a.get(f) == b.get(f))
    };
    let mut sorted: Vec<usize> = (0..keys.len()).collect();
    sorted.sort_unstable_by(|&a, &b| {
        order
            .iter()
            .map(|&f| keys[a].get(f).cmp(&keys[b].get(f)))
            .find(|o| o.is_ne())
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut depths = vec![1; keys.len()];
    for (at, &key) in sorted.iter().enumerate() {
        let neighbours = [at.checked_sub(1), at.checked_add(1)];
        for other in neighbours
            .into_iter()
            .flatten()
            .filter_map(|n| sorted.get(n))
        {
            let shared = (1..=order.len())
                .take_while(|&depth| agree(keys[key], keys[*other], depth))
                .count();
            depths[key] = depths[key].max((shared + 1).min(order.len()));
        }
    }
    keys.iter()
        .zip(depths)
        .map(|(key, depth)| {
            let mut compared = order[..depth].to_vec();
            compared.sort_unstable();
            compared
                .into_iter()
                .filter_map(|f| Some(Match::eq(fields[f], *key.get(f)?)))
                .collect()
        })
        .collect()
}

/// The rules a key brings to its bucket behind `guard` ([`guards`]): the chain its element
/// named, with every chain that one enters by `goto` inlined. `chains` finds port chains by
/// name; a verdict that names no port chain brings no rules (the element keeps it).
pub fn entry_rules<'c>(
    map: MapName,
    guard: &[Match],
    verdict: &Verdict,
    chains: &impl Fn(&str) -> Option<&'c Chain>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    match verdict {
        Verdict::Goto(name) => {
            if let Some(chain) = chains(name) {
                inline(guard, chain, chains, &mut rules);
            }
        }
        // Other verdicts (drop, when a Local policy has no local endpoint) are rules in the
        // bucket too: the packet path reaches it by the key's low bits alone.
        other if dispatches(map) => {
            rules.push(Rule::verdict(other.clone()).when(guard.iter().cloned()));
        }
        _ => {}
    }
    rules
}

fn inline<'c>(
    guard: &[Match],
    chain: &Chain,
    chains: &impl Fn(&str) -> Option<&'c Chain>,
    out: &mut Vec<Rule>,
) {
    for rule in &chain.rules {
        let mut matches = Vec::with_capacity(guard.len() + rule.matches.len());
        matches.extend_from_slice(guard);
        matches.extend(rule.matches.iter().filter(|m| !guard.contains(m)).cloned());
        let comment = rule.comment.clone().or_else(|| chain.comment.clone());
        let target = match &rule.action {
            Some(crate::ir::Action::Verdict(Verdict::Goto(name))) => chains(name),
            _ => None,
        };
        match target {
            Some(target) => {
                if !rule.statements.is_empty() {
                    out.push(Rule {
                        matches: matches.clone(),
                        statements: rule.statements.clone(),
                        action: None,
                        comment,
                    });
                }
                inline(&matches, target, chains, out);
            }
            None => out.push(Rule {
                matches,
                statements: rule.statements.clone(),
                action: rule.action.clone(),
                comment,
            }),
        }
    }
}

/// Turns a table's port chains into bucket chains: replaces each dispatch map by its set of
/// keys and its bucket map ([`as_sets`]) and returns the buckets that hold rules, in map and
/// bucket order.
pub(crate) fn dispatch(
    sets: &mut Vec<Set>,
    maps: &mut Vec<Map>,
    port_chains: Vec<Chain>,
) -> Vec<Chain> {
    let by_name: HashMap<&str, &Chain> = port_chains.iter().map(|c| (c.name.as_str(), c)).collect();
    let lookup = |name: &str| by_name.get(name).copied();
    // Each bucket's elements, in key order.
    let mut buckets: BTreeMap<(MapName, u16), Vec<&VerdictElement>> = BTreeMap::new();
    for map in maps.iter() {
        let Some(name) = MapName::of(&map.name).filter(|m| dispatches(*m)) else {
            continue;
        };
        for element in &map.elements {
            let bucket = bucket_of(name, &element.key);
            buckets.entry((name, bucket)).or_default().push(element);
        }
    }
    let mut chains = Vec::new();
    let mut used: BTreeMap<MapName, Vec<u16>> = BTreeMap::new();
    for ((map, bucket), elements) in buckets {
        let keys: Vec<&[Value]> = elements.iter().map(|e| e.key.as_slice()).collect();
        let guards = guards(map, &keys);
        let mut rules = Vec::new();
        for (element, guard) in elements.into_iter().zip(&guards) {
            rules.extend(entry_rules(map, guard, &element.verdict, &lookup));
        }
        if !rules.is_empty() {
            used.entry(map).or_default().push(bucket);
            chains.push(bucket_chain(map, bucket, rules));
        }
    }
    as_sets(sets, maps, &used);
    chains
}

/// Replaces each dispatch map of `maps` by the set of its keys (the packet path asks whether
/// a packet's address or NodePort is a Service's, then goes to its bucket) and the map to its
/// bucket chains, with an element for each bucket `used` lists for it.
pub(crate) fn as_sets(
    sets: &mut Vec<Set>,
    maps: &mut Vec<Map>,
    used: &BTreeMap<MapName, Vec<u16>>,
) {
    for (name, buckets_map) in [
        (MapName::ServiceIps, SERVICE_IP_BUCKETS_MAP),
        (MapName::ServiceNodePorts, NODEPORT_BUCKETS_MAP),
    ] {
        let Some(at) = maps.iter().position(|m| m.name == name.as_str()) else {
            continue;
        };
        let map = maps.remove(at);
        // The type of what the bucket map is keyed by: the address, or the port.
        let low_type = match name {
            MapName::ServiceIps => map.key.first().copied().unwrap_or(DataType::Ipv4Addr),
            _ => DataType::InetService,
        };
        let elements = used
            .get(&name)
            .into_iter()
            .flatten()
            .map(|&bucket| VerdictElement {
                key: vec![bucket_key(low_type, bucket)],
                verdict: Verdict::Goto(chain_name(name, bucket)),
            })
            .collect();
        let mut keys: Vec<Vec<Value>> = map.elements.into_iter().map(|e| e.key).collect();
        keys.dedup();
        sets.push(Set {
            name: map.name,
            key: map.key,
            interval: false,
            timeout: None,
            size: None,
            comment: map.comment,
            elements: keys,
        });
        maps.insert(
            at,
            Map {
                name: buckets_map.to_string(),
                key: vec![low_type],
                comment: Some(match name {
                    MapName::ServiceIps => {
                        "the bucket chain of each Service address's low bits".into()
                    }
                    _ => "the bucket chain of each NodePort's low bits".into(),
                }),
                elements,
            },
        );
    }
}

/// The bucket of a dispatch-map key, as its chain's name and its bucket map's key (the low
/// bits of the key's address or port): where that key's rules are.
pub fn bucket_of_key(map: MapName, key: &[Value]) -> (String, Vec<Value>) {
    let bucket = bucket_of(map, key);
    let low_type = match key.first() {
        Some(Value::Addr(std::net::IpAddr::V4(_))) if map == MapName::ServiceIps => {
            DataType::Ipv4Addr
        }
        Some(Value::Addr(std::net::IpAddr::V6(_))) if map == MapName::ServiceIps => {
            DataType::Ipv6Addr
        }
        _ => DataType::InetService,
    };
    (chain_name(map, bucket), vec![bucket_key(low_type, bucket)])
}

/// The bucket map's key for `bucket`: the address or port whose low bits it is.
fn bucket_key(low_type: DataType, bucket: u16) -> Value {
    match low_type {
        DataType::Ipv4Addr => Value::Addr(std::net::IpAddr::V4(u32::from(bucket).into())),
        DataType::Ipv6Addr => Value::Addr(std::net::IpAddr::V6(u128::from(bucket).into())),
        _ => Value::Port(bucket),
    }
}

/// The chain of one bucket.
pub(crate) fn bucket_chain(map: MapName, bucket: u16, rules: Vec<Rule>) -> Chain {
    Chain {
        name: chain_name(map, bucket),
        hook: None,
        comment: None,
        rules,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kproxy_model::Protocol;

    fn key(ip: &str, protocol: Protocol, port: u16) -> Vec<Value> {
        let ip = ip.parse().expect("test address");
        vec![Value::Addr(ip), Value::Proto(protocol), Value::Port(port)]
    }

    #[test]
    fn a_guard_compares_only_what_tells_its_key_from_the_buckets_others() {
        let dns_tcp = key("10.96.0.10", Protocol::Tcp, 53);
        let dns_udp = key("10.96.0.10", Protocol::Udp, 53);
        let metrics = key("10.96.0.10", Protocol::Tcp, 9153);
        let web = key("10.96.4.10", Protocol::Tcp, 80);
        let keys: Vec<&[Value]> = vec![&dns_tcp, &dns_udp, &metrics, &web];
        let fields = |key: &[Value], which: &[usize]| -> Vec<Match> {
            let exprs = [Expr::DestAddr, Expr::L4Proto, Expr::DestPort];
            which.iter().map(|&f| Match::eq(exprs[f], key[f])).collect()
        };
        assert_eq!(
            guards(MapName::ServiceIps, &keys),
            vec![
                fields(&dns_tcp, &[0, 1, 2]),
                fields(&dns_udp, &[0, 1, 2]),
                fields(&metrics, &[0, 2]),
                fields(&web, &[0]),
            ]
        );
    }

    #[test]
    fn service_addresses_and_nodeports_go_to_the_bucket_of_their_low_bits() {
        assert_eq!(
            bucket_of(MapName::ServiceIps, &key("10.96.7.10", Protocol::Tcp, 80)),
            0x30a
        );
        let node_port = [Value::Proto(Protocol::Udp), Value::Port(30_080)];
        assert_eq!(
            bucket_of(MapName::ServiceNodePorts, &node_port),
            30_080 % 1024
        );
    }
}
