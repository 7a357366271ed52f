//! Rule and element messages, written attribute by attribute straight into the batch.
//!
//! libnftnl builds a message from objects: for every expression it allocates an object, finds
//! the expression's type by name in its list of types, copies each attribute in, writes the
//! payload and frees it all again; every set element is an object too. A cold apply of 10,000
//! Services is 225,000 expressions and 190,000 elements, and building them that way took ~80 ms
//! of a ~1 s apply (docs/benchmarks.md). Rules and element lists are nearly all of any large
//! transaction, so this module writes them itself, with the attributes libnftnl would write, in
//! the same order: a test builds every kind of expression and element both ways and compares
//! the bytes. Tables, chains and sets (a few hundred messages) still go through libnftnl.
//!
//! Everything here is safe code on a byte slice; [`ffi`](super::ffi) hands it the batch's free
//! space and takes back the length.

use kproxy_compiler::ir::Family;

use super::wire::{
    CtKey, Element, ElementData, Expression, MetaKey, PayloadBase, Register, VerdictCode,
};

/// `NLA_F_NESTED`: libmnl marks every nest it opens.
const NESTED: u16 = 0x8000;

// Attribute numbers from the kernel's `linux/netfilter/nf_tables.h`.
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_EXPRESSIONS: u16 = 4;
const RULE_USERDATA: u16 = 7;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
const DATA_VALUE: u16 = 1;
const DATA_VERDICT: u16 = 2;
const VERDICT_CODE: u16 = 1;
const VERDICT_CHAIN: u16 = 2;
const SET_ELEM_LIST_TABLE: u16 = 1;
const SET_ELEM_LIST_SET: u16 = 2;
const SET_ELEM_LIST_ELEMENTS: u16 = 3;
const SET_ELEM_LIST_SET_ID: u16 = 4;
const SET_ELEM_KEY: u16 = 1;
const SET_ELEM_DATA: u16 = 2;
const SET_ELEM_FLAGS: u16 = 3;
const SET_ELEM_KEY_END: u16 = 10;

/// A netlink message being written into a buffer that starts with its header.
///
/// The header's length field says how much is written; [`MessageWriter::finish`] updates it.
pub(super) struct MessageWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> MessageWriter<'a> {
    /// Continues the message whose header (and whatever follows it) starts `buf`.
    ///
    /// # Panics
    ///
    /// When `buf` is shorter than a netlink header, or its length field points past `buf`.
    pub fn new(buf: &'a mut [u8]) -> MessageWriter<'a> {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        assert!(len <= buf.len(), "netlink header longer than its buffer");
        MessageWriter { buf, len }
    }

    /// Writes the final length into the header; returns it.
    pub fn finish(self) -> usize {
        let len = u32::try_from(self.len).expect("a message fits its batch page");
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.len
    }

    /// One attribute: length and type (host order), payload, zeros up to 4-byte alignment.
    fn put(&mut self, kind: u16, payload: &[u8]) {
        let start = self.len;
        let attr_len = 4 + payload.len();
        let end = start + attr_len.next_multiple_of(4);
        self.header(start, attr_len, kind);
        self.buf[start + 4..start + attr_len].copy_from_slice(payload);
        self.buf[start + attr_len..end].fill(0);
        self.len = end;
    }

    fn put_u32(&mut self, kind: u16, value: u32) {
        self.put(kind, &value.to_be_bytes());
    }

    fn put_register(&mut self, kind: u16, register: Register) {
        self.put_u32(kind, register.0);
    }

    fn put_str(&mut self, kind: u16, text: &str) {
        let start = self.len;
        let attr_len = 4 + text.len() + 1;
        let end = start + attr_len.next_multiple_of(4);
        self.header(start, attr_len, kind);
        self.buf[start + 4..start + 4 + text.len()].copy_from_slice(text.as_bytes());
        self.buf[start + 4 + text.len()..end].fill(0);
        self.len = end;
    }

    /// A nested attribute holding what `fill` writes.
    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Self)) {
        let start = self.len;
        self.len += 4;
        fill(self);
        self.header(start, self.len - start, kind | NESTED);
    }

    fn header(&mut self, at: usize, len: usize, kind: u16) {
        let len = u16::try_from(len).expect("a netlink attribute is under 64 KiB");
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self.buf[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
    }

    /// `NFTA_DATA_VALUE` inside a nest of `kind`.
    fn value(&mut self, kind: u16, bytes: &[u8]) {
        self.nest(kind, |w| w.put(DATA_VALUE, bytes));
    }

    fn verdict(&mut self, kind: u16, verdict: &VerdictCode) {
        let (code, chain) = verdict_parts(verdict);
        self.nest(kind, |w| {
            w.nest(DATA_VERDICT, |w| {
                w.put(VERDICT_CODE, &code.to_be_bytes());
                if let Some(chain) = chain {
                    w.put_str(VERDICT_CHAIN, chain);
                }
            })
        });
    }
}

