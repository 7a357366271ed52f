//! The incremental compiler must agree with compiling everything again, after any sequence of
//! changes, and its [`RulesetChange`] must carry exactly the difference.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use kproxy_model::{Endpoint, ProxyState, ServicePort, SessionAffinity};

use super::*;
use crate::ir::{EndpointMap, Map, Set};
use crate::{compile, naming};

fn options() -> Options {
    Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    }
}

/// A tiny deterministic generator (xorshift), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `full` with `change` applied as the syncer applies it: objects and elements only in
/// `before` are deleted, those only in `after` added, chains in both replaced.
fn patched(full: &Ruleset, change: &RulesetChange) -> Ruleset {
    let mut out = full.clone();
    for (before, after) in change.before.tables.iter().zip(&change.after.tables) {
        assert_eq!(before.family, after.family);
        let table = out
            .tables
            .iter_mut()
            .find(|t| t.family == after.family)
            .expect("a partial change is for an existing table");
        // The syncer compares `before` with `after` to decide what to rewrite, so `before`
        // must be what the kernel holds.
        for chain in &before.chains {
            assert!(
                table.chains.contains(chain),
                "the change's old {} is not the one in the table",
                chain.name
            );
        }
        table
            .chains
            .retain(|c| !before.chains.iter().any(|b| b.name == c.name));
        table.chains.extend(after.chains.iter().cloned());
        patch_objects(
            &mut table.sets,
            &before.sets,
            &after.sets,
            |s| &mut s.elements,
            |a, b| a == b,
        );
        patch_objects(
            &mut table.maps,
            &before.maps,
            &after.maps,
            |m: &mut Map| &mut m.elements,
            |a, b| a.key == b.key,
        );
        patch_objects(
            &mut table.endpoint_maps,
            &before.endpoint_maps,
            &after.endpoint_maps,
            |m: &mut EndpointMap| &mut m.elements,
            |a, b| a == b,
        );
    }
    out
}

