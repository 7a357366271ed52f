//! The chain graph of a ruleset as Graphviz `dot`: where a packet can go, statically.
//!
//! A trace answers "what happens to this packet"; the graph answers "what can happen at all":
//! hooks → base chains (by priority) → the chains they jump or go to → verdict maps and the
//! chains their elements name → each DNAT rule's endpoint-map window → the endpoints in it,
//! with each one's share. Like the tracer it reads the IR generically — every `jump`/`goto`,
//! every verdict-map element, every `dnat` — and recognises no rule shape, so it stays right
//! when the compiler changes. Output is deterministic (table order, then rule order).
//!
//! A [`Focus`] narrows the graph to one Service: its chains, the map elements keyed by its
//! addresses and ports (a Service without endpoints has no chain, only a `reject` element), the
//! rules that look its keys up in a named set (source ranges, undefined ports), every path from
//! a hook down to those, and everything reachable from them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::SocketAddr;

use kproxy_compiler::ir::{
    Action, ChainType, Dnat, EndpointMap, Family, Hook, Match, RejectWith, Rule, Ruleset, SetRef,
    Table, Value, Verdict,
};
use kproxy_compiler::render::nft;

use crate::Probability;

/// What to keep of the graph: the objects that belong to one Service.
///
/// It is given by the caller, who knows the Service (its chain names come from the compiler's
/// naming, its keys from its spec); the graph itself stays generic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Focus {
    /// Chains that belong to the Service (per-Service chains).
    pub chains: BTreeSet<String>,
    /// Set and map keys that belong to the Service, one value per key field: its addresses
    /// alone, `address . protocol . port` and `protocol . nodePort`. A verdict-map element with
    /// such a key, and a rule that looks such a key up in a named set, belong to the Service.
    pub keys: BTreeSet<Vec<Value>>,
}

/// The graph of every table of `ruleset` (or of the part `focus` selects) as a `dot` digraph,
/// one cluster per table.
pub fn render_dot(ruleset: &Ruleset, focus: Option<&Focus>) -> String {
    let mut out = String::from("digraph kproxy {\n");
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [shape=box, fontname=\"monospace\", fontsize=10];\n");
    out.push_str("  edge [fontname=\"monospace\", fontsize=9];\n");
    for table in &ruleset.tables {
        let graph = Graph::of(table);
        let graph = match focus {
            Some(focus) => graph.focus(table, focus),
            None => graph,
        };
        graph.write(&mut out, table);
    }
    out.push_str("}\n");
    out
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Node {
    /// A netfilter hook: where packets enter.
    Hook(HookName),
    /// A chain (base or regular), by index in the table.
    Chain(usize),
    /// A named verdict map, by index.
    Map(usize),
    /// One DNAT rule's window of an endpoint map: (map index, offset, modulus).
    Window(usize, u32, u32),
    /// An endpoint (a DNAT target).
    Endpoint(SocketAddr),
    /// Where a packet's evaluation ends (accept, drop, reject, masquerade).
    End(&'static str),
}

/// Hooks in the order packets meet them (sortable, unlike [`Hook`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum HookName {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

impl HookName {
    fn of(hook: Hook) -> HookName {
        match hook {
            Hook::Prerouting => HookName::Prerouting,
            Hook::Input => HookName::Input,
            Hook::Forward => HookName::Forward,
            Hook::Output => HookName::Output,
            Hook::Postrouting => HookName::Postrouting,
        }
    }

    fn text(self) -> &'static str {
        match self {
            HookName::Prerouting => "prerouting",
            HookName::Input => "input",
            HookName::Forward => "forward",
            HookName::Output => "output",
            HookName::Postrouting => "postrouting",
        }
    }
}

/// How an edge was made, which decides how it is drawn and filtered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EdgeKind {
    /// A hook runs a base chain.
    Hook,
    /// A rule's action (jump, goto, vmap, dnat, verdict).
    Rule,
    /// A rule's action, where the rule looks a focused key up in a named set.
    FocusedRule,
    /// A verdict-map element.
    Element,
    /// A verdict-map element with a focused key or to a focused chain.
    FocusedElement,
    /// An endpoint range of a window.
    Range,
}

