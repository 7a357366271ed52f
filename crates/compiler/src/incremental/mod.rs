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
//!
//! The kernel holds no port chains but bucket chains ([`crate::buckets`]), each the inlined
//! rules of the keys in it. A bucket is rendered again, before and after, when a key in it
//! changes hands or a port whose rules it holds reads differently (its fragment changed, or
//! its window moved); its other ports' fragments are then compiled again as well (about 70 per
//! bucket at 50,000 Services). An endpoint change usually touches no bucket: its DNAT rule
//! reads the same window.

use std::collections::{BTreeMap, BTreeSet};

use kproxy_model::{IpFamily, NodeInfo, ProxyState, ServicePort, ServicePortName};

use crate::buckets;
use crate::endpoint_maps::{self, Placement};
use crate::endpoints::EndpointChain;
use crate::ir::{Chain, EndpointRange, Ruleset, Table, Value, Verdict, TABLE_NAME};
use crate::table::{self, Assembly, ChainSlot, Fragment, TableBuilder};
use crate::{MapName, Options, SetName};

mod packed;

use packed::PackedKey;

/// One Service port's new content, or its removal.
#[derive(Debug, Clone)]
pub enum PortChange {
    /// The port as it is now (added or updated; an unchanged port costs one comparison).
    Set(ServicePort),
    /// The port no longer exists.
    Remove(ServicePortName),
}

/// What a partial sync changes. For every table that changes, `before` holds the old state of
/// every object the change touches and `after` the new one: the touched bucket chains, the
/// touched elements of each set and map, the endpoint-map ranges of the changed ports. Untouched chains and elements are left out of both, so diffing `before` against
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
    ports: Ports,
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

    /// The names of Service `namespace/service`'s compiled ports, in name order: what an
    /// update of that Service replaces.
    pub fn service_ports(&self, namespace: &str, service: &str) -> Vec<ServicePortName> {
        ServicePortName::of_service(&self.ports, namespace, service)
            .map(|(name, _)| name.clone())
            .collect()
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
                None => self.ports.get(&name).map(|port| ServicePort::clone(port)),
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
                Some(port) => ports.insert(name, Box::new(port)),
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

/// Every Service port by name. Boxed: a tree node holds eleven entries and is about a third
/// empty on average, and a 104-byte port beside its 56-byte name made that slack ~3 MB at
/// 50,000 Services.
type Ports = BTreeMap<ServicePortName, Box<ServicePort>>;

/// One family's compiled ports and the shared state their fragments feed.
#[derive(Debug)]
struct FamilyState {
    ip_family: IpFamily,
    /// Service ports with an address of this family.
    ports: usize,
    /// How many fragments hold each set element (keyed by [`PackedKey::element`]).
    elements: BTreeMap<PackedKey, u32>,
    /// Every claim on each map key, in claim order (port, then position in its fragment): the
    /// first claim is the element. Keyed by bucket before key, so a bucket's keys are a range.
    claims: BTreeMap<ClaimKey, Claims>,
    /// Endpoint chains per shard, in placement order (preferred window, name).
    shards: BTreeMap<u32, BTreeMap<(u32, String), Slot>>,
}

/// Endpoint chains by name, each with its port and a window (`None`: none).
type Offsets = BTreeMap<String, (ServicePortName, Option<u32>)>;

/// The claims on one map key, sorted by port and position in the port's fragment. Nearly
/// every key has one claim, so a sorted vector (not a tree, whose smallest node holds eleven)
/// keeps them.
type Claims = Vec<((ServicePortName, usize), Verdict)>;

/// A map key with its bucket ([`buckets::bucket_of`]; 0 for maps without buckets).
type ClaimKey = (MapName, u16, PackedKey);

fn claim_key(map: MapName, key: &[Value]) -> ClaimKey {
    let bucket = if buckets::dispatches(map) {
        buckets::bucket_of(map, key)
    } else {
        0
    };
    (map, bucket, PackedKey::new(key))
}

/// The keys of one bucket with the winning claim on each: which port's chains it inlines.
type Entries<'a> = Vec<(Vec<Value>, &'a ServicePortName, &'a Verdict)>;

/// A bucket's key with its winning claim, borrowed from the claims.
type Claimed<'a> = (&'a PackedKey, &'a ServicePortName, &'a Verdict);

