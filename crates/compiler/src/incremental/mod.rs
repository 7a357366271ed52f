//! Recompiling only what changed: the compiled tables kept as one fragment per Service port.
//!
//! A daemon sync that follows one EndpointSlice update must cost what the update costs, not
//! what the cluster costs: compiling 50,000 Services again and diffing two whole rulesets takes
//! a tenth of a second, the kernel transaction for one endpoint a few milliseconds. So
//! [`Incremental`] keeps every Service port (the model's, a few times smaller than its
//! compiled chains) and, per family, the state that ports share: reference counts of set
//! elements, every claim on each map key, and the endpoint-map windows. What a port contributes
//! (its [`Fragment`]: chains, set and map elements) is compiled again when it is
//! needed — about 12 µs. [`Incremental::update`] compiles the changed ports' old and new
//! fragments and returns a [`RulesetChange`]: the old and new state of exactly the objects they
//! touch, which the syncer diffs into kernel operations.
//!
//! The result is the same as compiling everything again ([`crate::compile`]), down to every
//! window: a chain's window depends on the other chains of its endpoint-map shard, so a changed
//! shard is placed again with the same algorithm (a shard holds about one chain in 700), and
//! chains of unchanged ports that move are part of the change.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_model::{IpFamily, NodeInfo, ProxyState, ServicePort, ServicePortName};

use crate::endpoint_maps::{self, Placement};
use crate::endpoints::EndpointChain;
use crate::ir::{Chain, EndpointRange, Ruleset, Table, Value, Verdict, TABLE_NAME};
use crate::table::{self, Assembly, ChainSlot, Fragment, TableBuilder};
use crate::{MapName, Options, SetName};

/// One Service port's new content, or its removal.
#[derive(Debug, Clone)]
pub enum PortChange {
    /// The port as it is now (added or updated; an unchanged port costs one comparison).
    Set(ServicePort),
    /// The port no longer exists.
    Remove(ServicePortName),
}

/// What a partial sync changes. For every table that changes, `before` holds the old state of
/// every object the change touches and `after` the new one: the touched chains, the touched
/// elements of each set and map, the endpoint-map ranges of the changed ports. Untouched chains and elements are left out of both, so diffing `before` against
/// `after` yields exactly the operations that turn the whole old ruleset into the whole new one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesetChange {
    /// The touched objects as the kernel holds them.
    pub before: Ruleset,
    /// The same objects as they must become (same families, same order).
    pub after: Ruleset,
}

impl RulesetChange {
    /// True when no table changes.
    pub fn is_empty(&self) -> bool {
        self.after.tables.is_empty()
    }
}

/// The compiled ruleset of one node, updatable one Service port at a time. The options and the
/// node are fixed: a different node (zone, addresses) changes rules of every Service and needs
/// a new [`Incremental`].
#[derive(Debug)]
pub struct Incremental {
    options: Options,
    node: NodeInfo,
    /// Every Service port, as last compiled.
    ports: BTreeMap<ServicePortName, ServicePort>,
    /// IPv4, then IPv6.
    families: Vec<FamilyState>,
}

impl Incremental {
    /// Compiles `state`, keeping what each port contributed.
    pub fn new(state: &ProxyState, options: &Options) -> Incremental {
        Incremental::from_state(state.clone(), options)
    }

    /// As [`new`](Self::new), taking the state: its ports are kept, not copied.
    pub fn from_state(state: ProxyState, options: &Options) -> Incremental {
        let mut compiled = Incremental {
            options: options.clone(),
            node: state.node,
            ports: BTreeMap::new(),
            families: IpFamily::ALL.into_iter().map(FamilyState::new).collect(),
        };
        compiled.apply(state.ports.into_iter().map(PortChange::Set), false);
        compiled
    }

    /// The whole ruleset: what [`crate::compile`] returns for the current ports.
    pub fn ruleset(&self) -> Ruleset {
        let tables = self
            .families
            .iter()
            .filter(|family| self.in_use(family))
            .map(|family| {
                let mut builder = TableBuilder::new(&self.options, &self.node, family.ip_family);
                let mut assembly = Assembly::default();
                for port in self.ports.values() {
                    if let Some(fragment) = builder.port(port) {
                        assembly.add(fragment);
                    }
                }
                builder.finish(assembly)
            })
            .collect();
        Ruleset { tables }
    }

    /// Applies `changes` and returns what changed in the ruleset, or `None` when a table
    /// appears or disappears (the first or last port of an IP family): the caller then syncs
    /// [`ruleset`](Self::ruleset) whole. Either way the state is updated.
    pub fn update(
        &mut self,
        changes: impl IntoIterator<Item = PortChange>,
    ) -> Option<RulesetChange> {
        let in_use_before: Vec<bool> = self.families.iter().map(|f| self.in_use(f)).collect();
        let change = self.apply(changes, true);
        let in_use_after: Vec<bool> = self.families.iter().map(|f| self.in_use(f)).collect();
        (in_use_before == in_use_after).then_some(change)
    }

