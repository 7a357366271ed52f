//! Structural invariants of every compiled ruleset, checked on a synthetic cluster with every
//! kind of Service: no dangling references (the kernel would reject the transaction) and no
//! unreachable chains (dead weight the kernel would carry for nothing).

use std::collections::BTreeSet;

use kproxy_compiler::ir::{Action, Match, Ruleset, SetRef, Statement, Table, Verdict};
use kproxy_compiler::{compile, Options};

fn chain_refs(verdict: &Verdict, out: &mut BTreeSet<String>) {
    if let Verdict::Jump(chain) | Verdict::Goto(chain) = verdict {
        out.insert(chain.clone());
    }
}

struct Refs {
    chains: BTreeSet<String>,
    sets: BTreeSet<String>,
    maps: BTreeSet<String>,
}

fn references(table: &Table) -> Refs {
    let mut refs = Refs {
        chains: BTreeSet::new(),
        sets: BTreeSet::new(),
        maps: BTreeSet::new(),
    };
    for map in &table.maps {
        for element in &map.elements {
            chain_refs(&element.verdict, &mut refs.chains);
        }
    }
    for rule in table.chains.iter().flat_map(|c| &c.rules) {
        for m in &rule.matches {
            if let Match::Lookup {
                set: SetRef::Named(name),
                ..
            } = m
            {
                refs.sets.insert(name.clone());
            }
        }
        for s in &rule.statements {
            if let Statement::UpdateSet { set, .. } = s {
                refs.sets.insert(set.clone());
            }
        }
        match &rule.action {
            Some(Action::Verdict(v)) => chain_refs(v, &mut refs.chains),
            Some(Action::Vmap { map, .. }) => {
                refs.maps.insert(map.clone());
            }
            _ => {}
        }
    }
    refs
}

fn ruleset() -> Ruleset {
    let state = kproxy_synthetic::cluster(300, 4);
    let options = Options {
        cluster_cidrs: kproxy_synthetic::pod_cidrs(),
        ..Options::default()
    };
    compile(&state, &options)
}

#[test]
fn every_reference_resolves_and_every_chain_is_reachable() {
    let ruleset = ruleset();
    assert_eq!(
        ruleset.tables.len(),
        2,
        "the synthetic cluster is dual-stack"
    );
    for table in &ruleset.tables {
        let refs = references(table);
        let chains: BTreeSet<String> = table.chains.iter().map(|c| c.name.clone()).collect();
        let sets: BTreeSet<String> = table.sets.iter().map(|s| s.name.clone()).collect();
        let maps: BTreeSet<String> = table.maps.iter().map(|m| m.name.clone()).collect();
        assert_eq!(chains.len(), table.chains.len(), "chain names are unique");
        assert_eq!(sets.len(), table.sets.len(), "set names are unique");

        let dangling: Vec<_> = refs.chains.difference(&chains).collect();
        assert!(
            dangling.is_empty(),
            "{:?}: jumps to missing chains {dangling:?}",
            table.family
        );
        let missing_sets: Vec<_> = refs.sets.difference(&sets).collect();
        assert!(
            missing_sets.is_empty(),
            "{:?}: missing sets {missing_sets:?}",
            table.family
        );
        let missing_maps: Vec<_> = refs.maps.difference(&maps).collect();
        assert!(
            missing_maps.is_empty(),
            "{:?}: missing maps {missing_maps:?}",
            table.family
        );

        let unreachable: Vec<_> = table
            .chains
            .iter()
            .filter(|c| c.hook.is_none() && !refs.chains.contains(&c.name))
            .map(|c| &c.name)
            .collect();
        assert!(
            unreachable.is_empty(),
            "{:?}: unreachable chains {unreachable:?}",
            table.family
        );
    }
}

#[test]
fn every_name_and_comment_is_within_kernel_limits() {
    let ruleset = ruleset();
    for table in &ruleset.tables {
        let names = table
            .chains
            .iter()
            .map(|c| &c.name)
            .chain(table.sets.iter().map(|s| &s.name))
            .chain(table.maps.iter().map(|m| &m.name));
        for name in names {
            assert!(
                name.len() <= kproxy_compiler::naming::MAX_NAME_LEN,
                "{name}"
            );
        }
        let comments = table
            .chains
            .iter()
            .filter_map(|c| c.comment.as_ref())
            .chain(
                table
                    .chains
                    .iter()
                    .flat_map(|c| &c.rules)
                    .filter_map(|r| r.comment.as_ref()),
            );
        for comment in comments {
            assert!(
                comment.len() <= kproxy_compiler::naming::MAX_COMMENT_LEN,
                "{comment}"
            );
        }
    }
}
