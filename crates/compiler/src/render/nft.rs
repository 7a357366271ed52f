//! The IR as `nft -f` input, laid out like `nft list ruleset` so it reads like what the kernel
//! holds. The output is deterministic: the IR's order, one element per line.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::ir::{
    Action, BaseHook, Chain, ChainType, CmpOp, DataType, Dnat, Expr, Family, Hook, Map, Match,
    PriorityBase, Rule, Ruleset, Set, SetRef, Statement, Table, Value, Verdict,
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
        map(out, table.family, m)?;
    }
    for c in &table.chains {
        gap(out)?;
        chain(out, table.family, c)?;
    }
    out.push_str("}\n");
    Ok(())
}

fn family(family: Family) -> &'static str {
    match family {
        Family::Ip => "ip",
        Family::Ip6 => "ip6",
    }
}

fn set(out: &mut String, fam: Family, set: &Set) -> fmt::Result {
    writeln!(out, "\tset {} {{", set.name)?;
    writeln!(out, "\t\ttype {}", key_type(&set.key))?;
    match (set.interval, set.timeout) {
        (true, _) => writeln!(out, "\t\tflags interval")?,
        (false, Some(timeout)) => {
            writeln!(out, "\t\tflags dynamic,timeout")?;
            writeln!(out, "\t\ttimeout {timeout}s")?;
        }
        (false, None) => {}
    }
    if let Some(text) = &set.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    let elements = set.elements.iter().map(|key| concat_values(fam, key));
    elements_block(out, elements)?;
    out.push_str("\t}\n");
    Ok(())
}

fn map(out: &mut String, fam: Family, map: &Map) -> fmt::Result {
    writeln!(out, "\tmap {} {{", map.name)?;
    writeln!(out, "\t\ttype {} : verdict", key_type(&map.key))?;
    if let Some(text) = &map.comment {
        writeln!(out, "\t\tcomment \"{text}\"")?;
    }
    let elements = map
        .elements
        .iter()
        .map(|e| format!("{} : {}", concat_values(fam, &e.key), verdict(&e.verdict)));
    elements_block(out, elements)?;
    out.push_str("\t}\n");
    Ok(())
}

fn elements_block(out: &mut String, elements: impl Iterator<Item = String>) -> fmt::Result {
    let mut elements = elements.peekable();
    if elements.peek().is_none() {
        return Ok(());
    }
    out.push_str("\t\telements = {\n");
    while let Some(element) = elements.next() {
        let sep = if elements.peek().is_some() { "," } else { "" };
        writeln!(out, "\t\t\t{element}{sep}")?;
    }
    out.push_str("\t\t}\n");
    Ok(())
}

fn key_type(types: &[DataType]) -> String {
    let names: Vec<&str> = types
        .iter()
        .map(|t| match t {
            DataType::Ipv4Addr => "ipv4_addr",
            DataType::Ipv6Addr => "ipv6_addr",
            DataType::InetProto => "inet_proto",
            DataType::InetService => "inet_service",
            DataType::Integer => "integer",
        })
        .collect();
    names.join(" . ")
}

fn chain(out: &mut String, fam: Family, chain: &Chain) -> fmt::Result {
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
    let mut words: Vec<String> = Vec::new();
    for m in &rule.matches {
        words.push(matcher(fam, m));
    }
    for s in &rule.statements {
        words.push(statement(fam, s));
    }
    if let Some(a) = &rule.action {
        words.push(action(fam, a));
    }
    if let Some(text) = &rule.comment {
        words.push(format!("comment \"{text}\""));
    }
    out.push_str(&words.join(" "));
    Ok(())
}

