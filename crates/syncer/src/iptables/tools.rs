//! Which iptables the host uses, and running its binaries.
//!
//! A node must be programmed with the backend its other components (kubelet, the CNI plugin,
//! the host firewall) use, or packets meet two rule sets in an order nobody chose. Like
//! kube-proxy's image (its `iptables-wrapper`), kproxy decides once at start: a backend whose
//! `mangle` table has kubelet's `KUBE-IPTABLES-HINT` or `KUBE-KUBELET-CANARY` chain wins;
//! otherwise the backend with more rules; a tie (a fresh node) goes to nf_tables.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use kproxy_compiler::iptables::ir::TableName;
use kproxy_model::IpFamily;

use super::IptablesError;

/// An iptables backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `iptables-nft`: rules in nf_tables, through the iptables compatibility layer.
    Nft,
    /// `iptables-legacy`: the x_tables kernel interface.
    Legacy,
    /// Plain `iptables`, when the host has no `-nft`/`-legacy` names (whatever it links to).
    Default,
}

/// The binaries of one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tools {
    /// The backend.
    pub variant: Variant,
}

impl Tools {
    /// Detects the host's backend (see the module doc).
    pub fn detect() -> Tools {
        let present = |variant| {
            Command::new(Tools { variant }.program(IpFamily::V4, "-save"))
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let (nft, legacy) = (present(Variant::Nft), present(Variant::Legacy));
        let variant = match (nft, legacy) {
            (true, true) => choose(Tools::probe(Variant::Nft), Tools::probe(Variant::Legacy)),
            (true, false) => Variant::Nft,
            (false, true) => Variant::Legacy,
            (false, false) => Variant::Default,
        };
        Tools { variant }
    }

    /// What a backend holds: (kubelet hint present, number of rules), over both families.
    fn probe(variant: Variant) -> (bool, usize) {
        let tools = Tools { variant };
        let mut hint = false;
        let mut rules = 0;
        for family in IpFamily::ALL {
            let Ok(out) = Command::new(tools.program(family, "-save")).output() else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stdout);
            hint |= text.lines().any(|l| {
                l.starts_with(":KUBE-IPTABLES-HINT") || l.starts_with(":KUBE-KUBELET-CANARY")
            });
            rules += text.lines().filter(|l| l.starts_with("-A ")).count();
        }
        (hint, rules)
    }

    /// `iptables-nft<suffix>`, `ip6tables-legacy<suffix>`, …
    pub fn program(&self, family: IpFamily, suffix: &str) -> String {
        let base = match family {
            IpFamily::V4 => "iptables",
            IpFamily::V6 => "ip6tables",
        };
        match self.variant {
            Variant::Nft => format!("{base}-nft{suffix}"),
            Variant::Legacy => format!("{base}-legacy{suffix}"),
            Variant::Default => format!("{base}{suffix}"),
        }
    }

    /// Runs `<restore> --noflush` with `input` that writes every kproxy chain of its tables
    /// (a full sync, or a cleanup): as [`restore`](Self::restore), with one cheap command added
    /// per table on the nf_tables backend.
    ///
    /// iptables-nft-restore (1.8.7 and later) records, for every command of the input, the
    /// chains it names in a list sorted by name, inserting each by a walk from the smallest, so
    /// that it can later fetch only those chains from the kernel. With thousands of chains that
    /// walk is quadratic: 2.0 of the 3.1 s that restoring 1,000 Services took, and nine minutes
    /// at 10,000. A command naming no chain makes it fetch every chain instead and stop keeping
    /// the list; `-S` (list the table's rules, written to /dev/null here) is one that changes
    /// nothing. Before any of the input's commands, it lists what the table holds. A partial
    /// restore names a few chains, whose list is cheap, and needs no fetch of everything.
    pub fn restore_full(&self, family: IpFamily, input: &str) -> Result<(), IptablesError> {
        if self.variant == Variant::Legacy {
            return self.restore(family, input);
        }
        self.restore(family, &listing_each_table(input))
    }

    /// Runs `<restore> --noflush` with `input`. Each table in the input is committed
    /// atomically; a failure leaves every table as it was.
    pub fn restore(&self, family: IpFamily, input: &str) -> Result<(), IptablesError> {
        let program = self.program(family, "-restore");
        let mut args = vec!["--noflush"];
        args.extend(self.lock_wait());
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A restore that fails early closes its end; its exit status says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        succeeded(&out, || format!("{program} {}", args.join(" ")))
    }