/// The payload of `NFT_MSG_NEWRULE`: table, chain, comment, expressions.
pub(super) fn rule(
    w: &mut MessageWriter<'_>,
    table: &str,
    chain: &str,
    expressions: &[Expression],
    userdata: &[u8],
) {
    w.put_str(RULE_TABLE, table);
    w.put_str(RULE_CHAIN, chain);
    if !userdata.is_empty() {
        w.put(RULE_USERDATA, userdata);
    }
    if !expressions.is_empty() {
        w.nest(RULE_EXPRESSIONS, |w| {
            for expression in expressions {
                w.nest(LIST_ELEM, |w| {
                    w.put_str(EXPR_NAME, kind(expression));
                    w.nest(EXPR_DATA, |w| attributes(w, expression));
                });
            }
        });
    }
}

/// The payload of `NFT_MSG_NEWSETELEM` / `NFT_MSG_DELSETELEM` for `set` (with its batch id,
/// when it is created in the same batch); with `keys_only`,
/// each element's data is left out (a delete names keys).
pub(super) fn elements(
    w: &mut MessageWriter<'_>,
    table: &str,
    set: &str,
    set_id: Option<u32>,
    elements: &[Element],
    keys_only: bool,
) {
    w.put_str(SET_ELEM_LIST_SET, set);
    if let Some(id) = set_id {
        w.put_u32(SET_ELEM_LIST_SET_ID, id);
    }
    w.put_str(SET_ELEM_LIST_TABLE, table);
    w.nest(SET_ELEM_LIST_ELEMENTS, |w| {
        // libnftnl numbers the elements' nests from 1 (the kernel reads any type there);
        // a message holds far fewer than 65,535 elements.
        for (number, element) in (1..).zip(elements) {
            w.nest(number, |w| element_attributes(w, element, keys_only));
        }
    });
}

fn element_attributes(w: &mut MessageWriter<'_>, element: &Element, keys_only: bool) {
    if element.interval_end {
        w.put_u32(SET_ELEM_FLAGS, libc::NFT_SET_ELEM_INTERVAL_END as u32);
    }
    w.value(SET_ELEM_KEY, &element.key);
    if let Some(end) = &element.key_end {
        w.value(SET_ELEM_KEY_END, end);
    }
    if keys_only {
        return;
    }
    match &element.data {
        ElementData::None => {}
        ElementData::Verdict(verdict) => w.verdict(SET_ELEM_DATA, verdict),
        ElementData::Value(bytes) => w.value(SET_ELEM_DATA, bytes),
    }
}

