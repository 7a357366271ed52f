//! The life of a packet through a compiled kproxy ruleset.
//!
//! [`trace`] is a generic interpreter of the compiler's IR ([`kproxy_compiler::ir`]): it knows
//! nftables, not kproxy. It evaluates each rule's expressions, matches, statements and action
//! exactly as the kernel would for one packet, walking the hooks in the kernel's order, and never
//! recognises the compiler's rule shapes. Where the kernel draws a random number (`numgen`), the
//! trace forks: every possible path comes back with its exact probability. [`render_dot`]
//! draws the static picture, every path at once, as a Graphviz graph of chains, maps and
//! endpoints.
//!
//! # The packet's path
//!
//! * [`Origin::Pod`] and [`Origin::External`] packets arrive on an interface: `prerouting` (every
//!   base chain of the packet's family by priority), then the routing decision on the
//!   (post-DNAT) destination — a local address goes to `input`, anything else to `forward` and
//!   then `postrouting`. Pods and external clients take the same path through the kernel; the
//!   rules tell them apart by their source address only.
//! * [`Origin::Node`] packets are locally generated: `output`, then `postrouting`; a packet
//!   still addressed to a local address then loops back through `prerouting` and `input`.
//!
//! `nat` base chains see only the first packet of a connection (`ct_new`), and only once per
//! direction: after DNAT at `prerouting`/`output` the looped-back packet skips `nat` at
//! `prerouting`, as in the kernel. A DNAT rewrites the destination and sets `ct status dnat`; a
//! masquerade sets `ct status snat` (the new source address is the outgoing interface's, which
//! the tracer does not know, so the source stays as given).
//!
//! # Assumptions
//!
//! * Local addresses ([`LocalAddresses`], for `fib … type local`): the addresses given (the node's
//!   primary IPs), plus `127.0.0.0/8` and `::1`.
//! * Dynamic sets (sets with a timeout, such as session-affinity sets) are filled by the
//!   dataplane; the tracer assumes they are empty (a new client) and notes every lookup of one.
//!   `update @set` statements are recorded as notes and seen by later lookups of the same packet.
//! * Packet mark 0 on arrival; `ct state` is `new` or `established` as the [`Packet`] says.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod eval;
mod graph;
mod ratio;
#[cfg(test)]
mod tests;
mod text;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use kproxy_compiler::ir::{ChainType, Family, Hook, RejectWith};
use kproxy_model::Protocol;
use serde::Serialize;

pub use eval::trace;
pub use graph::{render_dot, Focus};
pub use ratio::Probability;
pub use text::render_text;

/// The packet to trace: the first packet of a connection unless `ct_new` is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Source address.
    pub src: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination address (a Service IP, a node address, …).
    pub dst: IpAddr,
    /// Destination port.
    pub dst_port: u16,
    /// Transport protocol.
    pub proto: Protocol,
    /// Where the packet comes from: which hooks it passes.
    pub origin: Origin,
    /// `ct state new`: the first packet of a connection (the usual case). `false` traces a
    /// packet of an established connection, which `nat` chains never see.
    pub ct_new: bool,
}

/// Where a packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A pod: arrives on an interface (`prerouting`).
    Pod,
    /// A process on the node itself (`output`).
    Node,
    /// A client outside the cluster: arrives on an interface (`prerouting`).
    External,
}

/// The addresses `fib … type local` is true for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalAddresses {
    nets: Vec<IpNet>,
}

impl LocalAddresses {
    /// The given addresses (the node's primary IPs and any others), plus `127.0.0.0/8` and
    /// `::1`.
    pub fn new(addresses: impl IntoIterator<Item = IpAddr>) -> LocalAddresses {
        let mut nets: Vec<IpNet> = vec![
            IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).expect("valid prefix"),
            IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        for addr in addresses {
            let net = IpNet::from(addr);
            if !nets.iter().any(|n| n.contains(&addr)) {
                nets.push(net);
            }
        }
        LocalAddresses { nets }
    }

    /// The given networks (a kernel's `local` routes, such as `127.0.0.0/8`), plus
    /// `127.0.0.0/8` and `::1`: what `--live` reads from the kernel.
    pub fn from_networks(networks: impl IntoIterator<Item = IpNet>) -> LocalAddresses {
        let mut local = LocalAddresses::new([]);
        for net in networks {
            let net = net.trunc();
            if !local.nets.iter().any(|n| n.contains(&net)) {
                local.nets.push(net);
            }
        }
        local
    }

    /// True when `addr` is an address of this host.
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&addr))
    }

    /// The networks, loopback first.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }
}

/// Every possible path of one packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trace {
    /// The packet traced.
    pub packet: Packet,
    /// The table family that saw it.
    pub family: Family,
    /// What `fib … type local` was true for.
    pub local_addresses: Vec<IpNet>,
    /// The possible paths, in rule order; their probabilities add up to 1.
    pub outcomes: Vec<Outcome>,
}

