//! Set and map keys packed into a few bytes, for the state [`super::Incremental`] keeps.
//!
//! The compiled state keeps every set element and map key of the ruleset: at 50,000 Services,
//! a quarter of a million, most of them the hairpin set's `endpoint . endpoint`. As a
//! `Vec<Value>` each is a 24-byte vector and a heap block of 20 bytes per value (a `Value`
//! has room for an IPv6 network); packed, an IPv4 key of up to three values fits in the
//! 16 bytes of the key itself (longer keys, IPv6 ones, go to the heap behind a thin
//! pointer, so the inline size stays 16). Packing keeps the order: two packed keys compare as the
//! `Vec<Value>`s they hold, so maps ordered by key iterate as before.

use std::cmp::Ordering;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use kproxy_model::Protocol;

use crate::ir::Value;
use crate::table::SetName;

/// Bytes that fit beside the length and the variant in 16 bytes.
const INLINE: usize = 14;

/// A `[Value]` as bytes: each value a tag byte (its variant, in declaration order, so the
/// bytes sort as the values) and its content, big-endian.
#[derive(Clone)]
pub(super) enum PackedKey {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<Box<[u8]>>),
}

// Tags, in the order of `Value`'s variants (its derived `Ord` compares the variant first).
const ADDR: u8 = 0;
const PREFIX: u8 = 1;
const PROTO: u8 = 2;
const PORT: u8 = 3;
const INTEGER: u8 = 4;
const CT_NEW: u8 = 5;
const CT_DNAT: u8 = 6;
const LOCAL: u8 = 7;
// An address's family, after `ADDR` or `PREFIX` (`IpAddr` and `IpNet` sort IPv4 first).
const V4: u8 = 0;
const V6: u8 = 1;

impl PackedKey {
    pub fn new(values: &[Value]) -> PackedKey {
        PackedKey::with_prefix(&[], values)
    }

    /// An element of set `set`, the set's number packed in front of the values: a tuple of
    /// set and key would pad to 24 bytes, a quarter of a million of them at 50,000 Services.
    /// Not for [`values`](Self::values).
    pub fn element(set: SetName, values: &[Value]) -> PackedKey {
        PackedKey::with_prefix(&[set as u8], values)
    }

    fn with_prefix(prefix: &[u8], values: &[Value]) -> PackedKey {
        let mut bytes = Vec::with_capacity(prefix.len() + values.len() * 6);
        bytes.extend_from_slice(prefix);
        for value in values {
            encode(value, &mut bytes);
        }
        if bytes.len() <= INLINE {
            let mut inline = [0; INLINE];
            inline[..bytes.len()].copy_from_slice(&bytes);
            PackedKey::Inline {
                // At most INLINE (14).
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            PackedKey::Heap(Box::new(bytes.into_boxed_slice()))
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            PackedKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            PackedKey::Heap(bytes) => bytes,
        }
    }

    /// The values again.
    pub fn values(&self) -> Vec<Value> {
        let mut bytes = self.bytes();
        let mut values = Vec::new();
        while let Some(value) = decode(&mut bytes) {
            values.push(value);
        }
        values
    }
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    let addr = |addr: &IpAddr, out: &mut Vec<u8>| match addr {
        IpAddr::V4(a) => {
            out.push(V4);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            out.push(V6);
            out.extend_from_slice(&a.octets());
        }
    };
    match value {
        Value::Addr(a) => {
            out.push(ADDR);
            addr(a, out);
        }
        Value::Prefix(net) => {
            out.push(PREFIX);
            addr(&net.addr(), out);
            out.push(net.prefix_len());
        }
        Value::Proto(protocol) => {
            out.push(PROTO);
            out.push(match protocol {
                Protocol::Tcp => 0,
                Protocol::Udp => 1,
                Protocol::Sctp => 2,
            });
        }
        Value::Port(port) => {
            out.push(PORT);
            out.extend_from_slice(&port.to_be_bytes());
        }
        Value::Integer(n) => {
            out.push(INTEGER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::CtNew => out.push(CT_NEW),
        Value::CtDnat => out.push(CT_DNAT),
        Value::Local => out.push(LOCAL),
    }
}

/// The next value of `bytes`, which only [`encode`] wrote.
fn decode(bytes: &mut &[u8]) -> Option<Value> {
    fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
        let (head, rest) = bytes.split_first_chunk::<N>()?;
        *bytes = rest;
        Some(*head)
    }
    fn addr(bytes: &mut &[u8]) -> Option<IpAddr> {
        match take::<1>(bytes)? {
            [V4] => Some(Ipv4Addr::from(take::<4>(bytes)?).into()),
            _ => Some(Ipv6Addr::from(take::<16>(bytes)?).into()),
        }
    }
    Some(match take::<1>(bytes)?[0] {
        ADDR => Value::Addr(addr(bytes)?),
        PREFIX => {
            let address = addr(bytes)?;
            let [len] = take::<1>(bytes)?;
            Value::Prefix(IpNet::new(address, len).ok()?)
        }
        PROTO => Value::Proto(match take::<1>(bytes)? {
            [0] => Protocol::Tcp,
            [1] => Protocol::Udp,
            _ => Protocol::Sctp,
        }),
        PORT => Value::Port(u16::from_be_bytes(take(bytes)?)),
        INTEGER => Value::Integer(u32::from_be_bytes(take(bytes)?)),
        CT_NEW => Value::CtNew,
        CT_DNAT => Value::CtDnat,
        _ => Value::Local,
    })
}

impl PartialEq for PackedKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for PackedKey {}

impl PartialOrd for PackedKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for PackedKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.bytes().cmp(other.bytes())
    }
}

