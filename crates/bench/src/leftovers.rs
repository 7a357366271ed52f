//! Namespaces an interrupted run left behind. Each measurement's namespaces are deleted when
//! it ends, also when it panics; a run killed outright (Ctrl-C kills the whole process group)
//! cannot, so the suite removes, before and after it runs, every `kproxy-bench-…` namespace
//! whose creating process is gone. testkit names namespaces `kproxy-<purpose>-<pid>-<n>`;
//! live processes' namespaces, and everyone else's, are left alone.

use std::path::Path;
use std::process::Command;

const PREFIX: &str = "kproxy-bench-";

pub fn remove() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = creator(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("bench: removing {name}, left by an interrupted run");
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
    }
}

/// The pid in `kproxy-bench-<purpose>-<pid>-<n>`.
fn creator(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    let pid = parts.next()?.parse().ok()?;
    parts.next()?;
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::creator;

    #[test]
    fn only_bench_namespaces_name_a_creator() {
        assert_eq!(creator("kproxy-bench-dp-node-4242-0"), Some(4242));
        assert_eq!(creator("kproxy-bench-cold-17-3"), Some(17));
        assert_eq!(creator("kproxy-trace-17-3"), None);
        assert_eq!(creator("kproxy-bench-17"), None);
    }
}