/// The winning claim (port, verdict) on each dispatch-map key a change touches, before it:
/// a bucket's other keys keep theirs, so these and the bucket as it is after tell what it
/// was before. `None`: the key was not in the map.
type Winners = BTreeMap<ClaimKey, Option<(ServicePortName, Verdict)>>;

/// Which side of a change a bucket is rendered for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum When {
    Before,
    After,
}

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
    /// Bucket chains.
    chains: Vec<Chain>,
    /// The buckets of those chains, by map (each has an element in its bucket map).
    buckets: BTreeMap<MapName, Vec<u16>>,
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
        ports: &Ports,
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
        // The windows chains had before the change, where they differ from after: the changed
        // ports' old chains now, other ports' chains when placing their shard moves them.
        let mut old_offsets = Offsets::new();
        let old_winners = if record {
            for (name, old, _) in &fragments {
                self.capture_ranges(&mut before, old.as_ref(), &|chain| self.current(chain));
                for chain in old.iter().flat_map(endpoint_chains) {
                    let offset = self.current(&chain.name);
                    old_offsets.insert(chain.name.clone(), ((*name).clone(), offset));
                }
            }
            self.capture_elements(&mut before, &touched);
            self.winners(&touched)
        } else {
            Winners::new()
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
        let recompiled: BTreeSet<&ServicePortName> = fragments.iter().map(|f| f.0).collect();
        for shard in &touched.shards {
            let moved = record.then_some(&mut old_offsets);
            self.place(*shard, moved, &|port| recompiled.contains(port));
        }
        if !record {
            return None;
        }
        let mut after = Side::default();
        for (_, _, new) in &fragments {
            self.capture_ranges(&mut after, new.as_ref(), &|chain| self.current(chain));
        }
        self.capture_elements(&mut after, &touched);

        let old_offset = |chain: &str| match old_offsets.get(chain) {
            Some((_, offset)) => *offset,
            None => self.current(chain),
        };
        // The fragments a bucket's entries read: the changed ports' own versions, the others
        // compiled again when a bucket needs them.
        let mut sources = Sources {
            builder,
            ports,
            changed: fragments
                .iter()
                .map(|(name, old, new)| ((*name).clone(), (old.clone(), new.clone())))
                .collect(),
            compiled: BTreeMap::new(),
        };
        // Ports whose chains read differently now: their buckets are rendered again even if no
        // key of theirs changed.
        let mut rerendered: BTreeSet<ServicePortName> = BTreeSet::new();
        for (name, old, new) in &fragments {
            let old = old.as_ref().map(|f| render_chains(f, &old_offset));
            let new = new.as_ref().map(|f| render_chains(f, &|c| self.current(c)));
            if old != new {
                rerendered.insert((*name).clone());
            }
        }
        // Chains of other ports that a changed shard moved to another window.
        let mut buckets = touched.buckets.clone();
        for (chain, (port, offset)) in &old_offsets {
            if recompiled.contains(port) || self.offset_of(chain) == Some(*offset) {
                continue;
            }
            if self.offset_of(chain).is_none() {
                continue;
            }
            let Some(fragment) = sources.fragment(port, When::After) else {
                continue;
            };
            let Some(endpoint_chain) = endpoint_chains(fragment).find(|c| &c.name == chain) else {
                continue;
            };
            let endpoint_chain = endpoint_chain.clone();
            buckets.extend(
                fragment
                    .verdicts
                    .iter()
                    .filter(|(map, _, _)| buckets::dispatches(*map))
                    .map(|(map, key, _)| (*map, buckets::bucket_of(*map, key))),
            );
            render_ranges(&mut before, &endpoint_chain, *offset);
            render_ranges(&mut after, &endpoint_chain, self.current(chain));
            rerendered.insert(port.clone());
        }
        for bucket in buckets {
            let old_in_bucket = bucket_range(&old_winners, bucket);
            let keys_changed = old_in_bucket
                .clone()
                .any(|(key, old)| self.winner(key) != old.as_ref().map(|(p, v)| (p, v)));
            let reads_rerendered = !rerendered.is_empty()
                && (bucket_range(&self.claims, bucket)
                    .filter_map(|(_, claims)| claims.first())
                    .any(|((port, _), _)| rerendered.contains(port))
                    || old_in_bucket
                        .clone()
                        .filter_map(|(_, old)| old.as_ref())
                        .any(|(port, _)| rerendered.contains(port)));
            if !keys_changed && !reads_rerendered {
                continue;
            }
            let claimed = self.claimed(bucket);
            let old_entries = entries_before(&claimed, old_in_bucket);
            let new_entries: Entries<'_> = claimed.iter().map(entry).collect();
            let old_chain = sources.bucket(bucket, &old_entries, When::Before, &old_offset);
            let new_chain = sources.bucket(bucket, &new_entries, When::After, &|c| self.current(c));
            // The bucket map's element exists while its chain does.
            if old_chain.is_some() {
                before.buckets.entry(bucket.0).or_default().push(bucket.1);
            }
            if new_chain.is_some() {
                after.buckets.entry(bucket.0).or_default().push(bucket.1);
            }
            before.chains.extend(old_chain);
            after.chains.extend(new_chain);
        }
        Some((side_table(builder, before), side_table(builder, after)))
    }

    /// The window an endpoint chain has now (`None`: none, or not in the table).
    fn current(&self, chain: &str) -> Option<u32> {
        self.offset_of(chain).flatten()
    }

    /// The winning claim on every dispatch-map key `touched` names, as it is now.
    fn winners(&self, touched: &Touched) -> Winners {
        touched
            .verdicts
            .iter()
            .filter(|(map, _)| buckets::dispatches(*map))
            .map(|(map, key)| {
                let key = claim_key(*map, key);
                let winner = self.winner(&key).map(|(p, v)| (p.clone(), v.clone()));
                (key, winner)
            })
            .collect()
    }

    /// The winning claim on one map key: the port whose chains it leads to, and how.
    fn winner(&self, key: &ClaimKey) -> Option<(&ServicePortName, &Verdict)> {
        let ((port, _), verdict) = self.claims.get(key)?.first()?;
        Some((port, verdict))
    }

    /// One bucket's keys, in key order, each with its winning claim.
    fn claimed(&self, bucket: (MapName, u16)) -> Vec<Claimed<'_>> {
        bucket_range(&self.claims, bucket)
            .filter_map(|((_, _, key), claims)| {
                let ((port, _), verdict) = claims.first()?;
                Some((key, port, verdict))
            })
            .collect()
    }

    /// Records the current state of every element and map key `touched` names, and whether
    /// each touched shard's map exists.
    fn capture_elements(&self, side: &mut Side, touched: &Touched) {
        for (set, key) in &touched.elements {
            if self.elements.contains_key(&PackedKey::element(*set, key)) {
                side.elements.entry(*set).or_default().push(key.clone());
            }
        }
        for (map, key) in &touched.verdicts {
            let claims = self.claims.get(&claim_key(*map, key));
            if let Some((_, verdict)) = claims.and_then(|c| c.first()) {
                side.verdicts
                    .entry(*map)
                    .or_default()
                    .push((key.clone(), verdict.clone()));
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

    /// Records the endpoint-map ranges of a fragment's endpoint chains, in the windows
    /// `offset` gives them.
    fn capture_ranges(
        &self,
        side: &mut Side,
        fragment: Option<&Fragment>,
        offset: &dyn Fn(&str) -> Option<u32>,
    ) {
        for chain in fragment.into_iter().flat_map(endpoint_chains) {
            render_ranges(side, chain, offset(&chain.name));
        }
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
            *self
                .elements
                .entry(PackedKey::element(*set, key))
                .or_default() += 1;
        }
        for (index, (map, key, verdict)) in fragment.verdicts.iter().enumerate() {
            let claims = self.claims.entry(claim_key(*map, key)).or_default();
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
            let key = PackedKey::element(*set, key);
            if let Some(count) = self.elements.get_mut(&key) {
                *count -= 1;
                if *count == 0 {
                    self.elements.remove(&key);
                }
            }
        }
        for (index, (map, key, _)) in fragment.verdicts.iter().enumerate() {
            let key = claim_key(*map, key);
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

    /// Places one shard's chains again, as compiling everything would. With `moved`, records
    /// the old window of every chain that moves, except those of `recompiled` ports (their
    /// slots were just taken out and put back, so they hold no old window).
    fn place(
        &mut self,
        shard: u32,
        mut moved: Option<&mut Offsets>,
        recompiled: &dyn Fn(&ServicePortName) -> bool,
    ) {
        let Some(slots) = self.shards.get_mut(&shard) else {
            return;
        };
        let offsets = endpoint_maps::place_in_shard(slots.keys().map(|(preferred, _)| *preferred));
        for (((_, chain), slot), offset) in slots.iter_mut().zip(offsets) {
            if slot.offset != offset && !recompiled(&slot.port) {
                if let Some(moved) = moved.as_deref_mut() {
                    moved.insert(chain.clone(), (slot.port.clone(), slot.offset));
                }
            }
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
    /// The buckets of the dispatch-map keys in `verdicts`.
    buckets: BTreeSet<(MapName, u16)>,
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
                if buckets::dispatches(*map) {
                    touched
                        .buckets
                        .insert((*map, buckets::bucket_of(*map, key)));
                }
            }
        }
        touched
    }
}

/// The entries of `map` (keyed by bucket, then key) in one bucket.
fn bucket_range<V>(
    map: &BTreeMap<ClaimKey, V>,
    (name, bucket): (MapName, u16),
) -> impl Iterator<Item = (&ClaimKey, &V)> + Clone {
    map.range((name, bucket, PackedKey::new(&[]))..)
        .take_while(move |((m, b, _), _)| *m == name && *b == bucket)
}

/// A bucket's entries after a change (`after`, in key order) and before it: the same, except
/// at the keys whose winner the change saw (`old`, in key order).
fn entries_before<'a>(
    after: &[Claimed<'a>],
    old: impl Iterator<Item = (&'a ClaimKey, &'a Option<(ServicePortName, Verdict)>)>,
) -> Entries<'a> {
    let mut before = Vec::with_capacity(after.len());
    let mut rest = after.iter().peekable();
    for ((_, _, key), winner) in old {
        while let Some(kept) = rest.next_if(|(k, _, _)| *k < key) {
            before.push(entry(kept));
        }
        rest.next_if(|(k, _, _)| *k == key);
        if let Some((port, verdict)) = winner {
            before.push((key.values(), port, verdict));
        }
    }
    before.extend(rest.map(entry));
    before
}

/// A key of a bucket with its winning claim, as the bucket's chain is built from.
fn entry<'a>(
    &(key, port, verdict): &Claimed<'a>,
) -> (Vec<Value>, &'a ServicePortName, &'a Verdict) {
    (key.values(), port, verdict)
}

