//! A normalised `nft -j list ruleset`: what two namespaces are compared by.
//!
//! Handles differ between namespaces and element order is not meaningful, so both are
//! dropped; rules keep their position in their chain. The result is one line per object,
//! sorted, so a failing comparison prints a readable diff.

use std::collections::BTreeMap;

use crate::NetNs;

/// The namespace's ruleset as sorted JSON lines, without handles, ignoring the chains named
/// in `ignored` (family, chain): empty chains a sync flushed and the next one deletes.
pub fn normalized_ruleset(ns: &NetNs, ignored: &[(&str, &str)]) -> String {
    let out = ns.run("nft", &["-j", "list", "ruleset"]);
    assert!(
        out.status.success(),
        "nft -j list ruleset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft prints JSON");
    let mut lines = Vec::new();
    let mut rule_index = BTreeMap::new();
    for item in json["nftables"].as_array().expect("an nftables array") {
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
        if kind == "chain" && ignored.iter().any(|(f, c)| *f == family && *c == name) {
            continue;
        }
        let key = if kind == "rule" {
            let chain = body["chain"].as_str().unwrap_or_default().to_string();
            let index = rule_index
                .entry((family.clone(), chain.clone()))
                .or_insert(0usize);
            *index += 1;
            format!("{family} {chain} rule {index:06}")
        } else {
            format!("{family} {kind} {name}")
        };
        lines.push(format!("{key}: {body}"));
    }
    lines.sort();
    lines.join("\n")
}
