//! The interpreter: hooks in kernel order, base chains by priority, rules with a call stack.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use kproxy_compiler::ir::{
    Action, Chain, ChainType, CmpOp, Dnat, Expr, Family, Hook, Match, RejectWith, Rule, Ruleset,
    SetRef, Statement, Table, Value, Verdict,
};
use kproxy_compiler::render::nft;
use kproxy_model::Protocol;

use crate::{
    Delivery, Disposition, Event, LocalAddresses, MarkChange, Origin, Outcome, Packet, Probability,
    RuleRef, Trace, TraceError, MAX_JUMP_DEPTH, MAX_OUTCOMES,
};

/// Rules evaluated for one packet in one base chain before the tracer calls it a loop.
const MAX_STEPS: usize = 100_000;
/// The most random values enumerated for one lookup with a `numgen` key.
const MAX_ENUMERATED: u64 = 1 << 16;

/// `ct status` bits, as the kernel numbers them (`IPS_SRC_NAT`, `IPS_DST_NAT`).
const IPS_SRC_NAT: u32 = 1 << 4;
const IPS_DST_NAT: u32 = 1 << 5;
/// `ct state` bits (`NF_CT_STATE_BIT`): established and new.
const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_NEW: u32 = 1 << 3;

/// Traces `packet` through `ruleset`: every possible path, with its probability.
///
/// Only the table of the packet's family is consulted. A ruleset without one lets the packet
/// through untouched (one outcome, no events).
pub fn trace(
    ruleset: &Ruleset,
    packet: &Packet,
    local: &LocalAddresses,
) -> Result<Trace, TraceError> {
    let family = match (packet.src, packet.dst) {
        (IpAddr::V4(_), IpAddr::V4(_)) => Family::Ip,
        (IpAddr::V6(_), IpAddr::V6(_)) => Family::Ip6,
        (src, dst) => return Err(TraceError::FamilyMismatch { src, dst }),
    };
    let state = State {
        src: packet.src,
        dst: packet.dst,
        dst_port: packet.dst_port,
        proto: packet.proto,
        original_dst: SocketAddr::new(packet.dst, packet.dst_port),
        mark: 0,
        ct_new: packet.ct_new,
        ct_status: 0,
        nat_dst_done: false,
        nat_src_done: false,
        from_output: packet.origin == Origin::Node,
        added: Vec::new(),
        masqueraded_by: None,
        mark_changes: Vec::new(),
        probability: Probability::ONE,
        events: Vec::new(),
        notes: Vec::new(),
    };
    let mut outcomes = Vec::new();
    match ruleset.tables.iter().find(|t| t.family == family) {
        Some(table) => {
            let tracer = Tracer { table, local };
            let first = match packet.origin {
                Origin::Pod | Origin::External => Hook::Prerouting,
                Origin::Node => Hook::Output,
            };
            tracer.hook(first, state, &mut outcomes)?;
        }
        None => outcomes.push(state.finish(Delivery::Routed)),
    }
    Ok(Trace {
        packet: packet.clone(),
        family,
        local_addresses: local.networks().to_vec(),
        outcomes,
    })
}

/// One path's packet and connection state.
#[derive(Debug, Clone)]
struct State {
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    proto: Protocol,
    original_dst: SocketAddr,
    mark: u32,
    ct_new: bool,
    ct_status: u32,
    /// The connection's destination NAT is set up (after the nat chains of prerouting/output).
    nat_dst_done: bool,
    /// The connection's source NAT is set up (after the nat chains of postrouting/input).
    nat_src_done: bool,
    /// Locally generated: after postrouting, a local destination loops back.
    from_output: bool,
    /// Elements added by `update @set` on this path.
    added: Vec<(String, Vec<Val>)>,
    masqueraded_by: Option<RuleRef>,
    mark_changes: Vec<MarkChange>,
    probability: Probability,
    events: Vec<Event>,
    notes: Vec<String>,
}

