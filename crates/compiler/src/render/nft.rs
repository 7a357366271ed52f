//! The IR as `nft -f` input, laid out like `nft list ruleset` so it reads like what the kernel
//! holds. The output is deterministic: the IR's order, one element per line.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::ir::{
    Action, BaseHook, Chain, ChainType, CmpOp, DataType, Dnat, EndpointMap, EndpointRange, Expr,
    Family, Hook, Map, Match, PriorityBase, RejectWith, Rule, Ruleset, Set, SetRef, Statement,
    Table, Value, Verdict,
};

/// Renders a whole ruleset.
pub fn ruleset(ruleset: &Ruleset) -> String {
    let mut out = String::with_capacity(4096);
    for table_ in &ruleset.tables {
        table(&mut out, table_).expect("writing to a String cannot fail");
    }
    out
}

fn table(out: &mut String, table: &Table) -> fmt::Result {
    writeln!(out, "table {} {} {{", family(table.family), table.name)?;
    let mut first = true;
    let mut gap = |out: &mut String| -> fmt::Result {
        if !std::mem::take(&mut first) {
            out.push('\n');
        }
        Ok(())
    };
    for s in &table.sets {
        gap(out)?;
        set(out, table.family, s)?;
    }
    for m in &table.maps {
        gap(out)?;
        map(out, m)?;
    }
    for m in &table.endpoint_maps {
        gap(out)?;
        endpoint_map(out, table.family, m)?;
    }
    for c in &table.chains {
        gap(out)?;
        chain(out, table.family, c)?;
    }
    out.push_str("}\n");
    Ok(())
}

/// The nft keyword of a family.
pub fn family(family: Family) -> &'static str {
    match family {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
    }
}

/// A set block (`set NAME { … }`), indented for use inside a table block.
pub fn set(out: &mut String, fam: Family, set: &Set) -> fmt::Result {
    writeln!(out, "\tset {} {{", set.name)?;
    if set.declared_by_typeof() {
        out.push_str("\t\ttypeof ");
        key_typeof(out, fam, &set.key);
    } else {
        out.push_str("\t\ttype ");
        key_type(out, &set.key);
    }
    out.push('\n');
    if let Some(size) = set.size {
        writeln!(out, "\t\tsize {size}")?;
    }
    match (set.interval, set.timeout) {
        (true, _) => out.push_str("\t\tflags interval\n"),
        (false, Some(timeout)) => {
            writeln!(out, "\t\tflags dynamic,timeout\n\t\ttimeout {timeout}s")?
        }
        (false, None) => {}
    }
    if let Some(text) = &set.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    elements_block(out, &set.elements, |out, key| values(out, key))?;
    out.push_str("\t}\n");
    Ok(())
}

/// A map block (`map NAME { … }`), indented for use inside a table block.
pub fn map(out: &mut String, map: &Map) -> fmt::Result {
    writeln!(out, "\tmap {} {{", map.name)?;
    out.push_str("\t\ttype ");
    key_type(out, &map.key);
    out.push_str(" : verdict\n");
    if let Some(text) = &map.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    elements_block(out, &map.elements, |out, element| {
        values(out, &element.key)?;
        out.push_str(" : ");
        verdict(out, &element.verdict);
        Ok(())
    })?;
    out.push_str("\t}\n");
    Ok(())
}

/// An endpoint map block, indented for use inside a table block. nft needs `typeof` here:
/// `integer` is not a type it accepts for a named map's key; `th dport` (not `tcp dport`) lets
/// TCP, UDP and SCTP Services share the map.
pub fn endpoint_map(out: &mut String, fam: Family, map: &EndpointMap) -> fmt::Result {
    writeln!(out, "\tmap {} {{", map.name)?;
    writeln!(
        out,
        "\t\ttypeof numgen random mod 1 : {} daddr . th dport\n\t\tflags interval",
        family(fam)
    )?;
    if let Some(text) = &map.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    elements_block(out, &map.elements, endpoint_range)?;
    out.push_str("\t}\n");
    Ok(())
}

/// `first-last : addr . port`.
pub fn endpoint_range(out: &mut String, range: &EndpointRange) -> fmt::Result {
    decimal(out, range.first);
    out.push('-');
    decimal(out, range.last);
    out.push_str(" : ");
    addr_text(out, range.target.ip());
    out.push_str(" . ");
    decimal(out, u32::from(range.target.port()));
    Ok(())
}