fn endpoint_chains(fragment: &Fragment) -> impl Iterator<Item = &EndpointChain> {
    fragment.chains.iter().filter_map(|slot| match slot {
        ChainSlot::Endpoints(chain) => Some(chain),
        ChainSlot::Ready(_) => None,
    })
}

/// Adds the ranges of an endpoint chain in the window at `offset` to `side`.
fn render_ranges(side: &mut Side, chain: &EndpointChain, offset: Option<u32>) {
    let shard = endpoint_maps::slot(&chain.name).0;
    let placement = offset.map(|offset| Placement { shard, offset });
    side.ranges
        .entry(shard)
        .or_default()
        .append(&mut chain.ranges(placement.as_ref()));
}

/// A fragment's chains as they read with the windows `offset` gives its endpoint chains.
fn render_chains(fragment: &Fragment, offset: &dyn Fn(&str) -> Option<u32>) -> Vec<Chain> {
    fragment
        .chains
        .iter()
        .map(|slot| match slot {
            ChainSlot::Ready(chain) => chain.clone(),
            ChainSlot::Endpoints(chain) => {
                let shard = endpoint_maps::slot(&chain.name).0;
                let placement = offset(&chain.name).map(|offset| Placement { shard, offset });
                chain.render(placement.as_ref()).0
            }
        })
        .collect()
}

