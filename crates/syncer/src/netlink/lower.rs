//! Lowering: plan operations in IR terms → nf_tables messages in kernel terms.
//!
//! Every choice here mirrors what `nft` 1.0.6 sends for the text the renderer prints
//! (`nft --debug=netlink -f` shows it), so a ruleset programmed over netlink lists exactly like
//! the same ruleset loaded with `nft -f`. The round-trip test holds this file to that.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kproxy_compiler::ir::{
    Action, Chain, ChainType, CmpOp, DataType, Dnat, EndpointMap, EndpointRange, Expr, Family,
    Hook, Map, Match, RejectWith, Rule, Ruleset, Set, SetRef, Statement, Value, Verdict,
    VerdictElement,
};

use super::typeof_udata;
use super::wire::{
    address_fields, datatype_id, datatype_len, padded_len, set_flags, Addressed, ChainSpec, CtKey,
    Element, ElementData, Expression, Message, MetaKey, PayloadBase, Register, SetHandle, SetSpec,
    VerdictCode,
};
use crate::plan::{Object, Operation, Plan};

/// The most attribute bytes put in one element message (the kernel's limit is 64 KiB).
const ELEMENT_MESSAGE_BUDGET: usize = 32 * 1024;

// Other kernel constants the `libc` crate does not export.
const RTN_LOCAL: u32 = 2;
const CT_STATE_NEW: u32 = 1 << 3;
const CT_STATUS_DST_NAT: u32 = 1 << 5;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMPV6_PORT_UNREACH: u8 = 4;
const NFT_DATA_VERDICT: u32 = 0xffff_ff00;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;
const UDATA_SET_KEYBYTEORDER: u8 = 0;
const UDATA_SET_COMMENT: u8 = 7;
const UDATA_COMMENT: u8 = 0;

/// Whether a named set holds intervals, per family and name: element encoding depends on it.
#[derive(Default)]
pub struct SetShapes(HashMap<(Family, String), bool>);

impl SetShapes {
    /// Indexes the sets of the rulesets involved in a plan.
    pub fn of<'a>(rulesets: impl IntoIterator<Item = &'a Ruleset>) -> SetShapes {
        let mut shapes = HashMap::new();
        for ruleset in rulesets {
            for table in &ruleset.tables {
                for set in &table.sets {
                    shapes.insert((table.family, set.name.clone()), set.interval);
                }
            }
        }
        SetShapes(shapes)
    }

    fn interval(&self, family: Family, set: &str) -> bool {
        self.0
            .get(&(family, set.to_string()))
            .copied()
            .unwrap_or(false)
    }
}

/// Lowers a plan to messages, in order, handing each to `sink` as soon as it exists, so a large
/// transaction is never held twice (as messages and as the batch they are written into: at
/// 50,000 Services the messages alone were hundreds of megabytes). Anonymous sets get
/// batch-local ids from 1.
pub fn each(plan: &Plan, shapes: &SetShapes, sink: impl FnMut(Addressed)) {
    let mut out = Lowering {
        sink,
        next_set_id: 1,
        origin: 0,
        family: Family::Ip,
    };
    for (origin, operation) in plan.operations.iter().enumerate() {
        out.origin = origin;
        out.operation(operation, shapes);
    }
}

struct Lowering<F> {
    sink: F,
    next_set_id: u32,
    origin: usize,
    family: Family,
}

impl<F: FnMut(Addressed)> Lowering<F> {
    fn push(&mut self, message: Message) {
        (self.sink)(Addressed {
            family: self.family,
            message,
            origin: self.origin,
        });
    }

