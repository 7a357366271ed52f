//! The difference between two rulesets as an ordered list of operations.
//!
//! Order matters to the kernel, which checks references as each message is processed: chains
//! whose rules change are flushed first (dropping their references), then stale elements and
//! objects are deleted, new objects are created, elements are added, and finally rules are
//! added to new and flushed chains. Chains that are no longer wanted are flushed in this plan
//! and deleted by the *next* one: kernels before 6.2 may still count a reference from a map
//! element deleted in the same transaction and fail with EBUSY (see shared/notes/netlink.md).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};

use kproxy_compiler::ir::{
    Action, BaseHook, Chain, Dnat, EndpointMap, EndpointRange, Family, Map, Match, Rule, Ruleset,
    Set, SetRef, Statement, Table, Value, Verdict, VerdictElement, TABLE_NAME,
};
use kproxy_compiler::render::nft;
use kproxy_compiler::RulesetChange;

/// A named object of a table. Sets and maps are borrowed from the desired ruleset, as are the
/// rules of [`Operation::AddRule`]: copying them was most of a cold plan (30–45 ms of it at
/// 10,000 Services, 5–8 ms without), for data the batch copies anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object<'a> {
    /// A set, with its elements.
    Set(&'a Set),
    /// A verdict map, with its elements.
    Map(&'a Map),
    /// An endpoint map, created empty (its ranges follow in [`Operation::AddEndpoints`]).
    EndpointMap(EndpointMap),
    /// A chain declaration (its rules are added by [`Operation::AddRule`]).
    Chain(Chain),
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation<'a> {
    /// Create the table.
    AddTable(Family),
    /// Delete the table and everything in it (a family kproxy no longer programs).
    DeleteTable(Family),
    /// Delete another program's table, whether or not it exists: kube-proxy's, when kproxy
    /// takes over a node (`--cleanup-kube-proxy`).
    DeleteOtherTable(Family, String),
    /// Remove every rule of a chain.
    FlushChain(Family, String),
    /// Remove elements (keys only) from a set or map.
    DeleteElements(Family, String, Vec<Vec<Value>>),
    /// Delete a set or map.
    DeleteSet(Family, String),
    /// Delete an (empty, unreferenced) chain.
    DeleteChain(Family, String),
    /// Create a set, map or chain.
    Add(Family, Object<'a>),
    /// Add elements to a set.
    AddSetElements(Family, String, Vec<Vec<Value>>),
    /// Add elements to a verdict map.
    AddMapElements(Family, String, Vec<VerdictElement>),
    /// Remove ranges from an endpoint map.
    DeleteEndpoints(Family, String, Vec<EndpointRange>),
    /// Add ranges to an endpoint map: a new map's, borrowed from the desired ruleset, or the
    /// ranges a change adds.
    AddEndpoints(Family, String, Cow<'a, [EndpointRange]>),
    /// Append a rule of the desired ruleset to a chain.
    AddRule(Family, &'a str, &'a Rule),
}

/// An ordered, atomic set of changes, plus the chains to delete in the next plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// The operations, in the order they must be sent; they borrow from the desired ruleset.
    pub operations: Vec<Operation<'a>>,
    /// Chains flushed by this plan because they are no longer wanted; pass them to the next
    /// [`plan()`] call, which deletes them.
    pub stale_chains: Vec<(Family, String)>,
}

impl Plan<'_> {
    /// True when the kernel already matches.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }
}

/// Computes the operations that turn `current` (what was applied last; `None` for an empty
/// kernel) into `desired`. `stale` are the chains an earlier plan flushed for deletion.
pub fn plan<'a>(
    current: Option<&Ruleset>,
    desired: &'a Ruleset,
    stale: &[(Family, String)],
) -> Plan<'a> {
    let mut steps = Steps::default();
    let empty: Vec<Table> = Vec::new();
    let current_tables = current.map_or(&empty, |r| &r.tables);
    for table in &desired.tables {
        match current_tables.iter().find(|t| t.family == table.family) {
            Some(old) => diff_table(&mut steps, old, table),
            None => {
                steps.tables.push(Operation::AddTable(table.family));
                // Built field by field: `..table.clone()` would copy every rule and element
                // only to drop them (half of a cold plan at 10,000 Services).
                let empty = Table {
                    family: table.family,
                    name: table.name.clone(),
                    sets: Vec::new(),
                    maps: Vec::new(),
                    endpoint_maps: Vec::new(),
                    chains: Vec::new(),
                };
                diff_table(&mut steps, &empty, table);
            }
        }
    }
    for old in current_tables {
        match desired.tables.iter().find(|t| t.family == old.family) {
            Some(_) => {}
            None => steps.table_deletes.push(Operation::DeleteTable(old.family)),
        }
    }
    steps.finish(stale, |family, chain| {
        // A table that is gone (or going) takes its chains with it.
        let table_existed = current_tables.iter().any(|t| t.family == family);
        desired
            .tables
            .iter()
            .find(|t| t.family == family)
            .is_some_and(|table| table_existed && !table.chains.iter().any(|c| c.name == chain))
    })
}