/// One possible path of the packet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// How likely this path is.
    pub probability: Probability,
    /// What finally happens to the packet.
    pub disposition: Disposition,
    /// What the packet went through, in order.
    pub events: Vec<Event>,
    /// Assumptions and side effects (dynamic-set lookups, set updates).
    pub notes: Vec<String>,
    /// The rule that masqueraded the packet, if one did.
    pub masqueraded_by: Option<RuleRef>,
    /// Every change of the packet mark, in order.
    pub mark_changes: Vec<MarkChange>,
}

/// What finally happens to the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "disposition")]
pub enum Disposition {
    /// Every base chain let the packet through.
    Accepted {
        /// The new destination, if a DNAT rewrote it.
        dnat: Option<SocketAddr>,
        /// The source is rewritten to the outgoing interface's address.
        masquerade: bool,
        /// Where the packet goes.
        delivery: Delivery,
    },
    /// Discarded silently.
    Dropped {
        /// The rule that dropped it.
        by: RuleRef,
    },
    /// Refused: the client gets an error at once.
    Rejected {
        /// The rule that refused it.
        by: RuleRef,
        /// How the refusal is signalled.
        with: RejectWith,
    },
}

/// Where an accepted packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// To a process on this node (the `input` hook).
    Host,
    /// Out of this node's network stack, after `postrouting` (to a pod or another host).
    Routed,
}

/// A rule of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// The chain holding it.
    pub chain: String,
    /// Its position in the chain, from 0.
    pub index: usize,
    /// The rule as `nft` writes it.
    pub rule: String,
}

/// One change of the packet mark.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MarkChange {
    /// The rule that changed it.
    pub by: RuleRef,
    /// The rule that jumped (or went) to that rule's chain, if it is not a base chain.
    pub called_from: Option<RuleRef>,
    /// The mark before.
    pub old: u32,
    /// The mark after.
    pub new: u32,
}

/// One thing that happened to the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// A base chain starts evaluating the packet.
    Chain {
        /// The hook.
        hook: Hook,
        /// The base chain.
        chain: String,
        /// Its type.
        kind: ChainType,
        /// Its numeric priority.
        priority: i32,
    },
    /// A base chain does not see the packet.
    Skipped {
        /// The hook.
        hook: Hook,
        /// The base chain.
        chain: String,
        /// Why.
        reason: String,
    },
    /// A rule applied.
    Rule {
        /// The rule.
        rule: RuleRef,
        /// What it did, beyond its text: the verdict a map gave, a rewrite, a mark change.
        effects: Vec<String>,
    },
    /// A rule did not apply on this path because of a random draw.
    Missed {
        /// The rule.
        rule: RuleRef,
        /// The draw.
        why: String,
    },
    /// The routing decision.
    Route {
        /// The destination routed.
        dst: IpAddr,
        /// It is a local address.
        local: bool,
        /// The next hook.
        next: Hook,
    },
}

/// Why a packet could not be traced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Source and destination are of different IP families.
    #[error("source {src} and destination {dst} are of different IP families")]
    FamilyMismatch {
        /// Source.
        src: IpAddr,
        /// Destination.
        dst: IpAddr,
    },
    /// A rule names an object the table does not have.
    #[error("{chain} rule {index}: no {kind} named {name}")]
    Unknown {
        /// The chain.
        chain: String,
        /// The rule's index.
        index: usize,
        /// `chain`, `set`, `map` or `endpoint map`.
        kind: &'static str,
        /// The missing name.
        name: String,
    },
    /// A rule compares values of different types, or keys of the wrong length.
    #[error("{chain} rule {index}: {detail}")]
    Type {
        /// The chain.
        chain: String,
        /// The rule's index.
        index: usize,
        /// What does not fit.
        detail: String,
    },
    /// The IR uses something the tracer cannot evaluate.
    #[error("{chain} rule {index}: cannot trace {detail}")]
    Unsupported {
        /// The chain.
        chain: String,
        /// The rule's index.
        index: usize,
        /// What.
        detail: String,
    },
    /// Jumps nested deeper than the kernel allows, or a loop.
    #[error("{chain}: {detail}")]
    Loop {
        /// Where it was noticed.
        chain: String,
        /// What.
        detail: String,
    },
    /// More paths than [`MAX_OUTCOMES`].
    #[error("more than {MAX_OUTCOMES} possible paths")]
    TooManyPaths,
}

/// The most paths a trace returns before giving up.
pub const MAX_OUTCOMES: usize = 10_000;

/// The deepest jump nesting the kernel allows (`NFT_JUMP_STACK_SIZE`).
pub const MAX_JUMP_DEPTH: usize = 16;
