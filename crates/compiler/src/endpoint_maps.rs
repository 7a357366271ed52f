//! Endpoint maps: where each endpoint chain's endpoints live, and how `numgen` picks one.
//!
//! A DNAT rule that picks one of N endpoints needs N somewhere. Putting it in the rule
//! (`numgen random mod N`) means every endpoint change replaces a rule, and any new rule makes the
//! kernel re-validate the whole table at commit: a walk over every Service's chains, 19 ms at
//! 50,000 Services. Giving each rule its own anonymous map is worse: each new set scans all the
//! others, so a cold start is quadratic. So the rule never changes:
//!
//! ```text
//! dnat to numgen random mod 720720 offset W map @endpoints-S
//! ```
//!
//! Every endpoint chain owns a *window* `W..W + 720720` of the key space of one shared interval
//! map, and each of its N endpoints an equal share of the window as one range. An endpoint change
//! rewrites only that chain's ranges (map elements, no validation walk). 720,720 is the least
//! common multiple of 1..=16, so the split is exact for every N up to 16 (and every other
//! divisor); otherwise shares differ by one key in 720,720, a bias below 1.4 × 10⁻⁶ × N.
//!
//! Maps are sharded: the kernel checks every new element of a data map against every rule
//! that reads the map, so one map read by all Services makes a cold start quadratic again.
//! A chain's shard and window come from a hash of its name, so they are the same on every
//! node and every run, and adding a Service moves nobody else (except, rarely, a chain whose
//! window the newcomer's hash also chose and that sorts after it).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::ir::EndpointRange;
use crate::naming;

/// Size of every chain's window: lcm(1..=16).
pub const MODULUS: u32 = 720_720;
/// Windows start at multiples of 2^20 (> [`MODULUS`]).
const WINDOW_BITS: u32 = 20;
/// Windows per map. Window 0 is never used, so every map's first range starts above zero.
const WINDOWS: u32 = 1 << (32 - WINDOW_BITS);
/// Endpoint maps per table. Every DNAT rule names its map, and the kernel finds a set by
/// walking the table's sets by name, so more shards cost every rule at load; fewer make each
/// map hold more ranges for more rules to share. 512 cold-applied 10,000 Services about a
/// tenth faster than 1,024, and 50,000 as fast; 256 was slower at 50,000 (docs/benchmarks.md).
pub const SHARDS: u32 = 512;

/// Where one endpoint chain's endpoints live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// Shard number (the map is [`naming::endpoint_map`] of it).
    pub shard: u32,
    /// First key of the window.
    pub offset: u32,
}

impl Placement {
    pub fn map(&self) -> String {
        naming::endpoint_map(self.shard)
    }
}

/// The shard a chain's hash picks, and its preferred window there.
pub(crate) fn slot(chain: &str) -> (u32, u32) {
    let hash = naming::fnv1a(chain.as_bytes());
    let shard = (hash % u64::from(SHARDS)) as u32;
    let preferred = 1 + ((hash / u64::from(SHARDS)) % u64::from(WINDOWS - 1)) as u32;
    (shard, preferred)
}

/// Places every chain (by name) in a window; the result is in the order of `chains`. `None`
/// only when a shard's 4,095 windows are all taken, which needs millions of endpoint chains in
/// one table.
pub(crate) fn place<'a>(chains: impl IntoIterator<Item = &'a str>) -> Vec<Option<Placement>> {
    let mut by_shard: BTreeMap<u32, Vec<(u32, &str, usize)>> = BTreeMap::new();
    let mut count = 0;
    for (index, chain) in chains.into_iter().enumerate() {
        let (shard, preferred) = slot(chain);
        by_shard
            .entry(shard)
            .or_default()
            .push((preferred, chain, index));
        count = index + 1;
    }
    let mut placed = vec![None; count];
    for (shard, mut chains) in by_shard {
        chains.sort_unstable();
        let windows = place_in_shard(chains.iter().map(|&(preferred, _, _)| preferred));
        for ((_, _, index), window) in chains.into_iter().zip(windows) {
            placed[index] = window.map(|offset| Placement { shard, offset });
        }
    }
    placed
}