/// Computes the operations of a partial sync: `change` holds the touched objects as the kernel
/// has them and as they must become ([`kproxy_compiler::Incremental`]), so its two sides are
/// diffed like whole rulesets, and nothing else is looked at. `stale` are the chains an earlier
/// plan flushed for deletion; those not wanted again are deleted.
pub fn plan_change<'a>(change: &'a RulesetChange, stale: &[(Family, String)]) -> Plan<'a> {
    let mut steps = Steps::default();
    for (before, after) in change.before.tables.iter().zip(&change.after.tables) {
        diff_table(&mut steps, before, after);
    }
    // A stale chain that this change wants again is declared again by the diff.
    steps.finish(stale, |family, chain| {
        !change
            .after
            .tables
            .iter()
            .any(|t| t.family == family && t.chains.iter().any(|c| c.name == chain))
    })
}

/// Operations collected per phase, then concatenated in the order the kernel needs.
#[derive(Default)]
struct Steps<'a> {
    tables: Vec<Operation<'a>>,
    flushes: Vec<Operation<'a>>,
    element_deletes: Vec<Operation<'a>>,
    object_deletes: Vec<Operation<'a>>,
    /// Chains are declared before sets and maps, whose elements may `goto` them.
    chain_adds: Vec<Operation<'a>>,
    adds: Vec<Operation<'a>>,
    element_adds: Vec<Operation<'a>>,
    rules: Vec<Operation<'a>>,
    /// Elements of maps created in this plan whose rules are cheaper to add while the map is
    /// empty ([`Container::create`]).
    elements_after_rules: Vec<Operation<'a>>,
    chain_deletes: Vec<Operation<'a>>,
    table_deletes: Vec<Operation<'a>>,
    stale_chains: Vec<(Family, String)>,
}