/// What made one line of an edge's label.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EdgeOrigin {
    /// A hook or an endpoint range.
    Structure,
    /// The rule at this index of the edge's chain.
    Rule(usize),
    /// A verdict-map element with this key.
    Element(Vec<Value>),
}

#[derive(Debug, Clone)]
struct Edge {
    from: Node,
    to: Node,
    /// Lines of the label; edges between the same nodes are merged, labels appended.
    label: Vec<String>,
    /// What made each label line, for [`Graph::focus`].
    origins: Vec<EdgeOrigin>,
    kind: EdgeKind,
    /// `goto` (no return): drawn bold.
    goto: bool,
}

#[derive(Debug, Clone, Default)]
struct Graph {
    /// Nodes in order of first appearance.
    nodes: Vec<Node>,
    edges: Vec<Edge>,
}

impl Graph {
    fn of(table: &Table) -> Graph {
        let mut graph = Graph::default();
        // Hooks, each with its base chains in priority order (stable: equal priorities keep
        // the table's order, as the tracer does).
        let mut bases: Vec<(HookName, i32, usize)> = table
            .chains
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                c.hook
                    .map(|h| (HookName::of(h.hook), h.priority.value(), i))
            })
            .collect();
        bases.sort_by_key(|&(hook, priority, _)| (hook, priority));
        for (hook, priority, chain) in bases {
            graph.edge(
                Node::Hook(hook),
                Node::Chain(chain),
                format!("priority {priority}"),
                EdgeOrigin::Structure,
                EdgeKind::Hook,
                false,
            );
        }
        let chain_index: HashMap<&str, usize> = table
            .chains
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let map_index: HashMap<&str, usize> = table
            .maps
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        let endpoint_index: HashMap<&str, usize> = table
            .endpoint_maps
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        for (c, chain) in table.chains.iter().enumerate() {
            graph.node(Node::Chain(c));
            for (index, rule) in chain.rules.iter().enumerate() {
                let Some(action) = &rule.action else {
                    continue;
                };
                let label = format!("#{index} {}", rule_text(table.family, rule));
                let from = Node::Chain(c);
                match action {
                    Action::Verdict(verdict) => {
                        if let Some((to, goto)) = verdict_node(verdict, &chain_index) {
                            graph.edge(
                                from,
                                to,
                                label,
                                EdgeOrigin::Rule(index),
                                EdgeKind::Rule,
                                goto,
                            );
                        }
                    }
                    Action::Vmap { map, .. } => {
                        // A rule naming a missing map is the tracer's error to report; the
                        // graph shows what exists.
                        if let Some(&m) = map_index.get(map.as_str()) {
                            graph.edge(
                                from,
                                Node::Map(m),
                                label,
                                EdgeOrigin::Rule(index),
                                EdgeKind::Rule,
                                false,
                            );
                        }
                    }
                    Action::Dnat(Dnat::To(target)) => {
                        graph.edge(
                            from,
                            Node::Endpoint(*target),
                            label,
                            EdgeOrigin::Rule(index),
                            EdgeKind::Rule,
                            false,
                        );
                    }
                    Action::Dnat(Dnat::Numgen {
                        map,
                        modulus,
                        offset,
                    }) => {
                        if let Some(&m) = endpoint_index.get(map.as_str()) {
                            let window = Node::Window(m, *offset, *modulus);
                            graph.edge(
                                from,
                                window.clone(),
                                label,
                                EdgeOrigin::Rule(index),
                                EdgeKind::Rule,
                                false,
                            );
                            graph.window(window, &table.endpoint_maps[m], *offset, *modulus);
                        }
                    }
                    Action::Masquerade { .. } => {
                        graph.edge(
                            from,
                            Node::End("masquerade"),
                            label,
                            EdgeOrigin::Rule(index),
                            EdgeKind::Rule,
                            false,
                        );
                    }
                    Action::Reject(with) => {
                        let end = match with {
                            RejectWith::TcpReset => "reject with tcp reset",
                            RejectWith::PortUnreachable => "reject (port unreachable)",
                        };
                        graph.edge(
                            from,
                            Node::End(end),
                            label,
                            EdgeOrigin::Rule(index),
                            EdgeKind::Rule,
                            false,
                        );
                    }
                }
            }
        }
        for (m, map) in table.maps.iter().enumerate() {
            graph.node(Node::Map(m));
            for element in &map.elements {
                let mut key = String::new();
                let _ = nft::values(&mut key, &element.key);
                if let Some((to, goto)) = verdict_node(&element.verdict, &chain_index) {
                    let label = format!("{key} : {}", crate::eval::verdict_text(&element.verdict));
                    graph.edge(
                        Node::Map(m),
                        to,
                        label,
                        EdgeOrigin::Element(element.key.clone()),
                        EdgeKind::Element,
                        goto,
                    );
                }
            }
        }
        graph
    }

    /// The window's endpoints, each with its share of the window.
    fn window(&mut self, window: Node, map: &EndpointMap, offset: u32, modulus: u32) {
        let last = u64::from(offset) + u64::from(modulus) - 1;
        let mut shares: BTreeMap<SocketAddr, (u64, Vec<String>)> = BTreeMap::new();
        for range in &map.elements {
            let first = u64::from(range.first).max(u64::from(offset));
            let end = u64::from(range.last).min(last);
            if first > end {
                continue;
            }
            let share = shares.entry(range.target).or_default();
            share.0 += end - first + 1;
            share.1.push(format!("{first}-{end}"));
        }
        for (target, (count, ranges)) in shares {
            let p = Probability::new(u128::from(count), u128::from(modulus));
            let label = format!("{p}: {}", ranges.join(", "));
            self.edge(
                window.clone(),
                Node::Endpoint(target),
                label,
                EdgeOrigin::Structure,
                EdgeKind::Range,
                false,
            );
        }
    }

    fn node(&mut self, node: Node) {
        if !self.nodes.contains(&node) {
            self.nodes.push(node);
        }
    }

    /// Adds an edge, or a line to the label of the edge between the same nodes.
    fn edge(
        &mut self,
        from: Node,
        to: Node,
        label: String,
        origin: EdgeOrigin,
        kind: EdgeKind,
        goto: bool,
    ) {
        self.node(from.clone());
        self.node(to.clone());
        if let Some(edge) = self
            .edges
            .iter_mut()
            .find(|e| e.from == from && e.to == to && e.kind == kind && e.goto == goto)
        {
            // Several rules reach one endpoint window (a Service port's addresses each have
            // a DNAT rule for it); its endpoints' lines are the same for all of them.
            if !edge.label.contains(&label) {
                edge.label.push(label);
            }
            edge.origins.push(origin);
            return;
        }
        self.edges.push(Edge {
            from,
            to,
            label: vec![label],
            origins: vec![origin],
            kind,
            goto,
        });
    }

    /// The part of the graph that belongs to `focus` (see the module documentation).
    fn focus(mut self, table: &Table, focus: &Focus) -> Graph {
        let focus_chain = |node: &Node| match node {
            Node::Chain(c) => focus.chains.contains(&table.chains[*c].name),
            _ => false,
        };
        // Label each edge: focused or not. Map elements are kept only when focused; rules that
        // look a focused key up in a named set are focused.
        let mut edges = Vec::new();
        for mut edge in std::mem::take(&mut self.edges) {
            match edge.kind {
                EdgeKind::Element => {
                    let target_focused = focus_chain(&edge.to);
                    let (label, origins): (Vec<String>, Vec<EdgeOrigin>) = edge
                        .label
                        .into_iter()
                        .zip(edge.origins)
                        .filter(|(_, origin)| {
                            target_focused
                                || matches!(origin, EdgeOrigin::Element(key) if focus.keys.contains(key))
                        })
                        .unzip();
                    if label.is_empty() {
                        continue;
                    }
                    edge.label = label;
                    edge.origins = origins;
                    edge.kind = EdgeKind::FocusedElement;
                }
                EdgeKind::Rule => {
                    if let Node::Chain(c) = edge.from {
                        let rules = &table.chains[c].rules;
                        let focused = edge.origins.iter().any(|origin| {
                            matches!(origin, EdgeOrigin::Rule(i) if looks_up_focus(table, &rules[*i], focus))
                        });
                        if focused {
                            edge.kind = EdgeKind::FocusedRule;
                        }
                    }
                }
                EdgeKind::Hook | EdgeKind::Range => {}
                EdgeKind::FocusedRule | EdgeKind::FocusedElement => {}
            }
            edges.push(edge);
        }
        let focused = |e: &Edge| matches!(e.kind, EdgeKind::FocusedRule | EdgeKind::FocusedElement);
        let roots: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| matches!(n, Node::Hook(_)))
            .cloned()
            .collect();
        let chains: Vec<Node> = self
            .nodes
            .iter()
            .filter(|n| focus_chain(n))
            .cloned()
            .collect();
        let mut down: Vec<Node> = chains.clone();
        down.extend(edges.iter().filter(|e| focused(e)).map(|e| e.to.clone()));
        let mut up: Vec<Node> = down
            .iter()
            .filter(|n| !matches!(n, Node::End(_)))
            .cloned()
            .collect();
        up.extend(edges.iter().filter(|e| focused(e)).map(|e| e.from.clone()));
        let reached = reach(&edges, &roots, false);
        let below = reach(&edges, &down, false);
        let above = reach(&edges, &up, true);
        let on_path = |n: &Node| reached.contains(n) && above.contains(n);
        let kept: Vec<Edge> = edges
            .into_iter()
            .filter(|e| {
                (below.contains(&e.from) && below.contains(&e.to))
                    || (on_path(&e.from) && on_path(&e.to))
                    || (focused(e) && (on_path(&e.from) || below.contains(&e.from)))
            })
            .collect();
        let mut used: BTreeSet<&Node> = kept.iter().flat_map(|e| [&e.from, &e.to]).collect();
        used.extend(chains.iter());
        let nodes = self
            .nodes
            .iter()
            .filter(|n| used.contains(n))
            .cloned()
            .collect();
        Graph { nodes, edges: kept }
    }

    fn write(&self, out: &mut String, table: &Table) {
        let fam = nft::family(table.family);
        let _ = writeln!(out, "  subgraph \"cluster_{fam}\" {{");
        let _ = writeln!(out, "    label=\"table {fam} kproxy\";");
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "    {} [{}];",
                id(table, node),
                attributes(table, node)
            );
        }
        for edge in &self.edges {
            let mut attrs = vec![format!("label={}", quote(&edge.label.join("\n")))];
            if edge.goto {
                attrs.push("style=bold".to_string());
            }
            if edge.kind == EdgeKind::Hook {
                attrs.push("style=dashed".to_string());
            }
            let _ = writeln!(
                out,
                "    {} -> {} [{}];",
                id(table, &edge.from),
                id(table, &edge.to),
                attrs.join(", ")
            );
        }
        out.push_str("  }\n");
    }
}

