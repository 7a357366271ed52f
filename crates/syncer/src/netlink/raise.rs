//! Raising: what the kernel lists → the IR, the inverse of [`lower`](super::lower).
//!
//! It recognises exactly the expression sequences the lowering writes. Anything else (a rule
//! someone added by hand, a set of a type kproxy never creates) is reported as undecodable,
//! and the syncer then replaces the whole table in one transaction instead of diffing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use kproxy_compiler::ir::{
    Action, BaseHook, Chain, ChainType, CmpOp, DataType, Dnat, EndpointMap, EndpointRange, Expr,
    Family, Hook, Map, Match, Priority, PriorityBase, RejectWith, Rule, Set, SetRef, Statement,
    Table, Value, Verdict, VerdictElement, TABLE_NAME,
};
use kproxy_model::Protocol;

use super::dump::TableDump;
use super::wire::{
    address_fields, datatype_len, datatypes, padded_len, set_flags, ChainDump, CtKey, Element,
    ElementData, Expression, MetaKey, PayloadBase, RuleDump, SetDump, SetHandle, VerdictCode,
};

/// Why a table could not be read back into the IR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable(pub String);

type Result<T> = std::result::Result<T, Undecodable>;

fn fail<T>(what: impl Into<String>) -> Result<T> {
    Err(Undecodable(what.into()))
}

/// Raises one table.
pub fn table(family: Family, dump: &TableDump) -> Result<Table> {
    let anonymous: BTreeMap<&str, &(SetDump, Vec<Element>)> = dump
        .sets
        .iter()
        .filter(|(set, _)| set.flags & set_flags::ANONYMOUS != 0)
        .map(|entry| (entry.0.name.as_str(), entry))
        .collect();
    let mut sets = Vec::new();
    let mut maps = Vec::new();
    let mut endpoint_maps = Vec::new();
    for (set, elements) in dump
        .sets
        .iter()
        .filter(|(s, _)| s.flags & set_flags::ANONYMOUS == 0)
    {
        let key = datatypes(set.key_type)
            .ok_or_else(|| Undecodable(format!("set {}: unknown key type", set.name)))?;
        let comment = comment(&set.userdata, 7);
        if set.flags == set_flags::MAP | set_flags::INTERVAL && key == [DataType::Integer] {
            endpoint_maps.push(EndpointMap {
                name: set.name.clone(),
                comment,
                elements: endpoint_ranges(&set.name, elements)?,
            });
        } else if set.flags & set_flags::MAP != 0 {
            let mut decoded = Vec::with_capacity(elements.len());
            for element in elements {
                let ElementData::Verdict(verdict) = &element.data else {
                    return fail(format!("map {}: an element without a verdict", set.name));
                };
                decoded.push(VerdictElement {
                    key: values(&element.key, &key, false)?,
                    verdict: verdict_ir(verdict),
                });
            }
            decoded.sort_by(|a, b| a.key.cmp(&b.key));
            maps.push(Map {
                name: set.name.clone(),
                key,
                comment,
                elements: decoded,
            });
        } else {
            let interval = set.flags & set_flags::INTERVAL != 0;
            let timeout = (set.flags & set_flags::TIMEOUT != 0)
                .then(|| set.timeout_ms.map(|ms| (ms / 1000) as u32))
                .flatten();
            // Elements of a dynamic set belong to the dataplane; the IR does not own them.
            let mut decoded = if timeout.is_some() {
                Vec::new()
            } else {
                set_elements(elements, &key, interval)?
            };
            decoded.sort();
            sets.push(Set {
                name: set.name.clone(),
                key,
                interval,
                timeout,
                size: set.size,
                comment,
                elements: decoded,
            });
        }
    }
    let mut chains = Vec::with_capacity(dump.chains.len());
    let mut rules_by_chain: BTreeMap<&str, Vec<&RuleDump>> = BTreeMap::new();
    for rule in &dump.rules {
        rules_by_chain.entry(&rule.chain).or_default().push(rule);
    }
    for chain in &dump.chains {
        let rules = rules_by_chain
            .get(chain.name.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|r| {
                rule(family, r, &anonymous)
                    .map_err(|e| Undecodable(format!("chain {}: {}", chain.name, e.0)))
            })
            .collect::<Result<Vec<Rule>>>()?;
        chains.push(Chain {
            name: chain.name.clone(),
            hook: hook(chain)?,
            comment: comment(&chain.userdata, 0),
            rules,
        });
    }
    Ok(Table {
        family,
        name: TABLE_NAME.to_string(),
        sets,
        maps,
        endpoint_maps,
        chains,
    })
}