    fn operation(&mut self, operation: &Operation, shapes: &SetShapes) {
        match operation {
            Operation::AddTable(family) => {
                self.family = *family;
                self.push(Message::NewTable);
            }
            Operation::DeleteTable(family) => {
                self.family = *family;
                self.push(Message::DelTable);
            }
            Operation::DeleteOtherTable(family, name) => {
                self.family = *family;
                // Declaring it first makes the delete valid when the table is absent.
                self.push(Message::NewOtherTable(name.clone()));
                self.push(Message::DelOtherTable(name.clone()));
            }
            Operation::FlushChain(family, chain) => {
                self.family = *family;
                self.push(Message::FlushChain(chain.clone()));
            }
            Operation::DeleteChain(family, chain) => {
                self.family = *family;
                self.push(Message::DelChain(chain.clone()));
            }
            Operation::DeleteSet(family, set) => {
                self.family = *family;
                self.push(Message::DelSet(set.clone()));
            }
            Operation::DeleteElements(family, set, keys) => {
                self.family = *family;
                self.named_set_keys(set, keys, shapes, true);
            }
            Operation::AddSetElements(family, set, keys) => {
                self.family = *family;
                self.named_set_keys(set, keys, shapes, false);
            }
            Operation::AddMapElements(family, map, elements) => {
                self.family = *family;
                let elements = elements.iter().map(verdict_element).collect();
                self.push_elements(SetHandle::Named(map.clone()), elements, false);
            }
            Operation::DeleteEndpoints(family, map, ranges) => {
                self.family = *family;
                let elements = ranges
                    .iter()
                    .flat_map(|r| range_elements(r, false))
                    .collect();
                self.push_elements(SetHandle::Named(map.clone()), elements, true);
            }
            Operation::AddEndpoints(family, map, ranges) => {
                self.family = *family;
                let elements = ranges
                    .iter()
                    .flat_map(|r| range_elements(r, true))
                    .collect();
                self.push_elements(SetHandle::Named(map.clone()), elements, false);
            }
            Operation::Add(family, Object::EndpointMap(map)) => {
                self.family = *family;
                self.endpoint_map(map);
            }
            Operation::Add(family, Object::Set(set)) => {
                self.family = *family;
                self.named_set(set);
            }
            Operation::Add(family, Object::Map(map)) => {
                self.family = *family;
                self.named_map(map);
            }
            Operation::Add(family, Object::Chain(chain)) => {
                self.family = *family;
                self.push(Message::NewChain(chain_spec(chain)));
            }
            Operation::AddRule(family, chain, rule) => {
                self.family = *family;
                self.rule(chain, rule);
            }
        }
    }

    /// Adds keys to a named set, or deletes keys from a named set or map (deletes send no data).
    fn named_set_keys(&mut self, set: &str, keys: &[Vec<Value>], shapes: &SetShapes, delete: bool) {
        let interval = shapes.interval(self.family, set);
        let mut elements = Vec::with_capacity(keys.len());
        for key in keys {
            key_elements(&mut elements, key, interval, ElementData::None);
        }
        self.push_elements(SetHandle::Named(set.to_string()), elements, delete);
    }

    /// Element messages, split so none exceeds the kernel's attribute size limit.
    fn push_elements(&mut self, set: SetHandle, elements: Vec<Element>, delete: bool) {
        let mut chunk = Vec::new();
        let mut bytes = 0;
        for element in elements {
            let size = element_size(&element);
            if bytes + size > ELEMENT_MESSAGE_BUDGET && !chunk.is_empty() {
                self.push_chunk(&set, std::mem::take(&mut chunk), delete);
                bytes = 0;
            }
            bytes += size;
            chunk.push(element);
        }
        if !chunk.is_empty() {
            self.push_chunk(&set, chunk, delete);
        }
    }

    fn push_chunk(&mut self, set: &SetHandle, chunk: Vec<Element>, delete: bool) {
        if delete {
            self.push(Message::DelElements(set.name().to_string(), chunk));
        } else {
            self.push(Message::NewElements(set.clone(), chunk));
        }
    }