/// The expression's type name, as the kernel registers it.
fn kind(expression: &Expression) -> &'static str {
    match expression {
        Expression::Payload { .. } => "payload",
        Expression::Meta { .. } | Expression::MetaSet { .. } => "meta",
        Expression::Ct { .. } => "ct",
        Expression::FibAddrType { .. } => "fib",
        Expression::Numgen { .. } => "numgen",
        Expression::HostToNetwork32 { .. } => "byteorder",
        Expression::Cmp { .. } => "cmp",
        Expression::Bitwise { .. } => "bitwise",
        Expression::Lookup { .. } => "lookup",
        Expression::DynsetUpdate { .. } => "dynset",
        Expression::Immediate { .. } | Expression::Verdict(_) => "immediate",
        Expression::Dnat { .. } => "nat",
        Expression::Masquerade { .. } => "masq",
        Expression::Reject { .. } | Expression::RejectTcpReset => "reject",
    }
}

/// The expression's own attributes (`NFTA_EXPR_DATA`), in libnftnl's order.
fn attributes(w: &mut MessageWriter<'_>, expression: &Expression) {
    match expression {
        Expression::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            w.put_register(1, *dreg); // NFTA_PAYLOAD_DREG
            w.put_u32(2, payload_base(*base)); // NFTA_PAYLOAD_BASE
            w.put_u32(3, *offset); // NFTA_PAYLOAD_OFFSET
            w.put_u32(4, *len); // NFTA_PAYLOAD_LEN
        }
        Expression::Meta { key, dreg } => {
            w.put_u32(2, meta_key(*key)); // NFTA_META_KEY
            w.put_register(1, *dreg); // NFTA_META_DREG
        }
        Expression::MetaSet { key, sreg } => {
            w.put_u32(2, meta_key(*key)); // NFTA_META_KEY
            w.put_register(3, *sreg); // NFTA_META_SREG
        }
        Expression::Ct { key, dreg } => {
            w.put_u32(2, ct_key(*key)); // NFTA_CT_KEY
            w.put_register(1, *dreg); // NFTA_CT_DREG
        }
        Expression::FibAddrType { source, dreg } => {
            // NFTA_FIB_F_SADDR / NFTA_FIB_F_DADDR; NFT_FIB_RESULT_ADDRTYPE.
            w.put_u32(3, if *source { 1 } else { 2 }); // NFTA_FIB_FLAGS
            w.put_u32(2, 3); // NFTA_FIB_RESULT
            w.put_register(1, *dreg); // NFTA_FIB_DREG
        }
        Expression::Numgen {
            modulus,
            offset,
            dreg,
        } => {
            w.put_register(1, *dreg); // NFTA_NG_DREG
            w.put_u32(2, *modulus); // NFTA_NG_MODULUS
            w.put_u32(3, libc::NFT_NG_RANDOM as u32); // NFTA_NG_TYPE
            w.put_u32(4, *offset); // NFTA_NG_OFFSET
        }
        Expression::HostToNetwork32 { reg } => {
            w.put_register(1, *reg); // NFTA_BYTEORDER_SREG
            w.put_register(2, *reg); // NFTA_BYTEORDER_DREG
            w.put_u32(3, libc::NFT_BYTEORDER_HTON as u32); // NFTA_BYTEORDER_OP
            w.put_u32(4, 4); // NFTA_BYTEORDER_LEN
            w.put_u32(5, 4); // NFTA_BYTEORDER_SIZE
        }
        Expression::Cmp {
            sreg,
            not_equal,
            data,
        } => {
            let op = if *not_equal {
                libc::NFT_CMP_NEQ
            } else {
                libc::NFT_CMP_EQ
            };
            w.put_register(1, *sreg); // NFTA_CMP_SREG
            w.put_u32(2, op as u32); // NFTA_CMP_OP
            w.value(3, data); // NFTA_CMP_DATA
        }
        Expression::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            w.put_register(1, *sreg); // NFTA_BITWISE_SREG
            w.put_register(2, *dreg); // NFTA_BITWISE_DREG
            w.put_u32(3, mask.len() as u32); // NFTA_BITWISE_LEN
            w.value(4, mask); // NFTA_BITWISE_MASK
            w.value(5, xor); // NFTA_BITWISE_XOR
        }
        Expression::Lookup {
            sreg,
            dreg,
            set,
            invert,
        } => {
            w.put_register(2, *sreg); // NFTA_LOOKUP_SREG
            if let Some(dreg) = dreg {
                w.put_register(3, *dreg); // NFTA_LOOKUP_DREG
            }
            w.put_str(1, set.name()); // NFTA_LOOKUP_SET
            if let Some(id) = set.id() {
                w.put_u32(4, id); // NFTA_LOOKUP_SET_ID
            }
            if *invert {
                w.put_u32(5, libc::NFT_LOOKUP_F_INV as u32); // NFTA_LOOKUP_FLAGS
            }
        }
        Expression::DynsetUpdate {
            sreg,
            set,
            timeout_ms,
        } => {
            w.put_register(4, *sreg); // NFTA_DYNSET_SREG_KEY
            w.put_u32(3, libc::NFT_DYNSET_OP_UPDATE as u32); // NFTA_DYNSET_OP
            if let Some(timeout) = timeout_ms {
                w.put(6, &timeout.to_be_bytes()); // NFTA_DYNSET_TIMEOUT
            }
            w.put_str(1, set); // NFTA_DYNSET_SET_NAME
        }
        Expression::Immediate { dreg, data } => {
            w.put_register(1, *dreg); // NFTA_IMMEDIATE_DREG
            w.value(2, data); // NFTA_IMMEDIATE_DATA
        }
        Expression::Verdict(verdict) => {
            w.put_register(1, Register::VERDICT); // NFTA_IMMEDIATE_DREG
            w.verdict(2, verdict); // NFTA_IMMEDIATE_DATA
        }
        Expression::Dnat {
            family,
            addr,
            port,
            proto_specified,
        } => {
            w.put_u32(1, libc::NFT_NAT_DNAT as u32); // NFTA_NAT_TYPE
            w.put_u32(2, nat_family(*family)); // NFTA_NAT_FAMILY
            w.put_register(3, *addr); // NFTA_NAT_REG_ADDR_MIN
            w.put_register(5, *port); // NFTA_NAT_REG_PROTO_MIN
            if *proto_specified {
                w.put_u32(7, 0x2); // NFTA_NAT_FLAGS: NF_NAT_RANGE_PROTO_SPECIFIED
            }
        }
        Expression::Masquerade { fully_random } => {
            if *fully_random {
                w.put_u32(1, 0x10); // NFTA_MASQ_FLAGS: NF_NAT_RANGE_PROTO_RANDOM_FULLY
            }
        }
        Expression::Reject { icmp_code } => {
            w.put_u32(1, libc::NFT_REJECT_ICMP_UNREACH as u32); // NFTA_REJECT_TYPE
            w.put(2, &[*icmp_code]); // NFTA_REJECT_ICMP_CODE
        }
        Expression::RejectTcpReset => {
            w.put_u32(1, libc::NFT_REJECT_TCP_RST as u32); // NFTA_REJECT_TYPE
            w.put(2, &[0]); // NFTA_REJECT_ICMP_CODE
        }
    }
}