/// An endpoint map's elements: each start (with its endpoint) closed by the interval end just
/// after it; nft's leading end at zero opens nothing.
fn endpoint_ranges(name: &str, elements: &[Element]) -> Result<Vec<EndpointRange>> {
    let mut sorted: Vec<(u32, bool, &ElementData)> = elements
        .iter()
        .map(|e| Ok((u32_be(&e.key)?, !e.interval_end, &e.data)))
        .collect::<Result<_>>()?;
    // At one key an end sorts before a start: adjacent ranges share it.
    sorted.sort_by_key(|&(key, is_start, _)| (key, is_start));
    let mut out = Vec::with_capacity(sorted.len() / 2);
    let mut open: Option<(u32, SocketAddr)> = None;
    for (key, is_start, data) in sorted {
        match (open.take(), is_start) {
            (Some((first, target)), false) => out.push(EndpointRange {
                first,
                last: key.wrapping_sub(1),
                target,
            }),
            (None, false) => {}
            (None, true) => {
                let ElementData::Value(data) = data else {
                    return fail(format!("map {name}: a range without an endpoint"));
                };
                let (ip, rest) = data.split_at(data.len().saturating_sub(4));
                open = Some((key, SocketAddr::new(addr(ip)?, port(rest)?)));
            }
            (Some(_), true) => return fail(format!("map {name}: a range without an end")),
        }
    }
    if open.is_some() {
        return fail(format!("map {name}: a range without an end"));
    }
    Ok(out)
}

/// The text of the first TLV of `kind` in nft's userdata.
fn comment(userdata: &[u8], kind: u8) -> Option<String> {
    let mut rest = userdata;
    while let [t, len, tail @ ..] = rest {
        let len = usize::from(*len);
        let value = tail.get(..len)?;
        if *t == kind {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &tail[len..];
    }
    None
}

fn hook(chain: &ChainDump) -> Result<Option<BaseHook>> {
    let Some((number, priority, kind)) = &chain.hook else {
        return Ok(None);
    };
    let hook = match *number as i32 {
        libc::NF_INET_PRE_ROUTING => Hook::Prerouting,
        libc::NF_INET_LOCAL_IN => Hook::Input,
        libc::NF_INET_FORWARD => Hook::Forward,
        libc::NF_INET_LOCAL_OUT => Hook::Output,
        libc::NF_INET_POST_ROUTING => Hook::Postrouting,
        _ => return fail(format!("chain {}: unknown hook {number}", chain.name)),
    };
    let kind = match kind.as_str() {
        "filter" => ChainType::Filter,
        "nat" => ChainType::Nat,
        other => return fail(format!("chain {}: type {other}", chain.name)),
    };
    // The split into a named base and an offset is presentation; the syncer compares values.
    let base = PriorityBase::Filter;
    Ok(Some(BaseHook {
        kind,
        hook,
        priority: Priority {
            base,
            offset: *priority - base.value(),
        },
    }))
}

/// Bytes a field takes in a key (whole registers).
fn field_len(t: DataType) -> usize {
    padded_len(datatype_len(t)) as usize
}

fn addr(bytes: &[u8]) -> Result<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    if let Ok(v6) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::V6(Ipv6Addr::from(v6)));
    }
    fail(format!("an address of {} bytes", bytes.len()))
}

fn protocol(number: u8) -> Result<Protocol> {
    match number {
        6 => Ok(Protocol::Tcp),
        17 => Ok(Protocol::Udp),
        132 => Ok(Protocol::Sctp),
        n => fail(format!("protocol {n}")),
    }
}