trait Named {
    fn name(&self) -> &str;
}
impl Named for Set {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for Map {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for EndpointMap {
    fn name(&self) -> &str {
        &self.name
    }
}

fn patch_objects<T: Named + Clone, E: Clone + PartialEq>(
    objects: &mut Vec<T>,
    before: &[T],
    after: &[T],
    elements: impl Fn(&mut T) -> &mut Vec<E>,
    same: impl Fn(&E, &E) -> bool,
) {
    for old in before {
        match after.iter().find(|a| a.name() == old.name()) {
            None => objects.retain(|o| o.name() != old.name()),
            Some(new) => {
                let object = objects
                    .iter_mut()
                    .find(|o| o.name() == old.name())
                    .expect("a touched object exists");
                let mut old = old.clone();
                let mut new = new.clone();
                let list = elements(object);
                for gone in elements(&mut old).iter() {
                    list.retain(|e| !same(e, gone));
                }
                list.extend(elements(&mut new).iter().cloned());
            }
        }
    }
    for new in after {
        if !before.iter().any(|b| b.name() == new.name()) {
            objects.push(new.clone());
        }
    }
}

/// Order-free form: everything sorted by name, elements sorted.
fn normalized(ruleset: &Ruleset) -> Ruleset {
    let mut ruleset = ruleset.clone();
    for table in &mut ruleset.tables {
        table.chains.sort_by(|a, b| a.name.cmp(&b.name));
        table.sets.sort_by(|a, b| a.name.cmp(&b.name));
        table.maps.sort_by(|a, b| a.name.cmp(&b.name));
        table.endpoint_maps.sort_by(|a, b| a.name.cmp(&b.name));
        for set in &mut table.sets {
            set.elements.sort();
        }
        for map in &mut table.maps {
            map.elements.sort_by(|a, b| a.key.cmp(&b.key));
        }
        for map in &mut table.endpoint_maps {
            map.elements.sort();
        }
    }
    ruleset
}

/// Checks the incremental state and the change against a full compile of `state`.
fn check(
    incremental: &Incremental,
    full_before: &Ruleset,
    change: Option<&RulesetChange>,
    state: &ProxyState,
) -> Ruleset {
    let expected = compile(state, &options());
    assert!(
        incremental.ruleset() == expected,
        "the incremental ruleset differs from a full compile"
    );
    if let Some(change) = change {
        let got = normalized(&patched(full_before, change));
        let want = normalized(&expected);
        if got != want {
            let (got, want) = (format!("{got:#?}"), format!("{want:#?}"));
            let got: Vec<&str> = got.lines().collect();
            let want: Vec<&str> = want.lines().collect();
            let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
            let from = at.saturating_sub(30);
            panic!(
                "the change does not turn the old ruleset into the new one; at line {at}:\n--- patched\n{}\n--- compiled\n{}\n--- change\n{change:#?}",
                got[from..(at + 10).min(got.len())].join("\n"),
                want[from..(at + 10).min(want.len())].join("\n"),
            );
        }
    }
    expected
}

fn set_port(state: &mut ProxyState, port: ServicePort) {
    match state.ports.binary_search_by(|p| p.name.cmp(&port.name)) {
        Ok(i) => state.ports[i] = port,
        Err(i) => state.ports.insert(i, port),
    }
}

#[test]
fn a_fresh_incremental_compile_is_the_full_compile() {
    let state = kproxy_synthetic::cluster(500, 4);
    let incremental = Incremental::new(&state, &options());
    assert!(incremental.ruleset() == compile(&state, &options()));
}

#[test]
fn random_changes_agree_with_compiling_everything_again() {
    let pool = kproxy_synthetic::cluster(400, 3);
    let mut state = ProxyState {
        node: pool.node.clone(),
        ports: pool.ports[..300].to_vec(),
    };
    let mut incremental = Incremental::new(&state, &options());
    let mut full = compile(&state, &options());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut next_pod = 1u32;
    let mut partial = 0;
    for _ in 0..250 {
        let count = 1 + rng.below(3);
        let mut changes = Vec::new();
        for _ in 0..count {
            let change = match rng.below(7) {
                // A new port from the pool, or an old one back.
                0 => PortChange::Set(pool.ports[rng.below(pool.ports.len())].clone()),
                1 if !state.ports.is_empty() => {
                    PortChange::Remove(state.ports[rng.below(state.ports.len())].name.clone())
                }
                // Drop an endpoint.
                2 | 3 if !state.ports.is_empty() => {
                    let mut port = state.ports[rng.below(state.ports.len())].clone();
                    for family in &mut port.families {
                        if let Some(gone) = family.endpoints.cluster.pop() {
                            family.endpoints.local.retain(|e| *e != gone);
                        }
                    }
                    PortChange::Set(port)
                }
                // Add an endpoint (IPv4 only: a made-up address).
                4 if !state.ports.is_empty() => {
                    let mut port = state.ports[rng.below(state.ports.len())].clone();
                    next_pod += 1;
                    let addr = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + next_pod));
                    if let Some(family) = port.families.first_mut() {
                        let endpoint = Endpoint {
                            addr,
                            port: 8080,
                            local: next_pod % 3 == 0,
                        };
                        if endpoint.local {
                            family.endpoints.local.push(endpoint);
                        }
                        family.endpoints.cluster.push(endpoint);
                        family.endpoints.any_usable = true;
                    }
                    PortChange::Set(port)
                }
                // Toggle session affinity.
                5 if !state.ports.is_empty() => {
                    let mut port = state.ports[rng.below(state.ports.len())].clone();
                    port.affinity = match port.affinity {
                        SessionAffinity::None => SessionAffinity::ClientIp {
                            timeout_seconds: 60,
                        },
                        SessionAffinity::ClientIp { .. } => SessionAffinity::None,
                    };
                    PortChange::Set(port)
                }
                // Claim another port's ClusterIP and port: the first Service keeps the key.
                _ if state.ports.len() >= 2 => {
                    let other = state.ports[rng.below(state.ports.len())].clone();
                    let mut port = state.ports[rng.below(state.ports.len())].clone();
                    port.port = other.port;
                    if let (Some(mine), Some(theirs)) =
                        (port.families.first_mut(), other.families.first())
                    {
                        mine.cluster_ip = theirs.cluster_ip;
                    }
                    PortChange::Set(port)
                }
                _ => continue,
            };
            changes.push(change);
        }
        for change in &changes {
            match change {
                PortChange::Set(port) => set_port(&mut state, port.clone()),
                PortChange::Remove(name) => state.ports.retain(|p| &p.name != name),
            }
        }
        let change = incremental.update(changes);
        if change.is_some() {
            partial += 1;
        }
        full = check(&incremental, &full, change.as_ref(), &state);
    }
    assert!(partial > 200, "only {partial} of 250 updates were partial");
}

