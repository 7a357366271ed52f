//! Throwaway network namespaces, so tests never touch the host's rules or interfaces.
//!
//! Each namespace has a unique name and is deleted when the guard drops, including when the
//! test panics.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace owned by the test.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace, or explains why kernel tests cannot run here.
    pub fn new(purpose: &str) -> NetNs {
        require_root();
        let name = format!(
            "kproxy-{purpose}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running `ip netns add` (install iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NetNs { name }
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Kernel tests need root (CI runs as root). `KPROXY_SKIP_KERNEL_TESTS=1` skips them
/// explicitly, with a message, for unprivileged local runs.
fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        })
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string));
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "kernel tests need root and network namespaces; run as root (CI does) or set KPROXY_SKIP_KERNEL_TESTS=1"
    );
}

/// True when the caller asked to skip kernel tests.
pub fn skipped() -> bool {
    let skip = std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1");
    if skip {
        eprintln!("KPROXY_SKIP_KERNEL_TESTS=1: skipping a kernel test");
    }
    skip
}