fn u32_be(bytes: &[u8]) -> Result<u32> {
    match bytes.get(..4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => fail("a short integer"),
    }
}

fn u32_ne(bytes: &[u8]) -> Result<u32> {
    match bytes.get(..4) {
        Some(b) => Ok(u32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        None => fail("a short integer"),
    }
}

fn port(bytes: &[u8]) -> Result<u16> {
    match bytes.get(..2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => fail("a short port"),
    }
}

/// The fields of a key in register layout.
fn values(bytes: &[u8], key: &[DataType], prefixes: bool) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(key.len());
    let mut at = 0;
    for t in key {
        // A single field is stored as long as it is; concatenated ones in whole registers.
        let len = match key {
            [_] => (datatype_len(*t) as usize).min(bytes.len()),
            _ => field_len(*t),
        };
        let Some(field) = bytes.get(at..at + len) else {
            return fail("a key shorter than its type");
        };
        at += len;
        out.push(match t {
            DataType::Ipv4Addr | DataType::Ipv6Addr if prefixes => {
                Value::Prefix(IpNet::from(addr(field)?))
            }
            DataType::Ipv4Addr | DataType::Ipv6Addr => Value::Addr(addr(field)?),
            DataType::InetProto => Value::Proto(protocol(field[0])?),
            DataType::InetService => Value::Port(port(field)?),
            DataType::Integer => Value::Integer(u32_ne(field)?),
        });
    }
    Ok(out)
}

fn to_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The network covering `first..=last`, if the range is one.
fn network(first: IpAddr, last: IpAddr) -> Result<IpNet> {
    let bits: u32 = if first.is_ipv4() { 32 } else { 128 };
    let (a, b) = (to_u128(first), to_u128(last));
    let size = b.wrapping_sub(a).wrapping_add(1);
    let host_bits = if size == 0 {
        128
    } else if size.is_power_of_two() {
        size.trailing_zeros()
    } else {
        return fail(format!("the range {first}-{last} is not a network"));
    };
    if host_bits > bits || (host_bits < 128 && a & ((1u128 << host_bits) - 1) != 0) {
        return fail(format!("the range {first}-{last} is not a network"));
    }
    IpNet::new(first, (bits - host_bits) as u8).map_err(|e| Undecodable(e.to_string()))
}

fn before(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4).wrapping_sub(1))),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6).wrapping_sub(1))),
    }
}

fn last_address(v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::BROADCAST)
    } else {
        IpAddr::V6(Ipv6Addr::from(u128::MAX))
    }
}

fn set_elements(elements: &[Element], key: &[DataType], interval: bool) -> Result<Vec<Vec<Value>>> {
    if !interval {
        return elements
            .iter()
            .map(|e| values(&e.key, key, false))
            .collect();
    }
    if key.len() > 1 {
        // Concatenated ranges: a key and an inclusive end; only the last field is a range.
        return elements
            .iter()
            .map(|e| {
                let mut start = values(&e.key, key, false)?;
                let Some(end) = &e.key_end else {
                    return Ok(start);
                };
                let end = values(end, key, false)?;
                if let (Some(Value::Addr(first)), Some(Value::Addr(last))) =
                    (start.last().copied(), end.last().copied())
                {
                    let last_index = start.len() - 1;
                    start[last_index] = Value::Prefix(network(first, last)?);
                }
                Ok(start)
            })
            .collect();
    }
    // One field: sorted starts, each closed by an interval end just after the range.
    let mut sorted: Vec<&Element> = elements.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = Vec::new();
    let mut open: Option<IpAddr> = None;
    for element in sorted {
        let at = addr(&element.key)?;
        match (open.take(), element.interval_end) {
            (Some(first), true) => out.push(vec![Value::Prefix(network(first, before(at))?)]),
            (Some(first), false) => {
                out.push(vec![Value::Prefix(network(
                    first,
                    last_address(first.is_ipv4()),
                )?)]);
                open = Some(at);
            }
            (None, true) => {} // nft's leading end marker at address zero
            (None, false) => open = Some(at),
        }
    }
    if let Some(first) = open {
        out.push(vec![Value::Prefix(network(
            first,
            last_address(first.is_ipv4()),
        )?)]);
    }
    Ok(out)
}

