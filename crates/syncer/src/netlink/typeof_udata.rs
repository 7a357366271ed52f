//! nft's `typeof` userdata for endpoint maps and for sets with an integer key field.
//!
//! nft refuses `type integer` for a named set's key, so endpoint maps are declared with
//! `typeof numgen random mod 1 : ip daddr . th dport`, and the affinity set with `typeof ip
//! saddr . numgen random mod 1 . numgen random mod 1`. The kernel ignores the declaration;
//! nft keeps it in the set's userdata as nested type-length-value records describing the
//! expressions, and prints the map back from them. Without it `nft list` would show a
//! declaration nft cannot load again. The layout below is what nft 1.0.6 writes
//! (`nft --debug=mnl` shows it): each record is a type byte, a length byte and the value.

use kproxy_compiler::ir::{DataType, Family};

// Set userdata record types (libnftnl's `NFTNL_UDATA_SET_*`).
const KEY_BYTEORDER: u8 = 0;
const DATA_BYTEORDER: u8 = 1;
const KEY_TYPEOF: u8 = 3;
const DATA_TYPEOF: u8 = 4;
const DATA_INTERVAL: u8 = 6;

// Inside a `typeof` record: the expression kind, then its own records.
const TYPEOF_EXPR: u8 = 0;
const TYPEOF_DATA: u8 = 1;

// nft's expression kinds.
const EXPR_PAYLOAD: u32 = 7;
const EXPR_META: u32 = 9;
const EXPR_CONCAT: u32 = 13;
const EXPR_NUMGEN: u32 = 23;

const META_L4PROTO: u32 = 16;

// nft's protocol descriptions and their header fields.
const PROTO_IP: u32 = 12;
const IP_SADDR: u32 = 11;
const IP_DADDR: u32 = 12;
const PROTO_IP6: u32 = 13;
const IP6_SADDR: u32 = 8;
const IP6_DADDR: u32 = 9;
/// `th`: the transport header of any protocol, so one map serves TCP, UDP and SCTP.
const PROTO_TH: u32 = 11;
const TH_DPORT: u32 = 2;

const NUMGEN_RANDOM: u32 = 1;
const BYTEORDER_HOST: u32 = 1;
const BYTEORDER_BIG: u32 = 2;

/// The userdata of an endpoint map, without its comment.
pub fn endpoint_map(family: Family) -> Vec<u8> {
    let (proto, _, daddr) = addresses(family);
    let concat = [
        record(0, &payload(proto, daddr)),
        record(1, &payload(PROTO_TH, TH_DPORT)),
    ]
    .concat();
    [
        u32_record(KEY_BYTEORDER, BYTEORDER_HOST),
        u32_record(DATA_BYTEORDER, 0),
        record(KEY_TYPEOF, &numgen()),
        record(DATA_TYPEOF, &expression(EXPR_CONCAT, &concat)),
        u32_record(DATA_INTERVAL, 0),
    ]
    .concat()
}

/// The userdata of a set declared as `typeof` its key types (see
/// `kproxy_compiler::render::nft`): each field by a canonical expression of its type (an
/// address as the source address, a protocol as `meta l4proto`, a port as `th dport`, an
/// integer as `numgen random mod 1`), without the comment.
pub fn set_key(family: Family, key: &[DataType]) -> Vec<u8> {
    let (proto, saddr, _) = addresses(family);
    let field = |t: &DataType| match t {
        DataType::Ipv4Addr | DataType::Ipv6Addr => payload(proto, saddr),
        DataType::InetProto => expression(EXPR_META, &u32_record(0, META_L4PROTO)),
        DataType::InetService => payload(PROTO_TH, TH_DPORT),
        DataType::Integer => numgen(),
    };
    let (byteorder, declaration) = match key {
        [single] => (
            match single {
                DataType::Integer => BYTEORDER_HOST,
                _ => BYTEORDER_BIG,
            },
            field(single),
        ),
        // nft records no byte order for concatenations.
        _ => {
            let fields: Vec<u8> = key
                .iter()
                .enumerate()
                .flat_map(|(i, t)| record(i as u8, &field(t)))
                .collect();
            (0, expression(EXPR_CONCAT, &fields))
        }
    };
    [
        u32_record(KEY_BYTEORDER, byteorder),
        record(KEY_TYPEOF, &declaration),
    ]
    .concat()
}

/// nft's protocol description of the family's network header and its address fields.
fn addresses(family: Family) -> (u32, u32, u32) {
    match family {
        Family::Ip => (PROTO_IP, IP_SADDR, IP_DADDR),
        Family::Ip6 => (PROTO_IP6, IP6_SADDR, IP6_DADDR),
    }
}

fn payload(desc: u32, field: u32) -> Vec<u8> {
    expression(
        EXPR_PAYLOAD,
        &[u32_record(0, desc), u32_record(1, field)].concat(),
    )
}

