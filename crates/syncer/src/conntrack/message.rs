//! ctnetlink messages as plain bytes: the dump and delete requests kproxy sends and the
//! conntrack entries and acknowledgements the kernel answers with.
//!
//! Everything here is safe Rust over byte buffers, so it is unit-tested without a kernel. The
//! layout is the kernel's UAPI: a `nlmsghdr` (host byte order), a `nfgenmsg` (family, version,
//! big-endian resource id), then netlink attributes (`nla_len`, `nla_type` in host order, the
//! payload padded to 4 bytes). Addresses, ports, `CTA_ID` and `CTA_ZONE` travel in network byte
//! order, as ctnetlink declares them (`NLA_BE16`/`NLA_BE32`). Nested attributes carry
//! `NLA_F_NESTED`, which the kernel sets on what it sends and accepts on what it receives.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Flow, IpFamily, Tuple};

// `linux/netfilter/nfnetlink.h` and `linux/netfilter/nfnetlink_conntrack.h`. The `libc` crate
// has the netlink basics but not these.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNETLINK_V0: u8 = 0;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_FILTER: u16 = 25;
const CTA_FILTER_ORIG_FLAGS: u16 = 1;
/// `CTA_FILTER_F_CTA_PROTO_NUM` (nf_conntrack_netlink.c; libnetfilter_conntrack has a copy).
const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;

const NFGENMSG_LEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = libc::NLA_F_NESTED as u16;
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;

/// `nlmsg_type` of a conntrack entry in a dump (the kernel reuses `IPCTNL_MSG_CT_NEW`).
const CT_NEW: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
const CT_GET: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
const CT_DELETE: u16 = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;

/// Why a reply could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DecodeError(pub(super) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn malformed<T>(what: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(what.into()))
}

fn address_family(family: IpFamily) -> u8 {
    match family {
        IpFamily::V4 => libc::AF_INET as u8,
        IpFamily::V6 => libc::AF_INET6 as u8,
    }
}

/// Builds one netlink message: header, `nfgenmsg`, attributes; lengths are filled in as
/// nests and the message are closed.
struct Builder {
    buf: Vec<u8>,
    open: Vec<usize>,
}

impl Builder {
    fn new(kind: u16, flags: u16, seq: u32, family: IpFamily) -> Builder {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set by finish
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid: the kernel fills it in
        buf.push(address_family(family));
        buf.push(NFNETLINK_V0);
        buf.extend_from_slice(&0u16.to_be_bytes()); // res_id
        Builder {
            buf,
            open: Vec::new(),
        }
    }

    fn put(&mut self, kind: u16, payload: &[u8]) {
        let len = u16::try_from(NLA_HDRLEN + payload.len()).expect("attribute under 64 KiB");
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
    }

