//! The typed ruleset IR: nftables objects, with nftables' own nouns.
//!
//! One IR feeds every consumer: the text renderer (`nft -f` input), the netlink encoder (which
//! programs the kernel) and the packet tracer. Matches, statements and verdicts are typed, never
//! free text, so all consumers read the same structure and cannot disagree about what a rule does.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use kproxy_model::Protocol;
use serde::Serialize;

/// The name of every table kproxy owns (one per family). kproxy never touches other tables.
pub const TABLE_NAME: &str = "kproxy";

/// A complete ruleset: one table per IP family in use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// Tables, IPv4 first.
    pub tables: Vec<Table>,
}

/// An nftables address family. kproxy uses one table per IP family, so a dual-stack node
/// programs two independent tables, as kube-proxy's per-family proxiers do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// `ip`: IPv4.
    Ip,
    /// `ip6`: IPv6.
    Ip6,
}

/// A table: named sets and maps, then chains, in the order they are created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Address family.
    pub family: Family,
    /// Always [`TABLE_NAME`].
    pub name: String,
    /// Named sets.
    pub sets: Vec<Set>,
    /// Named verdict maps.
    pub maps: Vec<Map>,
    /// Named endpoint maps: the endpoints every DNAT rule picks from.
    pub endpoint_maps: Vec<EndpointMap>,
    /// Chains: base chains first, then regular chains.
    pub chains: Vec<Chain>,
}

/// The type of one field of a set key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DataType {
    /// An IPv4 address or prefix.
    Ipv4Addr,
    /// An IPv6 address or prefix.
    Ipv6Addr,
    /// A transport protocol number.
    InetProto,
    /// A transport port.
    InetService,
    /// A 32-bit integer (the output of `numgen`).
    Integer,
}

/// A named set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Set {
    /// Set name, unique in its table.
    pub name: String,
    /// Key type; more than one field is a concatenation.
    pub key: Vec<DataType>,
    /// Elements may be prefixes (the last key field, for concatenations).
    pub interval: bool,
    /// Elements are added by the dataplane (`update @set`) and expire after this many seconds,
    /// unless the update names its own timeout.
    pub timeout: Option<u32>,
    /// Most elements the set holds (`size`); `None` leaves nft's default.
    pub size: Option<u32>,
    /// Why the set exists, as shown by `nft list`.
    pub comment: Option<String>,
    /// Elements, sorted.
    pub elements: Vec<Vec<Value>>,
}

impl Set {
    /// nft accepts no `type integer`, so a key with an integer field is declared `typeof`,
    /// each field by an expression of its type; the renderer and the netlink lowering must
    /// agree on when.
    pub fn declared_by_typeof(&self) -> bool {
        self.key.contains(&DataType::Integer)
    }
}

/// A named map. kproxy's named maps are verdict maps: they dispatch a packet to the chain
/// of the Service port it is addressed to, in one hash lookup whatever the number of Services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Map {
    /// Map name, unique in its table.
    pub name: String,
    /// Key type; more than one field is a concatenation.
    pub key: Vec<DataType>,
    /// Why the map exists, as shown by `nft list`.
    pub comment: Option<String>,
    /// Elements, sorted by key.
    pub elements: Vec<VerdictElement>,
}

/// A named interval map from a `numgen` value to an endpoint (`typeof numgen random mod 1 :
/// ip daddr . th dport`, `flags interval`).
///
/// Each endpoint chain owns a window of the key space (see [`Dnat::Numgen`]) in one of these
/// maps, and each of its endpoints an equal range of that window. Changing a Service's endpoints
/// rewrites only its ranges: map elements, never a rule, so the kernel does not re-validate the
/// whole table (which a rule change costs, in proportion to the number of Services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointMap {
    /// Map name, unique in its table.
    pub name: String,
    /// Why the map exists, as shown by `nft list`.
    pub comment: Option<String>,
    /// Ranges, sorted and disjoint.
    pub elements: Vec<EndpointRange>,
}

/// One element of an endpoint map: every `numgen` value in `first..=last` goes to `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct EndpointRange {
    /// First key of the range.
    pub first: u32,
    /// Last key of the range (inclusive).
    pub last: u32,
    /// The endpoint.
    pub target: SocketAddr,
}

/// One element of a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerdictElement {
    /// The key, one value per key field.
    pub key: Vec<Value>,
    /// What happens to a packet whose key matches.
    pub verdict: Verdict,
}

/// A chain. Base chains are attached to a netfilter hook; regular chains are reached by
/// `jump`/`goto` or from a verdict map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// Chain name, unique in its table.
    pub name: String,
    /// Set for base chains.
    pub hook: Option<BaseHook>,
    /// What the chain is for (for per-Service chains: the Service port).
    pub comment: Option<String>,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// Where a base chain hooks in. The policy is always `accept`: kproxy only acts on Service
/// traffic and lets everything else through to the host's own firewall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BaseHook {
    /// `filter` or `nat`.
    pub kind: ChainType,
    /// The netfilter hook.
    pub hook: Hook,
    /// Priority relative to the other chains on the hook.
    pub priority: Priority,
}

