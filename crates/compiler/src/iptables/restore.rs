//! What one sync writes: the `iptables-restore --noflush` input that turns the kernel's chains
//! into the desired ones.
//!
//! With `--noflush`, a declared chain (`:NAME - [0:0]`) is created or flushed and every chain
//! not mentioned is left alone, and each table is committed atomically.
//!
//! A [`full`] restore (start, hourly resync, after a failure) writes every chain and deletes
//! the kproxy-named chains the kernel has beyond them. A partial one ([`Applied::partial`])
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

use super::ir::{Chain, FamilyRules, Rule, TableName};
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

/// What the last successful restore of one family left in its kproxy chains, chain by chain:
/// the base a partial restore is compared with.
///
/// It is kept across syncs and updated in place by [`partial`](Self::partial), which copies
/// only the chains that changed: a sync neither clones the whole ruleset (42,661 rules at
/// 1,000 Services) nor builds a new index of it.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// Per table, each chain's rules by name.
    tables: BTreeMap<TableName, HashMap<String, Written>>,
    /// Counts [`partial`](Self::partial) calls; chains still wanted carry the current one.
    generation: u64,
}

/// One chain as the last restore wrote it.
#[derive(Debug, Clone)]
struct Written {
    rules: Vec<Rule>,
    /// The last [`Applied::generation`] whose desired rules had this chain.
    seen: u64,
}

impl Applied {
    /// What a successful [`full`] restore of `rules` leaves (every chain, nothing else).
    pub fn new(rules: &FamilyRules) -> Applied {
        let tables = rules
            .tables
            .iter()
            .map(|table| {
                let chains = table
                    .chains
                    .iter()
                    .map(|c| {
                        let written = Written {
                            rules: c.rules.clone(),
                            seen: 0,
                        };
                        (c.name.clone(), written)
                    })
                    .collect();
                (table.name, chains)
            })
            .collect();
        Applied {
            tables,
            generation: 0,
        }
    }

    /// The restore that turns these chains into `next`'s (see the module doc), after which
    /// `self` describes `next`. If that restore fails, drop `self`: the kernel is then not
    /// known to hold either, and the next sync must be [`full`].
    pub fn partial(&mut self, next: &FamilyRules) -> Restore {
        self.generation += 1;
        let generation = self.generation;
        let mut restore = Restore::default();
        for table in &next.tables {
            let chains = self.tables.entry(table.name).or_default();
            let write = record(chains, &table.chains, generation);
            let stale = sweep(chains, generation);
            restore.add_table(table.name, &write, &stale);
        }
        // A table `next` does not have at all loses every chain (the compiler always emits
        // all three, so this is for completeness).
        for (&name, chains) in &mut self.tables {
            if next.table(name).is_none() {
                restore.add_table(name, &[], &sweep(chains, generation));
            }
        }
        restore
    }
}

/// Marks every chain of `next` as still wanted and records the rules of those that are new
/// or changed, which it returns (in `next`'s order) for the restore to write.
fn record<'a>(
    chains: &mut HashMap<String, Written>,
    next: &'a [Chain],
    generation: u64,
) -> Vec<&'a Chain> {
    let mut write = Vec::new();
    for chain in next {
        match chains.get_mut(chain.name.as_str()) {
            Some(written) if written.rules == chain.rules => written.seen = generation,
            Some(written) => {
                written.seen = generation;
                written.rules.clone_from(&chain.rules);
                write.push(chain);
            }
            None => {
                let written = Written {
                    rules: chain.rules.clone(),
                    seen: generation,
                };
                chains.insert(chain.name.clone(), written);
                write.push(chain);
            }
        }
    }
    write
}

/// Forgets the chains `generation` did not mark and returns their names, sorted so the
/// restore input does not depend on hash order.
fn sweep(chains: &mut HashMap<String, Written>, generation: u64) -> Vec<String> {
    let mut stale = Vec::new();
    chains.retain(|name, written| {
        let wanted = written.seen == generation;
        if !wanted {
            stale.push(name.clone());
        }
        wanted
    });
    stale.sort_unstable();
    stale
}
