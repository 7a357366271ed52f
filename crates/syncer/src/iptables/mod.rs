//! iptables mode: programs [`kproxy_compiler::iptables`] rules with `iptables-restore
//! --noflush`, one call per family and sync, each table committed atomically.
//!
//! # Brief overview
//!
//! * [`Tools`] picks the host's backend (nf_tables or legacy, detected as kube-proxy's image
//!   does) and runs its binaries.
//! * [`IptablesSyncer`] remembers what each family's last successful restore wrote. The first
//!   sync, [`IptablesSyncer::resync`] and any failure make the next sync full (every chain
//!   written, leftover kproxy chains deleted, built-in chain jumps checked and inserted);
//!   otherwise a sync writes only the chains whose rules changed, top-level ones included,
//!   only the tables that have one, and runs no restore at all for a family where nothing
//!   changed ([`kproxy_compiler::iptables::restore`] says why that is safe).
//! * [`cleanup`] removes iptables mode's rules: kproxy's jumps from built-in chains, then the
//!   chains, unless kube-proxy's own jumps still use them (they are kube-proxy's names too).

mod save;
mod tools;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kproxy_compiler::iptables::hooks::HOOK_COMMENT_PREFIX;
use kproxy_compiler::iptables::ir::{FamilyRules, Hook, Ruleset, TableName};
use kproxy_compiler::iptables::naming;
use kproxy_compiler::iptables::render::{self, rule_args};
use kproxy_compiler::iptables::restore::{self, Applied, ExistingChains};
use kproxy_model::IpFamily;

pub use save::SavedTable;
pub use tools::{Tools, Variant};

/// The tables iptables mode writes to.
const TABLES: [TableName; 3] = [TableName::Nat, TableName::Filter, TableName::Mangle];

/// Why an iptables operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    /// A binary could not be started (not installed?).
    #[error("running {program}: {source}")]
    Spawn {
        /// The binary.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A binary exited non-zero; for a restore, no table of the input was changed.
    #[error("{command} failed: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
}

/// Keeps iptables mode's chains equal to the desired rules.
#[derive(Debug)]
pub struct IptablesSyncer {
    tools: Tools,
    /// What each family's last successful restore left, if known; updated in place by each
    /// partial restore (only changed chains are copied).
    applied: BTreeMap<IpFamily, Applied>,
}

/// What one family's restore did.
#[derive(Debug, Clone)]
pub struct FamilyReport {
    /// The family.
    pub family: IpFamily,
    /// A full restore (every chain written, leftovers deleted, hooks checked).
    pub full: bool,
    /// Chains written, as `table/chain`.
    pub written: Vec<String>,
    /// Chains deleted, as `table/chain`.
    pub deleted: Vec<String>,
    /// The restore input, for logs and tests (a full restore on the nf_tables backend also
    /// gets one `-S` per table: [`Tools::restore_full`]).
    pub input: String,
    /// Time the restore binary took.
    pub restore: Duration,
}

/// What one sync did, per family.
#[derive(Debug, Clone, Default)]
pub struct IptablesReport {
    /// One entry per family restored, IPv4 first; a family with nothing to change has none.
    pub families: Vec<FamilyReport>,
}

impl IptablesSyncer {
    /// A syncer whose first sync is full.
    pub fn new(tools: Tools) -> IptablesSyncer {
        IptablesSyncer {
            tools,
            applied: BTreeMap::new(),
        }
    }

    /// The backend it runs.
    pub fn tools(&self) -> Tools {
        self.tools
    }

    /// Makes the next sync full: it repairs whatever was changed behind kproxy's back.
    pub fn resync(&mut self) {
        self.applied.clear();
    }

    /// Brings every family to `rules`. A family that fails keeps its previous rules (the
    /// restore is atomic per table) and is restored in full next time; a family whose rules
    /// did not change runs no restore and has no entry in the report.
    pub fn sync(&mut self, rules: &Ruleset) -> Result<IptablesReport, IptablesError> {
        let mut report = IptablesReport::default();
        for next in &rules.families {
            report.families.extend(self.sync_family(next)?);
        }
        // A family no longer in use (the last IPv6 Service went away) loses its rules.
        let gone: Vec<IpFamily> = self
            .applied
            .keys()
            .copied()
            .filter(|f| !rules.families.iter().any(|r| r.family == *f))
            .collect();
        for family in gone {
            self.applied.remove(&family);
            cleanup_family(self.tools, family, false)?;
        }
        Ok(report)
    }

    /// Restores one family: in full when nothing is known about it, else only what differs
    /// from the last restore (`None` when nothing does). Its record is taken out first and put
    /// back only after success, so any failure makes the family's next sync full.
    fn sync_family(&mut self, next: &FamilyRules) -> Result<Option<FamilyReport>, IptablesError> {
        let family = next.family;
        let (plan, applied, full) = match self.applied.remove(&family) {
            Some(mut applied) => (applied.partial(next), applied, false),
            None => {
                let plan = restore::full(next, &self.existing(family)?);
                (plan, Applied::new(next), true)
            }
        };
        if plan.is_empty() {
            self.applied.insert(family, applied);
            return Ok(None);
        }
        let start = Instant::now();
        if full {
            self.tools.restore_full(family, &plan.text)?;
        } else {
            self.tools.restore(family, &plan.text)?;
        }
        let took = start.elapsed();
        if full {
            self.ensure_hooks(family, &next.hooks)?;
        }
        self.applied.insert(family, applied);
        Ok(Some(FamilyReport {
            family,
            full,
            written: plan.written,
            deleted: plan.deleted,
            input: plan.text,
            restore: took,
        }))
    }

