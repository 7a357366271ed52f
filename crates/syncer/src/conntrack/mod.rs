//! Conntrack cleanup for UDP and SCTP Services, over ctnetlink (no `conntrack` binary, no
//! libnetfilter_conntrack).
//!
//! # Why
//!
//! A UDP "connection" is a conntrack entry that holds the DNAT decision made for its first
//! packet. When the endpoint it was sent to goes away, the client's next packets still follow
//! the entry to the dead endpoint, for as long as the client keeps sending (the entry never
//! times out). kube-proxy therefore deletes, after every successful sync, the UDP entries whose
//! original destination is a Service address and port, or a NodePort on any address, and whose
//! reply source (the endpoint DNAT chose) is no longer a serving endpoint of that Service port.
//! kproxy does the same for UDP and SCTP, and nothing else is deleted.
//!
//! Differences from kube-proxy, both deliberate: a Service port with no serving endpoint left
//! has its entries deleted too (kube-proxy skips it), so clients see the Service's REJECT at
//! once instead of sending into the void; and an endpoint is an address *and* port, so a
//! `targetPort` change also moves existing flows.
//!
//! # Brief overview
//!
//! * [`ServiceTarget`] says what serves one Service destination now; [`StaleFilter`] is the
//!   pure decision for one dumped [`Flow`], unit-tested without a kernel.
//! * [`clear_stale_flows`] dumps the conntrack entries of each family and protocol that has
//!   targets, in the calling thread's network namespace, and deletes what the filter calls
//!   stale.
//! * [`dump_flows`] and [`delete_flows`] are the two kernel operations on their own.
//!
//! `message.rs` encodes and decodes ctnetlink messages in safe Rust; `kernel.rs` moves them
//! over an `mnl` socket.

mod filter;
mod kernel;
mod message;

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::net::SocketAddr;

pub use filter::StaleFilter;

/// A Service protocol whose conntrack entries are cleaned up. TCP is absent on purpose: a TCP
/// connection to a dead endpoint fails by itself (reset or timeout) and the client reconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// UDP (IP protocol 17).
    Udp,
    /// SCTP (IP protocol 132).
    Sctp,
}

impl Protocol {
    /// The IP protocol number, as conntrack reports it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Udp => libc::IPPROTO_UDP as u8,
            Protocol::Sctp => libc::IPPROTO_SCTP as u8,
        }
    }

    /// The protocol with that IP protocol number, if cleanup handles it.
    pub fn from_number(number: u8) -> Option<Protocol> {
        [Protocol::Udp, Protocol::Sctp]
            .into_iter()
            .find(|p| p.number() == number)
    }
}

/// An IP family: conntrack is dumped per family, and a NodePort target belongs to one.
pub use kproxy_model::IpFamily;

/// Where clients address a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Destination {
    /// A ClusterIP, externalIP or load-balancer IP with the Service port.
    Service(SocketAddr),
    /// A NodePort: that port on any address of the family (kube-proxy does not look at the
    /// address either; the node's addresses change and `--nodeport-addresses` may be wide).
    NodePort {
        /// The family whose endpoints `serving` lists.
        family: IpFamily,
        /// The NodePort number.
        port: u16,
    },
}

/// One destination of one Service port and the endpoints that serve it now.
///
/// Build one per ClusterIP, externalIP, load-balancer IP and NodePort of every UDP or SCTP
/// Service port, per family, *including ports with no serving endpoint* (an empty `serving`
/// makes every entry to the destination stale).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTarget {
    /// The Service port's protocol.
    pub protocol: Protocol,
    /// Where clients send.
    pub destination: Destination,
    /// Every serving endpoint (address and target port) of the Service port in this family:
    /// ready or serving-terminating, before topology and traffic-policy filtering, as in
    /// kube-proxy. A policy change must not break flows to endpoints that still serve.
    pub serving: BTreeSet<SocketAddr>,
}

/// One direction of a conntrack entry. Protocols without ports (ICMP…) have port 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tuple {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

/// A conntrack entry, as much of it as matching and deleting need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Flow {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP…).
    pub protocol: u8,
    /// The original direction: client → Service address, before NAT.
    pub original: Tuple,
    /// The reply direction: its source is where DNAT sent the flow.
    pub reply: Tuple,
    /// The kernel's id for the entry (`CTA_ID`), sent back on delete so that a newer entry
    /// that reuses the tuple is not deleted by mistake.
    pub id: Option<u32>,
    /// The conntrack zone (0 is the default zone).
    pub zone: u16,
}

impl Flow {
    /// The family of the entry (of its original source address).
    pub fn family(&self) -> IpFamily {
        IpFamily::of(self.original.src.ip())
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let protocol = match Protocol::from_number(self.protocol) {
            Some(Protocol::Udp) => "udp".to_string(),
            Some(Protocol::Sctp) => "sctp".to_string(),
            None => format!("proto {}", self.protocol),
        };
        write!(
            f,
            "{protocol} {} -> {} (reply from {})",
            self.original.src, self.original.dst, self.reply.src
        )?;
        if self.zone != 0 {
            write!(f, " zone {}", self.zone)?;
        }
        if let Some(id) = self.id {
            write!(f, " id {id}")?;
        }
        Ok(())
    }
}

