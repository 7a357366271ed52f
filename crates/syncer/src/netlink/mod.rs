//! Sends a [`Plan`] to the kernel as one nf_tables transaction.
//!
//! A plan is lowered to kernel messages ([`lower`]), written into one batch of libnftnl's
//! pages (rules and element lists by [`encode`], the few other messages by libnftnl, through
//! [`ffi`], the only `unsafe` code) and sent with a single `sendmsg` on a fresh netlink
//! socket. The kernel applies the batch whole or not at all. Only the last message asks for an
//! acknowledgement, so a large transaction produces one reply, not one per message; the kernel
//! reports every failing message regardless, and its sequence number leads back to the plan
//! operation that failed.

#[allow(unsafe_code)]
mod dump;
mod encode;
#[allow(unsafe_code)]
mod ffi;
mod lower;
mod raise;
mod typeof_udata;
mod wire;

use std::io;
use std::time::{Duration, Instant};

pub use lower::SetShapes;

use crate::nlmsg;
use crate::plan::Plan;
use wire::Addressed;

/// How long to wait for the kernel's answer. Large transactions take the kernel well under a
/// second per 100k objects on a small machine; this only guards against a lost reply.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// What a successful transaction sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Netlink messages in the batch, excluding BEGIN and END.
    pub messages: usize,
    /// Bytes sent.
    pub bytes: usize,
}

/// Where a successful transaction's time went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spent {
    /// Lowering the plan and writing the batch: kproxy's own part.
    pub encode: Duration,
    /// From sending the batch to the kernel's answer: the kernel's part.
    pub kernel: Duration,
}

