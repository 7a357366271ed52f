//! The IR as `iptables-restore` input, and as argument lists for `iptables -C`/`-I`.
//!
//! [`rule_args`] is the one place that spells a rule; restore lines quote its arguments, the
//! syncer passes them to `iptables` unquoted, so the two can never disagree.

use std::fmt::Write as _;

use ipnet::IpNet;
use kproxy_model::IpFamily;

use super::ir::{Chain, FamilyRules, Hook, Match, RejectWith, Rule, Ruleset, TableName, Target};

/// The restore binary of a family.
pub fn restore_binary(family: IpFamily) -> &'static str {
    match family {
        IpFamily::V4 => "iptables-restore",
        IpFamily::V6 => "ip6tables-restore",
    }
}

/// The header line that starts a family's section in [`ruleset`]'s output. It is a comment,
/// which `iptables-restore` skips, and tools split the output on it.
pub fn family_header(family: IpFamily) -> String {
    format!("# {} --noflush ({family})", restore_binary(family))
}

/// Every family: a [`family_header`], the built-in chain rules as comments, then the full
/// restore input. What `kproxy dry-run --proxy-mode iptables` prints.
pub fn ruleset(ruleset: &Ruleset) -> String {
    let mut out = String::new();
    for family in &ruleset.families {
        let _ = writeln!(out, "{}", family_header(family.family));
        out.push_str("# rules kept in built-in chains (checked with -C, inserted with -I):\n");
        for hook in &family.hooks {
            let _ = writeln!(out, "#   {}", hook_line(hook));
        }
        out.push_str(&full(family));
    }
    out
}

/// One family's restore input, every chain declared and written (a full sync with nothing
/// stale).
pub fn full(family: &FamilyRules) -> String {
    let mut out = String::new();
    for table in &family.tables {
        let chains: Vec<&Chain> = table.chains.iter().collect();
        table_text(table.name, &chains, &[], &mut out);
    }
    out
}

/// One table's restore input that flushes and deletes `chains` and writes nothing else
/// (`kproxy cleanup`), declared in the same order as every other input ([`table_text`]).
pub fn deletion(table: TableName, chains: &[String], out: &mut String) {
    table_text(table, &[], chains, out);
}

/// Writes `*table`, the declarations of `chains` and of the `stale` ones (which creates or
/// flushes them), the rules of `chains`, deletions of the `stale` chains, and `COMMIT`. Every
/// declaration comes before any rule, so a rule may jump to a chain declared after its own,
/// and every `-X` comes last, after every rule that jumped to the chain was rewritten.
///
/// Declarations come in descending name order. The nf_tables backend of `iptables-restore`
/// (1.8.7 and later) keeps its chain cache sorted by name and inserts each new chain by
/// walking that list from the smallest name to the first one not smaller: declared in
/// ascending order, every chain walks the whole list, quadratic in the number of chains (8.2 s
/// of a 1,000-Service restore was that walk's `strcmp`); declared in descending order, every
/// chain stops at the first entry. The legacy backend does not care (measured the same).
pub(crate) fn table_text(table: TableName, chains: &[&Chain], stale: &[String], out: &mut String) {
    let _ = writeln!(out, "*{}", table.as_str());
    let mut declared: Vec<&str> = chains
        .iter()
        .map(|chain| chain.name.as_str())
        .chain(stale.iter().map(String::as_str))
        .collect();
    declared.sort_unstable_by(|a, b| b.cmp(a));
    for name in declared {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for chain in chains {
        for rule in &chain.rules {
            out.push_str(&rule_line(&chain.name, rule));
            out.push('\n');
        }
    }
    for name in stale {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
}

/// `-A CHAIN args…`, quoted for `iptables-restore`.
pub fn rule_line(chain: &str, rule: &Rule) -> String {
    let mut line = format!("-A {chain}");
    for arg in rule_args(rule) {
        line.push(' ');
        line.push_str(&quote(&arg));
    }
    line
}

/// `-t table -A CHAIN args…`, as a person would type it.
pub fn hook_line(hook: &Hook) -> String {
    format!(
        "-t {} {}",
        hook.table.as_str(),
        rule_line(hook.chain.as_str(), &hook.rule)
    )
}

fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./:,[]!".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        arg.to_string()
    } else {
        format!("\"{arg}\"")
    }
}