/// The type of a base chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChainType {
    /// Sees every packet.
    Filter,
    /// Sees the first packet of each connection; may rewrite addresses.
    Nat,
}

/// A netfilter hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// Packets arriving on an interface, before routing.
    Prerouting,
    /// Packets for this host.
    Input,
    /// Packets routed through this host.
    Forward,
    /// Packets sent by this host.
    Output,
    /// Packets leaving an interface, after routing.
    Postrouting,
}

/// A chain priority: a standard base plus an offset, as nftables writes it (`dstnat - 10`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Priority {
    /// The named standard priority.
    pub base: PriorityBase,
    /// Offset from it.
    pub offset: i32,
}

impl Priority {
    /// The numeric priority the kernel sees.
    pub fn value(self) -> i32 {
        self.base.value() + self.offset
    }
}

/// nftables' named priorities for the `ip` and `ip6` families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriorityBase {
    /// -100: destination NAT.
    Dstnat,
    /// 0: filtering.
    Filter,
    /// 100: source NAT.
    Srcnat,
}

impl PriorityBase {
    /// The numeric value of the base.
    pub fn value(self) -> i32 {
        match self {
            PriorityBase::Dstnat => -100,
            PriorityBase::Filter => 0,
            PriorityBase::Srcnat => 100,
        }
    }
}

/// A rule: all matches must hold; then the statements run, then the action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Conditions on the packet.
    pub matches: Vec<Match>,
    /// Side effects that do not end evaluation.
    pub statements: Vec<Statement>,
    /// What ends evaluation of this rule, if anything.
    pub action: Option<Action>,
    /// Shown by `nft list`.
    pub comment: Option<String>,
}

/// A value taken from the packet, its connection or the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// Source address of the table's family (`ip saddr` / `ip6 saddr`).
    SourceAddr,
    /// Destination address of the table's family.
    DestAddr,
    /// The lowest `bits` bits of the destination address, the others cleared
    /// (`ip daddr & 0.0.3.255`): which dispatch bucket a Service address's rules are in.
    DestAddrLowBits {
        /// How many low bits are kept (at most 32).
        bits: u8,
    },
    /// Transport protocol (`meta l4proto`).
    L4Proto,
    /// Transport destination port (`th dport`; TCP, UDP and SCTP share the offset).
    DestPort,
    /// The lowest `bits` bits of the destination port, the others cleared (`th dport & 1023`):
    /// which dispatch bucket a NodePort's rules are in.
    DestPortLowBits {
        /// How many low bits are kept (at most 16).
        bits: u8,
    },
    /// Packet mark (`meta mark`).
    Mark,
    /// Connection tracking state (`ct state`).
    CtState,
    /// Connection tracking status bits (`ct status`).
    CtStatus,
    /// Address type of the source address (`fib saddr type`).
    SourceAddrType,
    /// Address type of the destination address (`fib daddr type`).
    DestAddrType,
    /// A random number in `0..modulus` (`numgen random mod N`), drawn per evaluation.
    Numgen {
        /// Exclusive upper bound.
        modulus: u32,
    },
    /// A 32-bit constant as a field of a concatenated key. nft accepts no literal there, so it
    /// is written (and lowered) as `numgen random mod 1 offset N`: a random number below one,
    /// plus N, which is N for every packet.
    Constant(u32),
}

/// The address of `family` whose lowest `bits` bits are set: the mask of
/// [`Expr::DestAddrLowBits`].
pub fn low_bits_mask(family: Family, bits: u8) -> IpAddr {
    let bits = u32::from(bits.min(32));
    let mask = u32::MAX
        .checked_shr(32 - bits)
        .filter(|_| bits > 0)
        .unwrap_or(0);
    match family {
        Family::Ip => IpAddr::V4(mask.into()),
        Family::Ip6 => IpAddr::V6(u128::from(mask).into()),
    }
}

/// The port whose lowest `bits` bits are set: the mask of [`Expr::DestPortLowBits`].
pub fn low_bits_port_mask(bits: u8) -> u16 {
    u16::MAX
        .checked_shr(16 - u32::from(bits.min(16)))
        .filter(|_| bits > 0)
        .unwrap_or(0)
}

/// A constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    /// An address.
    Addr(IpAddr),
    /// A network; in interval sets, every address inside.
    Prefix(IpNet),
    /// A transport protocol.
    Proto(Protocol),
    /// A transport port.
    Port(u16),
    /// An integer.
    Integer(u32),
    /// `ct state new`: the first packet of a connection.
    CtNew,
    /// `ct status dnat`: the connection's destination was rewritten.
    CtDnat,
    /// `fib … type local`: an address of this host.
    Local,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CmpOp {
    /// Equal (for [`Value::Prefix`]: inside the network; for status bits: all set).
    Eq,
    /// Not equal.
    Ne,
}

