//! The kernel's vocabulary: nf_tables messages and expressions as plain Rust values.
//!
//! The IR speaks nftables' language (`ip daddr . meta l4proto . th dport vmap @map`); the kernel
//! speaks registers, loads and lookups. [`lower`](super::lower) translates the first into these
//! types, and [`encode`](super::encode) and [`ffi`](super::ffi) write them out unchanged. Keeping this layer as data
//! makes the translation testable without a kernel and keeps every `unsafe` call in one place.

use kproxy_compiler::ir::{DataType, Family};

/// `NFT_SET_*` flags (the `libc` crate has them as `i32`).
pub mod set_flags {
    /// Bound to one rule, destroyed with it.
    pub const ANONYMOUS: u32 = 0x1;
    /// Elements never change after creation.
    pub const CONSTANT: u32 = 0x2;
    /// Elements are ranges.
    pub const INTERVAL: u32 = 0x4;
    /// Elements map to data or verdicts.
    pub const MAP: u32 = 0x8;
    /// Elements expire.
    pub const TIMEOUT: u32 = 0x10;
    /// The dataplane adds elements (`update @set`).
    pub const EVAL: u32 = 0x20;
    /// The key is a concatenation (with intervals: the pipapo backend).
    pub const CONCAT: u32 = 0x80;
}

/// nft's id of a datatype; a concatenation shifts each field's id in by 6 bits, first field
/// highest.
pub fn datatype_id(key: &[DataType]) -> u32 {
    key.iter().fold(0, |id, t| {
        let one = match t {
            DataType::Integer => 4,
            DataType::Ipv4Addr => 7,
            DataType::Ipv6Addr => 8,
            DataType::InetProto => 12,
            DataType::InetService => 13,
        };
        (id << 6) | one
    })
}

/// The fields of a datatype id written by [`datatype_id`]; `None` for any other type.
pub fn datatypes(mut id: u32) -> Option<Vec<DataType>> {
    let mut out = Vec::new();
    while id != 0 {
        out.push(match id & 0x3f {
            4 => DataType::Integer,
            7 => DataType::Ipv4Addr,
            8 => DataType::Ipv6Addr,
            12 => DataType::InetProto,
            13 => DataType::InetService,
            _ => return None,
        });
        id >>= 6;
    }
    out.reverse();
    (!out.is_empty()).then_some(out)
}

/// Bytes of a field's value, unpadded.
pub fn datatype_len(t: DataType) -> u32 {
    match t {
        DataType::Ipv4Addr | DataType::Integer => 4,
        DataType::Ipv6Addr => 16,
        DataType::InetProto => 1,
        DataType::InetService => 2,
    }
}

/// A length rounded up to whole 32-bit registers: how fields sit in keys and registers.
pub fn padded_len(len: u32) -> u32 {
    len.div_ceil(4) * 4
}

/// Where the family's addresses sit in the network header: (source offset, destination
/// offset, length).
pub fn address_fields(family: Family) -> (u32, u32, u32) {
    match family {
        Family::Ip => (12, 16, 4),
        Family::Ip6 => (8, 24, 16),
    }
}

/// A 32-bit register index (`NFT_REG32_00` + n); wide values span consecutive registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Register(pub u32);

impl Register {
    /// The verdict register.
    pub const VERDICT: Register = Register(0);
    /// The first data register (`NFT_REG32_00`).
    pub const FIRST: Register = Register(8);
    /// The register after `words` 32-bit words of data starting at the first one.
    pub fn after(words: u32) -> Register {
        Register(Self::FIRST.0 + words)
    }
}

/// Where a payload load reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadBase {
    /// The IP header.
    Network,
    /// The TCP/UDP/SCTP header.
    Transport,
}

/// `meta` keys kproxy loads or sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    /// The transport protocol number (1 byte).
    L4Proto,
    /// The packet mark (4 bytes, host order).
    Mark,
}

/// `ct` keys kproxy loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    /// `ct state` bits.
    State,
    /// `ct status` bits.
    Status,
}

/// A verdict as the kernel encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerdictCode {
    /// `NF_ACCEPT`.
    Accept,
    /// `NF_DROP`.
    Drop,
    /// `NFT_RETURN`.
    Return,
    /// `NFT_JUMP` to a chain.
    Jump(String),
    /// `NFT_GOTO` to a chain.
    Goto(String),
}

