//! Every `unsafe` call of kproxy: libnftnl's batch pages, the messages libnftnl builds, the
//! socket calls that send them.
//!
//! The rest of the crate hands this module plain [`wire`](super::wire) values and gets back
//! bytes sent and bytes received; no raw pointer leaves this file. Rules and element lists are
//! written into the batch by the safe [`encode`](super::encode), on a slice of the page this
//! module hands it; libnftnl builds the rest, and in tests it builds those two as well, as the
//! reference the encoder is compared with. Each libnftnl object is
//! created, filled and freed inside one function, so ownership is easy to check by reading:
//! libnftnl copies every attribute it is given, `nftnl_rule_add_expr` and `nftnl_set_elem_add`
//! take ownership of what they are given, and the `*_free` calls release the rest.

use std::ffi::{c_void, CString};
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use kproxy_compiler::ir::{Family, TABLE_NAME};
use nftnl_sys as sys;

use super::encode;
#[cfg(test)]
use super::encode::{ct_key, meta_key, nat_family, payload_base, verdict_parts};
use super::wire::{
    ChainDump, ChainSpec, CtKey, Element, ElementData, Expression, Message, MetaKey, PayloadBase,
    Register, RuleDump, SetDump, SetHandle, SetSpec, VerdictCode,
};

/// Bytes per batch page; a message never exceeds the overrun allowance.
const PAGE: u32 = 256 * 1024;
/// Room for the largest single message (element messages are kept under 64 KiB).
const OVERRUN: u32 = 128 * 1024;
/// `NFT_BYTEORDER_HTON`, as the u32 libnftnl attributes take.
const BYTEORDER_HTON: u32 = libc::NFT_BYTEORDER_HTON as u32;

/// A batch of nf_tables messages between BEGIN and END, as libnftnl lays them out in pages.
pub struct Batch {
    raw: NonNull<sys::nftnl_batch>,
    next_seq: u32,
}

impl Batch {
    /// Starts a batch whose BEGIN message has sequence number `first_seq`.
    pub fn new(first_seq: u32) -> Batch {
        // SAFETY: plain allocation; a null result (out of memory) aborts like Rust's allocator.
        let raw = unsafe { sys::nftnl_batch_alloc(PAGE, OVERRUN) };
        let raw = NonNull::new(raw).expect("libnftnl could not allocate a batch");
        let mut batch = Batch {
            raw,
            next_seq: first_seq,
        };
        let seq = batch.take_seq();
        // SAFETY: the buffer has room for one message (PAGE + OVERRUN bytes per page).
        unsafe {
            sys::nftnl_batch_begin(batch.buffer(), seq);
        }
        batch.advance();
        batch
    }