impl<'a> Steps<'a> {
    /// Deletes the chains an earlier plan flushed (`stale`) that `gone` says are not wanted
    /// any more, and returns the plan with the chains this one flushed, for the next.
    fn finish(
        mut self,
        stale: &[(Family, String)],
        gone: impl Fn(Family, &str) -> bool,
    ) -> Plan<'a> {
        let mut stale_chains = std::mem::take(&mut self.stale_chains);
        for (family, chain) in stale {
            if gone(*family, chain) {
                stale_chains.retain(|c| c != &(*family, chain.clone()));
                self.chain_deletes
                    .push(Operation::DeleteChain(*family, chain.clone()));
            }
        }
        Plan {
            operations: self.into_operations(),
            stale_chains,
        }
    }

    fn into_operations(self) -> Vec<Operation<'a>> {
        [
            self.tables,
            self.flushes,
            self.element_deletes,
            self.object_deletes,
            self.chain_adds,
            self.adds,
            self.element_adds,
            self.rules,
            self.elements_after_rules,
            self.chain_deletes,
            self.table_deletes,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

fn diff_table<'a>(steps: &mut Steps<'a>, old: &Table, new: &'a Table) {
    let family = new.family;
    let mut recreated = BTreeSet::new();
    // The kernel finds a set by name by walking the table's sets in creation order, once per
    // reference in every rule added. So the sets that many rules name come first: the
    // affinity set (the one set with a timeout; two references in every ClientIP-affinity
    // endpoint rule), then the endpoint maps (one in every DNAT rule), then the sets and maps
    // that a handful of rules read. At 10,000 Services, with the affinity set behind the
    // ~1,000 endpoint maps, `nft_dynset_init` alone was 4.6 % of a cold apply's samples; set
    // first, the cold apply's median fell by 10 % (10 runs each, docs/benchmarks.md).
    let dynamic = |set: &&Set| set.timeout.is_some();
    diff_containers(
        steps,
        family,
        old.sets.iter().filter(dynamic),
        new.sets.iter().filter(dynamic),
        &mut recreated,
    );
    diff_containers(
        steps,
        family,
        &old.endpoint_maps,
        &new.endpoint_maps,
        &mut recreated,
    );
    let fixed = |set: &&Set| set.timeout.is_none();
    diff_containers(
        steps,
        family,
        old.sets.iter().filter(fixed),
        new.sets.iter().filter(fixed),
        &mut recreated,
    );
    diff_containers(steps, family, &old.maps, &new.maps, &mut recreated);
    diff_chains(steps, family, &old.chains, &new.chains, &recreated);
}

/// The named sets and maps a rule reads or writes.
fn referenced_sets(rule: &Rule) -> impl Iterator<Item = &str> {
    let lookups = rule.matches.iter().filter_map(|m| match m {
        Match::Lookup {
            set: SetRef::Named(name),
            ..
        } => Some(name.as_str()),
        _ => None,
    });
    let updates = rule.statements.iter().filter_map(|s| match s {
        Statement::UpdateSet { set, .. } => Some(set.as_str()),
        _ => None,
    });
    let vmaps = rule.action.iter().filter_map(|a| match a {
        Action::Vmap { map, .. } | Action::Dnat(Dnat::Numgen { map, .. }) => Some(map.as_str()),
        _ => None,
    });
    lookups.chain(updates).chain(vmaps)
}

/// What named sets and verdict maps share when diffed: a definition that can only change by
/// deleting and re-creating the object, and elements that change in place.
trait Container {
    fn name(&self) -> &str;
    /// Same definition (everything but the elements).
    fn same_definition(&self, other: &Self) -> bool;
    /// Element deletions and additions from `before` to `self`.
    fn diff_elements<'a>(&'a self, before: &Self, family: Family, steps: &mut Steps<'a>);
    /// The same elements in the same order.
    fn same_elements(&self, other: &Self) -> bool;
    /// Creates it (sets and verdict maps with their elements, in the same operation).
    fn create<'a>(&'a self, family: Family, steps: &mut Steps<'a>);
}

impl Container for Set {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_elements(&self, other: &Self) -> bool {
        self.elements == other.elements
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.key == other.key
            && self.interval == other.interval
            && self.timeout == other.timeout
            && self.size == other.size
            && self.comment == other.comment
    }

    fn create<'a>(&'a self, family: Family, steps: &mut Steps<'a>) {
        steps.adds.push(Operation::Add(family, Object::Set(self)));
    }

    fn diff_elements<'a>(&'a self, before: &Self, family: Family, steps: &mut Steps<'a>) {
        // Dynamic sets (timeouts) are filled by the dataplane: never touch their elements.
        if self.timeout.is_some() {
            return;
        }
        let old: BTreeSet<&Vec<Value>> = before.elements.iter().collect();
        let new: BTreeSet<&Vec<Value>> = self.elements.iter().collect();
        let gone: Vec<Vec<Value>> = before
            .elements
            .iter()
            .filter(|e| !new.contains(e))
            .cloned()
            .collect();
        let added: Vec<Vec<Value>> = self
            .elements
            .iter()
            .filter(|e| !old.contains(e))
            .cloned()
            .collect();
        if !gone.is_empty() {
            steps
                .element_deletes
                .push(Operation::DeleteElements(family, self.name.clone(), gone));
        }
        if !added.is_empty() {
            steps
                .element_adds
                .push(Operation::AddSetElements(family, self.name.clone(), added));
        }
    }
}