    /// `-w 5` on legacy backends: wait for the x_tables lock instead of failing when another
    /// writer holds it (nf_tables has no such lock).
    fn lock_wait(&self) -> &'static [&'static str] {
        if self.variant == Variant::Nft {
            &[]
        } else {
            &["-w", "5"]
        }
    }

    /// `iptables` (or `ip6tables`), waiting for the x_tables lock on legacy backends.
    fn command(&self, family: IpFamily) -> (String, Command) {
        let program = self.program(family, "");
        let mut command = Command::new(&program);
        command.args(self.lock_wait());
        (program, command)
    }

    /// Runs `iptables <args>` (or `ip6tables`); `Ok(false)` when it exits non-zero (e.g. `-C`
    /// of an absent rule).
    pub fn iptables(&self, family: IpFamily, args: &[String]) -> Result<bool, IptablesError> {
        let (program, mut command) = self.command(family);
        let status = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| IptablesError::Spawn { program, source })?;
        Ok(status.success())
    }

    /// Runs `iptables <args>` and fails with its message when it exits non-zero.
    pub fn iptables_checked(&self, family: IpFamily, args: &[String]) -> Result<(), IptablesError> {
        let (program, mut command) = self.command(family);
        let out = command
            .args(args)
            .output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        succeeded(&out, || format!("{program} {}", args.join(" ")))
    }

    /// `iptables-save -t <table>` output. A table the kernel does not have yet is empty.
    pub fn save(&self, family: IpFamily, table: TableName) -> Result<String, IptablesError> {
        let program = self.program(family, "-save");
        let out = Command::new(&program)
            .args(["-t", table.as_str()])
            .output()
            .map_err(|source| IptablesError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(IptablesError::Failed {
                command: format!("{program} -t {}", table.as_str()),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Picks a backend from the probes of nft and legacy: kubelet's hint, then more rules, then nft.
fn choose(nft: (bool, usize), legacy: (bool, usize)) -> Variant {
    match (nft.0, legacy.0) {
        (true, false) => Variant::Nft,
        (false, true) => Variant::Legacy,
        _ if legacy.1 > nft.1 => Variant::Legacy,
        _ => Variant::Nft,
    }
}

/// `Ok` when the command that gave `out` succeeded, else the error naming it (`command_line`)
/// with what it printed on stderr.
fn succeeded(out: &Output, command_line: impl FnOnce() -> String) -> Result<(), IptablesError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(IptablesError::Failed {
            command: command_line(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `input` with `-S` right after each `*table` line ([`Tools::restore_full`]).
fn listing_each_table(input: &str) -> String {
    let mut listed = String::with_capacity(input.len() + 16);
    for line in input.lines() {
        listed.push_str(line);
        listed.push('\n');
        if line.starts_with('*') {
            listed.push_str("-S\n");
        }
    }
    listed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_wins_then_the_rule_count_then_nft() {
        assert_eq!(choose((false, 500), (true, 0)), Variant::Legacy);
        assert_eq!(choose((true, 0), (false, 500)), Variant::Nft);
        assert_eq!(choose((false, 3), (false, 40)), Variant::Legacy);
        assert_eq!(choose((false, 40), (false, 3)), Variant::Nft);
        assert_eq!(choose((false, 0), (false, 0)), Variant::Nft);
        assert_eq!(choose((true, 0), (true, 9)), Variant::Legacy);
    }

    #[test]
    fn a_full_restore_lists_each_table_before_its_commands() {
        let input = "*nat\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j RETURN\nCOMMIT\n*filter\nCOMMIT\n";
        assert_eq!(
            listing_each_table(input),
            "*nat\n-S\n:KUBE-SVC-A - [0:0]\n-A KUBE-SVC-A -j RETURN\nCOMMIT\n*filter\n-S\nCOMMIT\n"
        );
    }

    #[test]
    fn program_names_follow_debians() {
        let legacy = Tools {
            variant: Variant::Legacy,
        };
        assert_eq!(
            legacy.program(IpFamily::V6, "-restore"),
            "ip6tables-legacy-restore"
        );
        let plain = Tools {
            variant: Variant::Default,
        };
        assert_eq!(plain.program(IpFamily::V4, ""), "iptables");
    }
}