fn verdict_ir(code: &VerdictCode) -> Verdict {
    match code {
        VerdictCode::Accept => Verdict::Accept,
        VerdictCode::Drop => Verdict::Drop,
        VerdictCode::Return => Verdict::Return,
        VerdictCode::Jump(chain) => Verdict::Jump(chain.clone()),
        VerdictCode::Goto(chain) => Verdict::Goto(chain.clone()),
    }
}

/// The IR expression a load reads, when it reads a whole field.
fn loaded(family: Family, expression: &Expression) -> Option<Expr> {
    let (src, dst, len) = address_fields(family);
    Some(match expression {
        Expression::Payload {
            base: PayloadBase::Network,
            offset,
            len: l,
            ..
        } if *l == len => match *offset {
            o if o == src => Expr::SourceAddr,
            o if o == dst => Expr::DestAddr,
            _ => return None,
        },
        Expression::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            ..
        } => Expr::DestPort,
        Expression::Meta {
            key: MetaKey::L4Proto,
            ..
        } => Expr::L4Proto,
        Expression::Meta {
            key: MetaKey::Mark, ..
        } => Expr::Mark,
        Expression::Ct {
            key: CtKey::State, ..
        } => Expr::CtState,
        Expression::Ct {
            key: CtKey::Status, ..
        } => Expr::CtStatus,
        Expression::FibAddrType { source: true, .. } => Expr::SourceAddrType,
        Expression::FibAddrType { source: false, .. } => Expr::DestAddrType,
        // `mod 1` always yields the offset: how kproxy writes a constant key field.
        Expression::Numgen {
            modulus: 1, offset, ..
        } => Expr::Constant(*offset),
        Expression::Numgen {
            modulus, offset: 0, ..
        } => Expr::Numgen { modulus: *modulus },
        _ => return None,
    })
}

/// A comparison constant as the IR value for what was loaded.
fn cmp_value(left: Expr, data: &[u8]) -> Result<Value> {
    Ok(match left {
        Expr::SourceAddr | Expr::DestAddr => Value::Addr(addr(data)?),
        Expr::L4Proto => Value::Proto(protocol(*data.first().unwrap_or(&0))?),
        Expr::DestPort => Value::Port(port(data)?),
        Expr::Mark | Expr::Numgen { .. } => Value::Integer(u32_ne(data)?),
        Expr::SourceAddrType | Expr::DestAddrType if u32_ne(data)? == 2 => Value::Local,
        other => return fail(format!("a comparison of {other:?}")),
    })
}

fn op(not_equal: bool) -> CmpOp {
    if not_equal {
        CmpOp::Ne
    } else {
        CmpOp::Eq
    }
}

type Anonymous<'a> = BTreeMap<&'a str, &'a (SetDump, Vec<Element>)>;