/// One element per line, comma-separated; nothing for an empty set.
fn elements_block<T>(
    out: &mut String,
    elements: &[T],
    mut write: impl FnMut(&mut String, &T) -> fmt::Result,
) -> fmt::Result {
    if elements.is_empty() {
        return Ok(());
    }
    out.push_str("\t\telements = {\n");
    for (i, element) in elements.iter().enumerate() {
        out.push_str("\t\t\t");
        write(out, element)?;
        out.push_str(if i + 1 < elements.len() { ",\n" } else { "\n" });
    }
    out.push_str("\t\t}\n");
    Ok(())
}

fn key_type(out: &mut String, types: &[DataType]) {
    for (i, t) in types.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        out.push_str(match t {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Integer => "integer",
        });
    }
}

/// A key declared by expressions, for keys with an integer field (nft accepts no `type
/// integer`): each field by an expression of its type. Only the types matter to the kernel;
/// nft keeps the expressions to print the declaration back.
fn key_typeof(out: &mut String, fam: Family, types: &[DataType]) {
    for (i, t) in types.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        match t {
            DataType::Ipv4Addr | DataType::Ipv6Addr => {
                out.push_str(family(fam));
                out.push_str(" saddr");
            }
            DataType::InetProto => out.push_str("meta l4proto"),
            DataType::InetService => out.push_str("th dport"),
            DataType::Integer => out.push_str("numgen random mod 1"),
        }
    }
}

/// A chain block (`chain NAME { … }`), indented for use inside a table block.
pub fn chain(out: &mut String, fam: Family, chain: &Chain) -> fmt::Result {
    writeln!(out, "\tchain {} {{", chain.name)?;
    if let Some(text) = &chain.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    if let Some(hook) = &chain.hook {
        writeln!(out, "\t\t{}", base_hook(hook))?;
    }
    for r in &chain.rules {
        out.push_str("\t\t");
        rule(out, fam, r)?;
        out.push('\n');
    }
    out.push_str("\t}\n");
    Ok(())
}

fn base_hook(hook: &BaseHook) -> String {
    let kind = match hook.kind {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    };
    let name = match hook.hook {
        Hook::Prerouting => "prerouting",
        Hook::Input => "input",
        Hook::Forward => "forward",
        Hook::Output => "output",
        Hook::Postrouting => "postrouting",
    };
    // nft 1.0 accepts `dstnat` only on prerouting and `srcnat` only on postrouting; elsewhere
    // the number is written, which every version accepts.
    let priority = match (hook.priority.base, hook.hook) {
        (PriorityBase::Dstnat, Hook::Prerouting) => named_priority("dstnat", hook.priority.offset),
        (PriorityBase::Srcnat, Hook::Postrouting) => named_priority("srcnat", hook.priority.offset),
        (PriorityBase::Filter, _) => named_priority("filter", hook.priority.offset),
        _ => hook.priority.value().to_string(),
    };
    format!("type {kind} hook {name} priority {priority}; policy accept;")
}

fn named_priority(base: &str, offset: i32) -> String {
    match offset {
        0 => base.to_string(),
        o if o < 0 => format!("{base} - {}", -o),
        o => format!("{base} + {o}"),
    }
}

/// Renders one rule on one line (no indentation, no newline).
pub fn rule(out: &mut String, fam: Family, rule: &Rule) -> fmt::Result {
    let mut first = true;
    let mut space = |out: &mut String| {
        if !std::mem::take(&mut first) {
            out.push(' ');
        }
    };
    for m in &rule.matches {
        space(out);
        matcher(out, fam, m)?;
    }
    for s in &rule.statements {
        space(out);
        statement(out, fam, s)?;
    }
    if let Some(a) = &rule.action {
        space(out);
        action(out, fam, a)?;
    }
    if let Some(text) = &rule.comment {
        space(out);
        write!(out, "comment \"{text}\"")?;
    }
    Ok(())
}