/// A verdict as the kernel's code and, for jumps, the target chain.
pub(super) fn verdict_parts(verdict: &VerdictCode) -> (i32, Option<&str>) {
    match verdict {
        VerdictCode::Accept => (libc::NF_ACCEPT, None),
        VerdictCode::Drop => (libc::NF_DROP, None),
        VerdictCode::Return => (libc::NFT_RETURN, None),
        VerdictCode::Jump(chain) => (libc::NFT_JUMP, Some(chain)),
        VerdictCode::Goto(chain) => (libc::NFT_GOTO, Some(chain)),
    }
}

pub(super) fn payload_base(base: PayloadBase) -> u32 {
    (match base {
        PayloadBase::Network => libc::NFT_PAYLOAD_NETWORK_HEADER,
        PayloadBase::Transport => libc::NFT_PAYLOAD_TRANSPORT_HEADER,
    }) as u32
}

pub(super) fn ct_key(key: CtKey) -> u32 {
    (match key {
        CtKey::State => libc::NFT_CT_STATE,
        CtKey::Status => libc::NFT_CT_STATUS,
    }) as u32
}

/// The address family a NAT expression rewrites.
pub(super) fn nat_family(family: Family) -> u32 {
    (match family {
        Family::Ip => libc::NFPROTO_IPV4,
        Family::Ip6 => libc::NFPROTO_IPV6,
    }) as u32
}

