//! Helpers for kproxy's kernel tests, shared by every crate that programs rules.
//!
//! # Brief overview
//!
//! [`NetNs`] is a network namespace owned by one test: uniquely named, deleted when dropped
//! (also when the test panics), so tests never touch the host's rules or interfaces.
//! [`kernel_tests_skipped`] lets an unprivileged developer skip kernel tests explicitly.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace owned by the test.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace, or panics explaining why kernel tests cannot run here.
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

    /// Loads an nft script given as text (one transaction); the error is nft's message.
    pub fn load(&self, script: &str) -> Result<(), String> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Kernel tests need root (CI runs as root); otherwise they fail with this message.
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

/// True when `KPROXY_SKIP_KERNEL_TESTS=1` asks to skip kernel tests (says so on stderr).
pub fn kernel_tests_skipped() -> bool {
    let skip = std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1");
    if skip {
        eprintln!("KPROXY_SKIP_KERNEL_TESTS=1: skipping a kernel test");
    }
    skip
}