/// Why a transaction was not applied. In every case the kernel's ruleset is unchanged: the
/// batch is atomic.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The netlink socket could not be opened or configured.
    #[error("opening a netlink socket to nf_tables: {0}")]
    Socket(#[source] io::Error),
    /// The batch could not be sent.
    #[error("sending the nf_tables transaction ({bytes} bytes): {source}")]
    Send {
        /// Batch size.
        bytes: usize,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer could not be read.
    #[error("reading the kernel's answer to the nf_tables transaction: {0}")]
    Receive(#[source] io::Error),
    /// The kernel refused an operation, and with it the whole transaction.
    #[error("the kernel rejected `{operation}`: {source}")]
    Rejected {
        /// The failing operation, as an nft command (shortened).
        operation: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel failed the commit itself.
    #[error("the kernel failed to commit the transaction: {0}")]
    Commit(#[source] io::Error),
}

/// Applies `plan` in one transaction on a socket of its own. `shapes` describes the sets the
/// plan touches (see [`SetShapes::of`]).
pub fn apply(plan: &Plan, shapes: &SetShapes) -> Result<(Applied, Spent), ApplyError> {
    Channel::open()?.apply(plan, shapes)
}

/// A netlink socket for nf_tables transactions, kept open between them.
///
/// Closing a netfilter netlink socket waits for an RCU grace period: 7–13 ms on a 2-vCPU VM,
/// thirty times what the kernel spends on a small transaction. A daemon therefore keeps one
/// channel per network namespace and sends every transaction on it. After a successful
/// transaction nothing is left to read (only the last message asks for an answer); after a
/// failed one the caller drops the channel, so no stale answer can be mistaken for the next.
pub struct Channel {
    socket: ffi::OwnedSocket,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").finish_non_exhaustive()
    }
}

impl Channel {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Channel, ApplyError> {
        let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(ApplyError::Socket)?;
        ffi::set_buffer(&socket, libc::SO_RCVBUFFORCE, 4 * 1024 * 1024)
            .map_err(ApplyError::Socket)?;
        ffi::set_receive_timeout(&socket, Duration::from_millis(500))
            .map_err(ApplyError::Socket)?;
        Ok(Channel {
            socket: ffi::OwnedSocket(socket),
        })
    }

    /// Applies `plan` in one transaction (see [`apply`]).
    pub fn apply(&self, plan: &Plan, shapes: &SetShapes) -> Result<(Applied, Spent), ApplyError> {
        transact(&self.socket.0, plan, shapes)
    }
}

fn transact(
    socket: &mnl::Socket,
    plan: &Plan,
    shapes: &SetShapes,
) -> Result<(Applied, Spent), ApplyError> {
    if plan.operations.is_empty() {
        return Ok(Default::default());
    }
    let start = Instant::now();
    let first_seq = 1;
    let mut batch = ffi::Batch::new(first_seq);
    let mut origins = Vec::new();
    // Each message is written into the batch as soon as it is lowered, one behind: only the
    // last one asks for an acknowledgement, and it is known to be last only at the end.
    let mut pending: Option<Addressed> = None;
    lower::each(plan, shapes, |message| {
        if let Some(previous) = pending.replace(message) {
            batch.push(previous.family, &previous.message, false);
            origins.push(previous.origin);
        }
    });
    let Some(last) = pending else {
        return Ok(Default::default());
    };
    let last_seq = batch.push(last.family, &last.message, true);
    origins.push(last.origin);
    let batch = batch.finish();
    let encode = start.elapsed();

    let sent = Instant::now();
    let bytes = batch.send(socket).map_err(|source| ApplyError::Send {
        bytes: batch.len(),
        source,
    })?;

    let describe = |seq: u32| -> Option<String> {
        let index = seq.checked_sub(first_seq + 1)? as usize;
        let origin = *origins.get(index)?;
        let operation = plan.operations.get(origin)?;
        Some(shorten(&operation.to_string()))
    };
    match read_answer(socket, last_seq)? {
        None => Ok((
            Applied {
                messages: origins.len(),
                bytes,
            },
            Spent {
                encode,
                kernel: sent.elapsed(),
            },
        )),
        Some((seq, errno)) => {
            let source = io::Error::from_raw_os_error(errno);
            Err(match describe(seq) {
                Some(operation) => ApplyError::Rejected { operation, source },
                None => ApplyError::Commit(source),
            })
        }
    }
}

/// Reads acknowledgements until the one for `last_seq`. Returns the first error the kernel
/// reported (its sequence number and errno), or `None` when the transaction was committed.
fn read_answer(socket: &mnl::Socket, last_seq: u32) -> Result<Option<(u32, i32)>, ApplyError> {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut first_error = None;
    let deadline = Instant::now() + ANSWER_TIMEOUT;
    loop {
        let len = match socket.recv_raw(&mut buffer) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // After an error the kernel may send nothing more.
                if first_error.is_some() {
                    return Ok(first_error);
                }
                if Instant::now() > deadline {
                    return Err(ApplyError::Receive(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from the kernel",
                    )));
                }
                continue;
            }
            Err(e) => return Err(ApplyError::Receive(e)),
        };
        for message in nlmsg::messages(&buffer[..len]) {
            if message.header.kind != libc::NLMSG_ERROR as u16 {
                continue;
            }
            let errno = message.errno().unwrap_or(libc::EPROTO);
            if errno != 0 && first_error.is_none() {
                first_error = Some((message.header.seq, errno));
            }
            if message.header.seq == last_seq {
                return Ok(first_error);
            }
        }
    }
}

fn shorten(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// kproxy's tables as the kernel holds them.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The tables that could be read back into the IR.
    pub ruleset: kproxy_compiler::ir::Ruleset,
    /// Tables that hold something kproxy does not write, with the reason.
    pub unreadable: Vec<(kproxy_compiler::ir::Family, raise::Undecodable)>,
}

pub use raise::Undecodable;

/// Whether the calling thread's network namespace has the nftables table `name` in `family`
/// (any program's: `iptables-nft` keeps its rules in tables called `filter`, `nat`, ...).
pub fn table_exists(family: kproxy_compiler::ir::Family, name: &str) -> io::Result<bool> {
    dump::table_exists(family, name)
}

/// Reads kproxy's tables (both families) back into the IR.
pub fn read_tables() -> io::Result<ReadBack> {
    use kproxy_compiler::ir::Family;
    let mut out = ReadBack::default();
    for family in [Family::Ip, Family::Ip6] {
        let Some(dump) = dump::table(family)? else {
            continue;
        };
        match raise::table(family, &dump) {
            Ok(table) => out.ruleset.tables.push(table),
            Err(reason) => out.unreadable.push((family, reason)),
        }
    }
    Ok(out)
}