    fn named_set(&mut self, set: &Set) {
        let mut flags = 0;
        if set.interval {
            flags |= set_flags::INTERVAL;
            if set.key.len() > 1 {
                flags |= set_flags::CONCAT;
            }
        }
        if set.timeout.is_some() {
            flags |= set_flags::TIMEOUT | set_flags::EVAL;
        }
        let handle = SetHandle::Named(set.name.clone());
        let id = self.take_set_id();
        // The kernel wants field lengths for concatenated intervals, and refuses them elsewhere.
        let concat = if flags & set_flags::CONCAT != 0 {
            set.key.iter().map(|t| datatype_len(*t) as u8).collect()
        } else {
            Vec::new()
        };
        let mut spec = key_spec(handle.clone(), &set.key, set.comment.as_deref());
        if set.declared_by_typeof() {
            // Declared with `typeof`, as nft must: see `typeof_udata`.
            spec.userdata = typeof_udata::set_key(self.family, &set.key);
            spec.userdata
                .extend(comment_udata(UDATA_SET_COMMENT, set.comment.as_deref()));
        }
        self.push(Message::NewSet(SetSpec {
            id,
            flags,
            concat,
            timeout_ms: set.timeout.map(|s| u64::from(s) * 1000),
            size: set.size,
            ..spec
        }));
        let mut elements = Vec::with_capacity(set.elements.len() * 2);
        if set.interval && set.key.len() == 1 {
            elements.extend(leading_interval_end(&set.elements));
        }
        for key in &set.elements {
            key_elements(&mut elements, key, set.interval, ElementData::None);
        }
        self.push_elements(handle, elements, false);
    }

    fn named_map(&mut self, map: &Map) {
        let handle = SetHandle::Named(map.name.clone());
        let id = self.take_set_id();
        self.push(Message::NewSet(SetSpec {
            id,
            flags: set_flags::MAP,
            data: Some((NFT_DATA_VERDICT, 0)),
            ..key_spec(handle.clone(), &map.key, map.comment.as_deref())
        }));
        let elements = map.elements.iter().map(verdict_element).collect();
        self.push_elements(handle, elements, false);
    }

    /// `typeof numgen random mod 1 : ip daddr . th dport; flags interval`, as nft creates it
    /// (its `typeof` userdata included, so `nft list` prints the declaration back).
    fn endpoint_map(&mut self, map: &EndpointMap) {
        let handle = SetHandle::Named(map.name.clone());
        let id = self.take_set_id();
        let (addr_type, addr_len) = self.endpoint_data();
        let mut userdata = typeof_udata::endpoint_map(self.family);
        userdata.extend(comment_udata(UDATA_SET_COMMENT, map.comment.as_deref()));
        self.push(Message::NewSet(SetSpec {
            id,
            flags: set_flags::MAP | set_flags::INTERVAL,
            data: Some((
                datatype_id(&[addr_type, DataType::InetService]),
                addr_len + 4,
            )),
            userdata,
            ..key_spec(handle.clone(), &[DataType::Integer], None)
        }));
        // Windows never start at zero, so nft always opens the map with an interval end there.
        let mut elements = vec![Element {
            key: vec![0; 4],
            key_end: None,
            interval_end: true,
            data: ElementData::None,
        }];
        elements.extend(map.elements.iter().flat_map(|r| range_elements(r, true)));
        self.push_elements(handle, elements, false);
    }

    fn endpoint_data(&self) -> (DataType, u32) {
        match self.family {
            Family::Ip => (DataType::Ipv4Addr, 4),
            Family::Ip6 => (DataType::Ipv6Addr, 16),
        }
    }

    fn take_set_id(&mut self) -> u32 {
        let id = self.next_set_id;
        self.next_set_id += 1;
        id
    }

    fn anonymous(&mut self, template: &'static str) -> SetHandle {
        let id = self.take_set_id();
        SetHandle::Anonymous { template, id }
    }

    fn rule(&mut self, chain: &str, rule: &Rule) {
        let mut expressions = Vec::new();
        for m in &rule.matches {
            self.matcher(&mut expressions, m);
        }
        for statement in &rule.statements {
            self.statement(&mut expressions, statement);
        }
        if let Some(action) = &rule.action {
            self.action(&mut expressions, action);
        }
        self.push(Message::NewRule {
            chain: chain.to_string(),
            expressions,
            userdata: comment_udata(UDATA_COMMENT, rule.comment.as_deref()),
        });
    }

