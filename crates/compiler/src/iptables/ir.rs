//! The typed iptables IR: tables → chains → rules, each rule typed matches and one target.
//!
//! The same structure feeds the `iptables-restore` renderer ([`super::render`]), the partial
//! restore ([`super::restore`]) and the tests, so none of them parses rule text. Matches keep
//! the order iptables evaluates them in; the renderer writes them in that order.

use std::net::SocketAddr;

use ipnet::IpNet;
use kproxy_model::{IpFamily, Protocol};
use serde::Serialize;

/// The iptables rules for one node: one [`FamilyRules`] per IP family in use, IPv4 first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Ruleset {
    /// Families, IPv4 first. IPv6 is loaded by `ip6tables-restore`.
    pub families: Vec<FamilyRules>,
}

/// Everything one `iptables-restore` (or `ip6tables-restore`) call programs, plus the jumps
/// from the built-in chains that must exist beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FamilyRules {
    /// Which binary loads it: `iptables-restore` or `ip6tables-restore`.
    pub family: IpFamily,
    /// `nat`, `filter`, then `mangle`.
    pub tables: Vec<Table>,
    /// Rules kproxy keeps in built-in chains (`PREROUTING`, `INPUT`, …). They cannot be part
    /// of a `--noflush` restore without duplicating on every sync, so they are checked and
    /// inserted on their own (`iptables -C` / `-I`), as kube-proxy does.
    pub hooks: Vec<Hook>,
}

/// An iptables table kproxy writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableName {
    /// `nat`: DNAT and masquerade marks.
    Nat,
    /// `filter`: REJECT and DROP, which the nat table does not allow.
    Filter,
    /// `mangle`: loadBalancerSourceRanges, which must drop before routing (filter chains
    /// run after it, when an unroutable LB IP has already been answered "unreachable").
    Mangle,
}

impl TableName {
    /// The name `-t` and `*table` take.
    pub fn as_str(self) -> &'static str {
        match self {
            TableName::Nat => "nat",
            TableName::Filter => "filter",
            TableName::Mangle => "mangle",
        }
    }
}

/// One table's kproxy chains, in the order they are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Table {
    /// The table.
    pub name: TableName,
    /// Top-level chains first, then per-Service-port chains in Service order.
    pub chains: Vec<Chain>,
}

/// Whether a chain is shared by every Service port or belongs to one. Both kinds are written
/// by a partial restore only when their rules change ([`super::restore`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainKind {
    /// `KUBE-SERVICES`, `KUBE-NODEPORTS`, …: they list every Service port, so they change when
    /// a Service port (or its address, or whether it has endpoints) comes or goes.
    TopLevel,
    /// `KUBE-SVC-…`, `KUBE-SEP-…`, …: one Service port's.
    Service,
}

/// A user-defined chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    /// At most 28 characters (the kernel's limit); see [`super::naming`].
    pub name: String,
    /// Top-level or per-Service-port.
    pub kind: ChainKind,
    /// Rules, evaluated in order.
    pub rules: Vec<Rule>,
}

/// A rule: every match must hold, then the target runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// `-m comment --comment`: which Service port, and why.
    pub comment: Option<String>,
    /// Matches, in evaluation order.
    pub matches: Vec<Match>,
    /// What happens to a matching packet.
    pub target: Target,
}

impl Rule {
    /// A rule without matches.
    pub fn to(target: Target) -> Rule {
        Rule {
            comment: None,
            matches: Vec::new(),
            target,
        }
    }

    /// Adds matches after the existing ones.
    pub fn when(mut self, matches: impl IntoIterator<Item = Match>) -> Rule {
        self.matches.extend(matches);
        self
    }

    /// Sets the comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Rule {
        self.comment = Some(comment.into());
        self
    }
}

/// A match on a packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Match {
    /// `[!] -s net`.
    Source {
        /// Address or network; a host address is written without its prefix length.
        net: IpNet,
        /// `!`: the source is outside `net`.
        negate: bool,
    },
    /// `[!] -d net`.
    Destination {
        /// Address or network.
        net: IpNet,
        /// `!`: the destination is outside `net`.
        negate: bool,
    },
    /// `-m tcp -p tcp [--dport port]` (`udp`, `sctp` likewise). A port needs its protocol's
    /// match, so the two are one value.
    Protocol {
        /// The transport protocol.
        protocol: Protocol,
        /// The destination port, if matched.
        dport: Option<u16>,
    },
    /// `-m addrtype [!] --src-type LOCAL` / `--dst-type LOCAL`: an address of this node.
    AddrTypeLocal {
        /// Which address: the source (true) or the destination.
        source: bool,
        /// `!`: not a local address.
        negate: bool,
    },
    /// `-m mark [!] --mark value/mask`.
    Mark {
        /// Bits that must be set.
        value: u32,
        /// Bits compared.
        mask: u32,
        /// `!`: the bits differ.
        negate: bool,
    },
    /// `-m conntrack --ctstate …`.
    CtState(Vec<CtState>),
    /// `-m statistic --mode random --probability 1/n` (10 decimals, as kube-proxy writes).
    RandomOneIn(u32),
    /// `-m recent --name … --rcheck --seconds … --reap`: the source address is in the list
    /// and was seen within the timeout.
    RecentCheck {
        /// The list (kube-proxy names it after the endpoint chain).
        name: String,
        /// Idle time after which a client loses its endpoint.
        seconds: u32,
    },
    /// `-m recent --name … --set`: records the source address (always true).
    RecentSet {
        /// The list.
        name: String,
    },
}