impl std::fmt::Debug for PackedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.values().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Vec<Value>> {
        let addr = |s: &str| Value::Addr(s.parse().expect("address"));
        let net = |s: &str| Value::Prefix(s.parse().expect("network"));
        vec![
            vec![],
            vec![addr("10.0.0.1")],
            vec![addr("10.0.0.1"), addr("10.0.0.1")],
            vec![addr("10.0.0.2")],
            vec![
                addr("10.0.0.1"),
                Value::Proto(Protocol::Tcp),
                Value::Port(80),
            ],
            vec![
                addr("10.0.0.1"),
                Value::Proto(Protocol::Udp),
                Value::Port(53),
            ],
            vec![
                addr("10.0.0.1"),
                Value::Proto(Protocol::Sctp),
                Value::Port(9),
            ],
            vec![addr("255.255.255.255"), Value::Port(65535)],
            vec![addr("fd00::1"), addr("fd00::1")],
            vec![addr("::1")],
            vec![
                addr("fd00:10:96::1"),
                Value::Proto(Protocol::Tcp),
                Value::Port(443),
                net("fd00:1::/64"),
            ],
            vec![net("10.0.0.0/8")],
            vec![net("10.0.0.0/16")],
            vec![net("10.1.2.3/8")],
            vec![net("::/0")],
            vec![Value::Proto(Protocol::Tcp), Value::Port(30080)],
            vec![Value::Port(1), Value::Integer(7)],
            vec![Value::Integer(u32::MAX)],
            vec![Value::CtNew],
            vec![Value::CtDnat, Value::Local],
            vec![Value::Local],
        ]
    }

    #[test]
    fn keys_come_back_as_they_went_in() {
        for values in samples() {
            assert_eq!(PackedKey::new(&values).values(), values);
        }
    }

    #[test]
    fn packed_keys_sort_as_their_values() {
        let samples = samples();
        for a in &samples {
            for b in &samples {
                assert_eq!(
                    PackedKey::new(a).cmp(&PackedKey::new(b)),
                    a.cmp(b),
                    "{a:?} against {b:?}"
                );
            }
        }
    }

    #[test]
    fn ipv4_keys_of_up_to_three_values_need_no_heap() {
        let key = |values: &[Value]| matches!(PackedKey::new(values), PackedKey::Inline { .. });
        let addr = Value::Addr("10.244.1.2".parse().expect("address"));
        assert!(key(&[addr, addr]));
        assert!(key(&[addr, Value::Proto(Protocol::Tcp), Value::Port(8080)]));
        let v6 = Value::Addr("fd00::1".parse().expect("address"));
        assert!(!key(&[v6, v6]));
        assert_eq!(std::mem::size_of::<PackedKey>(), 16);
    }

    #[test]
    fn elements_of_different_sets_differ_and_hairpin_pairs_stay_inline() {
        let addr = Value::Addr("10.244.1.2".parse().expect("address"));
        let key = [addr, addr];
        let hairpin = PackedKey::element(SetName::Hairpin, &key);
        assert!(matches!(hairpin, PackedKey::Inline { .. }));
        assert_eq!(hairpin, PackedKey::element(SetName::Hairpin, &key));
        assert_ne!(hairpin, PackedKey::element(SetName::ClusterIps, &key));
        assert_ne!(hairpin, PackedKey::new(&key));
    }
}