fn rule(family: Family, dump: &RuleDump, anonymous: &Anonymous<'_>) -> Result<Rule> {
    let expressions: Vec<Expression> = dump
        .expressions
        .iter()
        .map(|e| {
            e.clone()
                .ok_or_else(|| Undecodable("a foreign expression".into()))
        })
        .collect::<Result<_>>()?;
    let mut out = Rule {
        matches: Vec::new(),
        statements: Vec::new(),
        action: None,
        comment: comment(&dump.userdata, 0),
    };
    let (src, dst, addr_len) = address_fields(family);
    let mut rest: &[Expression] = &expressions;
    while !rest.is_empty() {
        if out.action.is_some() {
            return fail("expressions after the verdict");
        }
        rest = match rest {
            [Expression::Meta {
                key: MetaKey::Mark, ..
            }, Expression::Bitwise { mask, xor, .. }, Expression::MetaSet {
                key: MetaKey::Mark, ..
            }, tail @ ..] => {
                let (mask, xor) = (u32_ne(mask)?, u32_ne(xor)?);
                out.statements.push(if mask == u32::MAX {
                    Statement::MarkXor(xor)
                } else if mask == !xor {
                    Statement::MarkOr(xor)
                } else {
                    return fail("a mark rewrite kproxy does not write");
                });
                tail
            }
            [Expression::Numgen {
                modulus, offset, ..
            }, Expression::HostToNetwork32 { .. }, Expression::Lookup {
                dreg: Some(_),
                set: SetHandle::Named(map),
                ..
            }, Expression::Dnat { .. }, tail @ ..] => {
                out.action = Some(Action::Dnat(Dnat::Numgen {
                    map: map.clone(),
                    modulus: *modulus,
                    offset: *offset,
                }));
                tail
            }
            [Expression::Immediate { data: a, .. }, Expression::Immediate { data: p, .. }, Expression::Dnat { .. }, tail @ ..] =>
            {
                out.action = Some(Action::Dnat(Dnat::To(SocketAddr::new(addr(a)?, port(p)?))));
                tail
            }
            [Expression::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                ..
            }, Expression::Cmp {
                not_equal, data, ..
            }, tail @ ..]
                if *len < addr_len && (*offset == src || *offset == dst) =>
            {
                let left = if *offset == src {
                    Expr::SourceAddr
                } else {
                    Expr::DestAddr
                };
                let mut bytes = data.clone();
                bytes.resize(addr_len as usize, 0);
                let net = IpNet::new(addr(&bytes)?, (*len * 8) as u8)
                    .map_err(|e| Undecodable(e.to_string()))?;
                out.matches.push(Match::Cmp {
                    left,
                    op: op(*not_equal),
                    right: Value::Prefix(net),
                });
                tail
            }
            [Expression::Payload {
                base: PayloadBase::Network,
                offset,
                len,
                ..
            }, Expression::Bitwise { mask, xor, .. }, Expression::Lookup {
                dreg: Some(_), set, ..
            }, tail @ ..]
                if *offset == dst && *len == addr_len && xor.iter().all(|b| *b == 0) =>
            {
                out.action = Some(Action::Vmap {
                    key: vec![Expr::DestAddrLowBits {
                        bits: low_bits(mask)?,
                    }],
                    map: set.name().to_string(),
                });
                tail
            }
            [Expression::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                ..
            }, Expression::Bitwise { mask, xor, .. }, Expression::Lookup {
                dreg: Some(_), set, ..
            }, tail @ ..]
                if xor.iter().all(|b| *b == 0) =>
            {
                out.action = Some(Action::Vmap {
                    key: vec![Expr::DestPortLowBits {
                        bits: low_bits(mask)?,
                    }],
                    map: set.name().to_string(),
                });
                tail
            }
            [load, Expression::Bitwise { mask, xor, .. }, Expression::Cmp {
                not_equal, data, ..
            }, tail @ ..]
                if loaded(family, load).is_some() =>
            {
                let left = loaded(family, load).unwrap_or(Expr::Mark);
                out.matches
                    .push(masked_match(left, mask, xor, *not_equal, data)?);
                tail
            }
            [load, Expression::Cmp {
                not_equal, data, ..
            }, tail @ ..]
                if loaded(family, load).is_some() =>
            {
                let left = loaded(family, load).unwrap_or(Expr::Mark);
                out.matches.push(Match::Cmp {
                    left,
                    op: op(*not_equal),
                    right: cmp_value(left, data)?,
                });
                tail
            }
            [Expression::Verdict(verdict), tail @ ..] => {
                out.action = Some(Action::Verdict(verdict_ir(verdict)));
                tail
            }
            [Expression::Masquerade { fully_random }, tail @ ..] => {
                out.action = Some(Action::Masquerade {
                    fully_random: *fully_random,
                });
                tail
            }
            [Expression::Reject { .. }, tail @ ..] => {
                out.action = Some(Action::Reject(RejectWith::PortUnreachable));
                tail
            }
            [Expression::RejectTcpReset, tail @ ..] => {
                out.action = Some(Action::Reject(RejectWith::TcpReset));
                tail
            }
            _ => {
                // Loads into consecutive registers, then a lookup or a set update.
                let count = rest
                    .iter()
                    .take_while(|e| loaded(family, e).is_some())
                    .count();
                let key: Vec<Expr> = rest[..count]
                    .iter()
                    .filter_map(|e| loaded(family, e))
                    .collect();
                match (key.is_empty(), rest.get(count)) {
                    (
                        false,
                        Some(Expression::Lookup {
                            dreg, set, invert, ..
                        }),
                    ) => match dreg {
                        None => out.matches.push(Match::Lookup {
                            key,
                            set: if set.name().starts_with("__set") {
                                SetRef::Prefixes(prefixes(anonymous, set.name())?)
                            } else {
                                SetRef::Named(set.name().to_string())
                            },
                            negate: *invert,
                        }),
                        Some(_) => {
                            out.action = Some(Action::Vmap {
                                key,
                                map: set.name().to_string(),
                            })
                        }
                    },
                    (
                        false,
                        Some(Expression::DynsetUpdate {
                            set, timeout_ms, ..
                        }),
                    ) => {
                        out.statements.push(Statement::UpdateSet {
                            set: set.clone(),
                            key,
                            timeout: timeout_ms.map(|ms| (ms / 1000) as u32),
                        });
                    }
                    _ => return fail("an expression sequence kproxy does not write"),
                }
                &rest[count + 1..]
            }
        };
    }
    Ok(out)
}