    fn matcher(&mut self, out: &mut Vec<Expression>, m: &Match) {
        let family = self.family;
        match m {
            Match::Cmp { left, op, right } => {
                let not_equal = *op == CmpOp::Ne;
                match right {
                    Value::Prefix(net) => prefix_match(out, family, *left, net, not_equal),
                    Value::CtNew => flag_match(out, family, *left, CT_STATE_NEW, not_equal),
                    Value::CtDnat => flag_match(out, family, *left, CT_STATUS_DST_NAT, not_equal),
                    value => {
                        load(out, family, *left, Register::FIRST);
                        out.push(Expression::Cmp {
                            sreg: Register::FIRST,
                            not_equal,
                            data: cmp_bytes(value),
                        });
                    }
                }
            }
            Match::Masked { left, mask, value } => {
                masked_cmp(out, family, *left, *mask, false, *value)
            }
            Match::Lookup { key, set, negate } => {
                load_key(out, family, key);
                let set = match set {
                    SetRef::Named(name) => SetHandle::Named(name.clone()),
                    SetRef::Prefixes(prefixes) => self.prefix_set(prefixes),
                };
                out.push(Expression::Lookup {
                    sreg: Register::FIRST,
                    dreg: None,
                    set,
                    invert: *negate,
                });
            }
        }
    }

    /// An anonymous constant interval set of networks, sent before the rule that uses it.
    fn prefix_set(&mut self, prefixes: &[IpNet]) -> SetHandle {
        let handle = self.anonymous("__set%d");
        let values: Vec<Vec<Value>> = prefixes.iter().map(|p| vec![Value::Prefix(*p)]).collect();
        let mut elements: Vec<Element> = leading_interval_end(&values).into_iter().collect();
        for key in &values {
            key_elements(&mut elements, key, true, ElementData::None);
        }
        let key = [match self.family {
            Family::Ip => DataType::Ipv4Addr,
            Family::Ip6 => DataType::Ipv6Addr,
        }];
        self.push(Message::NewSet(SetSpec {
            id: handle.id().unwrap_or_default(),
            flags: set_flags::ANONYMOUS | set_flags::CONSTANT | set_flags::INTERVAL,
            size: Some(elements.len() as u32),
            ..key_spec(handle.clone(), &key, None)
        }));
        self.push_elements(handle.clone(), elements, false);
        handle
    }

    fn statement(&mut self, out: &mut Vec<Expression>, statement: &Statement) {
        match statement {
            Statement::MarkOr(bits) => mark_set(out, !bits, *bits),
            Statement::MarkXor(bits) => mark_set(out, u32::MAX, *bits),
            Statement::UpdateSet { set, key, timeout } => {
                load_key(out, self.family, key);
                out.push(Expression::DynsetUpdate {
                    sreg: Register::FIRST,
                    set: set.clone(),
                    timeout_ms: timeout.map(|s| u64::from(s) * 1000),
                });
            }
        }
    }

    fn action(&mut self, out: &mut Vec<Expression>, action: &Action) {
        let family = self.family;
        match action {
            Action::Verdict(verdict) => out.push(Expression::Verdict(verdict_code(verdict))),
            Action::Vmap { key, map } => {
                load_key(out, family, key);
                out.push(Expression::Lookup {
                    sreg: Register::FIRST,
                    dreg: Some(Register::VERDICT),
                    set: SetHandle::Named(map.clone()),
                    invert: false,
                });
            }
            Action::Dnat(Dnat::To(target)) => {
                out.push(Expression::Immediate {
                    dreg: Register::FIRST,
                    data: addr_bytes(target.ip()),
                });
                out.push(Expression::Immediate {
                    dreg: Register::after(4),
                    data: target.port().to_be_bytes().to_vec(),
                });
                out.push(Expression::Dnat {
                    family,
                    addr: Register::FIRST,
                    port: Register::after(4),
                    proto_specified: true,
                });
            }
            Action::Dnat(Dnat::Numgen {
                map,
                modulus,
                offset,
            }) => self.numgen_dnat(out, map, *modulus, *offset),
            Action::Masquerade { fully_random } => out.push(Expression::Masquerade {
                fully_random: *fully_random,
            }),
            Action::Reject(RejectWith::PortUnreachable) => out.push(Expression::Reject {
                icmp_code: match family {
                    Family::Ip => ICMP_PORT_UNREACH,
                    Family::Ip6 => ICMPV6_PORT_UNREACH,
                },
            }),
            Action::Reject(RejectWith::TcpReset) => out.push(Expression::RejectTcpReset),
        }
    }