/// Which set a lookup or update reads: a named set, or an anonymous set sent in the same
/// batch and known only by its batch-local id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetHandle {
    /// A named set of the table.
    Named(String),
    /// An anonymous set (`__set%d` / `__map%d`) with this `NFTA_SET_ID`.
    Anonymous {
        /// The name template the kernel completes.
        template: &'static str,
        /// The batch-local id.
        id: u32,
    },
}

impl SetHandle {
    /// The name sent to the kernel.
    pub fn name(&self) -> &str {
        match self {
            SetHandle::Named(name) => name,
            SetHandle::Anonymous { template, .. } => template,
        }
    }

    /// The batch-local id, for anonymous sets.
    pub fn id(&self) -> Option<u32> {
        match self {
            SetHandle::Named(_) => None,
            SetHandle::Anonymous { id, .. } => Some(*id),
        }
    }
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expression {
    /// Copy `len` bytes of a header into `dreg`.
    Payload {
        /// Header.
        base: PayloadBase,
        /// Byte offset in the header.
        offset: u32,
        /// Bytes loaded.
        len: u32,
        /// Destination register.
        dreg: Register,
    },
    /// Load packet metadata.
    Meta {
        /// What to load.
        key: MetaKey,
        /// Destination register.
        dreg: Register,
    },
    /// Set packet metadata from a register.
    MetaSet {
        /// What to set.
        key: MetaKey,
        /// Source register.
        sreg: Register,
    },
    /// Load connection tracking state.
    Ct {
        /// What to load.
        key: CtKey,
        /// Destination register.
        dreg: Register,
    },
    /// Load the routing type (`RTN_*`) of the source or destination address.
    FibAddrType {
        /// True for the source address, false for the destination.
        source: bool,
        /// Destination register.
        dreg: Register,
    },
    /// A random number in `offset..offset + modulus`, host byte order.
    Numgen {
        /// Exclusive bound of the random part.
        modulus: u32,
        /// Added to the random part.
        offset: u32,
        /// Destination register.
        dreg: Register,
    },
    /// Convert a 32-bit register from host to network byte order in place (interval maps keep
    /// their keys big-endian, so nft converts `numgen` before a lookup in one).
    HostToNetwork32 {
        /// The register.
        reg: Register,
    },
    /// Compare a register with a constant; a mismatch ends the rule.
    Cmp {
        /// Register compared.
        sreg: Register,
        /// True for `!=`.
        not_equal: bool,
        /// The constant; its length is the comparison's length.
        data: Vec<u8>,
    },
    /// `dreg = (sreg & mask) ^ xor`.
    Bitwise {
        /// Source register.
        sreg: Register,
        /// Destination register.
        dreg: Register,
        /// AND mask; its length is the operation's length.
        mask: Vec<u8>,
        /// XOR value, as long as the mask.
        xor: Vec<u8>,
    },
    /// Look the registers up in a set; with `dreg`, load the element's data or verdict.
    Lookup {
        /// First key register.
        sreg: Register,
        /// Where the mapped value goes (`None` for a membership test).
        dreg: Option<Register>,
        /// The set.
        set: SetHandle,
        /// Match when the key is absent.
        invert: bool,
    },
    /// Add the key to a dynamic set, or refresh its timeout.
    DynsetUpdate {
        /// First key register.
        sreg: Register,
        /// The set's name.
        set: String,
        /// The element's timeout in milliseconds; `None` for the set's default.
        timeout_ms: Option<u64>,
    },
    /// Load a constant.
    Immediate {
        /// Destination register.
        dreg: Register,
        /// The constant.
        data: Vec<u8>,
    },
    /// Set the verdict.
    Verdict(VerdictCode),
    /// Destination NAT from registers.
    Dnat {
        /// Address family of the addresses.
        family: Family,
        /// Register holding the address.
        addr: Register,
        /// Register holding the port.
        port: Register,
        /// Send `NF_NAT_RANGE_PROTO_SPECIFIED` explicitly (as nft does for constants).
        proto_specified: bool,
    },
    /// Masquerade.
    Masquerade {
        /// `NF_NAT_RANGE_PROTO_RANDOM_FULLY`.
        fully_random: bool,
    },
    /// Reject with ICMP (v6) port unreachable.
    Reject {
        /// The ICMP code for the table's family.
        icmp_code: u8,
    },
    /// Reject with a TCP reset.
    RejectTcpReset,
}

/// A set or map as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetSpec {
    /// How rules and element messages refer to it.
    pub handle: SetHandle,
    /// The batch-local `NFTA_SET_ID`, which the kernel requires on every new set.
    pub id: u32,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// nft's datatype id of the key (concatenations folded).
    pub key_type: u32,
    /// Key length in bytes (each field padded to 4).
    pub key_len: u32,
    /// Unpadded field lengths, for concatenated keys.
    pub concat: Vec<u8>,
    /// Map data type and length, for maps.
    pub data: Option<(u32, u32)>,
    /// Default element timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Number of elements, announced for anonymous sets.
    pub size: Option<u32>,
    /// nft's userdata: key byte order, comment.
    pub userdata: Vec<u8>,
}