/// How many low bits a mask of [`Expr::DestAddrLowBits`] or [`Expr::DestPortLowBits`] keeps.
fn low_bits(mask: &[u8]) -> Result<u8> {
    let value = mask
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let bits = value.count_ones();
    if bits > 32 || value != (1u128 << bits) - 1 {
        return fail("an address mask kproxy does not write");
    }
    u8::try_from(bits).map_err(|e| Undecodable(e.to_string()))
}

fn masked_match(left: Expr, mask: &[u8], xor: &[u8], ne: bool, data: &[u8]) -> Result<Match> {
    if xor.iter().any(|b| *b != 0) {
        return fail("a masked comparison with xor");
    }
    match left {
        Expr::CtState | Expr::CtStatus if data.iter().all(|b| *b == 0) => {
            let bit = u32_ne(mask)?;
            let right = match (left, bit) {
                (Expr::CtState, 0x8) => Value::CtNew,
                (Expr::CtStatus, 0x20) => Value::CtDnat,
                _ => return fail("a ct bit kproxy does not test"),
            };
            // `ct state new` is "bit set", i.e. `!= 0`.
            Ok(Match::Cmp {
                left,
                op: op(!ne),
                right,
            })
        }
        Expr::SourceAddr | Expr::DestAddr => {
            let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
            let net =
                IpNet::new(addr(data)?, ones as u8).map_err(|e| Undecodable(e.to_string()))?;
            Ok(Match::Cmp {
                left,
                op: op(ne),
                right: Value::Prefix(net),
            })
        }
        _ if !ne => Ok(Match::Masked {
            left,
            mask: u32_ne(mask)?,
            value: u32_ne(data)?,
        }),
        _ => fail("a masked inequality"),
    }
}

fn anonymous_set<'a>(anonymous: &Anonymous<'a>, name: &str) -> Result<&'a (SetDump, Vec<Element>)> {
    anonymous
        .get(name)
        .copied()
        .ok_or_else(|| Undecodable(format!("anonymous set {name} is missing")))
}

fn prefixes(anonymous: &Anonymous<'_>, name: &str) -> Result<Vec<IpNet>> {
    let (set, elements) = anonymous_set(anonymous, name)?;
    let key = datatypes(set.key_type).unwrap_or_default();
    let mut nets = Vec::new();
    for value in set_elements(elements, &key, true)? {
        match value.as_slice() {
            [Value::Prefix(net)] => nets.push(*net),
            _ => return fail(format!("anonymous set {name} holds more than networks")),
        }
    }
    nets.sort();
    Ok(nets)
}
