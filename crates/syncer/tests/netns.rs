//! Throwaway network namespaces for kernel tests (deleted on drop, also when a test panics),
//! and a normalised view of `nft -j list ruleset` to compare two kernels.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use kproxy_compiler::ir::Family;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A network namespace owned by the test.
pub struct NetNs {
    name: String,
}

impl NetNs {
    pub fn new(purpose: &str) -> NetNs {
        let name = format!(
            "kproxy-{purpose}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("running `ip netns add` (needs root and iproute2)");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        NetNs { name }
    }

    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running {program} in {}: {e}", self.name))
    }

    /// Loads an nft script from stdin (one transaction).
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
            .expect("stdin")
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

/// `KPROXY_SKIP_KERNEL_TESTS=1` skips kernel tests explicitly (CI runs them as root).
pub fn skipped() -> bool {
    let skip = std::env::var_os("KPROXY_SKIP_KERNEL_TESTS").is_some_and(|v| v == "1");
    if skip {
        eprintln!("KPROXY_SKIP_KERNEL_TESTS=1: skipping a kernel test");
    }
    skip
}

/// The ruleset as sorted JSON lines, without handles, ignoring the empty chains listed in
/// `stale` (flushed, deleted by the next transaction).
pub fn normalized_ruleset(ns: &NetNs, stale: &[(Family, String)]) -> String {
    let out = ns.run("nft", &["-j", "list", "ruleset"]);
    assert!(
        out.status.success(),
        "nft -j list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft JSON");
    let mut lines = Vec::new();
    let mut rule_index = std::collections::BTreeMap::new();
    for item in json["nftables"].as_array().expect("nftables array") {
        let Some((kind, body)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        if kind == "metainfo" {
            continue;
        }
        let mut body = body.clone();
        if let Some(obj) = body.as_object_mut() {
            obj.remove("handle");
            if let Some(elements) = obj.get_mut("elem").and_then(|e| e.as_array_mut()) {
                elements.sort_by_key(|e| e.to_string());
            }
        }
        let family = body["family"].as_str().unwrap_or_default().to_string();
        let name = body["name"].as_str().unwrap_or_default().to_string();
        if kind == "chain"
            && stale
                .iter()
                .any(|(f, c)| family == kproxy_compiler::render::nft::family(*f) && *c == name)
        {
            continue;
        }
        let key = if kind == "rule" {
            let chain = body["chain"].as_str().unwrap_or_default().to_string();
            let index = rule_index
                .entry((family.clone(), chain.clone()))
                .or_insert(0usize);
            *index += 1;
            format!("{family} {chain} rule {:06}", index)
        } else {
            format!("{family} {kind} {name}")
        };
        lines.push(format!("{key}: {body}"));
    }
    lines.sort();
    lines.join("\n")
}
