//! What one sync writes: the `iptables-restore --noflush` input that turns the kernel's chains
//! into the desired ones.
//!
//! With `--noflush`, a declared chain (`:NAME - [0:0]`) is created or flushed and every chain
//! not mentioned is left alone, and each table is committed atomically. So a sync declares and
//! rewrites every top-level chain (they list every Service port, as kube-proxy rewrites them),
//! declares and rewrites only the per-Service-port chains whose rules changed, and flushes and
//! deletes (`-X`) chains that are no longer wanted, after every rule that referred to them has
//! been rewritten.
//!
//! A [`full`] restore (start, hourly resync, after a failure) writes every chain and deletes
//! the kproxy-named chains the kernel has beyond them; a [`partial`] one compares with the
//! rules the previous sync wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ir::{Chain, ChainKind, FamilyRules, TableName};
use super::naming;
use super::render::table_text;

/// The restore input of one family, with what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// `iptables-restore --noflush` input.
    pub text: String,
    /// Chains declared and written, as `table/chain`.
    pub written: Vec<String>,
    /// Chains flushed and deleted, as `table/chain`.
    pub deleted: Vec<String>,
}

/// The chains each table has in the kernel, by name.
pub type ExistingChains = BTreeMap<TableName, BTreeSet<String>>;

/// Writes every chain of `next` and deletes the kproxy-named chains of `existing` that `next`
/// does not have.
pub fn full(next: &FamilyRules, existing: &ExistingChains) -> Restore {
    plan(
        next,
        |_, _| true,
        |table| {
            existing
                .get(&table)
                .into_iter()
                .flatten()
                .filter(|name| naming::is_kproxy_chain(name))
                .cloned()
                .collect()
        },
    )
}

/// Writes the top-level chains of `next` and the per-Service-port chains that differ from
/// `previous` (the rules the last sync wrote), and deletes `previous` chains `next` lacks.
pub fn partial(previous: &FamilyRules, next: &FamilyRules) -> Restore {
    // By name: a linear search per chain made a 1,000-Service change take a second.
    let old: HashMap<(TableName, &str), &Chain> = previous
        .tables
        .iter()
        .flat_map(|t| t.chains.iter().map(move |c| ((t.name, c.name.as_str()), c)))
        .collect();
    plan(
        next,
        |table, chain| {
            chain.kind == ChainKind::TopLevel
                || old
                    .get(&(table, chain.name.as_str()))
                    .is_none_or(|old| *old != chain)
        },
        |table| {
            previous
                .table(table)
                .map(|t| t.chains.iter().map(|c| c.name.clone()).collect())
                .unwrap_or_default()
        },
    )
}

fn plan(
    next: &FamilyRules,
    write: impl Fn(TableName, &Chain) -> bool,
    candidates: impl Fn(TableName) -> BTreeSet<String>,
) -> Restore {
    let mut restore = Restore {
        text: String::new(),
        written: Vec::new(),
        deleted: Vec::new(),
    };
    for table in &next.tables {
        let wanted: BTreeSet<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
        let candidates = candidates(table.name);
        let stale: Vec<&str> = candidates
            .iter()
            .map(String::as_str)
            .filter(|name| !wanted.contains(name))
            .collect();
        let selected = |chain: &Chain| write(table.name, chain);
        for chain in table.chains.iter().filter(|c| selected(c)) {
            restore
                .written
                .push(format!("{}/{}", table.name.as_str(), chain.name));
        }
        for name in &stale {
            restore
                .deleted
                .push(format!("{}/{name}", table.name.as_str()));
        }
        table_text(table, selected, &stale, &mut restore.text);
    }
    restore
}
