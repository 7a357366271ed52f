//! What every measurement shares: the compiler options of the synthetic cluster, and counting
//! the objects of a ruleset (compiled, or read back from the kernel).

use kproxy_compiler::ir::Ruleset;
use kproxy_compiler::Options;
use serde::{Deserialize, Serialize};

/// The options docs/benchmarks.md uses: the synthetic pod networks as cluster CIDRs.
pub fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

/// Kernel objects: named sets counts sets, verdict maps and endpoint maps; elements counts
/// the elements of all three.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub tables: usize,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
}

impl Counts {
    pub fn of(ruleset: &Ruleset) -> Counts {
        let mut counts = Counts::default();
        for table in &ruleset.tables {
            counts.tables += 1;
            counts.chains += table.chains.len();
            counts.rules += table.chains.iter().map(|c| c.rules.len()).sum::<usize>();
            counts.sets += table.sets.len() + table.maps.len() + table.endpoint_maps.len();
            counts.elements += table.sets.iter().map(|s| s.elements.len()).sum::<usize>()
                + table.maps.iter().map(|m| m.elements.len()).sum::<usize>()
                + table
                    .endpoint_maps
                    .iter()
                    .map(|m| m.elements.len())
                    .sum::<usize>();
        }
        counts
    }
}