/// Where a bucket's entries find their ports' fragments.
struct Sources<'s, 'b> {
    builder: &'s mut TableBuilder<'b>,
    /// Every port's version before the change.
    ports: &'s Ports,
    /// The fragments (old, new) of the ports whose fragment changes.
    changed: BTreeMap<ServicePortName, (Option<Fragment>, Option<Fragment>)>,
    /// Fragments of unchanged ports, compiled when first needed.
    compiled: BTreeMap<ServicePortName, Option<Fragment>>,
}

impl Sources<'_, '_> {
    /// The fragment of `port` on one side of the change.
    fn fragment(&mut self, port: &ServicePortName, when: When) -> Option<&Fragment> {
        if let Some((old, new)) = self.changed.get(port) {
            return match when {
                When::Before => old.as_ref(),
                When::After => new.as_ref(),
            };
        }
        let Sources {
            builder,
            ports,
            compiled,
            ..
        } = self;
        compiled
            .entry(port.clone())
            .or_insert_with(|| ports.get(port).and_then(|p| builder.port(p)))
            .as_ref()
    }

    /// The chain of `bucket` holding `entries`; `None` when they bring no rules.
    fn bucket(
        &mut self,
        (map, bucket): (MapName, u16),
        entries: &Entries,
        when: When,
        offset: &dyn Fn(&str) -> Option<u32>,
    ) -> Option<Chain> {
        let keys: Vec<&[Value]> = entries.iter().map(|(key, _, _)| key.as_slice()).collect();
        let guards = buckets::guards(map, &keys);
        let mut rules = Vec::new();
        for ((_, port, verdict), guard) in entries.iter().zip(&guards) {
            let Some(fragment) = self.fragment(port, when) else {
                continue;
            };
            let chains = render_chains(fragment, offset);
            let lookup = |name: &str| chains.iter().find(|c| c.name == name);
            rules.extend(buckets::entry_rules(map, guard, verdict, &lookup));
        }
        (!rules.is_empty()).then(|| buckets::bucket_chain(map, bucket, rules))
    }
}

/// A partial table holding one side of a change: the global sets and maps with only the
/// touched elements, the touched endpoint maps and chains.
fn side_table(builder: &TableBuilder<'_>, side: Side) -> Table {
    let Side {
        chains,
        buckets: used,
        elements,
        verdicts,
        mut ranges,
        maps,
    } = side;
    let mut sets = builder.global_sets(elements);
    let mut global_maps = builder.global_maps(verdicts);
    buckets::as_sets(&mut sets, &mut global_maps, &used);
    let endpoint_maps = maps
        .into_iter()
        .map(|shard| table::endpoint_map(shard, ranges.remove(&shard).unwrap_or_default()))
        .collect();
    Table {
        family: builder.family,
        name: TABLE_NAME.to_string(),
        sets,
        maps: global_maps,
        endpoint_maps,
        chains,
    }
}

#[cfg(test)]
mod tests;
