//! Netlink framing shared by the nf_tables and the conntrack sockets: one received buffer
//! split into messages, each with its decoded header.

/// Bytes in a `struct nlmsghdr`.
pub(crate) const HEADER_LEN: usize = 16;

/// The fixed part of a received netlink message (native-endian on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    pub(crate) pid: u32,
}

/// One message of a receive buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Message<'a> {
    pub(crate) header: Header,
    /// The whole message, header included (what libnftnl's parsers take).
    pub(crate) bytes: &'a [u8],
}

impl<'a> Message<'a> {
    /// The payload after the header.
    pub(crate) fn body(&self) -> &'a [u8] {
        &self.bytes[HEADER_LEN..]
    }

    /// For `NLMSG_ERROR` and `NLMSG_DONE`: the positive errno carried in the payload (0 for an
    /// acknowledgement or a successful dump); `None` when the payload has none.
    pub(crate) fn errno(&self) -> Option<i32> {
        let b = self.body().get(..4)?;
        Some(-i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// The first message of `buf` and the rest after it (4-byte aligned), or why `buf` does not
/// start with a whole message.
pub(crate) fn split(buf: &[u8]) -> Result<(Message<'_>, &[u8]), String> {
    if buf.len() < HEADER_LEN {
        return Err(format!(
            "{} trailing bytes, shorter than a netlink header",
            buf.len()
        ));
    }
    let u16_at = |at: usize| u16::from_ne_bytes([buf[at], buf[at + 1]]);
    let u32_at = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    let len = u32_at(0) as usize;
    if len < HEADER_LEN || len > buf.len() {
        return Err(format!(
            "netlink message length {len} with {} bytes left",
            buf.len()
        ));
    }
    let header = Header {
        kind: u16_at(4),
        flags: u16_at(6),
        seq: u32_at(8),
        pid: u32_at(12),
    };
    let next = (len.div_ceil(4) * 4).min(buf.len());
    Ok((
        Message {
            header,
            bytes: &buf[..len],
        },
        &buf[next..],
    ))
}

/// Every whole message of `buf`; a malformed tail is ignored.
pub(crate) fn messages(mut buf: &[u8]) -> impl Iterator<Item = Message<'_>> {
    std::iter::from_fn(move || {
        let (message, rest) = split(buf).ok()?;
        buf = rest;
        Some(message)
    })
}