impl Container for Map {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_elements(&self, other: &Self) -> bool {
        self.elements == other.elements
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.key == other.key && self.comment == other.comment
    }

    fn create<'a>(&'a self, family: Family, steps: &mut Steps<'a>) {
        steps.adds.push(Operation::Add(family, Object::Map(self)));
    }

    fn diff_elements<'a>(&'a self, before: &Self, family: Family, steps: &mut Steps<'a>) {
        let old: BTreeMap<&Vec<Value>, &Verdict> = before
            .elements
            .iter()
            .map(|e| (&e.key, &e.verdict))
            .collect();
        let new: BTreeMap<&Vec<Value>, &Verdict> =
            self.elements.iter().map(|e| (&e.key, &e.verdict)).collect();
        // A changed verdict is a delete and an add of the same key, in one transaction.
        let gone: Vec<Vec<Value>> = before
            .elements
            .iter()
            .filter(|e| new.get(&e.key) != Some(&&e.verdict))
            .map(|e| e.key.clone())
            .collect();
        let added: Vec<VerdictElement> = self
            .elements
            .iter()
            .filter(|e| old.get(&e.key) != Some(&&e.verdict))
            .cloned()
            .collect();
        if !gone.is_empty() {
            steps
                .element_deletes
                .push(Operation::DeleteElements(family, self.name.clone(), gone));
        }
        if !added.is_empty() {
            steps
                .element_adds
                .push(Operation::AddMapElements(family, self.name.clone(), added));
        }
    }
}

impl Container for EndpointMap {
    fn name(&self) -> &str {
        &self.name
    }

    fn same_elements(&self, other: &Self) -> bool {
        self.elements == other.elements
    }

    fn same_definition(&self, other: &Self) -> bool {
        self.comment == other.comment
    }

    /// Created empty and filled after the rules: when a rule that reads a map is added, the
    /// kernel walks every element of the map (`nf_tables_bind_set`), so in a cold apply 10,000
    /// DNAT rules binding to filled maps walked some 1.8 million ranges.
    fn create<'a>(&'a self, family: Family, steps: &mut Steps<'a>) {
        let empty = EndpointMap {
            name: self.name.clone(),
            comment: self.comment.clone(),
            elements: Vec::new(),
        };
        steps
            .adds
            .push(Operation::Add(family, Object::EndpointMap(empty)));
        if !self.elements.is_empty() {
            steps.elements_after_rules.push(Operation::AddEndpoints(
                family,
                self.name.clone(),
                Cow::Borrowed(&self.elements),
            ));
        }
    }

    fn diff_elements<'a>(&'a self, before: &Self, family: Family, steps: &mut Steps<'a>) {
        // A range is its bounds and its target: a range that keeps its bounds but changes
        // endpoint is deleted and added again, in one transaction.
        let old: BTreeSet<&EndpointRange> = before.elements.iter().collect();
        let new: BTreeSet<&EndpointRange> = self.elements.iter().collect();
        let gone: Vec<EndpointRange> = old.difference(&new).map(|r| **r).collect();
        let added: Vec<EndpointRange> = new.difference(&old).map(|r| **r).collect();
        if !gone.is_empty() {
            steps
                .element_deletes
                .push(Operation::DeleteEndpoints(family, self.name.clone(), gone));
        }
        if !added.is_empty() {
            steps.element_adds.push(Operation::AddEndpoints(
                family,
                self.name.clone(),
                Cow::Owned(added),
            ));
        }
    }
}