    /// `dnat to numgen random mod M offset W map @endpoints-S`. Interval maps hold big-endian
    /// keys, so the number is converted before the lookup, as nft does.
    fn numgen_dnat(&mut self, out: &mut Vec<Expression>, map: &str, modulus: u32, offset: u32) {
        let (_, addr_len) = self.endpoint_data();
        out.push(Expression::Numgen {
            modulus,
            offset,
            dreg: Register::FIRST,
        });
        out.push(Expression::HostToNetwork32 {
            reg: Register::FIRST,
        });
        out.push(Expression::Lookup {
            sreg: Register::FIRST,
            dreg: Some(Register::FIRST),
            set: SetHandle::Named(map.to_string()),
            invert: false,
        });
        out.push(Expression::Dnat {
            family: self.family,
            addr: Register::FIRST,
            port: Register::after(addr_len / 4),
            proto_specified: false,
        });
    }
}

/// The definition shared by every set: key type, lengths, userdata.
fn key_spec(handle: SetHandle, key: &[DataType], comment: Option<&str>) -> SetSpec {
    // nft records no byte order for concatenations.
    let byteorder = match key {
        [DataType::Integer] => BYTEORDER_HOST,
        [_] => BYTEORDER_BIG,
        _ => 0,
    };
    let mut userdata = vec![UDATA_SET_KEYBYTEORDER, 4];
    userdata.extend(byteorder.to_ne_bytes());
    userdata.extend(comment_udata(UDATA_SET_COMMENT, comment));
    SetSpec {
        id: handle.id().unwrap_or_default(),
        handle,
        flags: 0,
        key_type: datatype_id(key),
        key_len: match key {
            // A single field is as long as it is (a port: 2 bytes); concatenated fields
            // each take whole registers.
            [single] => datatype_len(*single),
            _ => key.iter().map(|t| padded_len(datatype_len(*t))).sum(),
        },
        concat: Vec::new(),
        data: None,
        timeout_ms: None,
        size: None,
        userdata,
    }
}

fn chain_spec(chain: &Chain) -> ChainSpec {
    ChainSpec {
        name: chain.name.clone(),
        hook: chain.hook.map(|hook| {
            let number = match hook.hook {
                Hook::Prerouting => libc::NF_INET_PRE_ROUTING,
                Hook::Input => libc::NF_INET_LOCAL_IN,
                Hook::Forward => libc::NF_INET_FORWARD,
                Hook::Output => libc::NF_INET_LOCAL_OUT,
                Hook::Postrouting => libc::NF_INET_POST_ROUTING,
            };
            let kind = match hook.kind {
                ChainType::Filter => "filter",
                ChainType::Nat => "nat",
            };
            (number as u32, hook.priority.value(), kind)
        }),
        userdata: comment_udata(UDATA_COMMENT, chain.comment.as_deref()),
    }
}

/// nft's comment TLV: type, length including the NUL, the text, NUL.
fn comment_udata(kind: u8, comment: Option<&str>) -> Vec<u8> {
    let Some(text) = comment else {
        return Vec::new();
    };
    // The compiler keeps comments within nft's 128-byte limit, so the length fits a byte.
    let len = u8::try_from(text.len() + 1).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(text.len() + 3);
    out.push(kind);
    out.push(len);
    out.extend_from_slice(&text.as_bytes()[..usize::from(len) - 1]);
    out.push(0);
    out
}

// The byte helpers below append to a buffer: a set of 10,000 Services has tens of thousands of
// keys of up to four fields, and a `Vec` per field was most of lowering them.

/// Pads what was appended to `out` since `start` with zeros to a whole 4-byte register.
fn pad_from(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(start + padded_len(len as u32) as usize, 0);
}

fn put_addr(out: &mut Vec<u8>, addr: IpAddr) {
    match addr {
        IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
    }
}

fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_addr(&mut out, addr);
    out
}