/// True when `rule` looks a focused key up in a named set: `ip daddr . meta l4proto . th dport
/// @firewall-ips … drop` for a Service's load-balancer IP.
fn looks_up_focus(table: &Table, rule: &Rule, focus: &Focus) -> bool {
    rule.matches.iter().any(|m| match m {
        Match::Lookup {
            set: SetRef::Named(name),
            negate: false,
            ..
        } => table
            .sets
            .iter()
            .find(|s| &s.name == name)
            .is_some_and(|s| s.elements.iter().any(|e| focus.keys.contains(e))),
        _ => false,
    })
}

/// Every node reachable from `from` (following edges backwards when `reverse`), `from`
/// included.
fn reach(edges: &[Edge], from: &[Node], reverse: bool) -> BTreeSet<Node> {
    let mut seen: BTreeSet<Node> = from.iter().cloned().collect();
    let mut work: Vec<Node> = from.to_vec();
    while let Some(node) = work.pop() {
        for edge in edges {
            let (a, b) = if reverse {
                (&edge.to, &edge.from)
            } else {
                (&edge.from, &edge.to)
            };
            if *a == node && seen.insert(b.clone()) {
                work.push(b.clone());
            }
        }
    }
    seen
}

/// The node a verdict leads to, and whether it is a `goto`.
fn verdict_node(verdict: &Verdict, chains: &HashMap<&str, usize>) -> Option<(Node, bool)> {
    match verdict {
        Verdict::Jump(name) => chains.get(name.as_str()).map(|&c| (Node::Chain(c), false)),
        Verdict::Goto(name) => chains.get(name.as_str()).map(|&c| (Node::Chain(c), true)),
        Verdict::Accept => Some((Node::End("accept"), false)),
        Verdict::Drop => Some((Node::End("drop"), false)),
        // Back to the caller, which is already drawn.
        Verdict::Return => None,
    }
}

