//! What this network namespace's kernel calls a local address, for `kproxy trace --live`.
//!
//! `fib daddr type local` asks the routing table whether an address is `local`, so the trace
//! reads the same thing: IPv4 `local` routes from `/proc/net/fib_trie` (every address on an
//! interface, and prefixes such as `127.0.0.0/8`) and IPv6 addresses from `/proc/net/if_inet6`.
//! Both files show the network namespace of the reading process, as `ip netns exec` sets it.
//! Reading text files needs neither a netlink route socket nor a new dependency.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Context;
use ipnet::IpNet;

/// The local networks of this network namespace (both families).
pub fn read() -> anyhow::Result<Vec<IpNet>> {
    let fib = std::fs::read_to_string("/proc/net/fib_trie")
        .context("reading /proc/net/fib_trie (the IPv4 routing tables)")?;
    let mut nets = ipv4_local_routes(&fib);
    // A kernel without IPv6 has no such file: then there are no IPv6 addresses.
    if let Ok(inet6) = std::fs::read_to_string("/proc/net/if_inet6") {
        nets.extend(ipv6_addresses(&inet6));
    }
    Ok(nets)
}

/// The `LOCAL` entries of `/proc/net/fib_trie`: a key line `|-- 10.0.0.1` followed by one line
/// per route of that key, `/32 host LOCAL`. Keys appear in the main and the local table alike;
/// duplicates are dropped.
fn ipv4_local_routes(text: &str) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = Vec::new();
    let mut key: Option<Ipv4Addr> = None;
    for line in text.lines().map(str::trim) {
        if let Some(addr) = line.strip_prefix("|-- ") {
            key = addr.parse().ok();
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(len), Some(_scope), Some("LOCAL")) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let (Some(addr), Some(len)) = (key, len.strip_prefix('/').and_then(|l| l.parse().ok()))
        else {
            continue;
        };
        if let Ok(net) = IpNet::new(IpAddr::V4(addr), len) {
            if !nets.contains(&net) {
                nets.push(net);
            }
        }
    }
    nets
}

/// The addresses of `/proc/net/if_inet6`: 32 hex digits first on each line.
fn ipv6_addresses(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|hex| {
            u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)
        })
        .map(|bits| IpNet::from(IpAddr::V6(Ipv6Addr::from(bits))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        texts
            .iter()
            .map(|t| t.parse().expect("a network"))
            .collect()
    }

    #[test]
    fn local_ipv4_routes_from_fib_trie() {
        let fib = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 192.168.10.0/24 2 0 2
           |-- 192.168.10.0
              /24 link UNICAST
           |-- 192.168.10.11
              /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
           |-- 192.168.10.11
              /32 host LOCAL
";
        assert_eq!(
            ipv4_local_routes(fib),
            nets(&["127.0.0.0/8", "127.0.0.1/32", "192.168.10.11/32"])
        );
    }

    #[test]
    fn ipv6_addresses_from_if_inet6() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo
fd000000000000000000000000000002 04 40 00 82     eth0
garbage
";
        assert_eq!(ipv6_addresses(text), nets(&["::1/128", "fd00::2/128"]));
    }
}