/// A rule's arguments after the chain: comment, matches in order, target.
pub fn rule_args(rule: &Rule) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut push = |parts: &[&str]| args.extend(parts.iter().map(|p| (*p).to_string()));
    if let Some(comment) = &rule.comment {
        push(&["-m", "comment", "--comment", comment]);
    }
    for m in &rule.matches {
        match m {
            Match::Source { net, negate } => {
                if *negate {
                    push(&["!"]);
                }
                push(&["-s", &address(net)]);
            }
            Match::Destination { net, negate } => {
                if *negate {
                    push(&["!"]);
                }
                push(&["-d", &address(net)]);
            }
            Match::Protocol { protocol, dport } => {
                let p = protocol.as_str();
                push(&["-m", p, "-p", p]);
                if let Some(port) = dport {
                    push(&["--dport", &port.to_string()]);
                }
            }
            Match::AddrTypeLocal { source, negate } => {
                push(&["-m", "addrtype"]);
                if *negate {
                    push(&["!"]);
                }
                push(&[if *source { "--src-type" } else { "--dst-type" }, "LOCAL"]);
            }
            Match::Mark {
                value,
                mask,
                negate,
            } => {
                push(&["-m", "mark"]);
                if *negate {
                    push(&["!"]);
                }
                push(&["--mark", &format!("{value:#x}/{mask:#x}")]);
            }
            Match::CtState(states) => {
                let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
                push(&["-m", "conntrack", "--ctstate", &states.join(",")]);
            }
            Match::RandomOneIn(n) => push(&[
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability(*n),
            ]),
            Match::RecentCheck { name, seconds } => push(&[
                "-m",
                "recent",
                "--name",
                name,
                "--rcheck",
                "--seconds",
                &seconds.to_string(),
                "--reap",
            ]),
            Match::RecentSet { name } => push(&["-m", "recent", "--name", name, "--set"]),
        }
    }
    match &rule.target {
        Target::Jump(chain) => push(&["-j", chain]),
        Target::Return => push(&["-j", "RETURN"]),
        Target::Accept => push(&["-j", "ACCEPT"]),
        Target::Drop => push(&["-j", "DROP"]),
        Target::Reject(RejectWith::PortUnreachable) => push(&["-j", "REJECT"]),
        Target::Reject(RejectWith::TcpReset) => {
            push(&["-j", "REJECT", "--reject-with", "tcp-reset"]);
        }
        Target::Dnat(to) => push(&["-j", "DNAT", "--to-destination", &to.to_string()]),
        Target::Masquerade { random_fully } => {
            push(&["-j", "MASQUERADE"]);
            if *random_fully {
                push(&["--random-fully"]);
            }
        }
        Target::MarkOr(bits) => push(&["-j", "MARK", "--or-mark", &format!("{bits:#x}")]),
        Target::MarkXor(bits) => push(&["-j", "MARK", "--xor-mark", &format!("{bits:#x}")]),
    }
    args
}

/// `1/n` with 10 decimals, as kube-proxy writes it (`%0.10f`).
pub fn probability(n: u32) -> String {
    format!("{:.10}", 1.0 / f64::from(n.max(1)))
}

/// A host address without its prefix length, a network with it.
fn address(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_have_ten_decimals() {
        assert_eq!(probability(2), "0.5000000000");
        assert_eq!(probability(3), "0.3333333333");
        assert_eq!(probability(6), "0.1666666667");
        assert_eq!(probability(1000), "0.0010000000");
    }

    #[test]
    fn arguments_with_spaces_are_quoted_once() {
        let rule = Rule::to(Target::Jump("KUBE-SVC-X".into()))
            .when([Match::port(kproxy_model::Protocol::Udp, 53)])
            .comment("kube-system/kube-dns:dns cluster IP");
        assert_eq!(
            rule_line("KUBE-SERVICES", &rule),
            "-A KUBE-SERVICES -m comment --comment \"kube-system/kube-dns:dns cluster IP\" -m udp -p udp --dport 53 -j KUBE-SVC-X"
        );
        assert_eq!(rule_args(&rule)[3], "kube-system/kube-dns:dns cluster IP");
    }
}
