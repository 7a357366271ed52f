//! A normalised view of `nft -j list ruleset`, to compare the rules of two namespaces.

use kproxy_compiler::ir::Family;
use kproxy_testkit::NetNs;

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