/// A rule as nft writes it, without its comment (the chain's label carries the Service).
fn rule_text(family: Family, rule: &Rule) -> String {
    let bare = Rule {
        comment: None,
        ..rule.clone()
    };
    let mut text = String::new();
    let _ = nft::rule(&mut text, family, &bare);
    text
}

/// A node's `dot` id: the family and the nft object's name, so ids read well and stay stable
/// when other objects come and go.
fn id(table: &Table, node: &Node) -> String {
    let fam = nft::family(table.family);
    let text = match node {
        Node::Hook(hook) => format!("{fam} hook {}", hook.text()),
        Node::Chain(c) => format!("{fam} chain {}", table.chains[*c].name),
        Node::Map(m) => format!("{fam} map {}", table.maps[*m].name),
        Node::Window(m, offset, _) => {
            format!("{fam} window {} {offset}", table.endpoint_maps[*m].name)
        }
        Node::Endpoint(target) => format!("{fam} endpoint {target}"),
        Node::End(end) => format!("{fam} end {end}"),
    };
    quote(&text)
}

/// A node's `dot` attributes: its shape and a label naming the nft object.
fn attributes(table: &Table, node: &Node) -> String {
    let (shape, label) = match node {
        Node::Hook(hook) => ("cds", format!("hook {}", hook.text())),
        Node::Chain(c) => {
            let chain = &table.chains[*c];
            let mut label = format!("chain {}", chain.name);
            if let Some(hook) = chain.hook {
                let kind = match hook.kind {
                    ChainType::Filter => "filter",
                    ChainType::Nat => "nat",
                };
                let _ = write!(
                    label,
                    "\ntype {kind} hook {} priority {}",
                    HookName::of(hook.hook).text(),
                    hook.priority.value()
                );
            }
            if let Some(comment) = &chain.comment {
                let _ = write!(label, "\n\"{comment}\"");
            }
            let shape = if chain.hook.is_some() { "box3d" } else { "box" };
            (shape, label)
        }
        Node::Map(m) => {
            let map = &table.maps[*m];
            let mut label = format!("map @{}", map.name);
            if let Some(comment) = &map.comment {
                let _ = write!(label, "\n\"{comment}\"");
            }
            ("folder", label)
        }
        Node::Window(m, offset, modulus) => {
            let map = &table.endpoint_maps[*m];
            let last = u64::from(*offset) + u64::from(*modulus) - 1;
            (
                "cylinder",
                format!("map @{}\nwindow {offset}-{last}", map.name),
            )
        }
        Node::Endpoint(target) => ("ellipse", target.to_string()),
        Node::End(end) => ("octagon", (*end).to_string()),
    };
    format!("shape={shape}, label={}", quote(&label))
}

/// Quotes a `dot` string: backslashes and quotes escaped, newlines as `\n`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