    fn begin(&mut self, kind: u16) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end(&mut self) {
        let start = self.open.pop().expect("end() matches a begin()");
        let len = u16::try_from(self.buf.len() - start).expect("nest under 64 KiB");
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        assert!(self.open.is_empty(), "every nest is closed");
        let len = u32::try_from(self.buf.len()).expect("message under 4 GiB");
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`: the conntrack entries of one family in the socket's
/// network namespace (the kernel filters on `nfgen_family`).
///
/// With a protocol, the request also carries `CTA_FILTER` (original-direction flags: protocol
/// number) and an original tuple holding only `CTA_PROTO_NUM`, so that kernels since 5.9 skip
/// other protocols instead of sending a busy node's whole TCP table to userspace. Older kernels
/// ignore both attributes and dump everything, so callers must still check the protocol.
pub(super) fn dump_request(family: IpFamily, protocol: Option<u8>, seq: u32) -> Vec<u8> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    let mut b = Builder::new(CT_GET, flags, seq, family);
    if let Some(protocol) = protocol {
        b.begin(CTA_FILTER);
        b.put(
            CTA_FILTER_ORIG_FLAGS,
            &CTA_FILTER_F_CTA_PROTO_NUM.to_ne_bytes(),
        );
        b.end();
        b.begin(CTA_TUPLE_ORIG);
        b.begin(CTA_TUPLE_PROTO);
        b.put(CTA_PROTO_NUM, &[protocol]);
        b.end();
        b.end();
    }
    b.finish()
}

/// `IPCTNL_MSG_CT_DELETE` for one entry, acknowledged.
///
/// The kernel looks the entry up by the original tuple, which must be complete: source and
/// destination address, protocol number and both ports (otherwise `EINVAL`). Without any tuple
/// the same message would flush the whole table, so a tuple is always written. `CTA_ID` makes
/// the kernel answer `ENOENT` instead of deleting a newer entry that reuses the tuple, and
/// `CTA_ZONE` selects the entry's zone when it is not the default one.
pub(super) fn delete_request(flow: &Flow, seq: u32) -> Vec<u8> {
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
    let mut b = Builder::new(CT_DELETE, flags, seq, flow.family());
    b.begin(CTA_TUPLE_ORIG);
    b.begin(CTA_TUPLE_IP);
    match (flow.original.src.ip(), flow.original.dst.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            b.put(CTA_IP_V4_SRC, &src.octets());
            b.put(CTA_IP_V4_DST, &dst.octets());
        }
        (src, dst) => {
            b.put(CTA_IP_V6_SRC, &as_v6(src).octets());
            b.put(CTA_IP_V6_DST, &as_v6(dst).octets());
        }
    }
    b.end();
    b.begin(CTA_TUPLE_PROTO);
    b.put(CTA_PROTO_NUM, &[flow.protocol]);
    b.put(CTA_PROTO_SRC_PORT, &flow.original.src.port().to_be_bytes());
    b.put(CTA_PROTO_DST_PORT, &flow.original.dst.port().to_be_bytes());
    b.end();
    b.end();
    if flow.zone != 0 {
        b.put(CTA_ZONE, &flow.zone.to_be_bytes());
    }
    if let Some(id) = flow.id {
        b.put(CTA_ID, &id.to_be_bytes());
    }
    b.finish()
}

fn as_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

pub(super) use crate::nlmsg::Header;

/// What one received message means to a dump or a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Reply {
    /// One conntrack entry of a dump; `None` when it is not an IPv4/IPv6 entry with both
    /// tuples (nothing kproxy could match or delete).
    Entry(Option<Flow>),
    /// `NLMSG_DONE`: the dump is complete (`errno` 0) or failed.
    Done { errno: i32 },
    /// `NLMSG_ERROR`: an acknowledgement (`errno` 0) or the error for one request.
    Ack { errno: i32 },
    /// Anything else (`NLMSG_NOOP`, other message types): ignored.
    Other,
}

/// Splits a buffer from one `recv` into messages: each is its header and its meaning.
pub(super) fn replies(
    buf: &[u8],
) -> impl Iterator<Item = Result<(Header, Reply), DecodeError>> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let item = next_message(rest).map(|(header, body, next)| {
            rest = next;
            decode_reply(header, body).map(|reply| (header, reply))
        });
        match item {
            Ok(result) => Some(result),
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

fn next_message(buf: &[u8]) -> Result<(Header, &[u8], &[u8]), DecodeError> {
    let (message, rest) = crate::nlmsg::split(buf).map_err(DecodeError)?;
    Ok((message.header, message.body(), rest))
}

fn decode_reply(header: Header, body: &[u8]) -> Result<Reply, DecodeError> {
    match header.kind {
        k if k == libc::NLMSG_DONE as u16 => {
            // The payload is an int (the dump's error) on every kernel since 2.6; tolerate none.
            let errno = if body.len() >= 4 {
                -i32_ne(&body[0..4])
            } else {
                0
            };
            Ok(Reply::Done { errno })
        }
        k if k == libc::NLMSG_ERROR as u16 => {
            if body.len() < 4 {
                return malformed("NLMSG_ERROR without an error code");
            }
            Ok(Reply::Ack {
                errno: -i32_ne(&body[0..4]),
            })
        }
        CT_NEW => decode_entry(body).map(Reply::Entry),
        _ => Ok(Reply::Other),
    }
}

/// A conntrack entry: `nfgenmsg`, then `CTA_*` attributes.
fn decode_entry(body: &[u8]) -> Result<Option<Flow>, DecodeError> {
    if body.len() < NFGENMSG_LEN {
        return malformed("conntrack entry shorter than its nfgenmsg");
    }
    let (mut original, mut reply, mut id, mut zone) = (None, None, None, 0);
    for attr in attrs(&body[NFGENMSG_LEN..]) {
        let (kind, payload) = attr?;
        match kind {
            CTA_TUPLE_ORIG => original = decode_tuple(payload)?,
            CTA_TUPLE_REPLY => reply = decode_tuple(payload)?,
            CTA_ID => id = Some(u32::from_be_bytes(fixed(payload, "CTA_ID")?)),
            CTA_ZONE => zone = u16::from_be_bytes(fixed(payload, "CTA_ZONE")?),
            _ => {}
        }
    }
    let (Some((protocol, original)), Some((_, reply))) = (original, reply) else {
        return Ok(None);
    };
    Ok(Some(Flow {
        protocol,
        original,
        reply,
        id,
        zone,
    }))
}

/// `CTA_TUPLE_*`: addresses from `CTA_TUPLE_IP`, protocol and ports from `CTA_TUPLE_PROTO`.
/// Protocols without ports (ICMP, GRE…) get port 0; a tuple without addresses is `None`.
fn decode_tuple(nest: &[u8]) -> Result<Option<(u8, Tuple)>, DecodeError> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, 0, 0);
    for attr in attrs(nest) {
        let (kind, payload) = attr?;
        match kind {
            CTA_TUPLE_IP => {
                for attr in attrs(payload) {
                    let (kind, payload) = attr?;
                    match kind {
                        CTA_IP_V4_SRC => src = Some(v4(payload)?),
                        CTA_IP_V4_DST => dst = Some(v4(payload)?),
                        CTA_IP_V6_SRC => src = Some(v6(payload)?),
                        CTA_IP_V6_DST => dst = Some(v6(payload)?),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for attr in attrs(payload) {
                    let (kind, payload) = attr?;
                    match kind {
                        CTA_PROTO_NUM => protocol = Some(fixed::<1>(payload, "CTA_PROTO_NUM")?[0]),
                        CTA_PROTO_SRC_PORT => {
                            sport = u16::from_be_bytes(fixed(payload, "CTA_PROTO_SRC_PORT")?)
                        }
                        CTA_PROTO_DST_PORT => {
                            dport = u16::from_be_bytes(fixed(payload, "CTA_PROTO_DST_PORT")?)
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(protocol)) = (src, dst, protocol) else {
        return Ok(None);
    };
    Ok(Some((
        protocol,
        Tuple {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
    )))
}

/// Iterates over the attributes in `buf`: type (flags masked off) and payload.
fn attrs(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), DecodeError>> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < NLA_HDRLEN {
            // Fewer than 4 bytes left can only be padding.
            return None;
        }
        let len = u16_ne(&rest[0..2]) as usize;
        let kind = u16_ne(&rest[2..4]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > rest.len() {
            let bad = malformed(format!(
                "attribute {kind} of length {len} with {} bytes left",
                rest.len()
            ));
            rest = &[];
            return Some(bad);
        }
        let payload = &rest[NLA_HDRLEN..len];
        rest = &rest[align4(len).min(rest.len())..];
        Some(Ok((kind, payload)))
    })
}

fn fixed<const N: usize>(payload: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    payload
        .try_into()
        .or_else(|_| malformed(format!("{what} has {} bytes, not {N}", payload.len())))
}

fn v4(payload: &[u8]) -> Result<IpAddr, DecodeError> {
    Ok(IpAddr::V4(Ipv4Addr::from(fixed::<4>(
        payload,
        "CTA_IP_V4_*",
    )?)))
}

fn v6(payload: &[u8]) -> Result<IpAddr, DecodeError> {
    Ok(IpAddr::V6(Ipv6Addr::from(fixed::<16>(
        payload,
        "CTA_IP_V6_*",
    )?)))
}

fn align4(n: usize) -> usize {
    n.next_multiple_of(4)
}

fn u16_ne(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

#[cfg(test)]
fn u32_ne(b: &[u8]) -> u32 {
    u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

fn i32_ne(b: &[u8]) -> i32 {
    i32::from_ne_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(original: (&str, &str), reply: (&str, &str), protocol: u8) -> Flow {
        Flow {
            protocol,
            original: Tuple {
                src: original.0.parse().unwrap(),
                dst: original.1.parse().unwrap(),
            },
            reply: Tuple {
                src: reply.0.parse().unwrap(),
                dst: reply.1.parse().unwrap(),
            },
            id: Some(0x0102_0304),
            zone: 0,
        }
    }

    /// A dump entry as the kernel would send it: the delete request's tuple encoding reused
    /// for both directions, plus `CTA_ID`, wrapped in a `CT_NEW` message.
    fn entry_message(f: &Flow, seq: u32) -> Vec<u8> {
        let mut b = Builder::new(CT_NEW, libc::NLM_F_MULTI as u16, seq, f.family());
        for (kind, t) in [(CTA_TUPLE_ORIG, f.original), (CTA_TUPLE_REPLY, f.reply)] {
            b.begin(kind);
            b.begin(CTA_TUPLE_IP);
            match (t.src.ip(), t.dst.ip()) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    b.put(CTA_IP_V4_SRC, &s.octets());
                    b.put(CTA_IP_V4_DST, &d.octets());
                }
                (s, d) => {
                    b.put(CTA_IP_V6_SRC, &as_v6(s).octets());
                    b.put(CTA_IP_V6_DST, &as_v6(d).octets());
                }
            }
            b.end();
            b.begin(CTA_TUPLE_PROTO);
            b.put(CTA_PROTO_NUM, &[f.protocol]);
            b.put(CTA_PROTO_SRC_PORT, &t.src.port().to_be_bytes());
            b.put(CTA_PROTO_DST_PORT, &t.dst.port().to_be_bytes());
            b.end();
            b.end();
        }
        b.put(3 /* CTA_STATUS */, &8u32.to_be_bytes());
        if f.zone != 0 {
            b.put(CTA_ZONE, &f.zone.to_be_bytes());
        }
        b.put(CTA_ID, &f.id.unwrap().to_be_bytes());
        b.finish()
    }

    fn control(kind: i32, errno: i32, seq: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&20u32.to_ne_bytes());
        m.extend_from_slice(&(kind as u16).to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&7u32.to_ne_bytes());
        m.extend_from_slice(&(-errno).to_ne_bytes());
        m
    }

    #[test]
    fn delete_request_bytes_for_ipv4_udp() {
        let f = flow(
            ("10.0.0.1:40000", "10.96.0.10:53"),
            ("10.244.1.5:53", "10.0.0.1:40000"),
            17,
        );
        let m = delete_request(&f, 9);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &80u32.to_ne_bytes()[..], &0x0102u16.to_ne_bytes(), &5u16.to_ne_bytes(),
            &9u32.to_ne_bytes(), &0u32.to_ne_bytes(),
            &[2, 0, 0, 0],                                            // AF_INET, v0, res_id
            &52u16.to_ne_bytes(), &0x8001u16.to_ne_bytes(),           // CTA_TUPLE_ORIG, nested
            &20u16.to_ne_bytes(), &0x8001u16.to_ne_bytes(),           //  CTA_TUPLE_IP, nested
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 0, 0, 1], //   CTA_IP_V4_SRC
            &8u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[10, 96, 0, 10], //  CTA_IP_V4_DST
            &28u16.to_ne_bytes(), &0x8002u16.to_ne_bytes(),           //  CTA_TUPLE_PROTO, nested
            &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[17, 0, 0, 0], //   CTA_PROTO_NUM + pad
            &6u16.to_ne_bytes(), &2u16.to_ne_bytes(), &[0x9c, 0x40, 0, 0], // src port 40000
            &6u16.to_ne_bytes(), &3u16.to_ne_bytes(), &[0, 53, 0, 0], //   dst port 53
            &8u16.to_ne_bytes(), &12u16.to_ne_bytes(), &[1, 2, 3, 4], // CTA_ID, big-endian
        ]
        .concat();
        assert_eq!(m, expected);
    }

    #[test]
    fn delete_request_for_ipv6_sctp_in_a_zone() {
        let mut f = flow(
            ("[fd00::1]:40000", "[fd00:96::10]:5000"),
            ("[fd00:244::5]:5000", "[fd00::1]:40000"),
            132,
        );
        f.zone = 7;
        f.id = None;
        let m = delete_request(&f, 1);
        assert_eq!(m.len() as u32, u32_ne(&m[0..4]));
        assert_eq!(m[16], libc::AF_INET6 as u8);
        let attrs: Vec<_> = attrs(&m[20..]).map(Result::unwrap).collect();
        assert_eq!(
            attrs.iter().map(|a| a.0).collect::<Vec<_>>(),
            [CTA_TUPLE_ORIG, CTA_ZONE]
        );
        assert_eq!(attrs[1].1, [0, 7]);
        let (protocol, tuple) = decode_tuple(attrs[0].1).unwrap().unwrap();
        assert_eq!((protocol, tuple), (132, f.original));
    }

    #[test]
    fn dump_request_is_a_bare_get_with_the_family() {
        let m = dump_request(IpFamily::V6, None, 3);
        assert_eq!(m.len(), 20);
        assert_eq!(u16_ne(&m[4..6]), 0x0101);
        assert_eq!(u16_ne(&m[6..8]), 0x301); // NLM_F_REQUEST | NLM_F_DUMP
        assert_eq!(u32_ne(&m[8..12]), 3);
        assert_eq!(&m[16..20], &[10, 0, 0, 0]);
    }

    #[test]
    fn dump_request_for_one_protocol_carries_a_kernel_filter() {
        let m = dump_request(IpFamily::V4, Some(17), 3);
        assert_eq!(m.len() as u32, u32_ne(&m[0..4]));
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &12u16.to_ne_bytes()[..], &0x8019u16.to_ne_bytes(),       // CTA_FILTER, nested
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &8u32.to_ne_bytes(), //  ORIG_FLAGS: PROTO_NUM
            &16u16.to_ne_bytes(), &0x8001u16.to_ne_bytes(),           // CTA_TUPLE_ORIG, nested
            &12u16.to_ne_bytes(), &0x8002u16.to_ne_bytes(),           //  CTA_TUPLE_PROTO, nested
            &5u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[17, 0, 0, 0], //   CTA_PROTO_NUM + pad
        ]
        .concat();
        assert_eq!(&m[20..], &expected[..]);
    }

    #[test]
    fn a_dump_buffer_decodes_into_entries_then_done() {
        let a = flow(
            ("10.0.0.1:40000", "10.96.0.10:53"),
            ("10.244.1.5:53", "10.0.0.1:40000"),
            17,
        );
        let mut b = flow(
            ("[fd00::1]:1", "[fd00:96::10]:2"),
            ("[fd00:244::5]:3", "[fd00::1]:1"),
            6,
        );
        b.zone = 3;
        let mut buf = entry_message(&a, 5);
        buf.extend(entry_message(&b, 5));
        buf.extend(control(libc::NLMSG_DONE, 0, 5));
        let got: Vec<_> = replies(&buf).map(Result::unwrap).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].1, Reply::Entry(Some(a)));
        assert_eq!(got[1].1, Reply::Entry(Some(b)));
        assert_eq!(got[2].1, Reply::Done { errno: 0 });
        assert!(got.iter().all(|(h, _)| h.seq == 5));
        assert_eq!(got[2].0.pid, 7);
    }

    #[test]
    fn acks_and_errors_carry_positive_errno() {
        let mut buf = control(libc::NLMSG_ERROR, 0, 1);
        buf.extend(control(libc::NLMSG_ERROR, libc::ENOENT, 2));
        let got: Vec<_> = replies(&buf).map(|r| r.unwrap()).collect();
        assert_eq!(got[0].1, Reply::Ack { errno: 0 });
        assert_eq!(
            got[1].1,
            Reply::Ack {
                errno: libc::ENOENT
            }
        );
        assert_eq!(got[1].0.seq, 2);
    }

    #[test]
    fn an_entry_without_a_reply_tuple_is_skipped_not_an_error() {
        let mut m = Builder::new(CT_NEW, 0, 1, IpFamily::V4);
        m.begin(CTA_TUPLE_ORIG);
        m.begin(CTA_TUPLE_IP);
        m.put(CTA_IP_V4_SRC, &[10, 0, 0, 1]);
        m.put(CTA_IP_V4_DST, &[10, 0, 0, 2]);
        m.end();
        m.end();
        let m = m.finish();
        let got: Vec<_> = replies(&m).map(Result::unwrap).collect();
        assert_eq!(got[0].1, Reply::Entry(None));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let f = flow(
            ("10.0.0.1:1", "10.0.0.2:2"),
            ("10.0.0.2:2", "10.0.0.1:1"),
            17,
        );
        let whole = entry_message(&f, 1);
        for cut in 1..whole.len() {
            let mut m = whole[..cut].to_vec();
            if cut >= 4 {
                // Claim the truncated length so that the attribute walk sees the damage.
                let len = cut as u32;
                m[0..4].copy_from_slice(&len.to_ne_bytes());
            }
            // Must not panic; may decode to an error or a partial entry.
            let _ = replies(&m).collect::<Vec<_>>();
        }
        assert!(replies(&whole[..10]).next().unwrap().is_err());
        let mut bad = whole.clone();
        bad[20..22].copy_from_slice(&2000u16.to_ne_bytes()); // first attribute overruns
        assert!(replies(&bad).next().unwrap().is_err());
    }
}