/// Appends a constant as a comparison operand: exactly as wide as the loaded field.
fn put_cmp_bytes(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Addr(addr) => put_addr(out, *addr),
        Value::Prefix(net) => put_addr(out, net.network()),
        Value::Proto(proto) => out.push(proto.number()),
        Value::Port(port) => out.extend_from_slice(&port.to_be_bytes()),
        Value::Integer(n) => out.extend_from_slice(&n.to_ne_bytes()),
        Value::CtNew => out.extend_from_slice(&CT_STATE_NEW.to_ne_bytes()),
        Value::CtDnat => out.extend_from_slice(&CT_STATUS_DST_NAT.to_ne_bytes()),
        Value::Local => out.extend_from_slice(&RTN_LOCAL.to_ne_bytes()),
    }
}

/// A constant as a comparison operand.
fn cmp_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_cmp_bytes(&mut out, value);
    out
}

/// Appends a constant as a set key field: register layout, padded to 4 bytes.
fn put_key_bytes(out: &mut Vec<u8>, value: &Value) {
    let start = out.len();
    put_cmp_bytes(out, value);
    pad_from(out, start);
}

/// Room for a concatenated key: up to 16 bytes a field.
fn key_buffer(fields: usize) -> Vec<u8> {
    Vec::with_capacity(16 * fields)
}

/// A whole key: a single field as long as it is, concatenated fields in whole registers (as
/// the set's key length says, see `key_spec`).
fn plain_key(key: &[Value]) -> Vec<u8> {
    match key {
        [single] => cmp_bytes(single),
        _ => {
            let mut out = key_buffer(key.len());
            for value in key {
                put_key_bytes(&mut out, value);
            }
            out
        }
    }
}

/// The address after a network, or `None` when it ends the address space.
fn after_bytes(net: &IpNet) -> Option<Vec<u8>> {
    match net.broadcast() {
        IpAddr::V4(v4) => u32::from(v4)
            .checked_add(1)
            .map(|n| n.to_be_bytes().to_vec()),
        IpAddr::V6(v6) => u128::from(v6)
            .checked_add(1)
            .map(|n| n.to_be_bytes().to_vec()),
    }
}

fn as_net(value: &Value) -> Option<IpNet> {
    match value {
        Value::Prefix(net) => Some(*net),
        Value::Addr(addr) => Some(IpNet::from(*addr)),
        _ => None,
    }
}

/// nft starts a single-field interval set with an interval end at address zero when the
/// first range does not start there.
fn leading_interval_end(keys: &[Vec<Value>]) -> Option<Element> {
    let first = keys
        .iter()
        .filter_map(|k| k.first().and_then(as_net))
        .min()?;
    let zero = vec![0; addr_bytes(first.network()).len()];
    let start = addr_bytes(first.network());
    (start != zero).then_some(Element {
        key: zero,
        key_end: None,
        interval_end: true,
        data: ElementData::None,
    })
}

/// Appends the element(s) for one key: a plain key; for single-field interval sets a start and
/// an interval end after the range; for concatenated interval sets a key and an inclusive end.
fn key_elements(out: &mut Vec<Element>, key: &[Value], interval: bool, data: ElementData) {
    let element = |key, key_end, interval_end, data| Element {
        key,
        key_end,
        interval_end,
        data,
    };
    match key {
        [single] if interval => match as_net(single) {
            Some(net) => {
                out.push(element(addr_bytes(net.network()), None, false, data));
                if let Some(end) = after_bytes(&net) {
                    out.push(element(end, None, true, ElementData::None));
                }
            }
            None => out.push(element(plain_key(key), None, false, data)),
        },
        _ if interval => {
            let (mut start, mut end) = (key_buffer(key.len()), key_buffer(key.len()));
            for value in key {
                match value {
                    Value::Prefix(net) => {
                        put_addr(&mut start, net.network());
                        put_addr(&mut end, net.broadcast());
                    }
                    other => {
                        put_key_bytes(&mut start, other);
                        put_key_bytes(&mut end, other);
                    }
                }
            }
            out.push(element(start, Some(end), false, data));
        }
        _ => out.push(element(plain_key(key), None, false, data)),
    }
}