/// Window offsets for one shard's chains, given their preferred windows in (preferred window,
/// name) order: each takes its preferred window, or probes to the next free one. The order
/// makes the result depend only on the set of chains, so recomputing one shard after a change
/// ([`crate::incremental`]) gives what compiling everything again would.
pub(crate) fn place_in_shard(preferred: impl IntoIterator<Item = u32>) -> Vec<Option<u32>> {
    let mut taken = vec![false; WINDOWS as usize];
    taken[0] = true;
    preferred
        .into_iter()
        .map(|preferred| {
            let mut window = preferred;
            let mut tries = 1;
            while taken[window as usize] && tries < WINDOWS {
                window = if window + 1 == WINDOWS { 1 } else { window + 1 };
                tries += 1;
            }
            if taken[window as usize] {
                return None;
            }
            taken[window as usize] = true;
            Some(window << WINDOW_BITS)
        })
        .collect()
}

/// Splits the window at `offset` between `targets` (in order), as equal ranges. At most
/// [`MODULUS`] endpoints get a range; nobody runs Services that large.
pub(crate) fn ranges(offset: u32, targets: &[SocketAddr]) -> Vec<EndpointRange> {
    let targets = &targets[..targets.len().min(MODULUS as usize)];
    let n = targets.len() as u64;
    let bound = |i: u64| (i * u64::from(MODULUS) / n) as u32;
    targets
        .iter()
        .zip(0u64..)
        .map(|(&target, i)| EndpointRange {
            first: offset + bound(i),
            last: offset + bound(i + 1) - 1,
            target,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 80)))
            .collect()
    }

    #[test]
    fn ranges_tile_the_window_exactly() {
        for n in [1, 2, 3, 7, 10, 13, 16, 17, 100, 1000] {
            let ranges = ranges(5 << WINDOW_BITS, &targets(n));
            assert_eq!(ranges.len(), n);
            assert_eq!(ranges[0].first, 5 << WINDOW_BITS);
            assert_eq!(ranges[n - 1].last, (5 << WINDOW_BITS) + MODULUS - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].last + 1, pair[1].first, "n = {n}");
            }
            let sizes: Vec<u32> = ranges.iter().map(|r| r.last - r.first + 1).collect();
            let (min, max) = (sizes.iter().min(), sizes.iter().max());
            if MODULUS % n as u32 == 0 {
                assert_eq!(min, max, "n = {n} divides the modulus: exact shares");
            } else {
                assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "n = {n}");
            }
        }
    }

    #[test]
    fn every_chain_gets_its_own_window_and_placement_is_stable() {
        let names: Vec<String> = (0..20_000)
            .map(|i| format!("service-ns/svc-{i}/tcp/80"))
            .collect();
        let placed: Vec<Placement> = place(names.iter().map(String::as_str))
            .into_iter()
            .map(|p| p.expect("every chain gets a window"))
            .collect();
        assert_eq!(placed.len(), names.len());
        let mut windows: Vec<(u32, u32)> = placed.iter().map(|p| (p.shard, p.offset)).collect();
        windows.sort_unstable();
        windows.dedup();
        assert_eq!(windows.len(), names.len(), "no two chains share a window");
        assert!(placed.iter().all(|p| p.offset >= 1 << WINDOW_BITS));

        // Adding one chain leaves (almost) everyone where they were.
        let mut more = names.clone();
        more.push("service-ns/newcomer/tcp/80".to_string());
        let again = place(more.iter().map(String::as_str));
        let moved = placed
            .iter()
            .zip(&again)
            .filter(|(before, after)| after.as_ref() != Some(*before))
            .count();
        assert!(moved <= 1, "{moved} chains moved");
    }
}