fn expr(out: &mut String, fam: Family, expr: &Expr) -> fmt::Result {
    let ip = family(fam);
    match expr {
        Expr::SourceAddr => write!(out, "{ip} saddr"),
        Expr::DestAddr => write!(out, "{ip} daddr"),
        Expr::DestPortLowBits { bits } => {
            write!(out, "th dport & {}", crate::ir::low_bits_port_mask(*bits))
        }
        Expr::DestAddrLowBits { bits } => {
            write!(out, "{ip} daddr & {}", crate::ir::low_bits_mask(fam, *bits))
        }
        Expr::L4Proto => {
            out.push_str("meta l4proto");
            Ok(())
        }
        Expr::DestPort => {
            out.push_str("th dport");
            Ok(())
        }
        Expr::Mark => {
            out.push_str("meta mark");
            Ok(())
        }
        Expr::CtState => {
            out.push_str("ct state");
            Ok(())
        }
        Expr::CtStatus => {
            out.push_str("ct status");
            Ok(())
        }
        Expr::SourceAddrType => {
            out.push_str("fib saddr type");
            Ok(())
        }
        Expr::DestAddrType => {
            out.push_str("fib daddr type");
            Ok(())
        }
        Expr::Numgen { modulus } => write!(out, "numgen random mod {modulus}"),
        Expr::Constant(n) => write!(out, "numgen random mod 1 offset {n}"),
    }
}

fn exprs(out: &mut String, fam: Family, key: &[Expr]) -> fmt::Result {
    for (i, e) in key.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        expr(out, fam, e)?;
    }
    Ok(())
}

fn value(out: &mut String, value: &Value) -> fmt::Result {
    match value {
        Value::Addr(addr) => {
            addr_text(out, *addr);
            Ok(())
        }
        Value::Prefix(net) => prefix(out, net),
        Value::Proto(proto) => {
            out.push_str(proto.as_str());
            Ok(())
        }
        Value::Port(port) => {
            decimal(out, u32::from(*port));
            Ok(())
        }
        Value::Integer(n) => {
            decimal(out, *n);
            Ok(())
        }
        Value::CtNew => {
            out.push_str("new");
            Ok(())
        }
        Value::CtDnat => {
            out.push_str("dnat");
            Ok(())
        }
        Value::Local => {
            out.push_str("local");
            Ok(())
        }
    }
}

/// A set element or map key: values joined with ` . `.
pub fn values(out: &mut String, key: &[Value]) -> fmt::Result {
    for (i, v) in key.iter().enumerate() {
        if i > 0 {
            out.push_str(" . ");
        }
        value(out, v)?;
    }
    Ok(())
}

/// A host prefix is written as the bare address, as `nft list` does.
fn prefix(out: &mut String, net: &IpNet) -> fmt::Result {
    addr_text(out, net.addr());
    if net.prefix_len() != net.max_prefix_len() {
        out.push('/');
        decimal(out, u32::from(net.prefix_len()));
    }
    Ok(())
}

fn matcher(out: &mut String, fam: Family, m: &Match) -> fmt::Result {
    match m {
        Match::Cmp { left, op, right } => {
            expr(out, fam, left)?;
            // A conntrack flag is a bit test: `ct status dnat` is "bit set", `ct status ! dnat`
            // "bit clear"; `ct status != dnat` would compare the whole word with the one bit.
            let flag = matches!(right, Value::CtNew | Value::CtDnat);
            out.push_str(match (*op == CmpOp::Ne, flag) {
                (false, _) => " ",
                (true, false) => " != ",
                (true, true) => " ! ",
            });
            value(out, right)
        }
        Match::Masked { left, mask, value } => {
            expr(out, fam, left)?;
            write!(out, " & 0x{mask:08x} == 0x{value:08x}")
        }
        Match::Lookup { key, set, negate } => {
            exprs(out, fam, key)?;
            out.push_str(if *negate { " != " } else { " " });
            match set {
                SetRef::Named(name) => write!(out, "@{name}"),
                SetRef::Prefixes(nets) => {
                    out.push_str("{ ");
                    for (i, net) in nets.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        prefix(out, net)?;
                    }
                    out.push_str(" }");
                    Ok(())
                }
            }
        }
    }
}