impl State {
    fn note(&mut self, note: String) {
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn outcome(self, disposition: Disposition) -> Outcome {
        Outcome {
            probability: self.probability,
            disposition,
            events: self.events,
            notes: self.notes,
            masqueraded_by: self.masqueraded_by,
            mark_changes: self.mark_changes,
        }
    }

    fn finish(self, delivery: Delivery) -> Outcome {
        let dst = SocketAddr::new(self.dst, self.dst_port);
        let disposition = Disposition::Accepted {
            dnat: (dst != self.original_dst).then_some(dst),
            masquerade: self.masqueraded_by.is_some(),
            delivery,
        };
        self.outcome(disposition)
    }
}

/// A value taken from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Val {
    Addr(IpAddr),
    Proto(Protocol),
    Port(u16),
    Int(u32),
    CtState(u32),
    CtStatus(u32),
    AddrType { local: bool },
}

impl Val {
    /// The value as the kernel's register holds it, for integer comparisons and masks.
    fn number(self) -> Option<u32> {
        match self {
            Val::Int(n) | Val::CtState(n) | Val::CtStatus(n) => Some(n),
            Val::Port(p) => Some(u32::from(p)),
            Val::Proto(p) => Some(u32::from(p.number())),
            Val::Addr(_) | Val::AddrType { .. } => None,
        }
    }
}

impl fmt::Display for Val {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Val::Addr(a) => write!(f, "{a}"),
            Val::Proto(p) => write!(f, "{p}"),
            Val::Port(p) => write!(f, "{p}"),
            Val::Int(n) => write!(f, "{n}"),
            Val::CtState(s) => f.write_str(if s & CT_STATE_NEW != 0 {
                "new"
            } else {
                "established"
            }),
            Val::CtStatus(s) => {
                let mut bits = Vec::new();
                if s & IPS_SRC_NAT != 0 {
                    bits.push("snat");
                }
                if s & IPS_DST_NAT != 0 {
                    bits.push("dnat");
                }
                if bits.is_empty() {
                    f.write_str("0")
                } else {
                    f.write_str(&bits.join(","))
                }
            }
            Val::AddrType { local } => f.write_str(if *local { "local" } else { "unicast" }),
        }
    }
}

fn key_text(vals: &[Val]) -> String {
    vals.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" . ")
}

/// Where a chain evaluation stands: the chain and the next rule to evaluate.
#[derive(Debug, Clone)]
struct Frame {
    chain: usize,
    next: usize,
    /// The rule that jumped or went here (none for the base chain).
    via: Option<RuleRef>,
}

/// How a base chain ends for one path.
enum ChainEnd {
    Accept,
    Drop(RuleRef),
    Reject(RuleRef, RejectWith),
}

/// What one evaluation step leaves.
enum Next {
    Continue(State, Vec<Frame>),
    Done(State, ChainEnd),
}

/// What a rule's matches give: how likely they all hold, and why it is not certain.
struct MatchResult {
    probability: Probability,
    draws: Vec<String>,
    notes: Vec<String>,
}

struct Tracer<'a> {
    table: &'a Table,
    local: &'a LocalAddresses,
}