/// Diffs the sets (or the maps) of a table. `recreated` collects those deleted and re-created in
/// this plan: the kernel refuses to delete a set that rules still use, so chains using them are
/// rewritten too.
/// Diffs the containers of one kind; new ones are created in the order of `new`.
fn diff_containers<'old, 'a, T: Container + 'old + 'a>(
    steps: &mut Steps<'a>,
    family: Family,
    old: impl IntoIterator<Item = &'old T>,
    new: impl IntoIterator<Item = &'a T>,
    recreated: &mut BTreeSet<String>,
) {
    let old: Vec<&T> = old.into_iter().collect();
    let new: Vec<&T> = new.into_iter().collect();
    let old_by_name: BTreeMap<&str, &T> = old.iter().map(|c| (c.name(), *c)).collect();
    let new_names: BTreeSet<&str> = new.iter().map(|c| c.name()).collect();
    for gone in old.iter().filter(|c| !new_names.contains(c.name())) {
        steps
            .object_deletes
            .push(Operation::DeleteSet(family, gone.name().to_string()));
    }
    for container in new {
        match old_by_name.get(container.name()) {
            Some(before) if before.same_definition(container) => {
                // Nearly every container is unchanged in a small sync: one linear comparison
                // is far cheaper than indexing its elements.
                if !container.same_elements(before) {
                    container.diff_elements(before, family, steps);
                }
            }
            Some(_) => {
                recreated.insert(container.name().to_string());
                steps
                    .object_deletes
                    .push(Operation::DeleteSet(family, container.name().to_string()));
                container.create(family, steps);
            }
            None => container.create(family, steps),
        }
    }
}

fn diff_chains<'a>(
    steps: &mut Steps<'a>,
    family: Family,
    old: &[Chain],
    new: &'a [Chain],
    recreated: &BTreeSet<String>,
) {
    // The common small sync: the same chains in the same order, compared pairwise without
    // indexing them by name.
    if old.len() == new.len() && old.iter().zip(new).all(|(a, b)| a.name == b.name) {
        for (before, chain) in old.iter().zip(new) {
            diff_chain(steps, family, Some(before), chain, recreated);
        }
        return;
    }
    let old_by_name: BTreeMap<&str, &Chain> = old.iter().map(|c| (c.name.as_str(), c)).collect();
    let new_names: BTreeSet<&str> = new.iter().map(|c| c.name.as_str()).collect();
    for chain in old.iter().filter(|c| !new_names.contains(c.name.as_str())) {
        if !chain.rules.is_empty() {
            steps
                .flushes
                .push(Operation::FlushChain(family, chain.name.clone()));
        }
        steps.stale_chains.push((family, chain.name.clone()));
    }
    for chain in new {
        let before = old_by_name.get(chain.name.as_str()).copied();
        diff_chain(steps, family, before, chain, recreated);
    }
}

/// The operations that turn `before` (the kernel's copy, if any) into the wanted `chain`.
fn diff_chain<'a>(
    steps: &mut Steps<'a>,
    family: Family,
    before: Option<&Chain>,
    chain: &'a Chain,
    recreated: &BTreeSet<String>,
) {
    let add_rules = |steps: &mut Steps<'a>| {
        for rule in &chain.rules {
            steps
                .rules
                .push(Operation::AddRule(family, &chain.name, rule));
        }
    };
    let declare = |steps: &mut Steps<'a>| {
        // Field by field, like the empty table in `plan`: `..chain.clone()` would copy the
        // chain's rules only to drop them.
        steps.chain_adds.push(Operation::Add(
            family,
            Object::Chain(Chain {
                name: chain.name.clone(),
                hook: chain.hook,
                comment: chain.comment.clone(),
                rules: Vec::new(),
            }),
        ));
    };
    match before {
        Some(before) if same_hook(before.hook, chain.hook) && before.comment == chain.comment => {
            let uses_recreated = || {
                !recreated.is_empty()
                    && before
                        .rules
                        .iter()
                        .flat_map(referenced_sets)
                        .any(|set| recreated.contains(set))
            };
            if before.rules != chain.rules || uses_recreated() {
                steps
                    .flushes
                    .push(Operation::FlushChain(family, chain.name.clone()));
                add_rules(steps);
            }
        }
        Some(_) => {
            // A changed hook or comment: re-create the chain in this transaction.
            steps
                .flushes
                .push(Operation::FlushChain(family, chain.name.clone()));
            steps
                .object_deletes
                .push(Operation::DeleteChain(family, chain.name.clone()));
            declare(steps);
            add_rules(steps);
        }
        None => {
            declare(steps);
            add_rules(steps);
        }
    }
}

