//! What one sync writes: the `iptables-restore --noflush` input that turns the kernel's chains
//! into the desired ones.
//!
//! With `--noflush`, a declared chain (`:NAME - [0:0]`) is created or flushed and every chain
//! not mentioned is left alone, and each table is committed atomically.
//!
//! A [`full`] restore (start, hourly resync, after a failure) writes every chain and deletes
//! the kproxy-named chains the kernel has beyond them. A [`partial`] one
//! compares with the rules the previous restore wrote and writes only what differs:
//!
//! * A chain is declared and written only if it is new or its rules changed, **top-level
//!   chains included**. kube-proxy rewrites its top-level chains on every sync; kproxy does
//!   not, deliberately: it knows exactly what the previous restore wrote, so rewriting an
//!   identical `KUBE-SERVICES` (one rule per Service address, 1,211 rules at 1,000 Services)
//!   is pure cost. Whatever is changed behind kproxy's back is repaired by the next full
//!   restore (hourly, or after any failure), as kube-proxy's own full syncs repair chains its
//!   partial syncs do not write.
//! * A table with nothing to write or delete is left out of the input entirely: a legacy
//!   `iptables-restore` reads the whole of every table it is given (50 ms for `*nat` /
//!   `COMMIT` alone at 1,000 Services) and writes the whole table back on any change.
//! * A family with nothing to change gets empty input ([`Restore::is_empty`]): the syncer runs
//!   no restore for it at all.
//!
//! Within a table's input, every written and every stale chain is declared first (new chains
//! exist before a rule jumps to them; stale ones are flushed), then the written chains' rules,
//! then the stale chains' `-X`. That order is enough: in the previous rules, a stale chain is
//! jumped to only by chains that are stale themselves (flushed above) or whose rules changed
//! (rewritten above), because a chain whose rules did not change still jumps where it did,
//! and the desired rules never jump to a chain they lack.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::ir::{Chain, FamilyRules, TableName};
use super::naming;
use super::render::table_text;

/// The restore input of one family, with what it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restore {
    /// `iptables-restore --noflush` input; empty when nothing changes.
    pub text: String,
    /// Chains declared and written, as `table/chain`.
    pub written: Vec<String>,
    /// Chains flushed and deleted, as `table/chain`.
    pub deleted: Vec<String>,
}

impl Restore {
    /// Nothing to write or delete in any table: no restore needs to run.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Adds one table's section, or nothing when it neither writes nor deletes a chain.
    fn add_table(&mut self, table: TableName, write: &[&Chain], stale: &[String]) {
        if write.is_empty() && stale.is_empty() {
            return;
        }
        let name = table.as_str();
        self.written
            .extend(write.iter().map(|c| format!("{name}/{}", c.name)));
        self.deleted
            .extend(stale.iter().map(|c| format!("{name}/{c}")));
        table_text(table, write, stale, &mut self.text);
    }
}

/// The chains each table has in the kernel, by name.
pub type ExistingChains = BTreeMap<TableName, BTreeSet<String>>;

/// Writes every chain of `next` and deletes the kproxy-named chains of `existing` that `next`
/// does not have. Every table is written, even one without chains of its own, so a full
/// restore also proves each table can be loaded.
pub fn full(next: &FamilyRules, existing: &ExistingChains) -> Restore {
    let mut restore = Restore::default();
    for table in &next.tables {
        let wanted: BTreeSet<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
        let stale: Vec<String> = existing
            .get(&table.name)
            .into_iter()
            .flatten()
            .filter(|name| naming::is_kproxy_chain(name) && !wanted.contains(name.as_str()))
            .cloned()
            .collect();
        let chains: Vec<&Chain> = table.chains.iter().collect();
        let name = table.name.as_str();
        restore
            .written
            .extend(chains.iter().map(|c| format!("{name}/{}", c.name)));
        restore
            .deleted
            .extend(stale.iter().map(|c| format!("{name}/{c}")));
        table_text(table.name, &chains, &stale, &mut restore.text);
    }
    restore
}

/// Writes the chains of `next` that are new or differ from `previous` (the rules the last
/// sync wrote), top-level ones included, and deletes `previous` chains `next` lacks.
pub fn partial(previous: &FamilyRules, next: &FamilyRules) -> Restore {
    let mut restore = Restore::default();
    for table in &next.tables {
        // By name: a linear search per chain made a 1,000-Service change take a second.
        let old: HashMap<&str, &Chain> = previous
            .table(table.name)
            .into_iter()
            .flat_map(|t| t.chains.iter().map(|c| (c.name.as_str(), c)))
            .collect();
        let write: Vec<&Chain> = table
            .chains
            .iter()
            .filter(|c| old.get(c.name.as_str()).is_none_or(|old| *old != *c))
            .collect();
        let wanted: BTreeSet<&str> = table.chains.iter().map(|c| c.name.as_str()).collect();
        let mut stale: Vec<String> = old
            .keys()
            .filter(|name| !wanted.contains(*name))
            .map(|name| (*name).to_string())
            .collect();
        stale.sort_unstable();
        restore.add_table(table.name, &write, &stale);
    }
    restore
}