/// A range of an endpoint map: its start (with the endpoint, when adding) and the interval end
/// just after it. Windows end below 2^32, so `last + 1` never wraps.
fn range_elements(range: &EndpointRange, with_data: bool) -> [Element; 2] {
    let data = if with_data {
        let mut data = Vec::with_capacity(20);
        put_addr(&mut data, range.target.ip());
        put_key_bytes(&mut data, &Value::Port(range.target.port()));
        ElementData::Value(data)
    } else {
        ElementData::None
    };
    [
        Element {
            key: range.first.to_be_bytes().to_vec(),
            key_end: None,
            interval_end: false,
            data,
        },
        Element {
            key: range.last.wrapping_add(1).to_be_bytes().to_vec(),
            key_end: None,
            interval_end: true,
            data: ElementData::None,
        },
    ]
}

fn verdict_element(element: &VerdictElement) -> Element {
    Element {
        key: plain_key(&element.key),
        key_end: None,
        interval_end: false,
        data: ElementData::Verdict(verdict_code(&element.verdict)),
    }
}

fn verdict_code(verdict: &Verdict) -> VerdictCode {
    match verdict {
        Verdict::Accept => VerdictCode::Accept,
        Verdict::Drop => VerdictCode::Drop,
        Verdict::Return => VerdictCode::Return,
        Verdict::Jump(chain) => VerdictCode::Jump(chain.clone()),
        Verdict::Goto(chain) => VerdictCode::Goto(chain.clone()),
    }
}

fn element_size(element: &Element) -> usize {
    let data = match &element.data {
        ElementData::None => 0,
        ElementData::Verdict(VerdictCode::Jump(c) | VerdictCode::Goto(c)) => c.len() + 32,
        ElementData::Verdict(_) => 24,
        ElementData::Value(v) => v.len() + 8,
    };
    element.key.len() + element.key_end.as_ref().map_or(0, Vec::len) + data + 48
}

/// Where a payload field lives, for the table's family.
fn payload_field(family: Family, expr: Expr) -> Option<(PayloadBase, u32, u32)> {
    let (src, dst, len) = address_fields(family);
    match expr {
        Expr::SourceAddr => Some((PayloadBase::Network, src, len)),
        Expr::DestAddr => Some((PayloadBase::Network, dst, len)),
        Expr::DestPort => Some((PayloadBase::Transport, 2, 2)),
        _ => None,
    }
}

/// Bytes an expression loads.
fn width(family: Family, expr: Expr) -> u32 {
    match expr {
        Expr::L4Proto => 1,
        Expr::Mark
        | Expr::CtState
        | Expr::CtStatus
        | Expr::SourceAddrType
        | Expr::DestAddrType
        | Expr::Numgen { .. }
        | Expr::Constant(_) => 4,
        Expr::DestAddrLowBits { .. } => width(family, Expr::DestAddr),
        Expr::DestPortLowBits { .. } => width(family, Expr::DestPort),
        payload => payload_field(family, payload).map_or(4, |(_, _, len)| len),
    }
}

