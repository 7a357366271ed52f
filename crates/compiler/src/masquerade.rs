//! Masquerade (SNAT) decisions: mark before DNAT, masquerade marked packets after routing.
//!
//! Like kube-proxy, kproxy marks packets with bit 0x4000 where the decision is made and
//! masquerades marked packets in postrouting, clearing the bit. Marks are set for: ClusterIP
//! traffic from outside `--cluster-cidr` (or all of it with `--masquerade-all`), and external
//! traffic under externalTrafficPolicy Cluster (see [`crate::external`]). Hairpin traffic (a pod
//! reaching itself through a Service) needs no mark: after DNAT its source equals its
//! destination, which the `hairpin` set of local `endpoint . endpoint` pairs recognises.

use crate::external::source_in;
use crate::ir::{Action, Chain, Expr, Match, Rule, Statement, Value};
use crate::table::{SetName, TableBuilder};

/// The mark bit meaning "masquerade this packet" (kube-proxy's `--masquerade-bit` 14).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// The chain that sets the mark.
pub(crate) const MARK_CHAIN: &str = "mark-for-masquerade";

/// The rule of the `services` chain that marks ClusterIP traffic for masquerading, if any.
pub(crate) fn cluster_ip_rule(table: &TableBuilder<'_>) -> Option<Rule> {
    let to_cluster_ip = Match::in_set([Expr::DestAddr], SetName::ClusterIps.as_str());
    let mark = Rule::verdict(crate::ir::Verdict::Jump(MARK_CHAIN.into()));
    if table.options.masquerade_all {
        return Some(mark.when([to_cluster_ip]).comment("--masquerade-all"));
    }
    if table.cluster_cidrs.is_empty() {
        return None;
    }
    // The source test comes first: it compares against the cluster CIDR (one constant per
    // family), and pod traffic (most of a node's connections) fails it without the lookup in a
    // set of every ClusterIP.
    let from_outside = source_in(&table.cluster_cidrs, true);
    Some(
        mark.when([from_outside, to_cluster_ip])
            .comment("ClusterIP traffic from outside the cluster"),
    )
}

pub(crate) fn chains() -> Vec<Chain> {
    let marked = Match::Masked {
        left: Expr::Mark,
        mask: MASQUERADE_MARK,
        value: MASQUERADE_MARK,
    };
    let hairpin = Match::in_set(
        [Expr::SourceAddr, Expr::DestAddr],
        SetName::Hairpin.as_str(),
    );
    let masquerade = Action::Masquerade { fully_random: true };
    vec![
        Chain {
            name: "masquerading".into(),
            hook: None,
            comment: None,
            rules: vec![
                Rule::action(masquerade.clone())
                    .when([marked])
                    .with(Statement::MarkXor(MASQUERADE_MARK)),
                Rule::action(masquerade)
                    .when([Match::eq(Expr::CtStatus, Value::CtDnat), hairpin])
                    .comment("hairpin: a pod reaching itself through a Service"),
            ],
        },
        Chain {
            name: MARK_CHAIN.into(),
            hook: None,
            comment: None,
            rules: vec![Rule {
                matches: vec![],
                statements: vec![Statement::MarkOr(MASQUERADE_MARK)],
                action: None,
                comment: None,
            }],
        },
    ]
}