impl Tracer<'_> {
    /// Runs the hook's base chains, then moves each surviving path on to the next hook.
    fn hook(&self, hook: Hook, state: State, out: &mut Vec<Outcome>) -> Result<(), TraceError> {
        let mut chains: Vec<usize> = self
            .table
            .chains
            .iter()
            .enumerate()
            .filter(|(_, c)| c.hook.is_some_and(|h| h.hook == hook))
            .map(|(i, _)| i)
            .collect();
        // Stable: chains of equal priority keep the table's order.
        chains.sort_by_key(|&i| self.table.chains[i].hook.map(|h| h.priority.value()));
        self.chains(hook, &chains, state, out)
    }

    fn chains(
        &self,
        hook: Hook,
        chains: &[usize],
        mut state: State,
        out: &mut Vec<Outcome>,
    ) -> Result<(), TraceError> {
        let Some((&first, rest)) = chains.split_first() else {
            return self.after(hook, state, out);
        };
        let chain = &self.table.chains[first];
        let base = chain.hook.expect("base chains only");
        if base.kind == ChainType::Nat {
            let dst_side = matches!(hook, Hook::Prerouting | Hook::Output);
            let done = if dst_side {
                state.nat_dst_done
            } else {
                state.nat_src_done
            };
            let reason = if !state.ct_new {
                Some("nat chains see only the first packet of a connection")
            } else if done {
                Some("this connection's NAT for this direction is already set up")
            } else {
                None
            };
            if let Some(reason) = reason {
                state.events.push(Event::Skipped {
                    hook,
                    chain: chain.name.clone(),
                    reason: reason.to_string(),
                });
                return self.chains(hook, rest, state, out);
            }
        }
        state.events.push(Event::Chain {
            hook,
            chain: chain.name.clone(),
            kind: base.kind,
            priority: base.priority.value(),
        });
        for (state, end) in self.base_chain(first, state)? {
            match end {
                ChainEnd::Accept => self.chains(hook, rest, state, out)?,
                ChainEnd::Drop(by) => push(out, state.outcome(Disposition::Dropped { by }))?,
                ChainEnd::Reject(by, with) => {
                    push(out, state.outcome(Disposition::Rejected { by, with }))?;
                }
            }
        }
        Ok(())
    }

    /// The routing decision and the next hook.
    fn after(
        &self,
        hook: Hook,
        mut state: State,
        out: &mut Vec<Outcome>,
    ) -> Result<(), TraceError> {
        let has_nat = self.table.chains.iter().any(|c| {
            c.hook
                .is_some_and(|h| h.hook == hook && h.kind == ChainType::Nat)
        });
        if has_nat && state.ct_new {
            match hook {
                Hook::Prerouting | Hook::Output => state.nat_dst_done = true,
                Hook::Postrouting | Hook::Input => state.nat_src_done = true,
                Hook::Forward => {}
            }
        }
        let local = self.local.contains(state.dst);
        let route = |state: &mut State, next: Hook| {
            state.events.push(Event::Route {
                dst: state.dst,
                local,
                next,
            });
        };
        match hook {
            Hook::Prerouting => {
                let next = if local { Hook::Input } else { Hook::Forward };
                route(&mut state, next);
                self.hook(next, state, out)
            }
            Hook::Output => {
                route(&mut state, Hook::Postrouting);
                self.hook(Hook::Postrouting, state, out)
            }
            Hook::Forward => self.hook(Hook::Postrouting, state, out),
            Hook::Postrouting if state.from_output && local => {
                // Loopback: the packet comes back in through prerouting.
                state.from_output = false;
                route(&mut state, Hook::Prerouting);
                self.hook(Hook::Prerouting, state, out)
            }
            Hook::Postrouting => push(out, state.finish(Delivery::Routed)),
            Hook::Input => push(out, state.finish(Delivery::Host)),
        }
    }

    /// Evaluates one base chain for every path: depth first, so paths come out in rule order.
    fn base_chain(&self, chain: usize, state: State) -> Result<Vec<(State, ChainEnd)>, TraceError> {
        let frame = Frame {
            chain,
            next: 0,
            via: None,
        };
        // A stack of pending work, popped in order: depth first, so paths come out in rule order.
        let mut work = vec![Next::Continue(state, vec![frame])];
        let mut done = Vec::new();
        let mut steps = 0;
        while let Some(item) = work.pop() {
            let (state, stack) = match item {
                Next::Done(state, end) => {
                    done.push((state, end));
                    continue;
                }
                Next::Continue(state, stack) => (state, stack),
            };
            steps += 1;
            if steps > MAX_STEPS {
                return Err(TraceError::Loop {
                    chain: self.table.chains[chain].name.clone(),
                    detail: format!("more than {MAX_STEPS} rules evaluated"),
                });
            }
            work.extend(self.step(state, stack)?.into_iter().rev());
        }
        Ok(done)
    }

    /// Evaluates the next rule of the innermost chain (or leaves a finished chain).
    fn step(&self, state: State, mut stack: Vec<Frame>) -> Result<Vec<Next>, TraceError> {
        let top = stack.last_mut().expect("a non-empty call stack");
        let chain = &self.table.chains[top.chain];
        if top.next >= chain.rules.len() {
            // End of a chain: back to the caller; the end of a base chain is its policy.
            stack.pop();
            return Ok(vec![if stack.is_empty() {
                Next::Done(state, ChainEnd::Accept)
            } else {
                Next::Continue(state, stack)
            }]);
        }
        let index = top.next;
        top.next += 1;
        let rule = &chain.rules[index];
        let rule_ref = self.rule_ref(chain, index, rule);
        let matched = self.matches(&state, chain, index, rule)?;
        let mut state = state;
        for note in matched.notes {
            state.note(note);
        }
        if matched.probability.is_zero() {
            return Ok(vec![Next::Continue(state, stack)]);
        }
        let mut out = Vec::new();
        let miss = matched.probability.complement();
        let missed = (!miss.is_zero()).then(|| {
            let mut missed = state.clone();
            missed.probability = missed.probability * miss;
            missed.events.push(Event::Missed {
                rule: rule_ref.clone(),
                why: format!("{} did not hold: {miss}", matched.draws.join(", ")),
            });
            Next::Continue(missed, stack.clone())
        });
        state.probability = state.probability * matched.probability;
        let mut effects: Vec<String> = matched
            .draws
            .iter()
            .map(|d| format!("{d} held: {}", matched.probability))
            .collect();
        for statement in &rule.statements {
            self.statement(
                &mut state,
                &stack,
                chain,
                index,
                &rule_ref,
                statement,
                &mut effects,
            )?;
        }
        out.extend(self.action(state, stack, chain, index, rule, rule_ref, effects)?);
        out.extend(missed);
        Ok(out)
    }

    fn rule_ref(&self, chain: &Chain, index: usize, rule: &Rule) -> RuleRef {
        let mut text = String::new();
        nft::rule(&mut text, self.table.family, rule).expect("writing to a String cannot fail");
        RuleRef {
            chain: chain.name.clone(),
            index,
            rule: text,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn statement(
        &self,
        state: &mut State,
        stack: &[Frame],
        chain: &Chain,
        index: usize,
        rule_ref: &RuleRef,
        statement: &Statement,
        effects: &mut Vec<String>,
    ) -> Result<(), TraceError> {
        match statement {
            Statement::MarkOr(bits) | Statement::MarkXor(bits) => {
                let old = state.mark;
                state.mark = match statement {
                    Statement::MarkOr(_) => old | bits,
                    _ => old ^ bits,
                };
                effects.push(format!("meta mark 0x{old:08x} -> 0x{:08x}", state.mark));
                state.mark_changes.push(MarkChange {
                    by: rule_ref.clone(),
                    called_from: stack.last().and_then(|f| f.via.clone()),
                    old,
                    new: state.mark,
                });
            }
            Statement::UpdateSet { set, key, timeout } => {
                let Some(named) = self.table.sets.iter().find(|s| &s.name == set) else {
                    return Err(self.unknown(chain, index, "set", set));
                };
                let vals = key
                    .iter()
                    .map(|e| self.eval(state, chain, index, e))
                    .collect::<Result<Vec<Val>, TraceError>>()?;
                let shown = vals
                    .iter()
                    .map(Val::to_string)
                    .collect::<Vec<_>>()
                    .join(" . ");
                let timeout = timeout
                    .or(named.timeout)
                    .map(|t| format!(" (timeout {t}s)"))
                    .unwrap_or_default();
                effects.push(format!("adds {shown} to @{set}"));
                state.note(format!(
                    "{shown} added to @{set}{timeout}: later packets looking it up there match"
                ));
                state.added.push((set.clone(), vals));
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn action(
        &self,
        mut state: State,
        stack: Vec<Frame>,
        chain: &Chain,
        index: usize,
        rule: &Rule,
        rule_ref: RuleRef,
        mut effects: Vec<String>,
    ) -> Result<Vec<Next>, TraceError> {
        let Some(action) = &rule.action else {
            state.events.push(Event::Rule {
                rule: rule_ref,
                effects,
            });
            return Ok(vec![Next::Continue(state, stack)]);
        };
        match action {
            Action::Verdict(verdict) => {
                state.events.push(Event::Rule {
                    rule: rule_ref.clone(),
                    effects,
                });
                self.verdict(state, stack, chain, index, verdict, rule_ref)
                    .map(|n| vec![n])
            }
            Action::Vmap { key, map } => {
                let Some(named) = self.table.maps.iter().find(|m| &m.name == map) else {
                    return Err(self.unknown(chain, index, "map", map));
                };
                let mut results: Vec<(Probability, Option<Verdict>)> = Vec::new();
                for (p, vals) in self.keys(&state, chain, index, key)? {
                    let mut found = None;
                    for element in &named.elements {
                        if self.element_matches(chain, index, &element.key, &vals)? {
                            found = Some(element.verdict.clone());
                            break;
                        }
                    }
                    merge(&mut results, p, found);
                }
                let mut out = Vec::new();
                for (p, found) in results {
                    let mut state = state.clone();
                    state.probability = state.probability * p;
                    match found {
                        // No element: the rule does not apply.
                        None => out.push(Next::Continue(state, stack.clone())),
                        Some(verdict) => {
                            let mut effects = effects.clone();
                            effects.push(format!("@{map} gives {}", verdict_text(&verdict)));
                            state.events.push(Event::Rule {
                                rule: rule_ref.clone(),
                                effects,
                            });
                            out.push(self.verdict(
                                state,
                                stack.clone(),
                                chain,
                                index,
                                &verdict,
                                rule_ref.clone(),
                            )?);
                        }
                    }
                }
                Ok(out)
            }
            Action::Dnat(Dnat::To(target)) => {
                self.dnat(&mut state, *target, &mut effects);
                state.events.push(Event::Rule {
                    rule: rule_ref,
                    effects,
                });
                Ok(vec![Next::Done(state, ChainEnd::Accept)])
            }
            Action::Dnat(Dnat::Numgen {
                map,
                modulus,
                offset,
            }) => {
                let Some(named) = self.table.endpoint_maps.iter().find(|m| &m.name == map) else {
                    return Err(self.unknown(chain, index, "endpoint map", map));
                };
                if *modulus == 0 {
                    return Err(self.unsupported(chain, index, "numgen random mod 0".into()));
                }
                // numgen yields offset + 0..modulus; each range covers part of that window.
                let first = u64::from(*offset);
                let last = first + u64::from(*modulus) - 1;
                let total = u128::from(*modulus);
                let mut out = Vec::new();
                let mut covered = 0u128;
                for range in &named.elements {
                    let lo = u64::from(range.first).max(first);
                    let hi = u64::from(range.last).min(last);
                    if lo > hi {
                        continue;
                    }
                    let count = u128::from(hi - lo + 1);
                    covered += count;
                    let p = Probability::new(count, total);
                    let mut state = state.clone();
                    state.probability = state.probability * p;
                    let mut effects = effects.clone();
                    effects.push(format!("numgen {lo}-{hi} of window {first}-{last}: {p}"));
                    self.dnat(&mut state, range.target, &mut effects);
                    state.events.push(Event::Rule {
                        rule: rule_ref.clone(),
                        effects,
                    });
                    out.push(Next::Done(state, ChainEnd::Accept));
                }
                if covered < total {
                    // No element for the value drawn: the lookup fails, the rule does not apply.
                    let p = Probability::new(total - covered, total);
                    state.probability = state.probability * p;
                    state.events.push(Event::Missed {
                        rule: rule_ref,
                        why: format!("numgen value in no range of @{map}: {p}"),
                    });
                    out.push(Next::Continue(state, stack));
                }
                Ok(out)
            }
            Action::Masquerade { fully_random } => {
                effects.push(format!(
                    "source {} -> the outgoing interface's address{}",
                    state.src,
                    if *fully_random {
                        ", random source port"
                    } else {
                        ""
                    }
                ));
                state.ct_status |= IPS_SRC_NAT;
                state.masqueraded_by = Some(rule_ref.clone());
                state.events.push(Event::Rule {
                    rule: rule_ref,
                    effects,
                });
                Ok(vec![Next::Done(state, ChainEnd::Accept)])
            }
            Action::Reject(with) => {
                state.events.push(Event::Rule {
                    rule: rule_ref.clone(),
                    effects,
                });
                Ok(vec![Next::Done(state, ChainEnd::Reject(rule_ref, *with))])
            }
        }
    }

    fn dnat(&self, state: &mut State, target: SocketAddr, effects: &mut Vec<String>) {
        effects.push(format!(
            "destination {} -> {target}",
            SocketAddr::new(state.dst, state.dst_port)
        ));
        state.dst = target.ip();
        state.dst_port = target.port();
        state.ct_status |= IPS_DST_NAT;
    }

    fn verdict(
        &self,
        state: State,
        mut stack: Vec<Frame>,
        chain: &Chain,
        index: usize,
        verdict: &Verdict,
        rule_ref: RuleRef,
    ) -> Result<Next, TraceError> {
        Ok(match verdict {
            Verdict::Accept => Next::Done(state, ChainEnd::Accept),
            Verdict::Drop => Next::Done(state, ChainEnd::Drop(rule_ref)),
            Verdict::Return => {
                stack.pop();
                if stack.is_empty() {
                    // `return` in a base chain applies its policy.
                    Next::Done(state, ChainEnd::Accept)
                } else {
                    Next::Continue(state, stack)
                }
            }
            Verdict::Jump(target) | Verdict::Goto(target) => {
                let Some(to) = self.table.chains.iter().position(|c| &c.name == target) else {
                    return Err(self.unknown(chain, index, "chain", target));
                };
                if self.table.chains[to].hook.is_some() {
                    return Err(self.unsupported(
                        chain,
                        index,
                        format!("a jump to base chain {target}"),
                    ));
                }
                let frame = Frame {
                    chain: to,
                    next: 0,
                    via: Some(rule_ref),
                };
                if matches!(verdict, Verdict::Goto(_)) {
                    *stack.last_mut().expect("a non-empty call stack") = frame;
                } else {
                    if stack.len() >= MAX_JUMP_DEPTH {
                        return Err(TraceError::Loop {
                            chain: chain.name.clone(),
                            detail: format!("jumps nested deeper than {MAX_JUMP_DEPTH}"),
                        });
                    }
                    stack.push(frame);
                }
                Next::Continue(state, stack)
            }
        })
    }

    /// How likely all of a rule's matches hold (they short-circuit, as in the kernel).
    fn matches(
        &self,
        state: &State,
        chain: &Chain,
        index: usize,
        rule: &Rule,
    ) -> Result<MatchResult, TraceError> {
        let mut result = MatchResult {
            probability: Probability::ONE,
            draws: Vec::new(),
            notes: Vec::new(),
        };
        for m in &rule.matches {
            let p = self.one_match(state, chain, index, m, &mut result.notes)?;
            if p.is_zero() {
                result.probability = Probability::ZERO;
                return Ok(result);
            }
            if !p.is_one() {
                let mut text = String::new();
                let single = Rule {
                    matches: vec![m.clone()],
                    statements: Vec::new(),
                    action: None,
                    comment: None,
                };
                nft::rule(&mut text, self.table.family, &single)
                    .expect("writing to a String cannot fail");
                result.draws.push(text);
            }
            result.probability = result.probability * p;
        }
        Ok(result)
    }

    fn one_match(
        &self,
        state: &State,
        chain: &Chain,
        index: usize,
        m: &Match,
        notes: &mut Vec<String>,
    ) -> Result<Probability, TraceError> {
        match m {
            Match::Cmp {
                left: Expr::Numgen { modulus },
                op,
                right,
            } => {
                let Value::Integer(k) = right else {
                    return Err(self.type_error(
                        chain,
                        index,
                        format!("numgen compared with {right:?}"),
                    ));
                };
                if *modulus == 0 {
                    return Err(self.unsupported(chain, index, "numgen random mod 0".into()));
                }
                let hits = u128::from(*k < *modulus);
                let total = u128::from(*modulus);
                let count = match op {
                    CmpOp::Eq => hits,
                    CmpOp::Ne => total - hits,
                };
                Ok(Probability::new(count, total))
            }
            Match::Cmp { left, op, right } => {
                let val = self.eval(state, chain, index, left)?;
                let eq = self.value_eq(chain, index, val, right)?;
                Ok(certain(eq == (*op == CmpOp::Eq)))
            }
            Match::Masked { left, mask, value } => {
                let mut results = Vec::new();
                for (p, vals) in self.keys(state, chain, index, std::slice::from_ref(left))? {
                    let Some(n) = vals[0].number() else {
                        return Err(self.type_error(
                            chain,
                            index,
                            format!("{} masked as an integer", vals[0]),
                        ));
                    };
                    merge(&mut results, p, n & mask == *value);
                }
                Ok(held(&results))
            }
            Match::Lookup { key, set, negate } => {
                let mut results = Vec::new();
                for (p, vals) in self.keys(state, chain, index, key)? {
                    let found = match set {
                        SetRef::Named(name) => {
                            self.in_named_set(state, chain, index, name, &vals, notes)?
                        }
                        SetRef::Prefixes(nets) => match vals.as_slice() {
                            [Val::Addr(addr)] => nets.iter().any(|n| n.contains(addr)),
                            _ => {
                                return Err(self.type_error(
                                    chain,
                                    index,
                                    format!("{} looked up in a set of networks", key_text(&vals)),
                                ))
                            }
                        },
                    };
                    merge(&mut results, p, found != *negate);
                }
                Ok(held(&results))
            }
        }
    }

    fn in_named_set(
        &self,
        state: &State,
        chain: &Chain,
        index: usize,
        name: &str,
        vals: &[Val],
        notes: &mut Vec<String>,
    ) -> Result<bool, TraceError> {
        let Some(set) = self.table.sets.iter().find(|s| s.name == name) else {
            return Err(self.unknown(chain, index, "set", name));
        };
        if set.key.len() != vals.len() {
            return Err(self.type_error(
                chain,
                index,
                format!(
                    "a key of {} fields looked up in @{name} of {}",
                    vals.len(),
                    set.key.len()
                ),
            ));
        }
        if set.timeout.is_some() {
            let note = format!(
                "@{name} is a dynamic set filled by the dataplane: assumed empty (a new client)"
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        for element in &set.elements {
            if self.element_matches(chain, index, element, vals)? {
                return Ok(true);
            }
        }
        Ok(state
            .added
            .iter()
            .any(|(set, added)| set == name && added.as_slice() == vals))
    }

    fn element_matches(
        &self,
        chain: &Chain,
        index: usize,
        element: &[Value],
        vals: &[Val],
    ) -> Result<bool, TraceError> {
        if element.len() != vals.len() {
            return Err(self.type_error(
                chain,
                index,
                format!(
                    "a key of {} fields against an element of {}",
                    vals.len(),
                    element.len()
                ),
            ));
        }
        for (value, val) in element.iter().zip(vals) {
            if !self.value_eq(chain, index, *val, value)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `val == value`; a prefix holds every address inside it.
    fn value_eq(
        &self,
        chain: &Chain,
        index: usize,
        val: Val,
        value: &Value,
    ) -> Result<bool, TraceError> {
        Ok(match (val, value) {
            (Val::Addr(a), Value::Addr(b)) if a.is_ipv4() == b.is_ipv4() => a == *b,
            (Val::Addr(a), Value::Prefix(net)) if a.is_ipv4() == net.addr().is_ipv4() => {
                net.contains(&a)
            }
            (Val::Proto(a), Value::Proto(b)) => a == *b,
            (Val::Port(a), Value::Port(b)) => a == *b,
            (Val::CtState(s), Value::CtNew) => s & CT_STATE_NEW != 0,
            (Val::CtStatus(s), Value::CtDnat) => s & IPS_DST_NAT != 0,
            (Val::AddrType { local }, Value::Local) => local,
            (val, Value::Integer(n)) if val.number().is_some() => val.number() == Some(*n),
            (val, value) => {
                return Err(self.type_error(
                    chain,
                    index,
                    format!("{val} compared with {value:?}"),
                ));
            }
        })
    }

    /// The possible values of a key: one, unless it draws random numbers (`numgen`), in which
    /// case every combination is enumerated, each with its probability.
    fn keys(
        &self,
        state: &State,
        chain: &Chain,
        index: usize,
        key: &[Expr],
    ) -> Result<Vec<(Probability, Vec<Val>)>, TraceError> {
        let mut combos: Vec<(u64, Vec<Val>)> = vec![(1, Vec::new())];
        let mut total: u64 = 1;
        for expr in key {
            if let Expr::Numgen { modulus } = expr {
                total = total.saturating_mul(u64::from(*modulus));
                if total == 0 || total > MAX_ENUMERATED {
                    return Err(self.unsupported(
                        chain,
                        index,
                        format!("numgen random mod {modulus} in a key (at most {MAX_ENUMERATED} values are enumerated)"),
                    ));
                }
                combos = combos
                    .into_iter()
                    .flat_map(|(n, vals)| {
                        (0..*modulus).map(move |v| {
                            let mut vals = vals.clone();
                            vals.push(Val::Int(v));
                            (n, vals)
                        })
                    })
                    .collect();
            } else {
                let val = self.eval(state, chain, index, expr)?;
                for (_, vals) in &mut combos {
                    vals.push(val);
                }
            }
        }
        Ok(combos
            .into_iter()
            .map(|(n, vals)| (Probability::new(u128::from(n), u128::from(total)), vals))
            .collect())
    }

    fn eval(
        &self,
        state: &State,
        chain: &Chain,
        index: usize,
        expr: &Expr,
    ) -> Result<Val, TraceError> {
        Ok(match expr {
            Expr::SourceAddr => Val::Addr(state.src),
            Expr::DestAddr => Val::Addr(state.dst),
            Expr::DestAddrLowBits { bits } => Val::Addr(low_bits(state.dst, *bits)),
            Expr::DestPortLowBits { bits } => {
                Val::Port(state.dst_port & kproxy_compiler::ir::low_bits_port_mask(*bits))
            }
            Expr::L4Proto => Val::Proto(state.proto),
            Expr::DestPort => Val::Port(state.dst_port),
            Expr::Mark => Val::Int(state.mark),
            Expr::CtState => Val::CtState(if state.ct_new {
                CT_STATE_NEW
            } else {
                CT_STATE_ESTABLISHED
            }),
            Expr::CtStatus => Val::CtStatus(state.ct_status),
            Expr::SourceAddrType => Val::AddrType {
                local: self.local.contains(state.src),
            },
            Expr::DestAddrType => Val::AddrType {
                local: self.local.contains(state.dst),
            },
            Expr::Numgen { modulus } => {
                return Err(self.unsupported(
                    chain,
                    index,
                    format!("numgen random mod {modulus} here"),
                ));
            }
            Expr::Constant(n) => Val::Int(*n),
        })
    }

    fn unknown(&self, chain: &Chain, index: usize, kind: &'static str, name: &str) -> TraceError {
        TraceError::Unknown {
            chain: chain.name.clone(),
            index,
            kind,
            name: name.to_string(),
        }
    }

    fn type_error(&self, chain: &Chain, index: usize, detail: String) -> TraceError {
        TraceError::Type {
            chain: chain.name.clone(),
            index,
            detail,
        }
    }

    fn unsupported(&self, chain: &Chain, index: usize, detail: String) -> TraceError {
        TraceError::Unsupported {
            chain: chain.name.clone(),
            index,
            detail,
        }
    }
}

fn push(out: &mut Vec<Outcome>, outcome: Outcome) -> Result<(), TraceError> {
    if out.len() >= MAX_OUTCOMES {
        return Err(TraceError::TooManyPaths);
    }
    out.push(outcome);
    Ok(())
}

fn certain(holds: bool) -> Probability {
    if holds {
        Probability::ONE
    } else {
        Probability::ZERO
    }
}

/// Adds `p` to the probability of `result`.
fn merge<T: PartialEq>(results: &mut Vec<(Probability, T)>, p: Probability, result: T) {
    match results.iter_mut().find(|(_, r)| *r == result) {
        Some((q, _)) => *q = *q + p,
        None => results.push((p, result)),
    }
}

fn held(results: &[(Probability, bool)]) -> Probability {
    results
        .iter()
        .find(|(_, holds)| *holds)
        .map_or(Probability::ZERO, |(p, _)| *p)
}

/// A verdict as nft writes it.
pub(crate) fn verdict_text(verdict: &Verdict) -> String {
    let mut text = String::new();
    nft::verdict(&mut text, verdict);
    text
}

/// `addr` with all but its lowest `bits` bits cleared, as `ip daddr & mask` computes it.
fn low_bits(addr: IpAddr, bits: u8) -> IpAddr {
    use kproxy_compiler::ir::{low_bits_mask, Family};
    match (
        addr,
        low_bits_mask(Family::Ip, bits),
        low_bits_mask(Family::Ip6, bits),
    ) {
        (IpAddr::V4(a), IpAddr::V4(mask), _) => IpAddr::V4((u32::from(a) & u32::from(mask)).into()),
        (IpAddr::V6(a), _, IpAddr::V6(mask)) => {
            IpAddr::V6((u128::from(a) & u128::from(mask)).into())
        }
        (other, _, _) => other,
    }
}