fn load(out: &mut Vec<Expression>, family: Family, expr: Expr, dreg: Register) {
    out.push(match expr {
        Expr::L4Proto => Expression::Meta {
            key: MetaKey::L4Proto,
            dreg,
        },
        Expr::Mark => Expression::Meta {
            key: MetaKey::Mark,
            dreg,
        },
        Expr::CtState => Expression::Ct {
            key: CtKey::State,
            dreg,
        },
        Expr::CtStatus => Expression::Ct {
            key: CtKey::Status,
            dreg,
        },
        Expr::SourceAddrType => Expression::FibAddrType { source: true, dreg },
        Expr::DestAddrType => Expression::FibAddrType {
            source: false,
            dreg,
        },
        Expr::Numgen { modulus } => Expression::Numgen {
            modulus,
            offset: 0,
            dreg,
        },
        Expr::Constant(n) => Expression::Numgen {
            modulus: 1,
            offset: n,
            dreg,
        },
        Expr::SourceAddr
        | Expr::DestAddr
        | Expr::DestPort
        | Expr::DestAddrLowBits { .. }
        | Expr::DestPortLowBits { .. } => {
            let field = match expr {
                Expr::DestAddrLowBits { .. } => Expr::DestAddr,
                Expr::DestPortLowBits { .. } => Expr::DestPort,
                other => other,
            };
            let (base, offset, len) =
                payload_field(family, field).expect("payload expressions have a field");
            Expression::Payload {
                base,
                offset,
                len,
                dreg,
            }
        }
    });
    let mask = match expr {
        Expr::DestAddrLowBits { bits } => {
            Some(addr_bytes(kproxy_compiler::ir::low_bits_mask(family, bits)))
        }
        Expr::DestPortLowBits { bits } => Some(
            kproxy_compiler::ir::low_bits_port_mask(bits)
                .to_be_bytes()
                .to_vec(),
        ),
        _ => None,
    };
    if let Some(mask) = mask {
        let xor = vec![0; mask.len()];
        out.push(Expression::Bitwise {
            sreg: dreg,
            dreg,
            mask,
            xor,
        });
    }
}

/// Loads a (concatenated) key into consecutive registers from the first one.
fn load_key(out: &mut Vec<Expression>, family: Family, key: &[Expr]) {
    let mut words = 0;
    for expr in key {
        load(out, family, *expr, Register::after(words));
        words += padded_len(width(family, *expr)) / 4;
    }
}

/// `addr [!=] prefix`, as nft encodes it: a shorter load when the prefix ends on a byte,
/// otherwise a mask.
fn prefix_match(out: &mut Vec<Expression>, family: Family, left: Expr, net: &IpNet, ne: bool) {
    let network = addr_bytes(net.network());
    let bits = u32::from(net.prefix_len());
    match payload_field(family, left) {
        Some((base, offset, _)) if bits % 8 == 0 => {
            out.push(Expression::Payload {
                base,
                offset,
                len: bits / 8,
                dreg: Register::FIRST,
            });
            out.push(Expression::Cmp {
                sreg: Register::FIRST,
                not_equal: ne,
                data: network[..(bits / 8) as usize].to_vec(),
            });
        }
        _ => {
            load(out, family, left, Register::FIRST);
            out.push(Expression::Bitwise {
                sreg: Register::FIRST,
                dreg: Register::FIRST,
                mask: addr_bytes(net.netmask()),
                xor: vec![0; network.len()],
            });
            out.push(Expression::Cmp {
                sreg: Register::FIRST,
                not_equal: ne,
                data: network,
            });
        }
    }
}

/// `ct state new` and friends: a bit test (`!= 0` when the bit must be set).
fn flag_match(out: &mut Vec<Expression>, family: Family, left: Expr, bit: u32, ne: bool) {
    masked_cmp(out, family, left, bit, !ne, 0);
}

/// `left & mask [!=] value` on a 32-bit host-order field.
fn masked_cmp(
    out: &mut Vec<Expression>,
    family: Family,
    left: Expr,
    mask: u32,
    not_equal: bool,
    value: u32,
) {
    load(out, family, left, Register::FIRST);
    out.push(Expression::Bitwise {
        sreg: Register::FIRST,
        dreg: Register::FIRST,
        mask: mask.to_ne_bytes().to_vec(),
        xor: vec![0; 4],
    });
    out.push(Expression::Cmp {
        sreg: Register::FIRST,
        not_equal,
        data: value.to_ne_bytes().to_vec(),
    });
}

/// `meta mark set (meta mark & and) ^ xor`.
fn mark_set(out: &mut Vec<Expression>, and: u32, xor: u32) {
    out.push(Expression::Meta {
        key: MetaKey::Mark,
        dreg: Register::FIRST,
    });
    out.push(Expression::Bitwise {
        sreg: Register::FIRST,
        dreg: Register::FIRST,
        mask: and.to_ne_bytes().to_vec(),
        xor: xor.to_ne_bytes().to_vec(),
    });
    out.push(Expression::MetaSet {
        key: MetaKey::Mark,
        sreg: Register::FIRST,
    });
}
