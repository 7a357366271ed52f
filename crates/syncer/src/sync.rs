//! The syncer: a mirror of what kproxy programmed, and the transactions that keep the kernel
//! equal to the desired ruleset.

use std::time::{Duration, Instant};

use kproxy_compiler::ir::{Family, Ruleset, Table};
use kproxy_compiler::RulesetChange;

use crate::netlink::{self, Applied, ApplyError, SetShapes, Spent};
use crate::plan::{plan, plan_change, Operation, Plan};

/// Keeps kproxy's tables equal to the desired ruleset, one transaction per sync.
///
/// The mirror is what the last successful transaction left in the kernel. After a failed
/// transaction (or when the kernel was changed behind kproxy's back) the mirror is unknown,
/// and the next sync reads the kernel again before planning: that full resync repairs drift.
#[derive(Debug, Default)]
pub struct Syncer {
    /// What the kernel holds, if known as a whole ruleset.
    mirror: Option<Ruleset>,
    /// The kernel holds what the last successful sync (full or partial) left: partial syncs
    /// may follow. After a partial sync the mirror is dropped, but this stays true.
    in_step: bool,
    /// Families whose table exists but could not be read back: replaced whole next time.
    unreadable: Vec<Family>,
    /// Chains flushed by the last transaction, deleted by the next one.
    stale: Vec<(Family, String)>,
    /// The socket transactions go out on, opened by the first sync (in that thread's network
    /// namespace) and dropped after a failure.
    channel: Option<netlink::Channel>,
}

/// What one sync did.
#[derive(Debug, Clone, Copy)]
pub struct SyncReport {
    /// Plan operations sent.
    pub operations: usize,
    /// Netlink messages and bytes.
    pub applied: Applied,
    /// True when the kernel was read back first (startup, or after a failure).
    pub full: bool,
    /// Time spent reading the kernel back (zero for partial syncs).
    pub read_back: Duration,
    /// Time spent diffing the mirror against the desired ruleset (or the two sides of a
    /// partial change).
    pub plan: Duration,
    /// Lowering the plan to messages and writing them into the batch (kproxy's part of the
    /// transaction; until 2026-12-04 it was counted in `transaction`).
    pub encode: Duration,
    /// Time from sending the batch to the kernel's answer: what the kernel spends.
    pub transaction: Duration,
}

/// Why a sync failed. The kernel is unchanged; the next sync reads it back first.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Reading kproxy's tables back failed.
    #[error("reading kproxy's tables from the kernel: {0}")]
    Read(#[source] std::io::Error),
    /// The transaction failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A partial sync was asked for, but the kernel is not known to hold what the last sync
    /// left (none succeeded yet, or the last one failed): sync the whole ruleset instead.
    #[error("a partial sync needs the kernel as the last sync left it; a full sync is due")]
    OutOfStep,
}

impl Syncer {
    /// Starts from the kernel's current state, adopting the tables an earlier kproxy left
    /// (rules stay in force; the first sync sends only the difference).
    pub fn adopt() -> Result<Syncer, SyncError> {
        let mut syncer = Syncer::default();
        syncer.read_back()?;
        Ok(syncer)
    }

    /// Forgets the mirror: the next sync reads the kernel back first and repairs whatever
    /// was changed behind kproxy's back (a full resync).
    pub fn resync(&mut self) {
        self.mirror = None;
        self.in_step = false;
    }

    /// Drops the whole-ruleset mirror but stays in step: for a caller that goes on with
    /// partial syncs ([`sync_change`](Self::sync_change)) and lets its next full sync read the
    /// kernel back, the mirror is a second copy of the ruleset kept for nothing.
    /// Freed here, not on a background thread, so a caller can return the memory to the
    /// kernel right after.
    pub fn release_mirror(&mut self) {
        self.mirror = None;
    }

    /// A partial sync ([`sync_change`](Self::sync_change)) may follow: the kernel holds what
    /// the last sync left.
    pub fn in_step(&self) -> bool {
        self.in_step
    }