/// `numgen random mod 1`: mode, modulus, offset (the modulus is only a placeholder for the
/// type).
fn numgen() -> Vec<u8> {
    let data = [
        u32_record(0, NUMGEN_RANDOM),
        u32_record(1, 1),
        u32_record(2, 0),
    ]
    .concat();
    expression(EXPR_NUMGEN, &data)
}

/// An expression inside a `typeof` record: its kind and its records.
fn expression(kind: u32, data: &[u8]) -> Vec<u8> {
    [u32_record(TYPEOF_EXPR, kind), record(TYPEOF_DATA, data)].concat()
}

fn u32_record(kind: u8, value: u32) -> Vec<u8> {
    record(kind, &value.to_ne_bytes())
}

fn record(kind: u8, value: &[u8]) -> Vec<u8> {
    // Every record here is far below 255 bytes.
    let len = u8::try_from(value.len()).unwrap_or(u8::MAX);
    let mut out = Vec::with_capacity(value.len() + 2);
    out.push(kind);
    out.push(len);
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes read off `nft --debug=mnl` loading an IPv4 endpoint map (nft 1.0.6, x86-64).
    #[test]
    #[cfg(target_endian = "little")]
    fn ipv4_layout_matches_nft() {
        let expected: [u8; 100] = [
            0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x1a,
            0x00, 0x04, 0x17, 0x00, 0x00, 0x00, 0x01, 0x12, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00,
            0x01, 0x04, 0x01, 0x00, 0x00, 0x00, 0x02, 0x04, 0x00, 0x00, 0x00, 0x00, 0x04, 0x34,
            0x00, 0x04, 0x0d, 0x00, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x14, 0x00, 0x04, 0x07, 0x00,
            0x00, 0x00, 0x01, 0x0c, 0x00, 0x04, 0x0c, 0x00, 0x00, 0x00, 0x01, 0x04, 0x0c, 0x00,
            0x00, 0x00, 0x01, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04,
            0x0b, 0x00, 0x00, 0x00, 0x01, 0x04, 0x02, 0x00, 0x00, 0x00, 0x06, 0x04, 0x00, 0x00,
            0x00, 0x00,
        ];
        assert_eq!(endpoint_map(Family::Ip), expected);
    }

    /// Bytes read off `nft --debug=mnl` loading `typeof ip saddr . numgen random mod 1 .
    /// numgen random mod 1` (nft 1.0.6, x86-64), and the IPv6 twin.
    #[test]
    #[cfg(target_endian = "little")]
    fn affinity_set_layout_matches_nft() {
        let expected = |proto: u8, saddr: u8| -> Vec<u8> {
            let mut bytes = vec![
                0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x56, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00,
                0x01, 0x4e, 0x00, 0x14, 0x00, 0x04, 0x07, 0x00, 0x00, 0x00, 0x01, 0x0c, 0x00, 0x04,
                proto, 0x00, 0x00, 0x00, 0x01, 0x04, saddr, 0x00, 0x00, 0x00,
            ];
            for i in 1..=2 {
                bytes.extend([
                    i, 0x1a, 0x00, 0x04, 0x17, 0x00, 0x00, 0x00, 0x01, 0x12, 0x00, 0x04, 0x01,
                    0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x00, 0x00, 0x00, 0x02, 0x04, 0x00, 0x00,
                    0x00, 0x00,
                ]);
            }
            bytes
        };
        let key = |addr| [addr, DataType::Integer, DataType::Integer];
        assert_eq!(
            set_key(Family::Ip, &key(DataType::Ipv4Addr)),
            expected(0x0c, 0x0b)
        );
        assert_eq!(
            set_key(Family::Ip6, &key(DataType::Ipv6Addr)),
            expected(0x0d, 0x08)
        );
    }

    /// `typeof meta l4proto . numgen random mod 1`, read off `nft --debug=mnl` as above.
    #[test]
    #[cfg(target_endian = "little")]
    fn protocol_field_layout_matches_nft() {
        let expected: [u8; 60] = [
            0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x03, 0x34, 0x00, 0x04, 0x0d, 0x00, 0x00, 0x00,
            0x01, 0x2c, 0x00, 0x0e, 0x00, 0x04, 0x09, 0x00, 0x00, 0x00, 0x01, 0x06, 0x00, 0x04,
            0x10, 0x00, 0x00, 0x00, 0x01, 0x1a, 0x00, 0x04, 0x17, 0x00, 0x00, 0x00, 0x01, 0x12,
            0x00, 0x04, 0x01, 0x00, 0x00, 0x00, 0x01, 0x04, 0x01, 0x00, 0x00, 0x00, 0x02, 0x04,
            0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            set_key(Family::Ip, &[DataType::InetProto, DataType::Integer]),
            expected
        );
    }
}
