//! Helpers for kproxy's kernel tests, shared by every crate that programs rules.
//!
//! # Brief overview
//!
//! [`NetNs`] is a network namespace owned by one test: uniquely named, deleted when dropped
//! (also when the test panics), so tests never touch the host's rules or interfaces. Code runs
//! inside one on a thread of its own ([`NetNs::exec`], [`NetNs::spawn`]): `setns(2)` moves only
//! that thread, so tests need no helper programs.
//! [`topology`] builds a routed node with pods and external clients out of namespaces, and
//! [`traffic`] serves and sends real TCP and UDP through it.
//! [`kernel_tests_skipped`] lets an unprivileged developer skip kernel tests explicitly.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod listing;
pub mod topology;
pub mod traffic;

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use nix::sched::CloneFlags;

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

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that pins the namespace (`ip netns` convention).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> -batch -` with one `ip` command per line (no `ip` prefix, no global
    /// options; the family follows from the addresses). Panics with `ip`'s message on failure.
    pub fn ip_batch(&self, commands: &str) {
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running `ip` (install iproute2)");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(commands.as_bytes())
            .expect("writing commands to `ip -batch`");
        let out = child.wait_with_output().expect("waiting for `ip -batch`");
        assert!(
            out.status.success(),
            "ip -n {} -batch failed: {}\ncommands:\n{commands}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `f` on a new thread that has entered the namespace and returns its result (a
    /// panic in `f` is re-raised here). Sockets opened by `f` belong to the namespace.
    pub fn exec<T: Send, F: FnOnce() -> T + Send>(&self, f: F) -> T {
        let file = self.open();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                enter(&file);
                f()
            });
            match thread.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Starts `f` on a new thread inside the namespace; the thread keeps the namespace alive
    /// until it ends, so whoever spawns it must make it end (see [`traffic::Server`]).
    pub fn spawn<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        &self,
        f: F,
    ) -> JoinHandle<T> {
        let file = self.open();
        std::thread::Builder::new()
            .name(format!("in-{}", self.name))
            .spawn(move || {
                enter(&file);
                drop(file);
                f()
            })
            .expect("spawning a thread")
    }

    /// Sets a sysctl of the namespace, e.g. `sysctl("net.ipv4.ip_forward", "1")`. `/proc/sys/net`
    /// shows the namespace of the thread that opens it, so this needs no `sysctl` binary.
    pub fn sysctl(&self, key: &str, value: &str) {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        self.exec(|| {
            std::fs::write(&path, value).unwrap_or_else(|e| {
                panic!("setting {key}={value} in {}: {e}", self.name);
            });
        });
    }

    fn open(&self) -> File {
        File::open(self.path()).unwrap_or_else(|e| panic!("opening {}: {e}", self.path().display()))
    }

    /// Runs a command inside the namespace.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Runs a command inside the namespace with `input` on its standard input (for
    /// `iptables-restore`, `nft -f -`, …).
    pub fn run_with_input(&self, program: &str, args: &[&str], input: &str) -> Output {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name));
        let mut stdin = child.stdin.take().expect("piped stdin");
        // A program that exits early closes its end; its status and stderr say why.
        let _ = stdin.write_all(input.as_bytes());
        drop(stdin);
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for {program} in {}: {e}", self.name))
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

/// Moves the calling thread (only it) into the namespace pinned by `file`.
fn enter(file: &File) {
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET)
        .unwrap_or_else(|e| panic!("setns into a test namespace: {e}"));
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