    /// Chains the last transaction flushed for deletion: the next sync deletes them, even if
    /// nothing else changed.
    pub fn has_stale_chains(&self) -> bool {
        !self.stale.is_empty()
    }

    /// What the syncer believes the kernel holds.
    pub fn mirror(&self) -> Option<&Ruleset> {
        self.mirror.as_ref()
    }

    fn read_back(&mut self) -> Result<Duration, SyncError> {
        let start = Instant::now();
        let read = netlink::read_tables().map_err(SyncError::Read)?;
        self.unreadable = read.unreadable.iter().map(|(family, _)| *family).collect();
        for (family, reason) in &read.unreadable {
            tracing::warn!(?family, reason = %reason.0, "kproxy table holds rules kproxy did not write; it will be replaced whole");
        }
        // Chains that exist but are empty and unreferenced were flushed by an earlier
        // transaction for deletion; delete them now.
        self.stale = read
            .ruleset
            .tables
            .iter()
            .flat_map(|t| unreferenced_empty_chains(t).map(|c| (t.family, c)))
            .collect();
        self.mirror = Some(read.ruleset);
        Ok(start.elapsed())
    }

    /// The plan the next [`sync`](Self::sync) would send, when the mirror is known.
    pub fn plan<'a>(&self, desired: &'a Ruleset) -> Plan<'a> {
        let mut plan = plan(self.mirror.as_ref(), desired, &self.stale);
        if !self.unreadable.is_empty() {
            // Replace unreadable tables whole, atomically: delete and re-create in one batch.
            let mut operations: Vec<Operation> = Vec::new();
            for family in &self.unreadable {
                operations.push(Operation::DeleteTable(*family));
            }
            operations.append(&mut plan.operations);
            plan.operations = operations;
        }
        plan
    }

    /// Makes the kernel equal `desired` in one transaction. `desired` becomes the mirror
    /// (taken, not copied: at 10,000 Services a copy costs more than the transaction).
    #[tracing::instrument(level = "info", skip_all, fields(tables = desired.tables.len()))]
    pub fn sync(&mut self, desired: Ruleset) -> Result<SyncReport, SyncError> {
        let full = self.mirror.is_none();
        let read_back = if full {
            self.read_back()?
        } else {
            Duration::ZERO
        };
        let start = Instant::now();
        let plan = self.plan(&desired);
        let shapes = SetShapes::of(self.mirror.iter().chain([&desired]));
        let plan_time = start.elapsed();
        let (applied, spent) = self.apply(&plan, &shapes)?;
        let operations = plan.operations.len();
        // The plan borrows from `desired`, which becomes the mirror.
        drop(plan);
        if let Some(old) = self.mirror.replace(desired) {
            free_later(old);
        }
        self.unreadable.clear();
        Ok(SyncReport {
            operations,
            applied,
            full,
            read_back,
            plan: plan_time,
            encode: spent.encode,
            transaction: spent.kernel,
        })
    }

    /// Applies a partial change in one transaction: only the objects `change` touches are
    /// compared and sent, so the cost follows the change, not the ruleset. The kernel must
    /// hold what the last sync left ([`in_step`](Self::in_step)); otherwise nothing is sent
    /// and [`SyncError::OutOfStep`] says a full [`sync`](Self::sync) is due.
    ///
    /// The whole-ruleset mirror is dropped (it no longer matches the kernel): the next full
    /// sync reads the kernel back first.
    #[tracing::instrument(level = "info", skip_all, fields(tables = change.after.tables.len()))]
    pub fn sync_change(&mut self, change: &RulesetChange) -> Result<SyncReport, SyncError> {
        if !self.in_step || !self.unreadable.is_empty() {
            return Err(SyncError::OutOfStep);
        }
        let start = Instant::now();
        let plan = plan_change(change, &self.stale);
        let shapes = SetShapes::of([&change.before, &change.after]);
        let plan_time = start.elapsed();
        let (applied, spent) = self.apply(&plan, &shapes)?;
        if let Some(old) = self.mirror.take() {
            free_later(old);
        }
        Ok(SyncReport {
            operations: plan.operations.len(),
            applied,
            full: false,
            read_back: Duration::ZERO,
            plan: plan_time,
            encode: spent.encode,
            transaction: spent.kernel,
        })
    }

    /// Sends `plan` as one transaction. On success the kernel holds what the plan leads to;
    /// on failure it is unchanged but treated as unknown (the next sync reads it back).
    fn apply(&mut self, plan: &Plan, shapes: &SetShapes) -> Result<(Applied, Spent), SyncError> {
        let channel = match self.channel.take() {
            Some(channel) => channel,
            None => match netlink::Channel::open() {
                Ok(channel) => channel,
                Err(error) => {
                    self.resync();
                    return Err(error.into());
                }
            },
        };
        let result = channel.apply(plan, shapes);
        match result {
            Ok((applied, spent)) => {
                self.channel = Some(channel);
                tracing::info!(
                    operations = plan.operations.len(),
                    messages = applied.messages,
                    bytes = applied.bytes,
                    "synced"
                );
                self.stale = plan.stale_chains.clone();
                self.in_step = true;
                Ok((applied, spent))
            }
            Err(error) => {
                self.resync();
                Err(error.into())
            }
        }
    }
}