/// A condition on the packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// `expr op value`.
    Cmp {
        /// Left side.
        left: Expr,
        /// Operator.
        op: CmpOp,
        /// Right side.
        right: Value,
    },
    /// `expr & mask == value`.
    Masked {
        /// Left side.
        left: Expr,
        /// Bits to keep.
        mask: u32,
        /// Required value of the kept bits.
        value: u32,
    },
    /// `key [!=] @set` or `key [!=] { … }`.
    Lookup {
        /// Key fields (a concatenation when more than one).
        key: Vec<Expr>,
        /// The set looked in.
        set: SetRef,
        /// True for "not in the set".
        negate: bool,
    },
}

/// A set a lookup reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetRef {
    /// A named set of the same table.
    Named(String),
    /// An anonymous, constant interval set of networks, owned by the rule.
    Prefixes(Vec<IpNet>),
}

/// A statement that does not end rule evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statement {
    /// `meta mark set meta mark | bits`.
    MarkOr(u32),
    /// `meta mark set meta mark ^ bits`.
    MarkXor(u32),
    /// `update @set { key timeout T }`: add the key, or refresh its timeout.
    UpdateSet {
        /// A named set with a timeout.
        set: String,
        /// The key added (a concatenation when more than one field).
        key: Vec<Expr>,
        /// Seconds until the element expires; `None` for the set's default.
        timeout: Option<u32>,
    },
}

/// What ends evaluation of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A plain verdict.
    Verdict(Verdict),
    /// `key vmap @map`: look up a verdict; no element means the rule does not apply.
    Vmap {
        /// Key fields (a concatenation when more than one).
        key: Vec<Expr>,
        /// A named verdict map of the same table.
        map: String,
    },
    /// Rewrite the destination (accepts the packet).
    Dnat(Dnat),
    /// Rewrite the source to the outgoing interface's address (accepts the packet).
    Masquerade {
        /// Randomise the source port fully, to avoid SNAT port collisions.
        fully_random: bool,
    },
    /// Refuse, so clients fail fast instead of timing out.
    Reject(RejectWith),
}

/// How a refusal is signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectWith {
    /// ICMP (ICMPv6) port unreachable.
    PortUnreachable,
    /// A TCP reset; only after a `meta l4proto tcp` match. An IPv6 TCP client that gets ICMPv6
    /// port unreachable while `connect()` holds the socket treats it as a soft error and waits
    /// for its SYN retransmission (about a second); a reset fails it at once.
    TcpReset,
}

/// Where DNAT sends a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dnat {
    /// One endpoint.
    To(SocketAddr),
    /// One endpoint of an endpoint map, picked at random:
    /// `dnat to numgen random mod MODULUS offset OFFSET map @MAP`. The map's ranges inside
    /// `OFFSET..OFFSET + MODULUS` split the window between the chain's endpoints.
    Numgen {
        /// The [`EndpointMap`] read.
        map: String,
        /// Size of the window (the same for every chain: [`crate::endpoint_maps::MODULUS`]).
        modulus: u32,
        /// First key of the chain's window.
        offset: u32,
    },
}

/// A verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Stop evaluating this base chain; the packet goes on to the hook's later base chains
    /// (of any table) and, if none drops it, continues.
    Accept,
    /// Discard silently.
    Drop,
    /// Return to the calling chain.
    Return,
    /// Evaluate a chain, then come back.
    Jump(String),
    /// Evaluate a chain, never come back.
    Goto(String),
}

impl Rule {
    /// A rule with no matches and no statements.
    pub fn action(action: Action) -> Rule {
        Rule {
            matches: Vec::new(),
            statements: Vec::new(),
            action: Some(action),
            comment: None,
        }
    }

    /// A rule that only applies a verdict.
    pub fn verdict(verdict: Verdict) -> Rule {
        Rule::action(Action::Verdict(verdict))
    }

    /// Adds matches in front.
    pub fn when(mut self, matches: impl IntoIterator<Item = Match>) -> Rule {
        self.matches.splice(0..0, matches);
        self
    }

    /// Adds a statement.
    pub fn with(mut self, statement: Statement) -> Rule {
        self.statements.push(statement);
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Rule {
        self.comment = Some(comment.into());
        self
    }
}

/// The rules that refuse a packet matching `matches`: TCP with a reset, anything else with
/// ICMP port unreachable.
pub fn refusal(matches: Vec<Match>) -> Vec<Rule> {
    let tcp = Match::eq(Expr::L4Proto, Value::Proto(Protocol::Tcp));
    vec![
        Rule::action(Action::Reject(RejectWith::TcpReset))
            .when(matches.iter().cloned().chain([tcp])),
        Rule::action(Action::Reject(RejectWith::PortUnreachable)).when(matches),
    ]
}

impl Match {
    /// `left == right`.
    pub fn eq(left: Expr, right: Value) -> Match {
        Match::Cmp {
            left,
            op: CmpOp::Eq,
            right,
        }
    }

    /// `left != right`.
    pub fn ne(left: Expr, right: Value) -> Match {
        Match::Cmp {
            left,
            op: CmpOp::Ne,
            right,
        }
    }

    /// `key @set`.
    pub fn in_set(key: impl Into<Vec<Expr>>, set: &str) -> Match {
        Match::Lookup {
            key: key.into(),
            set: SetRef::Named(set.to_string()),
            negate: false,
        }
    }
}