pub(super) fn meta_key(key: MetaKey) -> u32 {
    (match key {
        MetaKey::L4Proto => libc::NFT_META_L4PROTO,
        MetaKey::Mark => libc::NFT_META_MARK,
    }) as u32
}

#[cfg(test)]
mod tests {
    use kproxy_compiler::ir::Family;

    use super::super::ffi::message_bytes;
    use super::super::wire::{
        CtKey, Element, ElementData, Expression, Message, MetaKey, PayloadBase, Register,
        SetHandle, VerdictCode,
    };

    /// The message as the batch writes it and as libnftnl writes it are the same bytes.
    fn same_as_libnftnl(family: Family, message: Message) {
        let ours = message_bytes(family, &message, false);
        let reference = message_bytes(family, &message, true);
        assert_eq!(ours, reference, "{message:?}");
    }

    fn reg(n: u32) -> Register {
        Register::after(n)
    }

    /// One of every expression kind and shape the lowering emits.
    fn every_expression() -> Vec<Expression> {
        vec![
            Expression::Payload {
                base: PayloadBase::Network,
                offset: 16,
                len: 4,
                dreg: reg(0),
            },
            Expression::Payload {
                base: PayloadBase::Transport,
                offset: 2,
                len: 2,
                dreg: reg(1),
            },
            Expression::Meta {
                key: MetaKey::L4Proto,
                dreg: reg(2),
            },
            Expression::MetaSet {
                key: MetaKey::Mark,
                sreg: reg(0),
            },
            Expression::Ct {
                key: CtKey::State,
                dreg: reg(0),
            },
            Expression::Ct {
                key: CtKey::Status,
                dreg: reg(0),
            },
            Expression::FibAddrType {
                source: true,
                dreg: reg(0),
            },
            Expression::FibAddrType {
                source: false,
                dreg: reg(0),
            },
            Expression::Numgen {
                modulus: 720_720,
                offset: 3_181_379_584,
                dreg: reg(0),
            },
            Expression::HostToNetwork32 { reg: reg(0) },
            Expression::Cmp {
                sreg: reg(0),
                not_equal: false,
                data: vec![10, 96, 0, 1],
            },
            Expression::Cmp {
                sreg: reg(1),
                not_equal: true,
                data: vec![6],
            },
            Expression::Bitwise {
                sreg: reg(0),
                dreg: reg(0),
                mask: vec![0, 0, 3, 255],
                xor: vec![0, 0, 0, 0],
            },
            Expression::Lookup {
                sreg: reg(0),
                dreg: None,
                set: SetHandle::Named("cluster-ips".into()),
                invert: false,
            },
            Expression::Lookup {
                sreg: reg(0),
                dreg: Some(Register::VERDICT),
                set: SetHandle::Named("service-ip-buckets".into()),
                invert: false,
            },
            Expression::Lookup {
                sreg: reg(0),
                dreg: None,
                set: SetHandle::Anonymous {
                    template: "__set%d",
                    id: 7,
                },
                invert: true,
            },
            Expression::DynsetUpdate {
                sreg: reg(0),
                set: "affinity".into(),
                timeout_ms: Some(10_800_000),
            },
            Expression::DynsetUpdate {
                sreg: reg(0),
                set: "affinity".into(),
                timeout_ms: None,
            },
            Expression::Immediate {
                dreg: reg(0),
                data: vec![10, 244, 1, 15],
            },
            Expression::Immediate {
                dreg: reg(1),
                data: vec![0x1f, 0x90],
            },
            Expression::Verdict(VerdictCode::Accept),
            Expression::Verdict(VerdictCode::Drop),
            Expression::Verdict(VerdictCode::Return),
            Expression::Verdict(VerdictCode::Jump("mark-for-masquerade".into())),
            Expression::Verdict(VerdictCode::Goto("service-ips-00a".into())),
            Expression::Dnat {
                family: Family::Ip,
                addr: reg(0),
                port: reg(1),
                proto_specified: true,
            },
            Expression::Dnat {
                family: Family::Ip6,
                addr: reg(0),
                port: reg(4),
                proto_specified: false,
            },
            Expression::Masquerade { fully_random: true },
            Expression::Masquerade {
                fully_random: false,
            },
            Expression::Reject { icmp_code: 3 },
            Expression::RejectTcpReset,
        ]
    }

