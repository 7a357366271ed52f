//! A trace as plain text for people: one block per possible outcome.

use std::fmt::Write as _;
use std::net::SocketAddr;

use kproxy_compiler::ir::{ChainType, Family, Hook, RejectWith};

use crate::{Delivery, Disposition, Event, Origin, Outcome, RuleRef, Trace};

/// Renders a trace: the packet, then each outcome with its probability, the path rule by rule,
/// the DNAT target and whether (and why) the packet is masqueraded.
pub fn render_text(trace: &Trace) -> String {
    let mut out = String::new();
    let p = &trace.packet;
    let origin = match p.origin {
        Origin::Pod => "from a pod (arrives on an interface: prerouting)",
        Origin::Node => "from this node (locally generated: output)",
        Origin::External => "from outside the cluster (arrives on an interface: prerouting)",
    };
    let state = if p.ct_new {
        "first packet of a connection (ct state new)"
    } else {
        "packet of an established connection (it keeps the NAT its first packet got, which is not traced here)"
    };
    let _ = writeln!(
        out,
        "packet: {} {} -> {}, {state}, {origin}",
        p.proto,
        SocketAddr::new(p.src, p.src_port),
        SocketAddr::new(p.dst, p.dst_port),
    );
    let locals: Vec<String> = trace
        .local_addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(
        out,
        "table {} kproxy; local addresses (fib type local): {}",
        match trace.family {
            Family::Ip => "ip",
            Family::Ip6 => "ip6",
        },
        locals.join(", ")
    );
    let n = trace.outcomes.len();
    let _ = writeln!(out, "{n} possible outcome{}", if n == 1 { "" } else { "s" });
    for (i, outcome) in trace.outcomes.iter().enumerate() {
        out.push('\n');
        render_outcome(&mut out, trace, i + 1, n, outcome);
    }
    out
}

fn render_outcome(out: &mut String, trace: &Trace, number: usize, of: usize, outcome: &Outcome) {
    let _ = writeln!(
        out,
        "outcome {number} of {of}, probability {}: {}",
        outcome.probability,
        summary(&outcome.disposition)
    );
    for event in &outcome.events {
        match event {
            Event::Chain {
                hook,
                chain,
                kind,
                priority,
            } => {
                let kind = match kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                };
                let _ = writeln!(
                    out,
                    "  {}: {chain} ({kind}, priority {priority})",
                    hook_name(*hook)
                );
            }
            Event::Skipped {
                hook,
                chain,
                reason,
            } => {
                let _ = writeln!(out, "  {}: {chain} skipped: {reason}", hook_name(*hook));
            }
            Event::Rule { rule, effects } => {
                let _ = writeln!(out, "    {}: {}", rule_name(rule), rule.rule);
                for effect in effects {
                    let _ = writeln!(out, "      {effect}");
                }
            }
            Event::Missed { rule, why } => {
                let _ = writeln!(out, "    {}: not applied: {}", rule_name(rule), rule.rule);
                let _ = writeln!(out, "      {why}");
            }
            Event::Route { dst, local, next } => {
                let what = if *local {
                    "is a local address"
                } else {
                    "is not a local address"
                };
                let _ = writeln!(out, "  routing: {dst} {what} -> {}", hook_name(*next));
            }
        }
    }
    let original = SocketAddr::new(trace.packet.dst, trace.packet.dst_port);
    if let Disposition::Accepted {
        dnat, masquerade, ..
    } = &outcome.disposition
    {
        match dnat {
            Some(to) => {
                let _ = writeln!(out, "  DNAT: {original} -> {to}");
            }
            None => {
                let _ = writeln!(out, "  DNAT: none (still addressed to {original})");
            }
        }
        match (&outcome.masqueraded_by, masquerade) {
            (Some(by), _) => {
                let _ = writeln!(
                    out,
                    "  masquerade: yes, by {} (the destination sees the outgoing interface's address, not {})",
                    rule_name(by),
                    trace.packet.src
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "  masquerade: no (no masquerade rule matched: the destination sees the client address {})",
                    trace.packet.src
                );
            }
        }
    }
    for change in &outcome.mark_changes {
        let via = change
            .called_from
            .as_ref()
            .map(|c| format!(", called from {}", rule_name(c)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  mark: 0x{:08x} -> 0x{:08x} by {}{via}",
            change.old,
            change.new,
            rule_name(&change.by)
        );
    }
    for note in &outcome.notes {
        let _ = writeln!(out, "  note: {note}");
    }
}

fn summary(disposition: &Disposition) -> String {
    match disposition {
        Disposition::Accepted {
            dnat,
            masquerade,
            delivery,
        } => {
            let dnat = dnat.map_or_else(|| "no DNAT".to_string(), |to| format!("DNAT to {to}"));
            let masq = if *masquerade {
                "masqueraded"
            } else {
                "not masqueraded"
            };
            let delivery = match delivery {
                Delivery::Host => "delivered to this node (input)",
                Delivery::Routed => "routed out (postrouting)",
            };
            format!("accepted, {dnat}, {masq}, {delivery}")
        }
        Disposition::Dropped { by } => format!("dropped by {}", rule_name(by)),
        Disposition::Rejected { by, with } => {
            let with = match with {
                RejectWith::TcpReset => "a TCP reset",
                RejectWith::PortUnreachable => "ICMP port unreachable",
            };
            format!("rejected with {with} by {}", rule_name(by))
        }
    }
}

fn rule_name(rule: &RuleRef) -> String {
    format!("{} #{}", rule.chain, rule.index)
}

fn hook_name(hook: Hook) -> &'static str {
    match hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    }
}