    /// Applies `changes`; with `record`, returns the touched objects before and after.
    fn apply(
        &mut self,
        changes: impl IntoIterator<Item = PortChange>,
        record: bool,
    ) -> RulesetChange {
        // The ports that really change, with their old and new versions.
        let mut changed: BTreeMap<ServicePortName, (Option<ServicePort>, Option<ServicePort>)> =
            BTreeMap::new();
        for change in changes {
            let (name, new) = match change {
                PortChange::Set(port) => (port.name.clone(), Some(port)),
                PortChange::Remove(name) => (name, None),
            };
            let old = match changed.remove(&name) {
                Some((old, _)) => old,
                None => self.ports.get(&name).cloned(),
            };
            if old != new {
                changed.insert(name, (old, new));
            }
        }
        let mut change = RulesetChange::default();
        if changed.is_empty() {
            return change;
        }
        let Incremental {
            options,
            node,
            ports,
            families,
        } = self;
        // `ports` still holds the old versions here; the families read it only for ports
        // whose fragment in that family does not change.
        for family in families.iter_mut() {
            let mut builder = TableBuilder::new(options, node, family.ip_family);
            if let Some((before, after)) = family.update(&mut builder, ports, &changed, record) {
                change.before.tables.push(before);
                change.after.tables.push(after);
            }
        }
        for (name, (_, new)) in changed {
            match new {
                Some(port) => ports.insert(name, port),
                None => ports.remove(&name),
            };
        }
        change
    }

    /// Whether `family`'s table exists: as [`crate::compile`] decides.
    fn in_use(&self, family: &FamilyState) -> bool {
        family.ip_family == IpFamily::V4
            || family.ports > 0
            || self
                .node
                .primary_ips
                .iter()
                .any(|ip| IpFamily::of(*ip) == family.ip_family)
            || !self.options.cluster_cidrs(family.ip_family).is_empty()
    }
}

/// One family's compiled ports and the shared state their fragments feed.
#[derive(Debug)]
struct FamilyState {
    ip_family: IpFamily,
    /// Service ports with an address of this family.
    ports: usize,
    /// How many fragments hold each set element.
    elements: BTreeMap<(SetName, Vec<Value>), u32>,
    /// Every claim on each map key, in claim order (port, then position in its fragment): the
    /// first claim is the element.
    claims: BTreeMap<(MapName, Vec<Value>), Claims>,
    /// Endpoint chains per shard, in placement order (preferred window, name).
    shards: BTreeMap<u32, BTreeMap<(u32, String), Slot>>,
}

/// The claims on one map key, sorted by port and position in the port's fragment. Nearly
/// every key has one claim, so a sorted vector (not a tree, whose smallest node holds eleven)
/// keeps them.
type Claims = Vec<((ServicePortName, usize), Verdict)>;

/// An endpoint chain's place in its shard.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    port: ServicePortName,
    /// Its window, once placed; `None` when the shard is full.
    offset: Option<u32>,
}

/// The old or new state of what a change touches, gathered while it is applied.
#[derive(Default)]
struct Side {
    chains: Vec<Chain>,
    elements: BTreeMap<SetName, Vec<Vec<Value>>>,
    verdicts: BTreeMap<MapName, Vec<(Vec<Value>, Verdict)>>,
    ranges: BTreeMap<u32, Vec<EndpointRange>>,
    /// Shards whose map exists on this side.
    maps: BTreeSet<u32>,
}

impl FamilyState {
    fn new(ip_family: IpFamily) -> FamilyState {
        FamilyState {
            ip_family,
            ports: 0,
            elements: BTreeMap::new(),
            claims: BTreeMap::new(),
            shards: BTreeMap::new(),
        }
    }