    fn take_seq(&mut self) -> u32 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        seq
    }

    fn buffer(&mut self) -> *mut libc::c_char {
        // SAFETY: `raw` is a live batch owned by `self`.
        unsafe { sys::nftnl_batch_buffer(self.raw.as_ptr()).cast() }
    }

    fn advance(&mut self) {
        // SAFETY: `raw` is a live batch; a failed page allocation aborts below.
        let status = unsafe { sys::nftnl_batch_update(self.raw.as_ptr()) };
        assert!(status >= 0, "libnftnl could not grow the batch");
    }

    /// Appends one message for kproxy's table of `family`; returns its sequence number.
    pub fn push(&mut self, family: Family, message: &Message, ack: bool) -> u32 {
        let seq = self.take_seq();
        let (kind, flags) = header(message, ack);
        // SAFETY: the buffer has at least OVERRUN bytes free after `advance`, more than any
        // message kproxy builds; the header and payload are written there and nowhere else.
        unsafe {
            let nlh = sys::nftnl_nlmsg_build_hdr(self.buffer(), kind, nfproto(family), flags, seq);
            write_payload(nlh, message);
        }
        self.advance();
        seq
    }

    /// Appends END; returns its sequence number and the batch as one gather list.
    pub fn finish(mut self) -> Sealed {
        let seq = self.take_seq();
        // SAFETY: as in `push`.
        unsafe {
            sys::nftnl_batch_end(self.buffer(), seq);
        }
        self.advance();
        Sealed { batch: self }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` was allocated by `nftnl_batch_alloc` and is freed once.
        unsafe { sys::nftnl_batch_free(self.raw.as_ptr()) }
    }
}

/// A finished batch, ready to send.
pub struct Sealed {
    batch: Batch,
}

impl Sealed {
    /// The batch's pages, as a gather list.
    fn iovecs(&self) -> Vec<libc::iovec> {
        let raw = self.batch.raw.as_ptr();
        // SAFETY: `raw` is live and the array is sized by libnftnl's own count; the iovecs
        // point into the batch's pages, which live as long as `self`.
        unsafe {
            let count = usize::try_from(sys::nftnl_batch_iovec_len(raw)).unwrap_or(0);
            let mut iov = vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0,
                };
                count
            ];
            sys::nftnl_batch_iovec(raw, iov.as_mut_ptr().cast(), count as u32);
            iov
        }
    }

    /// Bytes in the batch.
    pub fn len(&self) -> usize {
        self.iovecs().iter().map(|v| v.iov_len).sum()
    }

    /// Sends the whole batch with one `sendmsg`: the kernel must see BEGIN and END in the
    /// same call, or it aborts the transaction.
    pub fn send(&self, socket: &mnl::Socket) -> io::Result<usize> {
        let mut iov = self.iovecs();
        let total: usize = iov.iter().map(|v| v.iov_len).sum();
        set_buffer(socket, libc::SO_SNDBUFFORCE, total + 64 * 1024)?;
        // SAFETY: the message header points to a live address and to `iov`, whose entries
        // point into the batch's pages; all outlive the `sendmsg` call.
        let sent = unsafe {
            let mut address: libc::sockaddr_nl = std::mem::zeroed();
            address.nl_family = libc::AF_NETLINK as u16;
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_name = (&mut address as *mut libc::sockaddr_nl).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_nl>() as u32;
            header.msg_iov = iov.as_mut_ptr();
            header.msg_iovlen = iov.len();
            libc::sendmsg(socket.as_raw_fd(), &header, 0)
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let sent = sent as usize;
        if sent != total {
            return Err(io::Error::other(format!(
                "netlink sendmsg sent {sent} of {total} bytes"
            )));
        }
        Ok(sent)
    }
}

/// Sets `SO_SNDBUFFORCE` or `SO_RCVBUFFORCE` (needs CAP_NET_ADMIN, which programming
/// nftables needs anyway).
pub fn set_buffer(socket: &mnl::Socket, option: libc::c_int, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    set_int(socket, option, value)
}

/// Bounds how long a `recv` on the socket waits.
pub fn set_receive_timeout(socket: &mnl::Socket, timeout: std::time::Duration) -> io::Result<()> {
    let value = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: passes a pointer to a live timeval and its exact size.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&value as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    if status < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn set_int(socket: &mnl::Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live int and its exact size.
    let status = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if status < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A NUL-terminated copy; kproxy's names never contain NUL (the compiler builds them from
/// Kubernetes names), so a NUL is replaced rather than reported.
fn c_string(text: &str) -> CString {
    CString::new(text.replace('\0', "?")).expect("NULs were replaced")
}

/// The nf_tables message type of `message` and its netlink flags.
fn header(message: &Message, ack: bool) -> (u16, u16) {
    let ack = if ack { libc::NLM_F_ACK as u16 } else { 0 };
    let create = libc::NLM_F_CREATE as u16;
    let (kind, flags) = match message {
        Message::NewTable => (libc::NFT_MSG_NEWTABLE, create),
        Message::DelTable => (libc::NFT_MSG_DELTABLE, 0),
        Message::NewOtherTable(_) => (libc::NFT_MSG_NEWTABLE, create),
        Message::DelOtherTable(_) => (libc::NFT_MSG_DELTABLE, 0),
        Message::NewChain(_) => (libc::NFT_MSG_NEWCHAIN, create),
        Message::FlushChain(_) => (libc::NFT_MSG_DELRULE, 0),
        Message::DelChain(_) => (libc::NFT_MSG_DELCHAIN, 0),
        Message::NewSet(_) => (libc::NFT_MSG_NEWSET, create),
        Message::DelSet(_) => (libc::NFT_MSG_DELSET, 0),
        Message::NewElements(..) => (libc::NFT_MSG_NEWSETELEM, create),
        Message::DelElements(..) => (libc::NFT_MSG_DELSETELEM, 0),
        Message::NewRule { .. } => (libc::NFT_MSG_NEWRULE, create | libc::NLM_F_APPEND as u16),
    };
    (kind as u16, flags | ack)
}

/// Writes `message`'s payload after its header: rules and element lists by [`encode`]
/// (nearly every message of a large transaction), the rest by libnftnl.
///
/// # Safety
///
/// `nlh` points at a netlink header followed by at least OVERRUN writable bytes (counted
/// from the header), which nothing else references while this runs.
unsafe fn write_payload(nlh: *mut libc::nlmsghdr, message: &Message) {
    let encoded = |fill: &dyn Fn(&mut encode::MessageWriter<'_>)| {
        // SAFETY: the caller guarantees OVERRUN bytes from `nlh`, borrowed by nothing else.
        let buf = unsafe { std::slice::from_raw_parts_mut(nlh.cast::<u8>(), OVERRUN as usize) };
        let mut writer = encode::MessageWriter::new(buf);
        fill(&mut writer);
        writer.finish();
    };
    match message {
        Message::NewRule {
            chain,
            expressions,
            userdata,
        } => encoded(&|w| encode::rule(w, TABLE_NAME, chain, expressions, userdata)),
        Message::NewElements(set, elements) => {
            encoded(&|w| encode::elements(w, TABLE_NAME, set.name(), set.id(), elements, false))
        }
        Message::DelElements(set, elements) => {
            encoded(&|w| encode::elements(w, TABLE_NAME, set, None, elements, true))
        }
        // The few other messages of a transaction: libnftnl builds them.
        Message::NewTable | Message::DelTable => build_table(nlh, &c_string(TABLE_NAME)),
        Message::NewOtherTable(name) | Message::DelOtherTable(name) => {
            build_table(nlh, &c_string(name))
        }
        Message::NewChain(spec) => build_chain(nlh, &c_string(TABLE_NAME), spec),
        Message::DelChain(name) => build_del_chain(nlh, &c_string(TABLE_NAME), name),
        Message::FlushChain(chain) => build_flush_chain(nlh, &c_string(TABLE_NAME), chain),
        Message::NewSet(spec) => build_new_set(nlh, &c_string(TABLE_NAME), spec),
        Message::DelSet(name) => build_del_set(nlh, &c_string(TABLE_NAME), name),
    }
}

/// Builds `message` alone in a buffer of its own, its payload written by [`write_payload`]
/// or, with `libnftnl`, entirely by libnftnl: the reference the encoder's test compares with.
#[cfg(test)]
pub(super) fn message_bytes(family: Family, message: &Message, libnftnl: bool) -> Vec<u8> {
    let mut buffer = vec![0u32; OVERRUN as usize / 4];
    let (kind, flags) = header(message, false);
    // SAFETY: the 4-byte aligned buffer is OVERRUN bytes long and owned here.
    unsafe {
        let nlh =
            sys::nftnl_nlmsg_build_hdr(buffer.as_mut_ptr().cast(), kind, nfproto(family), flags, 1);
        if libnftnl {
            reference_payload(nlh, message);
        } else {
            write_payload(nlh, message);
        }
        let len = (*nlh).nlmsg_len as usize;
        std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len).to_vec()
    }
}

/// The payload of `NFT_MSG_DELCHAIN` for `name`, built by libnftnl.
///
/// SAFETY (for this and the builders below): `nlh` points to a header built in a buffer with
/// room for the payload.
unsafe fn build_del_chain(nlh: *mut libc::nlmsghdr, table: &CString, name: &str) {
    let c = sys::nftnl_chain_alloc();
    let name = c_string(name);
    sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
    sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
    sys::nftnl_chain_nlmsg_build_payload(nlh, c);
    sys::nftnl_chain_free(c);
}

/// A rule deletion naming only the chain: every rule of `chain` goes.
unsafe fn build_flush_chain(nlh: *mut libc::nlmsghdr, table: &CString, chain: &str) {
    let r = sys::nftnl_rule_alloc();
    let chain = c_string(chain);
    sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
    sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
    sys::nftnl_rule_nlmsg_build_payload(nlh, r);
    sys::nftnl_rule_free(r);
}

unsafe fn build_new_set(nlh: *mut libc::nlmsghdr, table: &CString, spec: &SetSpec) {
    let s = new_set(table, &spec.handle);
    fill_set(s, spec);
    sys::nftnl_set_nlmsg_build_payload(nlh, s);
    sys::nftnl_set_free(s);
}

unsafe fn build_del_set(nlh: *mut libc::nlmsghdr, table: &CString, name: &str) {
    let s = new_set(table, &SetHandle::Named(name.to_string()));
    sys::nftnl_set_nlmsg_build_payload(nlh, s);
    sys::nftnl_set_free(s);
}

/// libnftnl's payload for any message, rules and element lists included: what [`encode`] is
/// tested against. Only tests build rules and elements this way.
///
/// SAFETY: as [`write_payload`].
#[cfg(test)]
unsafe fn reference_payload(nlh: *mut libc::nlmsghdr, message: &Message) {
    let table = c_string(TABLE_NAME);
    match message {
        Message::NewElements(handle, elements) => {
            let s = new_set(&table, handle);
            for element in elements {
                sys::nftnl_set_elem_add(s, new_element(element));
            }
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
            sys::nftnl_set_free(s);
        }
        Message::DelElements(name, elements) => {
            let s = new_set(&table, &SetHandle::Named(name.clone()));
            for element in elements {
                let key_only = Element {
                    data: ElementData::None,
                    ..element.clone()
                };
                sys::nftnl_set_elem_add(s, new_element(&key_only));
            }
            sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
            sys::nftnl_set_free(s);
        }
        Message::NewRule {
            chain,
            expressions,
            userdata,
        } => {
            let r = sys::nftnl_rule_alloc();
            let chain = c_string(chain);
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
            if !userdata.is_empty() {
                sys::nftnl_rule_set_data(
                    r,
                    sys::NFTNL_RULE_USERDATA as u16,
                    userdata.as_ptr().cast(),
                    userdata.len() as u32,
                );
            }
            for expression in expressions {
                sys::nftnl_rule_add_expr(r, new_expression(expression));
            }
            sys::nftnl_rule_nlmsg_build_payload(nlh, r);
            sys::nftnl_rule_free(r);
        }
        _ => write_payload(nlh, message),
    }
}

unsafe fn build_chain(nlh: *mut libc::nlmsghdr, table: &CString, spec: &ChainSpec) {
    let c = sys::nftnl_chain_alloc();
    let name = c_string(&spec.name);
    sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
    sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_NAME as u16, name.as_ptr());
    // Kept alive until the payload is built.
    let kind;
    if let Some((hook, priority, chain_type)) = spec.hook {
        kind = c_string(chain_type);
        sys::nftnl_chain_set_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16, hook);
        sys::nftnl_chain_set_s32(c, sys::NFTNL_CHAIN_PRIO as u16, priority);
        sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TYPE as u16, kind.as_ptr());
        sys::nftnl_chain_set_u32(c, sys::NFTNL_CHAIN_POLICY as u16, libc::NF_ACCEPT as u32);
    }
    if !spec.userdata.is_empty() {
        sys::nftnl_chain_set_data(
            c,
            sys::NFTNL_CHAIN_USERDATA as u16,
            spec.userdata.as_ptr().cast(),
            spec.userdata.len() as u32,
        );
    }
    sys::nftnl_chain_nlmsg_build_payload(nlh, c);
    sys::nftnl_chain_free(c);
}

unsafe fn new_set(table: &CString, handle: &SetHandle) -> *mut sys::nftnl_set {
    let s = sys::nftnl_set_alloc();
    let name = c_string(handle.name());
    sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
    sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
    if let Some(id) = handle.id() {
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, id);
    }
    s
}

unsafe fn fill_set(s: *mut sys::nftnl_set, spec: &SetSpec) {
    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_ID as u16, spec.id);
    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, spec.flags);
    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_TYPE as u16, spec.key_type);
    sys::nftnl_set_set_u32(s, sys::NFTNL_SET_KEY_LEN as u16, spec.key_len);
    if !spec.concat.is_empty() {
        sys::nftnl_set_set_data(
            s,
            sys::NFTNL_SET_DESC_CONCAT as u16,
            spec.concat.as_ptr().cast(),
            spec.concat.len() as u32,
        );
    }
    if let Some((data_type, data_len)) = spec.data {
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_TYPE as u16, data_type);
        if data_len > 0 {
            sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DATA_LEN as u16, data_len);
        }
    }
    if let Some(timeout) = spec.timeout_ms {
        sys::nftnl_set_set_u64(s, sys::NFTNL_SET_TIMEOUT as u16, timeout);
    }
    if let Some(size) = spec.size {
        sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DESC_SIZE as u16, size);
    }
    if !spec.userdata.is_empty() {
        sys::nftnl_set_set_data(
            s,
            sys::NFTNL_SET_USERDATA as u16,
            spec.userdata.as_ptr().cast(),
            spec.userdata.len() as u32,
        );
    }
}

#[cfg(test)]
unsafe fn new_element(element: &Element) -> *mut sys::nftnl_set_elem {
    let e = sys::nftnl_set_elem_alloc();
    set_elem_bytes(e, sys::NFTNL_SET_ELEM_KEY, &element.key);
    if let Some(end) = &element.key_end {
        set_elem_bytes(e, sys::NFTNL_SET_ELEM_KEY_END, end);
    }
    if element.interval_end {
        sys::nftnl_set_elem_set_u32(
            e,
            sys::NFTNL_SET_ELEM_FLAGS as u16,
            libc::NFT_SET_ELEM_INTERVAL_END as u32,
        );
    }
    match &element.data {
        ElementData::None => {}
        ElementData::Value(bytes) => set_elem_bytes(e, sys::NFTNL_SET_ELEM_DATA, bytes),
        ElementData::Verdict(verdict) => {
            let (code, chain) = verdict_parts(verdict);
            sys::nftnl_set_elem_set_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16, code as u32);
            if let Some(chain) = chain {
                let chain = c_string(chain);
                sys::nftnl_set_elem_set_str(e, sys::NFTNL_SET_ELEM_CHAIN as u16, chain.as_ptr());
            }
        }
    }
    e
}

#[cfg(test)]
unsafe fn set_elem_bytes(e: *mut sys::nftnl_set_elem, attr: u32, bytes: &[u8]) {
    sys::nftnl_set_elem_set(e, attr as u16, bytes.as_ptr().cast(), bytes.len() as u32);
}

#[cfg(test)]
/// An expression object with its attributes set; the rule takes ownership.
unsafe fn new_expression(expression: &Expression) -> *mut sys::nftnl_expr {
    let e = |name: &str| {
        let name = c_string(name);
        let e = sys::nftnl_expr_alloc(name.as_ptr());
        assert!(!e.is_null(), "libnftnl does not know expression {name:?}");
        e
    };
    let u32_attr = |e: *mut sys::nftnl_expr, attr: u32, value: u32| {
        sys::nftnl_expr_set_u32(e, attr as u16, value);
    };
    let bytes_attr = |e: *mut sys::nftnl_expr, attr: u32, value: &[u8]| {
        sys::nftnl_expr_set(
            e,
            attr as u16,
            value.as_ptr().cast::<c_void>(),
            value.len() as u32,
        );
    };
    match expression {
        Expression::Payload {
            base,
            offset,
            len,
            dreg,
        } => {
            let x = e("payload");
            u32_attr(x, sys::NFTNL_EXPR_PAYLOAD_DREG, dreg.0);
            u32_attr(x, sys::NFTNL_EXPR_PAYLOAD_BASE, payload_base(*base));
            u32_attr(x, sys::NFTNL_EXPR_PAYLOAD_OFFSET, *offset);
            u32_attr(x, sys::NFTNL_EXPR_PAYLOAD_LEN, *len);
            x
        }
        Expression::Meta { key, dreg } => {
            let x = e("meta");
            u32_attr(x, sys::NFTNL_EXPR_META_KEY, meta_key(*key));
            u32_attr(x, sys::NFTNL_EXPR_META_DREG, dreg.0);
            x
        }
        Expression::MetaSet { key, sreg } => {
            let x = e("meta");
            u32_attr(x, sys::NFTNL_EXPR_META_KEY, meta_key(*key));
            u32_attr(x, sys::NFTNL_EXPR_META_SREG, sreg.0);
            x
        }
        Expression::Ct { key, dreg } => {
            let x = e("ct");
            u32_attr(x, sys::NFTNL_EXPR_CT_KEY, ct_key(*key));
            u32_attr(x, sys::NFTNL_EXPR_CT_DREG, dreg.0);
            x
        }
        Expression::FibAddrType { source, dreg } => {
            let x = e("fib");
            // NFTA_FIB_F_SADDR / NFTA_FIB_F_DADDR; NFT_FIB_RESULT_ADDRTYPE.
            u32_attr(x, sys::NFTNL_EXPR_FIB_FLAGS, if *source { 1 } else { 2 });
            u32_attr(x, sys::NFTNL_EXPR_FIB_RESULT, 3);
            u32_attr(x, sys::NFTNL_EXPR_FIB_DREG, dreg.0);
            x
        }
        Expression::Numgen {
            modulus,
            offset,
            dreg,
        } => {
            let x = e("numgen");
            u32_attr(x, sys::NFTNL_EXPR_NG_DREG, dreg.0);
            u32_attr(x, sys::NFTNL_EXPR_NG_MODULUS, *modulus);
            u32_attr(x, sys::NFTNL_EXPR_NG_TYPE, libc::NFT_NG_RANDOM as u32);
            u32_attr(x, sys::NFTNL_EXPR_NG_OFFSET, *offset);
            x
        }
        Expression::HostToNetwork32 { reg } => {
            let x = e("byteorder");
            u32_attr(x, sys::NFTNL_EXPR_BYTEORDER_SREG, reg.0);
            u32_attr(x, sys::NFTNL_EXPR_BYTEORDER_DREG, reg.0);
            u32_attr(x, sys::NFTNL_EXPR_BYTEORDER_OP, BYTEORDER_HTON);
            u32_attr(x, sys::NFTNL_EXPR_BYTEORDER_LEN, 4);
            u32_attr(x, sys::NFTNL_EXPR_BYTEORDER_SIZE, 4);
            x
        }
        Expression::Cmp {
            sreg,
            not_equal,
            data,
        } => {
            let x = e("cmp");
            let op = if *not_equal {
                libc::NFT_CMP_NEQ
            } else {
                libc::NFT_CMP_EQ
            };
            u32_attr(x, sys::NFTNL_EXPR_CMP_SREG, sreg.0);
            u32_attr(x, sys::NFTNL_EXPR_CMP_OP, op as u32);
            bytes_attr(x, sys::NFTNL_EXPR_CMP_DATA, data);
            x
        }
        Expression::Bitwise {
            sreg,
            dreg,
            mask,
            xor,
        } => {
            let x = e("bitwise");
            u32_attr(x, sys::NFTNL_EXPR_BITWISE_SREG, sreg.0);
            u32_attr(x, sys::NFTNL_EXPR_BITWISE_DREG, dreg.0);
            u32_attr(x, sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32);
            bytes_attr(x, sys::NFTNL_EXPR_BITWISE_MASK, mask);
            bytes_attr(x, sys::NFTNL_EXPR_BITWISE_XOR, xor);
            x
        }
        Expression::Lookup {
            sreg,
            dreg,
            set,
            invert,
        } => {
            let x = e("lookup");
            let name = c_string(set.name());
            u32_attr(x, sys::NFTNL_EXPR_LOOKUP_SREG, sreg.0);
            if let Some(dreg) = dreg {
                u32_attr(x, sys::NFTNL_EXPR_LOOKUP_DREG, dreg.0);
            }
            sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_LOOKUP_SET as u16, name.as_ptr());
            if let Some(id) = set.id() {
                u32_attr(x, sys::NFTNL_EXPR_LOOKUP_SET_ID, id);
            }
            if *invert {
                u32_attr(
                    x,
                    sys::NFTNL_EXPR_LOOKUP_FLAGS,
                    libc::NFT_LOOKUP_F_INV as u32,
                );
            }
            x
        }
        Expression::DynsetUpdate {
            sreg,
            set,
            timeout_ms,
        } => {
            let x = e("dynset");
            let name = c_string(set);
            u32_attr(x, sys::NFTNL_EXPR_DYNSET_SREG_KEY, sreg.0);
            u32_attr(
                x,
                sys::NFTNL_EXPR_DYNSET_OP,
                libc::NFT_DYNSET_OP_UPDATE as u32,
            );
            if let Some(timeout) = timeout_ms {
                sys::nftnl_expr_set_u64(x, sys::NFTNL_EXPR_DYNSET_TIMEOUT as u16, *timeout);
            }
            sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_DYNSET_SET_NAME as u16, name.as_ptr());
            x
        }
        Expression::Immediate { dreg, data } => {
            let x = e("immediate");
            u32_attr(x, sys::NFTNL_EXPR_IMM_DREG, dreg.0);
            bytes_attr(x, sys::NFTNL_EXPR_IMM_DATA, data);
            x
        }
        Expression::Verdict(verdict) => {
            let x = e("immediate");
            let (code, chain) = verdict_parts(verdict);
            u32_attr(x, sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32);
            u32_attr(x, sys::NFTNL_EXPR_IMM_VERDICT, code as u32);
            if let Some(chain) = chain {
                let chain = c_string(chain);
                sys::nftnl_expr_set_str(x, sys::NFTNL_EXPR_IMM_CHAIN as u16, chain.as_ptr());
            }
            x
        }
        Expression::Dnat {
            family,
            addr,
            port,
            proto_specified,
        } => {
            let x = e("nat");
            u32_attr(x, sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_DNAT as u32);
            u32_attr(x, sys::NFTNL_EXPR_NAT_FAMILY, nat_family(*family));
            u32_attr(x, sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, addr.0);
            u32_attr(x, sys::NFTNL_EXPR_NAT_REG_PROTO_MIN, port.0);
            if *proto_specified {
                // NF_NAT_RANGE_PROTO_SPECIFIED
                u32_attr(x, sys::NFTNL_EXPR_NAT_FLAGS, 0x2);
            }
            x
        }
        Expression::Masquerade { fully_random } => {
            let x = e("masq");
            if *fully_random {
                // NF_NAT_RANGE_PROTO_RANDOM_FULLY
                u32_attr(x, sys::NFTNL_EXPR_MASQ_FLAGS, 0x10);
            }
            x
        }
        Expression::Reject { icmp_code } => {
            let x = e("reject");
            u32_attr(
                x,
                sys::NFTNL_EXPR_REJECT_TYPE,
                libc::NFT_REJECT_ICMP_UNREACH as u32,
            );
            sys::nftnl_expr_set_u8(x, sys::NFTNL_EXPR_REJECT_CODE as u16, *icmp_code);
            x
        }
        Expression::RejectTcpReset => {
            let x = e("reject");
            u32_attr(
                x,
                sys::NFTNL_EXPR_REJECT_TYPE,
                libc::NFT_REJECT_TCP_RST as u32,
            );
            sys::nftnl_expr_set_u8(x, sys::NFTNL_EXPR_REJECT_CODE as u16, 0);
            x
        }
    }
}

/// What a dump request lists.
#[derive(Debug, Clone, Copy)]
pub enum DumpKind {
    /// The table itself (a plain get: answers ENOENT when it does not exist).
    Table,
    /// Chains.
    Chains,
    /// Sets and maps, anonymous ones included.
    Sets,
    /// Rules.
    Rules,
    /// Elements of one set.
    Elements,
}

/// A get request for any table `name` of `family`: answers ENOENT when it does not exist.
pub fn get_table_request(family: Family, name: &str, seq: u32) -> Vec<u8> {
    let mut buffer = vec![0u32; 1024];
    let name = c_string(name);
    let family = nfproto(family);
    // SAFETY: the 4 KiB, 4-byte aligned buffer holds a header and a table name (at most 256
    // bytes).
    let len = unsafe {
        build_get_table(
            buffer.as_mut_ptr().cast(),
            family,
            libc::NLM_F_ACK as u16,
            seq,
            &name,
        )
    };
    let mut bytes: Vec<u8> = buffer.iter().flat_map(|w| w.to_ne_bytes()).collect();
    bytes.truncate(len as usize);
    bytes
}

/// Writes an `NFT_MSG_GETTABLE` for `table` at `base`; returns its length.
///
/// SAFETY: `base` must point to a 4-byte aligned buffer with room for a header and the name.
unsafe fn build_get_table(
    base: *mut libc::c_char,
    family: u16,
    flags: u16,
    seq: u32,
    table: &CString,
) -> u32 {
    let nlh = sys::nftnl_nlmsg_build_hdr(base, libc::NFT_MSG_GETTABLE as u16, family, flags, seq);
    build_table(nlh, table);
    (*nlh).nlmsg_len
}

/// Writes a table payload naming `table` after the header `nlh`.
///
/// SAFETY: `nlh` must point to a header built in a buffer with room for the name.
unsafe fn build_table(nlh: *mut libc::nlmsghdr, table: &CString) {
    let t = sys::nftnl_table_alloc();
    sys::nftnl_table_set_str(t, sys::NFTNL_TABLE_NAME as u16, table.as_ptr());
    sys::nftnl_table_nlmsg_build_payload(nlh, t);
    sys::nftnl_table_free(t);
}

/// The netfilter protocol family number of an nftables family, as message headers carry it.
fn nfproto(family: Family) -> u16 {
    u16::from(match family {
        Family::Ip => libc::NFPROTO_IPV4 as u8,
        Family::Ip6 => libc::NFPROTO_IPV6 as u8,
    })
}

/// A dump request for kproxy's table of `family` (and one set, for elements).
pub fn dump_request(kind: DumpKind, family: Family, seq: u32, set: Option<&str>) -> Vec<u8> {
    let mut buffer = vec![0u32; 1024];
    let table = c_string(TABLE_NAME);
    let family = nfproto(family);
    let flags = match kind {
        DumpKind::Table => libc::NLM_F_ACK as u16,
        _ => libc::NLM_F_DUMP as u16,
    };
    // SAFETY: the 4 KiB, 4-byte aligned buffer holds a header and a table/set name (each at
    // most 256 bytes); objects are freed after building.
    unsafe {
        let base = buffer.as_mut_ptr().cast::<libc::c_char>();
        let len = match kind {
            DumpKind::Table => build_get_table(base, family, flags, seq, &table),
            DumpKind::Chains => {
                let nlh = sys::nftnl_nlmsg_build_hdr(
                    base,
                    libc::NFT_MSG_GETCHAIN as u16,
                    family,
                    flags,
                    seq,
                );
                let c = sys::nftnl_chain_alloc();
                sys::nftnl_chain_set_str(c, sys::NFTNL_CHAIN_TABLE as u16, table.as_ptr());
                sys::nftnl_chain_nlmsg_build_payload(nlh, c);
                sys::nftnl_chain_free(c);
                (*nlh).nlmsg_len
            }
            DumpKind::Rules => {
                let nlh = sys::nftnl_nlmsg_build_hdr(
                    base,
                    libc::NFT_MSG_GETRULE as u16,
                    family,
                    flags,
                    seq,
                );
                let r = sys::nftnl_rule_alloc();
                sys::nftnl_rule_set_str(r, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
                sys::nftnl_rule_nlmsg_build_payload(nlh, r);
                sys::nftnl_rule_free(r);
                (*nlh).nlmsg_len
            }
            DumpKind::Sets | DumpKind::Elements => {
                let kind = match kind {
                    DumpKind::Sets => libc::NFT_MSG_GETSET,
                    _ => libc::NFT_MSG_GETSETELEM,
                };
                let nlh = sys::nftnl_nlmsg_build_hdr(base, kind as u16, family, flags, seq);
                let s = sys::nftnl_set_alloc();
                sys::nftnl_set_set_str(s, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
                let name = set.map(c_string);
                if let Some(name) = &name {
                    sys::nftnl_set_set_str(s, sys::NFTNL_SET_NAME as u16, name.as_ptr());
                    sys::nftnl_set_elems_nlmsg_build_payload(nlh, s);
                } else {
                    sys::nftnl_set_nlmsg_build_payload(nlh, s);
                }
                sys::nftnl_set_free(s);
                (*nlh).nlmsg_len
            }
        };
        let bytes = std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), len as usize);
        bytes.to_vec()
    }
}

/// One received message copied to a 4-byte aligned buffer, as libnftnl's parsers expect.
fn aligned(message: &[u8]) -> Vec<u32> {
    let mut out = vec![0u32; message.len().div_ceil(4)];
    for (i, chunk) in message.chunks(4).enumerate() {
        let mut word = [0u8; 4];
        word[..chunk.len()].copy_from_slice(chunk);
        out[i] = u32::from_ne_bytes(word);
    }
    out
}

/// # Safety
/// `text` must be null or point to a NUL-terminated string.
unsafe fn owned(text: *const libc::c_char) -> String {
    if text.is_null() {
        return String::new();
    }
    std::ffi::CStr::from_ptr(text)
        .to_string_lossy()
        .into_owned()
}

/// # Safety
/// `data` must be null or point to `len` readable bytes.
unsafe fn bytes(data: *const c_void, len: u32) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    std::slice::from_raw_parts(data.cast::<u8>(), len as usize).to_vec()
}

/// Parses a `NFT_MSG_NEWCHAIN` message of a dump.
pub fn parse_chain(message: &[u8]) -> Option<ChainDump> {
    let buffer = aligned(message);
    // SAFETY: the buffer holds one complete, aligned netlink message; libnftnl validates
    // attribute lengths while parsing; strings are copied before the chain is freed.
    unsafe {
        let c = sys::nftnl_chain_alloc();
        let parsed = sys::nftnl_chain_nlmsg_parse(buffer.as_ptr().cast(), c) >= 0;
        let attr = |a: u32| a as u16;
        let dump = parsed.then(|| {
            let hook = sys::nftnl_chain_is_set(c, attr(sys::NFTNL_CHAIN_HOOKNUM)).then(|| {
                (
                    sys::nftnl_chain_get_u32(c, attr(sys::NFTNL_CHAIN_HOOKNUM)),
                    sys::nftnl_chain_get_s32(c, attr(sys::NFTNL_CHAIN_PRIO)),
                    owned(sys::nftnl_chain_get_str(c, attr(sys::NFTNL_CHAIN_TYPE))),
                )
            });
            let mut len = 0;
            let data = sys::nftnl_chain_get_data(c, attr(sys::NFTNL_CHAIN_USERDATA), &mut len);
            ChainDump {
                table: owned(sys::nftnl_chain_get_str(c, attr(sys::NFTNL_CHAIN_TABLE))),
                name: owned(sys::nftnl_chain_get_str(c, attr(sys::NFTNL_CHAIN_NAME))),
                hook,
                userdata: bytes(data, len),
            }
        });
        sys::nftnl_chain_free(c);
        dump
    }
}

/// Parses a `NFT_MSG_NEWSET` message of a dump.
pub fn parse_set(message: &[u8]) -> Option<SetDump> {
    let buffer = aligned(message);
    // SAFETY: as in `parse_chain`.
    unsafe {
        let s = sys::nftnl_set_alloc();
        let parsed = sys::nftnl_set_nlmsg_parse(buffer.as_ptr().cast(), s) >= 0;
        let attr = |a: u32| a as u16;
        let dump = parsed.then(|| {
            let mut len = 0;
            let data = sys::nftnl_set_get_data(s, attr(sys::NFTNL_SET_USERDATA), &mut len);
            SetDump {
                table: owned(sys::nftnl_set_get_str(s, attr(sys::NFTNL_SET_TABLE))),
                name: owned(sys::nftnl_set_get_str(s, attr(sys::NFTNL_SET_NAME))),
                flags: sys::nftnl_set_get_u32(s, attr(sys::NFTNL_SET_FLAGS)),
                key_type: sys::nftnl_set_get_u32(s, attr(sys::NFTNL_SET_KEY_TYPE)),
                key_len: sys::nftnl_set_get_u32(s, attr(sys::NFTNL_SET_KEY_LEN)),
                data_type: sys::nftnl_set_is_set(s, attr(sys::NFTNL_SET_DATA_TYPE))
                    .then(|| sys::nftnl_set_get_u32(s, attr(sys::NFTNL_SET_DATA_TYPE))),
                timeout_ms: sys::nftnl_set_is_set(s, attr(sys::NFTNL_SET_TIMEOUT))
                    .then(|| sys::nftnl_set_get_u64(s, attr(sys::NFTNL_SET_TIMEOUT))),
                size: sys::nftnl_set_is_set(s, attr(sys::NFTNL_SET_DESC_SIZE))
                    .then(|| sys::nftnl_set_get_u32(s, attr(sys::NFTNL_SET_DESC_SIZE))),
                userdata: bytes(data, len),
            }
        });
        sys::nftnl_set_free(s);
        dump
    }
}

/// Parses a `NFT_MSG_NEWSETELEM` message of a dump.
pub fn parse_elements(message: &[u8]) -> Vec<Element> {
    let buffer = aligned(message);
    let mut out = Vec::new();
    // SAFETY: as in `parse_chain`; element pointers are only used while the set lives.
    unsafe {
        let s = sys::nftnl_set_alloc();
        if sys::nftnl_set_elems_nlmsg_parse(buffer.as_ptr().cast(), s) >= 0 {
            let iter = sys::nftnl_set_elems_iter_create(s);
            if !iter.is_null() {
                let mut e = sys::nftnl_set_elems_iter_next(iter);
                while !e.is_null() {
                    out.push(read_element(e));
                    e = sys::nftnl_set_elems_iter_next(iter);
                }
                sys::nftnl_set_elems_iter_destroy(iter);
            }
        }
        sys::nftnl_set_free(s);
    }
    out
}

unsafe fn read_element(e: *mut sys::nftnl_set_elem) -> Element {
    let get = |attr: u32| {
        let attr = attr as u16;
        sys::nftnl_set_elem_is_set(e, attr).then(|| {
            let mut len = 0;
            let data = sys::nftnl_set_elem_get(e, attr, &mut len);
            bytes(data, len)
        })
    };
    let flags = get(sys::NFTNL_SET_ELEM_FLAGS)
        .map(|_| sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_FLAGS as u16))
        .unwrap_or(0);
    let data = if sys::nftnl_set_elem_is_set(e, sys::NFTNL_SET_ELEM_VERDICT as u16) {
        let code = sys::nftnl_set_elem_get_u32(e, sys::NFTNL_SET_ELEM_VERDICT as u16) as i32;
        let chain = owned(sys::nftnl_set_elem_get_str(
            e,
            sys::NFTNL_SET_ELEM_CHAIN as u16,
        ));
        verdict_from(code, chain).map_or(ElementData::None, ElementData::Verdict)
    } else if let Some(value) = get(sys::NFTNL_SET_ELEM_DATA) {
        ElementData::Value(value)
    } else {
        ElementData::None
    };
    Element {
        key: get(sys::NFTNL_SET_ELEM_KEY).unwrap_or_default(),
        key_end: get(sys::NFTNL_SET_ELEM_KEY_END),
        interval_end: flags & libc::NFT_SET_ELEM_INTERVAL_END as u32 != 0,
        data,
    }
}

fn verdict_from(code: i32, chain: String) -> Option<VerdictCode> {
    match code {
        libc::NF_ACCEPT => Some(VerdictCode::Accept),
        libc::NF_DROP => Some(VerdictCode::Drop),
        libc::NFT_RETURN => Some(VerdictCode::Return),
        libc::NFT_JUMP => Some(VerdictCode::Jump(chain)),
        libc::NFT_GOTO => Some(VerdictCode::Goto(chain)),
        _ => None,
    }
}

/// Parses a `NFT_MSG_NEWRULE` message of a dump.
pub fn parse_rule(message: &[u8]) -> Option<RuleDump> {
    let buffer = aligned(message);
    // SAFETY: as in `parse_chain`; expression pointers are only used while the rule lives.
    unsafe {
        let r = sys::nftnl_rule_alloc();
        let parsed = sys::nftnl_rule_nlmsg_parse(buffer.as_ptr().cast(), r) >= 0;
        let attr = |a: u32| a as u16;
        let dump = parsed.then(|| {
            let mut expressions = Vec::new();
            let iter = sys::nftnl_expr_iter_create(r);
            if !iter.is_null() {
                let mut e = sys::nftnl_expr_iter_next(iter);
                while !e.is_null() {
                    expressions.push(read_expression(e));
                    e = sys::nftnl_expr_iter_next(iter);
                }
                sys::nftnl_expr_iter_destroy(iter);
            }
            let mut len = 0;
            let data = sys::nftnl_rule_get_data(r, attr(sys::NFTNL_RULE_USERDATA), &mut len);
            RuleDump {
                table: owned(sys::nftnl_rule_get_str(r, attr(sys::NFTNL_RULE_TABLE))),
                chain: owned(sys::nftnl_rule_get_str(r, attr(sys::NFTNL_RULE_CHAIN))),
                expressions,
                userdata: bytes(data, len),
            }
        });
        sys::nftnl_rule_free(r);
        dump
    }
}

/// The expression, if it is one kproxy writes, with the attributes kproxy uses.
unsafe fn read_expression(e: *mut sys::nftnl_expr) -> Option<Expression> {
    let name = owned(sys::nftnl_expr_get_str(e, sys::NFTNL_EXPR_NAME as u16));
    let is = |attr: u32| sys::nftnl_expr_is_set(e, attr as u16);
    let u = |attr: u32| sys::nftnl_expr_get_u32(e, attr as u16);
    let reg = |attr: u32| Register(u(attr));
    let data = |attr: u32| {
        let mut len = 0;
        let ptr = sys::nftnl_expr_get(e, attr as u16, &mut len);
        bytes(ptr, len)
    };
    let text = |attr: u32| owned(sys::nftnl_expr_get_str(e, attr as u16));
    Some(match name.as_str() {
        "payload" if is(sys::NFTNL_EXPR_PAYLOAD_DREG) => Expression::Payload {
            base: match u(sys::NFTNL_EXPR_PAYLOAD_BASE) as i32 {
                libc::NFT_PAYLOAD_NETWORK_HEADER => PayloadBase::Network,
                libc::NFT_PAYLOAD_TRANSPORT_HEADER => PayloadBase::Transport,
                _ => return None,
            },
            offset: u(sys::NFTNL_EXPR_PAYLOAD_OFFSET),
            len: u(sys::NFTNL_EXPR_PAYLOAD_LEN),
            dreg: reg(sys::NFTNL_EXPR_PAYLOAD_DREG),
        },
        "meta" => {
            let key = match u(sys::NFTNL_EXPR_META_KEY) as i32 {
                libc::NFT_META_L4PROTO => MetaKey::L4Proto,
                libc::NFT_META_MARK => MetaKey::Mark,
                _ => return None,
            };
            if is(sys::NFTNL_EXPR_META_DREG) {
                Expression::Meta {
                    key,
                    dreg: reg(sys::NFTNL_EXPR_META_DREG),
                }
            } else {
                Expression::MetaSet {
                    key,
                    sreg: reg(sys::NFTNL_EXPR_META_SREG),
                }
            }
        }
        "ct" if is(sys::NFTNL_EXPR_CT_DREG) && !is(sys::NFTNL_EXPR_CT_DIR) => Expression::Ct {
            key: match u(sys::NFTNL_EXPR_CT_KEY) as i32 {
                libc::NFT_CT_STATE => CtKey::State,
                libc::NFT_CT_STATUS => CtKey::Status,
                _ => return None,
            },
            dreg: reg(sys::NFTNL_EXPR_CT_DREG),
        },
        "fib" if u(sys::NFTNL_EXPR_FIB_RESULT) == 3 => Expression::FibAddrType {
            source: match u(sys::NFTNL_EXPR_FIB_FLAGS) {
                1 => true,
                2 => false,
                _ => return None,
            },
            dreg: reg(sys::NFTNL_EXPR_FIB_DREG),
        },
        "numgen" if u(sys::NFTNL_EXPR_NG_TYPE) == libc::NFT_NG_RANDOM as u32 => {
            Expression::Numgen {
                modulus: u(sys::NFTNL_EXPR_NG_MODULUS),
                offset: u(sys::NFTNL_EXPR_NG_OFFSET),
                dreg: reg(sys::NFTNL_EXPR_NG_DREG),
            }
        }
        "byteorder"
            if u(sys::NFTNL_EXPR_BYTEORDER_OP) == BYTEORDER_HTON
                && u(sys::NFTNL_EXPR_BYTEORDER_LEN) == 4
                && u(sys::NFTNL_EXPR_BYTEORDER_SIZE) == 4
                && u(sys::NFTNL_EXPR_BYTEORDER_SREG) == u(sys::NFTNL_EXPR_BYTEORDER_DREG) =>
        {
            Expression::HostToNetwork32 {
                reg: reg(sys::NFTNL_EXPR_BYTEORDER_SREG),
            }
        }
        "cmp" => Expression::Cmp {
            sreg: reg(sys::NFTNL_EXPR_CMP_SREG),
            not_equal: match u(sys::NFTNL_EXPR_CMP_OP) as i32 {
                libc::NFT_CMP_EQ => false,
                libc::NFT_CMP_NEQ => true,
                _ => return None,
            },
            data: data(sys::NFTNL_EXPR_CMP_DATA),
        },
        "bitwise" if !is(sys::NFTNL_EXPR_BITWISE_OP) || u(sys::NFTNL_EXPR_BITWISE_OP) == 0 => {
            Expression::Bitwise {
                sreg: reg(sys::NFTNL_EXPR_BITWISE_SREG),
                dreg: reg(sys::NFTNL_EXPR_BITWISE_DREG),
                mask: data(sys::NFTNL_EXPR_BITWISE_MASK),
                xor: data(sys::NFTNL_EXPR_BITWISE_XOR),
            }
        }
        "lookup" => Expression::Lookup {
            sreg: reg(sys::NFTNL_EXPR_LOOKUP_SREG),
            dreg: is(sys::NFTNL_EXPR_LOOKUP_DREG).then(|| reg(sys::NFTNL_EXPR_LOOKUP_DREG)),
            set: SetHandle::Named(text(sys::NFTNL_EXPR_LOOKUP_SET)),
            invert: is(sys::NFTNL_EXPR_LOOKUP_FLAGS)
                && u(sys::NFTNL_EXPR_LOOKUP_FLAGS) & libc::NFT_LOOKUP_F_INV as u32 != 0,
        },
        "dynset" if u(sys::NFTNL_EXPR_DYNSET_OP) == libc::NFT_DYNSET_OP_UPDATE as u32 => {
            Expression::DynsetUpdate {
                sreg: reg(sys::NFTNL_EXPR_DYNSET_SREG_KEY),
                set: text(sys::NFTNL_EXPR_DYNSET_SET_NAME),
                timeout_ms: is(sys::NFTNL_EXPR_DYNSET_TIMEOUT)
                    .then(|| sys::nftnl_expr_get_u64(e, sys::NFTNL_EXPR_DYNSET_TIMEOUT as u16)),
            }
        }
        "immediate" if u(sys::NFTNL_EXPR_IMM_DREG) == libc::NFT_REG_VERDICT as u32 => {
            Expression::Verdict(verdict_from(
                u(sys::NFTNL_EXPR_IMM_VERDICT) as i32,
                text(sys::NFTNL_EXPR_IMM_CHAIN),
            )?)
        }
        "immediate" => Expression::Immediate {
            dreg: reg(sys::NFTNL_EXPR_IMM_DREG),
            data: data(sys::NFTNL_EXPR_IMM_DATA),
        },
        "nat" if u(sys::NFTNL_EXPR_NAT_TYPE) == libc::NFT_NAT_DNAT as u32 => Expression::Dnat {
            family: match u(sys::NFTNL_EXPR_NAT_FAMILY) as i32 {
                libc::NFPROTO_IPV4 => Family::Ip,
                libc::NFPROTO_IPV6 => Family::Ip6,
                _ => return None,
            },
            addr: reg(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN),
            port: reg(sys::NFTNL_EXPR_NAT_REG_PROTO_MIN),
            proto_specified: is(sys::NFTNL_EXPR_NAT_FLAGS)
                && u(sys::NFTNL_EXPR_NAT_FLAGS) & 0x2 != 0,
        },
        "masq" => Expression::Masquerade {
            fully_random: is(sys::NFTNL_EXPR_MASQ_FLAGS)
                && u(sys::NFTNL_EXPR_MASQ_FLAGS) & 0x10 != 0,
        },
        "reject" if u(sys::NFTNL_EXPR_REJECT_TYPE) == libc::NFT_REJECT_ICMP_UNREACH as u32 => {
            Expression::Reject {
                icmp_code: sys::nftnl_expr_get_u8(e, sys::NFTNL_EXPR_REJECT_CODE as u16),
            }
        }
        "reject" if u(sys::NFTNL_EXPR_REJECT_TYPE) == libc::NFT_REJECT_TCP_RST as u32 => {
            Expression::RejectTcpReset
        }
        _ => return None,
    })
}

/// An mnl socket that may move to another thread.
pub struct OwnedSocket(pub mnl::Socket);

// SAFETY: a libmnl socket is a file descriptor and its bound address, with no thread-affine
// state. `OwnedSocket` is only moved, never shared (it is not `Sync`), so one thread at a time
// uses it, which is all libmnl requires.
unsafe impl Send for OwnedSocket {}