impl Match {
    /// `-s net` for one address or network.
    pub fn source(net: IpNet) -> Match {
        Match::Source { net, negate: false }
    }

    /// `-d addr` (a host address).
    pub fn destination(addr: std::net::IpAddr) -> Match {
        Match::Destination {
            net: IpNet::from(addr),
            negate: false,
        }
    }

    /// `-m <proto> -p <proto> --dport <port>`.
    pub fn port(protocol: Protocol, port: u16) -> Match {
        Match::Protocol {
            protocol,
            dport: Some(port),
        }
    }

    /// `-m addrtype --dst-type LOCAL`.
    pub fn to_local() -> Match {
        Match::AddrTypeLocal {
            source: false,
            negate: false,
        }
    }

    /// `-m addrtype --src-type LOCAL`.
    pub fn from_local() -> Match {
        Match::AddrTypeLocal {
            source: true,
            negate: false,
        }
    }

    /// `-m conntrack --ctstate NEW`.
    pub fn new_connection() -> Match {
        Match::CtState(vec![CtState::New])
    }
}

/// A connection-tracking state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum CtState {
    /// The first packet of a connection.
    New,
    /// A packet of a connection seen in both directions.
    Established,
    /// A packet related to a tracked connection (ICMP errors, FTP data).
    Related,
}

impl CtState {
    /// The name `--ctstate` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            CtState::New => "NEW",
            CtState::Established => "ESTABLISHED",
            CtState::Related => "RELATED",
        }
    }
}

/// What a rule does to a matching packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `-j CHAIN`: continue in a user chain, then come back.
    Jump(String),
    /// `-j RETURN`.
    Return,
    /// `-j ACCEPT`.
    Accept,
    /// `-j DROP` (filter and mangle tables only).
    Drop,
    /// `-j REJECT` (filter table only).
    Reject(RejectWith),
    /// `-j DNAT --to-destination addr:port` (nat table only).
    Dnat(SocketAddr),
    /// `-j MASQUERADE [--random-fully]` (nat POSTROUTING).
    Masquerade {
        /// Randomise source ports fully, as kube-proxy does.
        random_fully: bool,
    },
    /// `-j MARK --or-mark bits`.
    MarkOr(u32),
    /// `-j MARK --xor-mark bits`: clears bits known to be set.
    MarkXor(u32),
}

/// How REJECT answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectWith {
    /// ICMP (ICMPv6) port unreachable: REJECT's default in both families.
    PortUnreachable,
    /// A TCP reset (the rule must match TCP). IPv6 TCP clients on the node take an ICMPv6
    /// error as soft and wait for a retransmission; a reset fails them at once.
    TcpReset,
}

/// A built-in chain kproxy hooks into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum BuiltinChain {
    /// Packets arriving, before routing.
    Prerouting,
    /// Packets for this host.
    Input,
    /// Routed packets.
    Forward,
    /// Packets this host sends.
    Output,
    /// Packets leaving, after routing.
    Postrouting,
}

impl BuiltinChain {
    /// The chain's name.
    pub fn as_str(self) -> &'static str {
        match self {
            BuiltinChain::Prerouting => "PREROUTING",
            BuiltinChain::Input => "INPUT",
            BuiltinChain::Forward => "FORWARD",
            BuiltinChain::Output => "OUTPUT",
            BuiltinChain::Postrouting => "POSTROUTING",
        }
    }
}

/// A rule in a built-in chain that leads to one of kproxy's chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hook {
    /// Its table.
    pub table: TableName,
    /// Its built-in chain.
    pub chain: BuiltinChain,
    /// The rule; its comment starts with `kproxy` so cleanup finds it.
    pub rule: Rule,
}

impl FamilyRules {
    /// The table called `name`, if it has any chain.
    pub fn table(&self, name: TableName) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }
}

impl Table {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
}