/// Hooks compare by what the kernel sees: `dstnat - 10` and `-110` are the same priority.
fn same_hook(a: Option<BaseHook>, b: Option<BaseHook>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.kind == b.kind && a.hook == b.hook && a.priority.value() == b.priority.value()
        }
        (a, b) => a.is_none() && b.is_none(),
    }
}

impl fmt::Display for Plan<'_> {
    /// The plan as an `nft -f` script (one transaction when loaded with `nft -f`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for operation in &self.operations {
            writeln!(f, "{operation}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Operation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = |family: &Family| format!("{} {TABLE_NAME}", nft::family(*family));
        let mut out: String;
        match self {
            Operation::AddTable(family) => out = format!("add table {}", table(family)),
            Operation::DeleteTable(family) => out = format!("delete table {}", table(family)),
            Operation::DeleteOtherTable(family, name) => {
                out = format!("delete table {} {name}", nft::family(*family))
            }
            Operation::FlushChain(family, chain) => {
                out = format!("flush chain {} {chain}", table(family))
            }
            Operation::DeleteChain(family, chain) => {
                out = format!("delete chain {} {chain}", table(family))
            }
            Operation::DeleteSet(family, set) => {
                out = format!("delete set {} {set}", table(family))
            }
            Operation::DeleteElements(family, set, keys) => {
                out = format!("delete element {} {set} {{ ", table(family));
                join(&mut out, keys, |out, key| nft::values(out, key))?;
                out.push_str(" }");
            }
            Operation::AddSetElements(family, set, keys) => {
                out = format!("add element {} {set} {{ ", table(family));
                join(&mut out, keys, |out, key| nft::values(out, key))?;
                out.push_str(" }");
            }
            Operation::AddMapElements(family, map, elements) => {
                out = format!("add element {} {map} {{ ", table(family));
                join(&mut out, elements, |out, element| {
                    nft::values(out, &element.key)?;
                    out.push_str(" : ");
                    nft::verdict(out, &element.verdict);
                    Ok(())
                })?;
                out.push_str(" }");
            }
            Operation::DeleteEndpoints(family, map, ranges) => {
                out = format!("delete element {} {map} {{ ", table(family));
                join(&mut out, ranges, |out, range| {
                    write!(out, "{}-{}", range.first, range.last)
                })?;
                out.push_str(" }");
            }
            Operation::AddEndpoints(family, map, ranges) => {
                out = format!("add element {} {map} {{ ", table(family));
                join(&mut out, ranges, nft::endpoint_range)?;
                out.push_str(" }");
            }
            Operation::Add(family, object) => {
                out = format!("table {} {{\n", table(family));
                match object {
                    Object::Set(set) => nft::set(&mut out, *family, set)?,
                    Object::Map(map) => nft::map(&mut out, map)?,
                    Object::EndpointMap(map) => nft::endpoint_map(&mut out, *family, map)?,
                    Object::Chain(chain) => nft::chain(&mut out, *family, chain)?,
                }
                out.push('}');
            }
            Operation::AddRule(family, chain, rule) => {
                out = format!("add rule {} {chain} ", table(family));
                nft::rule(&mut out, *family, rule)?;
            }
        }
        f.write_str(&out)
    }
}

fn join<T>(
    out: &mut String,
    items: &[T],
    mut write: impl FnMut(&mut String, &T) -> fmt::Result,
) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, item)?;
    }
    Ok(())
}