/// What one cleanup did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleared {
    /// Entries the kernel returned: those of the targets' protocols and families (kernels
    /// before 5.9 cannot filter dumps and return every entry of the family, once per protocol).
    pub scanned: usize,
    /// Entries the dump returned that were not IPv4/IPv6 with both tuples (never deleted).
    pub undecodable: usize,
    /// Entries the filter called stale.
    pub stale: usize,
    /// Stale entries the kernel deleted.
    pub deleted: usize,
    /// Stale entries that were gone by the time of the delete (expired, or replaced by a newer
    /// entry with the same tuple), which is fine.
    pub already_gone: usize,
}

/// Why a cleanup failed. Each variant names the step; the kernel's errno is the source.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The netfilter netlink socket could not be opened (no `CAP_NET_ADMIN`?).
    #[error("opening a netfilter netlink socket for conntrack: {0}")]
    Open(#[source] io::Error),
    /// A request could not be sent.
    #[error("sending the conntrack {what} request: {source}")]
    Send {
        /// Which request: `dump` or `delete`.
        what: &'static str,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The answer to a request could not be received.
    #[error("receiving the answer to the conntrack {what} request: {source}")]
    Receive {
        /// Which request: `dump` or `delete`.
        what: &'static str,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The kernel refused or aborted a dump.
    #[error("dumping the {family} conntrack table: {source}")]
    Dump {
        /// The family being dumped.
        family: IpFamily,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel's answer did not parse as netlink.
    #[error("malformed netlink answer to the conntrack {what} request: {detail}")]
    Malformed {
        /// Which request: `dump` or `delete`.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// Some deletes failed for another reason than the entry being gone already; the other
    /// stale entries were still deleted.
    #[error("deleting {failed} stale conntrack entries failed ({deleted} deleted); first: {first}: {source}")]
    Delete {
        /// How many deletes failed.
        failed: usize,
        /// How many succeeded.
        deleted: usize,
        /// The first entry that could not be deleted.
        first: Box<Flow>,
        /// The kernel's error for it.
        #[source]
        source: io::Error,
    },
}

/// Deletes the UDP and SCTP conntrack entries that `targets` call stale (see [`StaleFilter`])
/// in the calling thread's network namespace, dumping only the families and protocols that
/// have targets.
///
/// Call it after each successful sync with every UDP/SCTP destination of the new state. With no
/// targets it does nothing, not even open a socket.
pub fn clear_stale_flows(targets: &[ServiceTarget]) -> Result<Cleared, ConntrackError> {
    let filter = StaleFilter::new(targets);
    let mut cleared = Cleared::default();
    if filter.is_empty() {
        return Ok(cleared);
    }
    let mut conntrack = kernel::Conntrack::open()?;
    let mut stale = Vec::new();
    for (family, protocol) in filter.dumps() {
        let (seen, undecodable) = conntrack.dump(family, Some(protocol), |flow| {
            // Kernels before 5.9 ignore the dump filter: each protocol's pass keeps its own.
            if flow.protocol == protocol.number() && filter.is_stale(&flow) {
                stale.push(flow);
            }
        })?;
        cleared.scanned += seen;
        cleared.undecodable += undecodable;
    }
    cleared.stale = stale.len();
    let deleted = delete(&mut conntrack, &stale)?;
    cleared.deleted = deleted.deleted;
    cleared.already_gone = deleted.already_gone;
    Ok(cleared)
}

/// Every decodable conntrack entry of `family` in the calling thread's network namespace, all
/// protocols. For tests and debugging; cleanup filters while dumping instead of keeping them.
pub fn dump_flows(family: IpFamily) -> Result<Vec<Flow>, ConntrackError> {
    let mut flows = Vec::new();
    kernel::Conntrack::open()?.dump(family, None, |flow| flows.push(flow))?;
    Ok(flows)
}

/// Deletes `flows` in the calling thread's network namespace; returns how many were deleted
/// and how many were already gone.
pub fn delete_flows(flows: &[Flow]) -> Result<(usize, usize), ConntrackError> {
    let deleted = delete(&mut kernel::Conntrack::open()?, flows)?;
    Ok((deleted.deleted, deleted.already_gone))
}

fn delete(
    conntrack: &mut kernel::Conntrack,
    flows: &[Flow],
) -> Result<kernel::Deleted, ConntrackError> {
    let mut deleted = conntrack.delete(flows)?;
    if deleted.failed.is_empty() {
        return Ok(deleted);
    }
    let failed = deleted.failed.len();
    let (first, source) = deleted.failed.swap_remove(0);
    Err(ConntrackError::Delete {
        failed,
        deleted: deleted.deleted,
        first: Box::new(first),
        source,
    })
}