/// What a map element maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElementData {
    /// A set element.
    None,
    /// A verdict map element.
    Verdict(VerdictCode),
    /// A data map element.
    Value(Vec<u8>),
}

/// One element as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The key, in register layout.
    pub key: Vec<u8>,
    /// The inclusive end of a range, for concatenated interval sets.
    pub key_end: Option<Vec<u8>>,
    /// Marks the exclusive end of an interval (single-field interval sets).
    pub interval_end: bool,
    /// The mapped value.
    pub data: ElementData,
}

/// A chain as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpec {
    /// Name.
    pub name: String,
    /// Hook number, priority and type, for base chains.
    pub hook: Option<(u32, i32, &'static str)>,
    /// nft's userdata (the comment).
    pub userdata: Vec<u8>,
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `NFT_MSG_NEWTABLE`.
    NewTable,
    /// `NFT_MSG_DELTABLE`.
    DelTable,
    /// `NFT_MSG_NEWTABLE` for another program's table (kube-proxy's), by name.
    NewOtherTable(String),
    /// `NFT_MSG_DELTABLE` for another program's table, by name.
    DelOtherTable(String),
    /// `NFT_MSG_NEWCHAIN`.
    NewChain(ChainSpec),
    /// `NFT_MSG_DELRULE` without a handle: flush the chain.
    FlushChain(String),
    /// `NFT_MSG_DELCHAIN`.
    DelChain(String),
    /// `NFT_MSG_NEWSET`.
    NewSet(SetSpec),
    /// `NFT_MSG_DELSET`.
    DelSet(String),
    /// `NFT_MSG_NEWSETELEM`.
    NewElements(SetHandle, Vec<Element>),
    /// `NFT_MSG_DELSETELEM` (keys only).
    DelElements(String, Vec<Element>),
    /// `NFT_MSG_NEWRULE`, appended to the chain.
    NewRule {
        /// The chain.
        chain: String,
        /// The expressions, in order.
        expressions: Vec<Expression>,
        /// nft's userdata (the comment).
        userdata: Vec<u8>,
    },
}

/// A message addressed to one of kproxy's tables, tagged with the plan operation it comes
/// from, so a kernel error can name the object that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressed {
    /// Table family.
    pub family: Family,
    /// The message.
    pub message: Message,
    /// Index of the plan operation.
    pub origin: usize,
}

/// A chain as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDump {
    /// Table name.
    pub table: String,
    /// Chain name.
    pub name: String,
    /// Hook number, priority and type, for base chains.
    pub hook: Option<(u32, i32, String)>,
    /// Userdata.
    pub userdata: Vec<u8>,
}

/// A set or map as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDump {
    /// Table name.
    pub table: String,
    /// Set name (anonymous sets have kernel-assigned names such as `__map3`).
    pub name: String,
    /// `NFT_SET_*` flags.
    pub flags: u32,
    /// Key datatype id.
    pub key_type: u32,
    /// Key length.
    pub key_len: u32,
    /// Data type, for maps.
    pub data_type: Option<u32>,
    /// Default timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Most elements (`size`), when declared.
    pub size: Option<u32>,
    /// Userdata.
    pub userdata: Vec<u8>,
}

/// A rule as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleDump {
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// Its expressions; `None` where an expression is not one kproxy writes.
    pub expressions: Vec<Option<Expression>>,
    /// Userdata.
    pub userdata: Vec<u8>,
}