    /// Takes `changed` ports (old and new version, `None` when absent) out of and into the
    /// shared state; `ports` holds every port's version before the change. With `record`, returns the
    /// touched objects before and after, or `None` when nothing changed in this family.
    fn update(
        &mut self,
        builder: &mut TableBuilder<'_>,
        ports: &BTreeMap<ServicePortName, ServicePort>,
        changed: &BTreeMap<ServicePortName, (Option<ServicePort>, Option<ServicePort>)>,
        record: bool,
    ) -> Option<(Table, Table)> {
        // Old and new fragments of the ports whose contribution to this family changes.
        let mut fragments: Vec<(&ServicePortName, Option<Fragment>, Option<Fragment>)> = Vec::new();
        for (name, (old, new)) in changed {
            let old = old.as_ref().and_then(|port| builder.port(port));
            let new = new.as_ref().and_then(|port| builder.port(port));
            if old != new {
                fragments.push((name, old, new));
            }
        }
        if fragments.is_empty() {
            return None;
        }
        let touched = Touched::of(
            fragments
                .iter()
                .flat_map(|(_, old, new)| old.iter().chain(new)),
            record,
        );
        let mut before = Side::default();
        let old_offsets = if record {
            for (_, old, _) in &fragments {
                self.capture_fragment(&mut before, old.as_ref());
            }
            self.capture_elements(&mut before, &touched);
            self.offsets(&touched.shards)
        } else {
            BTreeMap::new()
        };
        for (name, old, new) in &fragments {
            if let Some(old) = old {
                self.forget(name, old);
                self.ports -= 1;
            }
            if let Some(new) = new {
                self.remember(name, new);
                self.ports += 1;
            }
        }
        for shard in &touched.shards {
            self.place(*shard);
        }
        if !record {
            return None;
        }
        let mut after = Side::default();
        for (_, _, new) in &fragments {
            self.capture_fragment(&mut after, new.as_ref());
        }
        self.capture_elements(&mut after, &touched);
        // Chains of other ports that a changed shard moved to another window (a port whose
        // fragment changed is already on both sides).
        let recompiled: BTreeSet<&ServicePortName> = fragments.iter().map(|f| f.0).collect();
        for (chain, (port, old_offset)) in old_offsets {
            if recompiled.contains(&port) {
                continue;
            }
            let Some(new_offset) = self.offset_of(&chain) else {
                continue;
            };
            if new_offset == old_offset {
                continue;
            }
            let Some(fragment) = ports.get(&port).and_then(|p| builder.port(p)) else {
                continue;
            };
            let Some(endpoint_chain) = endpoint_chains(&fragment).find(|c| c.name == chain) else {
                continue;
            };
            render(&mut before, endpoint_chain, old_offset);
            render(&mut after, endpoint_chain, new_offset);
        }
        Some((side_table(builder, before), side_table(builder, after)))
    }

    /// Records the current state of every element and map key `touched` names, and whether
    /// each touched shard's map exists.
    fn capture_elements(&self, side: &mut Side, touched: &Touched) {
        for key in &touched.elements {
            if self.elements.contains_key(key) {
                side.elements.entry(key.0).or_default().push(key.1.clone());
            }
        }
        for key in &touched.verdicts {
            if let Some((_, verdict)) = self.claims.get(key).and_then(|c| c.first()) {
                side.verdicts
                    .entry(key.0)
                    .or_default()
                    .push((key.1.clone(), verdict.clone()));
            }
        }
        // A shard's map exists while a chain has a window in it (its rule names the map, even
        // with no endpoint to pick).
        for shard in &touched.shards {
            let placed = self
                .shards
                .get(shard)
                .is_some_and(|slots| slots.values().any(|s| s.offset.is_some()));
            if placed {
                side.maps.insert(*shard);
            }
        }
    }

    /// Records a fragment's chains (endpoint chains in their current windows).
    fn capture_fragment(&self, side: &mut Side, fragment: Option<&Fragment>) {
        let Some(fragment) = fragment else {
            return;
        };
        for slot in &fragment.chains {
            match slot {
                ChainSlot::Ready(chain) => side.chains.push(chain.clone()),
                ChainSlot::Endpoints(chain) => {
                    let offset = self.offset_of(&chain.name).flatten();
                    render(side, chain, offset);
                }
            }
        }
    }

    /// The window of every endpoint chain in `shards`, with its port.
    fn offsets(&self, shards: &BTreeSet<u32>) -> BTreeMap<String, (ServicePortName, Option<u32>)> {
        shards
            .iter()
            .filter_map(|shard| self.shards.get(shard))
            .flatten()
            .map(|((_, name), slot)| (name.clone(), (slot.port.clone(), slot.offset)))
            .collect()
    }

    /// The window of an endpoint chain: `None` if it is not in the table.
    fn offset_of(&self, chain: &str) -> Option<Option<u32>> {
        let (shard, preferred) = endpoint_maps::slot(chain);
        self.shards
            .get(&shard)?
            .get(&(preferred, chain.to_string()))
            .map(|slot| slot.offset)
    }