fn statement(out: &mut String, fam: Family, s: &Statement) -> fmt::Result {
    match s {
        Statement::MarkOr(bits) => write!(out, "meta mark set meta mark | 0x{bits:08x}"),
        Statement::MarkXor(bits) => write!(out, "meta mark set meta mark ^ 0x{bits:08x}"),
        Statement::UpdateSet { set, key, timeout } => {
            write!(out, "update @{set} {{ ")?;
            exprs(out, fam, key)?;
            if let Some(seconds) = timeout {
                write!(out, " timeout {seconds}s")?;
            }
            out.push_str(" }");
            Ok(())
        }
    }
}

fn action(out: &mut String, fam: Family, a: &Action) -> fmt::Result {
    match a {
        Action::Verdict(v) => {
            verdict(out, v);
            Ok(())
        }
        Action::Vmap { key, map } => {
            exprs(out, fam, key)?;
            write!(out, " vmap @{map}")
        }
        Action::Dnat(Dnat::To(target)) => {
            out.push_str("dnat to ");
            socket(out, target)
        }
        Action::Dnat(Dnat::Numgen {
            map,
            modulus,
            offset,
        }) => write!(
            out,
            "dnat {} to numgen random mod {modulus} offset {offset} map @{map}",
            family(fam)
        ),
        Action::Masquerade { fully_random: true } => {
            out.push_str("masquerade fully-random");
            Ok(())
        }
        Action::Masquerade {
            fully_random: false,
        } => {
            out.push_str("masquerade");
            Ok(())
        }
        Action::Reject(RejectWith::PortUnreachable) => {
            out.push_str("reject");
            Ok(())
        }
        Action::Reject(RejectWith::TcpReset) => {
            out.push_str("reject with tcp reset");
            Ok(())
        }
    }
}

fn socket(out: &mut String, target: &SocketAddr) -> fmt::Result {
    match target.ip() {
        IpAddr::V4(ip) => {
            addr_text(out, IpAddr::V4(ip));
            out.push(':');
            decimal(out, u32::from(target.port()));
            Ok(())
        }
        IpAddr::V6(ip) => write!(out, "[{ip}]:{}", target.port()),
    }
}

/// A verdict (`goto CHAIN`, `drop`, …).
pub fn verdict(out: &mut String, v: &Verdict) {
    match v {
        Verdict::Accept => out.push_str("accept"),
        Verdict::Drop => out.push_str("drop"),
        Verdict::Return => out.push_str("return"),
        Verdict::Jump(chain) => {
            out.push_str("jump ");
            out.push_str(chain);
        }
        Verdict::Goto(chain) => {
            out.push_str("goto ");
            out.push_str(chain);
        }
    }
}

/// Writes an address. IPv4 is formatted by hand: rendering is dominated by addresses, and
/// this is several times faster than going through `fmt`.
fn addr_text(out: &mut String, addr: IpAddr) {
    match addr {
        IpAddr::V4(ip) => {
            for (i, octet) in ip.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                decimal(out, u32::from(octet));
            }
        }
        IpAddr::V6(ip) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Writes a number in decimal without going through `fmt`.
fn decimal(out: &mut String, mut n: u32) {
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    loop {
        start -= 1;
        // `n % 10` is below 10, so the digit is ASCII.
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_formatting_matches_display() {
        for n in [0u32, 7, 10, 99, 255, 65535, u32::MAX] {
            let mut out = String::new();
            decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        for addr in ["0.0.0.0", "10.244.1.5", "255.255.255.255", "fd00::1"] {
            let addr: IpAddr = addr.parse().unwrap();
            let mut out = String::new();
            addr_text(&mut out, addr);
            assert_eq!(out, addr.to_string());
        }
    }

    /// nft reads `ct status != dnat` as "the status word is not exactly dnat"; the IR's `!=`
    /// on a conntrack flag means "the bit is clear", which nft spells `ct status ! dnat`.
    #[test]
    fn negated_conntrack_flags_render_as_bit_tests() {
        let cases = [
            (Match::ne(Expr::CtStatus, Value::CtDnat), "ct status ! dnat"),
            (Match::eq(Expr::CtStatus, Value::CtDnat), "ct status dnat"),
            (Match::ne(Expr::CtState, Value::CtNew), "ct state ! new"),
            (Match::ne(Expr::DestPort, Value::Port(53)), "th dport != 53"),
        ];
        for (m, want) in cases {
            let mut out = String::new();
            matcher(&mut out, Family::Ip, &m).expect("rendering a match");
            assert_eq!(out, want);
        }
    }
}