fn expr(fam: Family, expr: &Expr) -> String {
    let ip = family(fam);
    match expr {
        Expr::SourceAddr => format!("{ip} saddr"),
        Expr::DestAddr => format!("{ip} daddr"),
        Expr::L4Proto => "meta l4proto".into(),
        Expr::DestPort => "th dport".into(),
        Expr::Mark => "meta mark".into(),
        Expr::CtState => "ct state".into(),
        Expr::CtStatus => "ct status".into(),
        Expr::SourceAddrType => "fib saddr type".into(),
        Expr::DestAddrType => "fib daddr type".into(),
        Expr::Numgen { modulus } => format!("numgen random mod {modulus}"),
    }
}

fn concat_exprs(fam: Family, key: &[Expr]) -> String {
    key.iter()
        .map(|e| expr(fam, e))
        .collect::<Vec<_>>()
        .join(" . ")
}

fn value(value: &Value) -> String {
    match value {
        Value::Addr(addr) => addr.to_string(),
        Value::Prefix(net) => prefix(net),
        Value::Proto(proto) => proto.as_str().into(),
        Value::Port(port) => port.to_string(),
        Value::Integer(n) => n.to_string(),
        Value::CtNew => "new".into(),
        Value::CtDnat => "dnat".into(),
        Value::Local => "local".into(),
    }
}

/// A host prefix is written as the bare address, as `nft list` does.
fn prefix(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

fn concat_values(_fam: Family, values: &[Value]) -> String {
    values.iter().map(value).collect::<Vec<_>>().join(" . ")
}

fn matcher(fam: Family, m: &Match) -> String {
    match m {
        Match::Cmp {
            left,
            op: CmpOp::Eq,
            right,
        } => format!("{} {}", expr(fam, left), value(right)),
        Match::Cmp {
            left,
            op: CmpOp::Ne,
            right,
        } => format!("{} != {}", expr(fam, left), value(right)),
        Match::Masked { left, mask, value } => {
            format!("{} & 0x{mask:08x} == 0x{value:08x}", expr(fam, left))
        }
        Match::Lookup { key, set, negate } => {
            let op = if *negate { "!= " } else { "" };
            let set = match set {
                SetRef::Named(name) => format!("@{name}"),
                SetRef::Prefixes(nets) => {
                    format!(
                        "{{ {} }}",
                        nets.iter().map(prefix).collect::<Vec<_>>().join(", ")
                    )
                }
            };
            format!("{} {op}{set}", concat_exprs(fam, key))
        }
    }
}

fn statement(fam: Family, s: &Statement) -> String {
    match s {
        Statement::MarkOr(bits) => format!("meta mark set meta mark | 0x{bits:08x}"),
        Statement::MarkXor(bits) => format!("meta mark set meta mark ^ 0x{bits:08x}"),
        Statement::UpdateSet { set, key } => format!("update @{set} {{ {} }}", expr(fam, key)),
    }
}

fn action(fam: Family, a: &Action) -> String {
    match a {
        Action::Verdict(v) => verdict(v),
        Action::Vmap { key, map } => format!("{} vmap @{map}", concat_exprs(fam, key)),
        Action::Dnat(Dnat::To(target)) => format!("dnat to {}", socket(target)),
        Action::Dnat(Dnat::Random(targets)) => {
            let elements: Vec<String> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| format!("{i} : {} . {}", t.ip(), t.port()))
                .collect();
            format!(
                "dnat {} to numgen random mod {} map {{ {} }}",
                family(fam),
                targets.len(),
                elements.join(", ")
            )
        }
        Action::Masquerade { fully_random: true } => "masquerade fully-random".into(),
        Action::Masquerade {
            fully_random: false,
        } => "masquerade".into(),
        Action::Reject => "reject".into(),
    }
}

fn socket(target: &SocketAddr) -> String {
    match target.ip() {
        IpAddr::V4(ip) => format!("{ip}:{}", target.port()),
        IpAddr::V6(ip) => format!("[{ip}]:{}", target.port()),
    }
}

fn verdict(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Return => "return".into(),
        Verdict::Jump(chain) => format!("jump {chain}"),
        Verdict::Goto(chain) => format!("goto {chain}"),
    }
}