/// Frees a large ruleset on another thread: at 10,000 Services freeing the IR takes ~15 ms,
/// ten times the transaction, and the kernel is already programmed.
fn free_later(ruleset: Ruleset) {
    let chains: usize = ruleset.tables.iter().map(|t| t.chains.len()).sum();
    if chains < 1_000 {
        return;
    }
    // If no thread can be started, the ruleset is freed here, as it would have been.
    let _ = std::thread::Builder::new()
        .name("kproxy-free".into())
        .spawn(move || drop(ruleset));
}

/// Chains with no rules that no rule or map element refers to.
fn unreferenced_empty_chains(table: &Table) -> impl Iterator<Item = String> + '_ {
    use kproxy_compiler::ir::{Action, Verdict};
    let referenced = |name: &str| {
        let in_rules = table.chains.iter().flat_map(|c| &c.rules).any(|r| {
            matches!(&r.action, Some(Action::Verdict(Verdict::Jump(c) | Verdict::Goto(c))) if c == name)
        });
        let in_maps = table
            .maps
            .iter()
            .flat_map(|m| &m.elements)
            .any(|e| matches!(&e.verdict, Verdict::Jump(c) | Verdict::Goto(c) if c == name));
        in_rules || in_maps
    };
    table
        .chains
        .iter()
        .filter(move |c| c.hook.is_none() && c.rules.is_empty() && !referenced(&c.name))
        .map(|c| c.name.clone())
}

/// The name of kube-proxy's nftables-mode tables (`ip kube-proxy`, `ip6 kube-proxy`).
pub const KUBE_PROXY_TABLE: &str = "kube-proxy";

/// Deletes kube-proxy's nftables-mode tables in both families, whether or not they exist, in
/// one transaction: for a node that moves from kube-proxy to kproxy (`--cleanup-kube-proxy`).
/// kube-proxy's iptables-mode rules are the iptables cleanup's job.
pub fn cleanup_kube_proxy_tables() -> Result<(), SyncError> {
    in_both_families(|family| vec![Operation::DeleteOtherTable(family, KUBE_PROXY_TABLE.into())])
}

/// Deletes kproxy's tables in both families, whether or not they exist, in one transaction.
pub fn cleanup() -> Result<(), SyncError> {
    // Adding first makes the delete valid when the table is absent.
    in_both_families(|family| vec![Operation::AddTable(family), Operation::DeleteTable(family)])
}

/// Sends `operations` of both families as one transaction.
fn in_both_families(
    operations: impl Fn(Family) -> Vec<Operation<'static>>,
) -> Result<(), SyncError> {
    let plan = Plan {
        operations: [Family::Ip, Family::Ip6]
            .into_iter()
            .flat_map(operations)
            .collect(),
        stale_chains: Vec::new(),
    };
    netlink::apply(&plan, &SetShapes::default())?;
    Ok(())
}