    /// Adds what `fragment` (of port `name`) holds to the shared state.
    fn remember(&mut self, name: &ServicePortName, fragment: &Fragment) {
        for (set, key) in &fragment.elements {
            *self.elements.entry((*set, key.clone())).or_default() += 1;
        }
        for (index, (map, key, verdict)) in fragment.verdicts.iter().enumerate() {
            let claims = self.claims.entry((*map, key.clone())).or_default();
            let claim = (name.clone(), index);
            let at = claims.partition_point(|(c, _)| *c < claim);
            // Exactly one more: nearly every key keeps a single claim, and a Vec's first
            // growth would make room for four (~400 bytes each, 12,000 keys at 10,000 Services).
            claims.reserve_exact(1);
            claims.insert(at, (claim, verdict.clone()));
        }
        for chain in endpoint_chains(fragment) {
            let (shard, preferred) = endpoint_maps::slot(&chain.name);
            self.shards.entry(shard).or_default().insert(
                (preferred, chain.name.clone()),
                Slot {
                    port: name.clone(),
                    offset: None,
                },
            );
        }
    }

    /// Takes what `fragment` (of port `name`) held out of the shared state.
    fn forget(&mut self, name: &ServicePortName, fragment: &Fragment) {
        for (set, key) in &fragment.elements {
            let key = (*set, key.clone());
            if let Some(count) = self.elements.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.elements.remove(&key);
                }
            }
        }
        for (index, (map, key, _)) in fragment.verdicts.iter().enumerate() {
            let key = (*map, key.clone());
            if let Some(claims) = self.claims.get_mut(&key) {
                claims.retain(|((port, at), _)| !(port == name && *at == index));
                if claims.is_empty() {
                    self.claims.remove(&key);
                }
            }
        }
        for chain in endpoint_chains(fragment) {
            let (shard, preferred) = endpoint_maps::slot(&chain.name);
            if let Some(slots) = self.shards.get_mut(&shard) {
                slots.remove(&(preferred, chain.name.clone()));
                if slots.is_empty() {
                    self.shards.remove(&shard);
                }
            }
        }
    }

    /// Places one shard's chains again, as compiling everything would.
    fn place(&mut self, shard: u32) {
        let Some(slots) = self.shards.get_mut(&shard) else {
            return;
        };
        let offsets = endpoint_maps::place_in_shard(slots.keys().map(|(preferred, _)| *preferred));
        for (slot, offset) in slots.values_mut().zip(offsets) {
            slot.offset = offset;
        }
    }
}

/// The set keys, map keys and endpoint shards some fragments touch.
#[derive(Default)]
struct Touched {
    elements: BTreeSet<(SetName, Vec<Value>)>,
    verdicts: BTreeSet<(MapName, Vec<Value>)>,
    shards: BTreeSet<u32>,
}

impl Touched {
    /// What `fragments` touch; only their shards unless `with_keys`.
    fn of<'f>(fragments: impl Iterator<Item = &'f Fragment>, with_keys: bool) -> Touched {
        let mut touched = Touched::default();
        for fragment in fragments {
            for chain in endpoint_chains(fragment) {
                touched.shards.insert(endpoint_maps::slot(&chain.name).0);
            }
            if !with_keys {
                continue;
            }
            for (set, key) in &fragment.elements {
                touched.elements.insert((*set, key.clone()));
            }
            for (map, key, _) in &fragment.verdicts {
                touched.verdicts.insert((*map, key.clone()));
            }
        }
        touched
    }
}

fn endpoint_chains(fragment: &Fragment) -> impl Iterator<Item = &EndpointChain> {
    fragment.chains.iter().filter_map(|slot| match slot {
        ChainSlot::Endpoints(chain) => Some(chain),
        ChainSlot::Ready(_) => None,
    })
}

/// Adds an endpoint chain, in the window at `offset`, and its ranges to `side`.
fn render(side: &mut Side, chain: &EndpointChain, offset: Option<u32>) {
    let shard = endpoint_maps::slot(&chain.name).0;
    let placement = offset.map(|offset| Placement { shard, offset });
    let (rendered, mut ranges) = chain.render(placement.as_ref());
    side.chains.push(rendered);
    side.ranges.entry(shard).or_default().append(&mut ranges);
}

/// A partial table holding one side of a change: the global sets and maps with only the
/// touched elements, the touched endpoint maps and chains.
fn side_table(builder: &TableBuilder<'_>, side: Side) -> Table {
    let Side {
        chains,
        elements,
        verdicts,
        mut ranges,
        maps,
    } = side;
    let sets = builder.global_sets(elements);
    let endpoint_maps = maps
        .into_iter()
        .map(|shard| table::endpoint_map(shard, ranges.remove(&shard).unwrap_or_default()))
        .collect();
    Table {
        family: builder.family,
        name: TABLE_NAME.to_string(),
        sets,
        maps: builder.global_maps(verdicts),
        endpoint_maps,
        chains,
    }
}

#[cfg(test)]
mod tests;
