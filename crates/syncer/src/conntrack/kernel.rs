//! The conntrack table over a netfilter netlink socket (`mnl`): one dump per family and
//! protocol, then acknowledged deletes, sent in chunks so the acknowledgements never overflow
//! the socket.

use std::io;

use super::message::{self, Reply};
use super::{ConntrackError, Flow, IpFamily, Protocol};

/// Bytes per `recv`. The kernel sizes dump messages to the reader's buffer, up to 32 KiB; a
/// larger buffer means a message is never truncated (libmnl reports truncation as `ENOSPC`).
const RECV_BUFFER: usize = 64 * 1024;

/// Deletes per `send`. Each one gets an acknowledgement (36 bytes, or the echoed request on
/// error); 64 of them fit the default receive buffer many times over.
const DELETE_CHUNK: usize = 64;

/// A ctnetlink socket in the calling thread's network namespace.
pub(super) struct Conntrack {
    socket: mnl::Socket,
    portid: u32,
    seq: u32,
    buffer: Vec<u8>,
}

/// The result of deleting a list of flows.
#[derive(Debug, Default)]
pub(super) struct Deleted {
    pub(super) deleted: usize,
    pub(super) already_gone: usize,
    pub(super) failed: Vec<(Flow, io::Error)>,
}

impl Conntrack {
    pub(super) fn open() -> Result<Conntrack, ConntrackError> {
        let socket = mnl::Socket::new(mnl::Bus::Netfilter).map_err(ConntrackError::Open)?;
        let portid = socket.portid();
        // Sequence numbers only need to differ from earlier requests on this socket; starting
        // from the clock makes a stray reply to an old socket's request unlikely to match.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.subsec_nanos());
        Ok(Conntrack {
            socket,
            portid,
            seq,
            buffer: vec![0; RECV_BUFFER + 4],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `request` whole.
    fn send(&self, request: &[u8], what: &'static str) -> Result<(), ConntrackError> {
        let sent = self
            .socket
            .send(request)
            .map_err(|source| ConntrackError::Send { what, source })?;
        if sent < request.len() {
            return Err(ConntrackError::Send {
                what,
                source: io::Error::other(format!("sent {sent} of {} bytes", request.len())),
            });
        }
        Ok(())
    }

    /// Receives one datagram and hands each decoded reply addressed to this socket to `each`;
    /// stops early when `each` returns `false`.
    fn receive(
        &mut self,
        what: &'static str,
        mut each: impl FnMut(u32, Reply) -> Result<bool, ConntrackError>,
    ) -> Result<bool, ConntrackError> {
        // mnl wants the buffer aligned for `nlmsghdr` (4 bytes); a `Vec<u8>` promises 1.
        let start = self.buffer.as_ptr().align_offset(4);
        let window = &mut self.buffer[start..start + RECV_BUFFER];
        let n = self
            .socket
            .recv_raw(window)
            .map_err(|source| ConntrackError::Receive { what, source })?;
        for reply in message::replies(&window[..n]) {
            let (header, reply) =
                reply.map_err(|e| ConntrackError::Malformed { what, detail: e.0 })?;
            if header.pid != self.portid && header.pid != 0 {
                continue;
            }
            if !each(header.seq, reply)? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Dumps the conntrack entries of `family` (of `protocol` only, where the kernel can
    /// filter) and hands every decodable one to `visit`. Returns how many entries were seen
    /// and how many could not be decoded.
    ///
    /// A kernel that rejects the filter (`EINVAL`, `EOPNOTSUPP` before sending any entry) gets
    /// an unfiltered dump instead.
    pub(super) fn dump(
        &mut self,
        family: IpFamily,
        protocol: Option<Protocol>,
        mut visit: impl FnMut(Flow),
    ) -> Result<(usize, usize), ConntrackError> {
        let seq = self.next_seq();
        let request = message::dump_request(family, protocol.map(Protocol::number), seq);
        self.send(&request, "dump")?;
        let (mut seen, mut undecodable) = (0, 0);
        loop {
            let more = self.receive("dump", |reply_seq, reply| {
                if reply_seq != seq {
                    return Ok(true);
                }
                match reply {
                    Reply::Entry(flow) => {
                        seen += 1;
                        match flow {
                            Some(flow) => visit(flow),
                            None => undecodable += 1,
                        }
                        Ok(true)
                    }
                    Reply::Done { errno: 0 } => Ok(false),
                    Reply::Done { errno } | Reply::Ack { errno } if errno != 0 => {
                        Err(ConntrackError::Dump {
                            family,
                            source: io::Error::from_raw_os_error(errno),
                        })
                    }
                    Reply::Done { .. } | Reply::Ack { .. } | Reply::Other => Ok(true),
                }
            });
            match more {
                Ok(true) => {}
                Ok(false) => return Ok((seen, undecodable)),
                Err(ConntrackError::Dump { source, .. })
                    if protocol.is_some()
                        && seen == 0
                        && matches!(
                            source.raw_os_error(),
                            Some(libc::EINVAL | libc::EOPNOTSUPP)
                        ) =>
                {
                    return self.dump(family, None, visit);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes `flows`, each by its original tuple, zone and id. `ENOENT` (the entry expired,
    /// or its tuple now belongs to a newer entry with another id) counts as already gone; other
    /// errors are collected per flow and the remaining flows are still deleted.
    pub(super) fn delete(&mut self, flows: &[Flow]) -> Result<Deleted, ConntrackError> {
        let mut result = Deleted::default();
        for chunk in flows.chunks(DELETE_CHUNK) {
            let first = self.seq.wrapping_add(1);
            let mut batch = Vec::with_capacity(chunk.len() * 96);
            for flow in chunk {
                let seq = self.next_seq();
                batch.extend(message::delete_request(flow, seq));
            }
            self.send(&batch, "delete")?;
            let mut answered = vec![false; chunk.len()];
            let mut pending = chunk.len();
            while pending > 0 {
                self.receive("delete", |seq, reply| {
                    let index = seq.wrapping_sub(first) as usize;
                    let Reply::Ack { errno } = reply else {
                        return Ok(true);
                    };
                    if index >= chunk.len() || answered[index] {
                        return Ok(true);
                    }
                    answered[index] = true;
                    pending -= 1;
                    match errno {
                        0 => result.deleted += 1,
                        libc::ENOENT => result.already_gone += 1,
                        errno => result
                            .failed
                            .push((chunk[index], io::Error::from_raw_os_error(errno))),
                    }
                    Ok(pending > 0)
                })?;
            }
        }
        Ok(result)
    }
}