    fn existing(&self, family: IpFamily) -> Result<ExistingChains, IptablesError> {
        let mut existing = ExistingChains::new();
        for table in TABLES {
            let saved = SavedTable::parse(&self.tools.save(family, table)?);
            existing.insert(table, saved.chains);
        }
        Ok(existing)
    }

    /// Checks every built-in chain jump (`-C`) and inserts a missing one at its place from
    /// the top (`-I CHAIN n`), so kproxy's jumps come before rules added later by others.
    fn ensure_hooks(&self, family: IpFamily, hooks: &[Hook]) -> Result<(), IptablesError> {
        let mut position: BTreeMap<(TableName, &str), usize> = BTreeMap::new();
        for hook in hooks {
            let at = position
                .entry((hook.table, hook.chain.as_str()))
                .or_insert(0);
            *at += 1;
            let spec = rule_args(&hook.rule);
            let with = |verb: &str, extra: Option<usize>| {
                let mut args = vec![
                    "-t".to_string(),
                    hook.table.as_str().to_string(),
                    verb.to_string(),
                    hook.chain.as_str().to_string(),
                ];
                args.extend(extra.map(|n| n.to_string()));
                args.extend(spec.iter().cloned());
                args
            };
            if !self.tools.iptables(family, &with("-C", None))? {
                self.tools
                    .iptables_checked(family, &with("-I", Some(*at)))?;
            }
        }
        Ok(())
    }
}

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Default)]
pub struct CleanupReport {
    /// The host has no iptables binaries: nothing to clean.
    pub unavailable: bool,
    /// Rules deleted from built-in chains.
    pub hooks_deleted: usize,
    /// Chains deleted.
    pub chains_deleted: usize,
    /// Tables whose chains were kept because kube-proxy's own jumps still use them, as
    /// `family/table`.
    pub kept_for_kube_proxy: Vec<String>,
}

/// Whether this network namespace can hold iptables rules at all: `iptables-nft` keeps them
/// in nftables tables named `nat`, `filter`, `mangle`, and the legacy backend's tables are
/// listed in `/proc/net/ip{,6}_tables_names` once anything used them. When neither exists there
/// is nothing for [`cleanup`] to find, and it can be skipped: its `iptables-save` runs dump
/// every nftables table of the namespace, kproxy's own 70,000 chains at 50,000 Services too.
pub fn may_hold_rules() -> bool {
    use kproxy_compiler::ir::Family;
    let nft_tables = [Family::Ip, Family::Ip6].into_iter().any(|family| {
        TABLES.iter().any(|table| {
            // If the kernel cannot be asked, assume there may be rules.
            crate::netlink::table_exists(family, table.as_str()).unwrap_or(true)
        })
    });
    // thread-self: the namespace of the calling thread, which may differ from the process's.
    let legacy_tables = [
        "/proc/thread-self/net/ip_tables_names",
        "/proc/thread-self/net/ip6_tables_names",
    ]
    .iter()
    .any(|path| std::fs::read_to_string(path).is_ok_and(|names| !names.trim().is_empty()));
    nft_tables || legacy_tables
}

/// Removes iptables mode's rules in both families: kproxy's jumps from built-in chains, then
/// every `KUBE-SERVICES`/`KUBE-SVC-…`-style chain, unless kube-proxy's own jumps still lead
/// there. With `kube_proxy_too`, kube-proxy's jumps to those chains are removed as well, so
/// its chains go too (for taking over a node from kube-proxy's iptables mode).
pub fn cleanup(tools: Tools, kube_proxy_too: bool) -> Result<CleanupReport, IptablesError> {
    let mut report = CleanupReport::default();
    for family in IpFamily::ALL {
        match cleanup_family(tools, family, kube_proxy_too) {
            Ok(done) => {
                report.hooks_deleted += done.hooks_deleted;
                report.chains_deleted += done.chains_deleted;
                report.kept_for_kube_proxy.extend(done.kept_for_kube_proxy);
            }
            Err(IptablesError::Spawn { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                report.unavailable = true;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(report)
}

fn cleanup_family(
    tools: Tools,
    family: IpFamily,
    kube_proxy_too: bool,
) -> Result<CleanupReport, IptablesError> {
    let mut report = CleanupReport::default();
    let mut input = String::new();
    for table in TABLES {
        let saved = SavedTable::parse(&tools.save(family, table)?);
        let mut kept = 0;
        for (chain, args) in &saved.builtin_rules {
            if !save::value(args, "-j").is_some_and(naming::is_kproxy_chain) {
                continue;
            }
            let ours =
                save::value(args, "--comment").is_some_and(|c| c.starts_with(HOOK_COMMENT_PREFIX));
            if !(ours || kube_proxy_too) {
                kept += 1;
                continue;
            }
            let mut delete = vec![
                "-t".to_string(),
                table.as_str().to_string(),
                "-D".to_string(),
                chain.clone(),
            ];
            delete.extend(args.iter().cloned());
            tools.iptables_checked(family, &delete)?;
            report.hooks_deleted += 1;
        }
        let chains: Vec<String> = saved
            .chains
            .iter()
            .filter(|c| naming::is_kproxy_chain(c))
            .cloned()
            .collect();
        if kept > 0 {
            if !chains.is_empty() {
                report
                    .kept_for_kube_proxy
                    .push(format!("{family}/{}", table.as_str()));
            }
            continue;
        }
        if chains.is_empty() {
            continue;
        }
        render::deletion(table, &chains, &mut input);
        report.chains_deleted += chains.len();
    }
    if !input.is_empty() {
        tools.restore_full(family, &input)?;
    }
    Ok(report)
}
