//! The kernel's ruleset in comparable form, with the syncer's family type.

use kproxy_compiler::ir::Family;
use kproxy_compiler::render::nft;
use kproxy_testkit::NetNs;

/// [`kproxy_testkit::listing::normalized_ruleset`], ignoring the chains in `stale`.
pub fn normalized_ruleset(ns: &NetNs, stale: &[(Family, String)]) -> String {
    let ignored: Vec<(&str, &str)> = stale
        .iter()
        .map(|(family, chain)| (nft::family(*family), chain.as_str()))
        .collect();
    kproxy_testkit::listing::normalized_ruleset(ns, &ignored)
}