/// Two endpoint chains that want the same window of the same shard: the one whose name sorts
/// first takes it, so adding it moves the other, as a full compile would.
#[test]
fn a_newcomer_that_wins_a_window_moves_the_chain_that_had_it() {
    let pool = kproxy_synthetic::cluster(6_000, 1);
    let mut seen: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    let plain: Vec<usize> = (0..pool.ports.len())
        .filter(|&i| {
            let port = &pool.ports[i];
            port.affinity == SessionAffinity::None
                && port.families.len() == 1
                && port.families[0].endpoints.any_usable
                && port.internal_policy == kproxy_model::TrafficPolicy::Cluster
        })
        .collect();
    let pair = plain.iter().find_map(|&i| {
        let port = &pool.ports[i];
        let chain = naming::service_chain(&naming::port_id(&port.name, port.port));
        seen.insert(endpoint_maps::slot(&chain), i).map(|j| (j, i))
    });
    let (a, b) = pair.expect("6,000 chains hold two with the same shard and window");
    let (first, second) = {
        let chain = |i: usize| {
            naming::service_chain(&naming::port_id(&pool.ports[i].name, pool.ports[i].port))
        };
        if chain(a) < chain(b) {
            (a, b)
        } else {
            (b, a)
        }
    };
    let mut state = ProxyState {
        node: pool.node.clone(),
        ports: vec![pool.ports[second].clone()],
    };
    let mut incremental = Incremental::new(&state, &options());
    let full = compile(&state, &options());
    set_port(&mut state, pool.ports[first].clone());
    let change = incremental
        .update([PortChange::Set(pool.ports[first].clone())])
        .expect("a partial change");
    // The displaced port's rules live in its ClusterIP's bucket, which the change rewrites.
    let moved = naming::port_comment(&pool.ports[second].name);
    assert!(
        change.after.tables[0]
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .any(|r| r.comment.as_deref() == Some(moved.as_str())),
        "the displaced port's bucket is part of the change"
    );
    check(&incremental, &full, Some(&change), &state);
}

#[test]
fn an_unchanged_port_changes_nothing_and_a_new_family_needs_a_full_sync() {
    let pool = kproxy_synthetic::cluster(100, 2);
    let v4_only: Vec<ServicePort> = pool
        .ports
        .iter()
        .filter(|p| p.families.len() == 1)
        .cloned()
        .collect();
    let state = ProxyState {
        node: kproxy_model::NodeInfo::named("node-a"),
        ports: v4_only.clone(),
    };
    let options = Options::default();
    let mut incremental = Incremental::new(&state, &options);
    let same = incremental.update([PortChange::Set(v4_only[3].clone())]);
    assert_eq!(same.map(|c| c.is_empty()), Some(true));

    let dual = pool
        .ports
        .iter()
        .find(|p| p.families.len() == 2)
        .expect("the pool has a dual-stack Service");
    assert!(
        incremental
            .update([PortChange::Set(dual.clone())])
            .is_none(),
        "the first IPv6 port creates the ip6 table"
    );
    let mut state = state;
    set_port(&mut state, dual.clone());
    assert!(incremental.ruleset() == compile(&state, &options));
}
