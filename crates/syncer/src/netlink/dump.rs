//! Reads kproxy's tables back from the kernel: chains, sets with their elements, and rules.
//!
//! A get for the table, then dumps of its chains, sets, rules and each set's elements, on
//! one socket. The answer is kernel-level ([`wire`](super::wire)) data; [`raise`](super::raise)
//! turns it back into the IR.

use std::io;

use kproxy_compiler::ir::{Family, TABLE_NAME};

use super::ffi::{self, DumpKind};
use super::wire::{ChainDump, Element, RuleDump, SetDump};
use crate::nlmsg;

/// Everything one of kproxy's tables holds, at the kernel's level.
#[derive(Debug, Default)]
pub struct TableDump {
    /// Chains.
    pub chains: Vec<ChainDump>,
    /// Sets and maps, anonymous ones included, each with its elements.
    pub sets: Vec<(SetDump, Vec<Element>)>,
    /// Rules, in chain order.
    pub rules: Vec<RuleDump>,
}

/// Dumps kproxy's table of `family`; `None` when there is no such table.
pub fn table(family: Family) -> io::Result<Option<TableDump>> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    let mut seq = 0;
    let mut request = |kind: DumpKind, set: Option<&str>| -> io::Result<Option<Vec<Vec<u8>>>> {
        seq += 1;
        socket.send(&ffi::dump_request(kind, family, seq, set))?;
        receive(&socket, seq)
    };
    if request(DumpKind::Table, None)?.is_none() {
        return Ok(None);
    }
    let chains: Vec<ChainDump> = request(DumpKind::Chains, None)?
        .unwrap_or_default()
        .iter()
        .filter_map(|m| ffi::parse_chain(m))
        .filter(|c| c.table == TABLE_NAME)
        .collect();
    let sets: Vec<SetDump> = request(DumpKind::Sets, None)?
        .unwrap_or_default()
        .iter()
        .filter_map(|m| ffi::parse_set(m))
        .filter(|s| s.table == TABLE_NAME)
        .collect();
    let rules: Vec<RuleDump> = request(DumpKind::Rules, None)?
        .unwrap_or_default()
        .iter()
        .filter_map(|m| ffi::parse_rule(m))
        .filter(|r| r.table == TABLE_NAME)
        .collect();
    let mut with_elements = Vec::with_capacity(sets.len());
    for set in sets {
        let elements = request(DumpKind::Elements, Some(&set.name))?
            .unwrap_or_default()
            .iter()
            .flat_map(|m| ffi::parse_elements(m))
            .collect();
        with_elements.push((set, elements));
    }
    Ok(Some(TableDump {
        chains,
        sets: with_elements,
        rules,
    }))
}

/// Whether `family` has a table called `name` (any program's).
pub fn table_exists(family: Family, name: &str) -> io::Result<bool> {
    let socket = mnl::Socket::new(mnl::Bus::Netfilter)?;
    socket.send(&ffi::get_table_request(family, name, 1))?;
    Ok(receive(&socket, 1)?.is_some())
}

/// Collects the messages of one dump. `None` when the kernel says the table does not exist.
fn receive(socket: &mnl::Socket, seq: u32) -> io::Result<Option<Vec<Vec<u8>>>> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut messages = Vec::new();
    loop {
        let len = socket.recv_raw(&mut buffer)?;
        for message in nlmsg::messages(&buffer[..len]) {
            if message.header.seq != seq {
                continue;
            }
            match message.header.kind {
                k if k == libc::NLMSG_DONE as u16 => return Ok(Some(messages)),
                k if k == libc::NLMSG_ERROR as u16 => match message.errno() {
                    Some(0) => return Ok(Some(messages)),
                    Some(libc::ENOENT) => return Ok(None),
                    errno => {
                        return Err(io::Error::from_raw_os_error(errno.unwrap_or(libc::EPROTO)))
                    }
                },
                _ => messages.push(message.bytes.to_vec()),
            }
        }
    }
}