    #[test]
    fn every_expression_is_written_as_libnftnl_writes_it() {
        for expression in every_expression() {
            same_as_libnftnl(
                Family::Ip,
                Message::NewRule {
                    chain: "services".into(),
                    expressions: vec![expression],
                    userdata: Vec::new(),
                },
            );
        }
    }

    #[test]
    fn a_rule_with_a_comment_and_many_expressions_is_written_as_libnftnl_writes_it() {
        for family in [Family::Ip, Family::Ip6] {
            same_as_libnftnl(
                family,
                Message::NewRule {
                    chain: "service-ips-028".into(),
                    expressions: every_expression(),
                    // nft's comment TLV; odd lengths exercise the padding.
                    userdata: b"\x00\x0cdemo/web:ht\x00".to_vec(),
                },
            );
        }
    }

    fn elements() -> Vec<Element> {
        let value = |key: &[u8], data| Element {
            key: key.to_vec(),
            key_end: None,
            interval_end: false,
            data,
        };
        vec![
            value(&[10, 96, 0, 1], ElementData::None),
            value(&[10, 96, 0, 2, 6, 0, 0, 0, 0, 80, 0, 0], ElementData::None),
            value(
                &[0, 0, 0, 40],
                ElementData::Verdict(VerdictCode::Goto("service-ips-028".into())),
            ),
            value(&[1, 2, 3], ElementData::Verdict(VerdictCode::Drop)),
            value(
                &[0xbd, 0xa0, 0, 0],
                ElementData::Value(vec![10, 244, 1, 15, 0x1f, 0x90, 0, 0]),
            ),
            Element {
                key: vec![0xbd, 0xa3, 0xaa, 0x70],
                key_end: None,
                interval_end: true,
                data: ElementData::None,
            },
            Element {
                key: vec![203, 0, 113, 10, 6, 0, 0, 0, 1, 187, 0, 0, 192, 0, 2, 0],
                key_end: Some(vec![
                    203, 0, 113, 10, 6, 0, 0, 0, 1, 187, 0, 0, 192, 0, 2, 255,
                ]),
                interval_end: false,
                data: ElementData::None,
            },
        ]
    }

    #[test]
    fn element_lists_are_written_as_libnftnl_writes_them() {
        same_as_libnftnl(
            Family::Ip,
            Message::NewElements(SetHandle::Named("endpoints-01a".into()), elements()),
        );
        same_as_libnftnl(
            Family::Ip6,
            Message::NewElements(
                SetHandle::Anonymous {
                    template: "__set%d",
                    id: 3,
                },
                elements(),
            ),
        );
        same_as_libnftnl(
            Family::Ip,
            Message::DelElements("endpoints-01a".into(), elements()),
        );
    }
}
