//! Mermaid and Graphviz DOT output.
//!
//! Edges point from a dependency to its dependent (`dependency --> dependent`),
//! i.e. in install order: read top-down, a node comes after everything it
//! depends on. Missing targets are drawn dashed, with a `(missing)` label;
//! nodes and edges of a dependency cycle are drawn red and thick, and each
//! cycle is named in a comment (`%% cycle: a → b → a`, `// cycle: …`).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Graph, ObjKey};

/// Every edge as (dependency, dependent, dependency is missing), sorted.
fn edges(graph: &Graph) -> Vec<(ObjKey, ObjKey, bool)> {
    let mut out: Vec<(ObjKey, ObjKey, bool)> = Vec::new();
    for (from, deps) in graph.deps.iter().enumerate() {
        for &dep in deps {
            out.push((graph.key(dep), graph.key(from), false));
        }
    }
    for (from, target) in &graph.missing {
        out.push((target.clone(), from.clone(), true));
    }
    out.sort();
    out
}

/// Each node of a cyclic component, with its component's number.
fn cycle_members(graph: &Graph) -> BTreeMap<ObjKey, usize> {
    let mut out = BTreeMap::new();
    for (c, component) in graph.cyclic_components().into_iter().enumerate() {
        for key in component {
            out.insert(key, c);
        }
    }
    out
}

/// Whether the edge `dep → dependent` lies on a cycle: both ends in one cyclic component.
fn on_cycle(members: &BTreeMap<ObjKey, usize>, dep: &ObjKey, dependent: &ObjKey) -> bool {
    matches!((members.get(dep), members.get(dependent)), (Some(a), Some(b)) if a == b)
}

fn cycle_text(cycle: &[ObjKey]) -> String {
    cycle
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Missing targets, sorted and unique.
fn missing_nodes(graph: &Graph) -> Vec<ObjKey> {
    let mut out: Vec<ObjKey> = graph.missing.iter().map(|(_, t)| t.clone()).collect();
    out.sort();
    out.dedup();
    out
}

fn mermaid_label(key: &ObjKey) -> String {
    let mut out = String::new();
    for c in key.to_string().chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '#' => out.push_str("#35;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

fn dot_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Graph {
    /// A Mermaid `flowchart TD`, edges `dependency --> dependent` (install
    /// order), missing targets dashed (`-.->`) with class `missing`, the nodes
    /// of a cycle with class `cycle` and its edges styled red. Node ids are
    /// `n<i>` (known, in key order) and `m<i>` (missing).
    pub fn to_mermaid(&self) -> String {
        let missing = missing_nodes(self);
        let members = cycle_members(self);
        let mut ids: BTreeMap<(&ObjKey, bool), String> = BTreeMap::new();
        let mut out = String::from("flowchart TD\n");
        for cycle in self.cycles() {
            let _ = writeln!(out, "    %% cycle: {}", cycle_text(&cycle));
        }
        for (i, key) in self.keys.iter().enumerate() {
            let id = format!("n{i}");
            let _ = writeln!(out, "    {id}[\"{}\"]", mermaid_label(key));
            ids.insert((key, false), id);
        }
        for (i, key) in missing.iter().enumerate() {
            let id = format!("m{i}");
            let _ = writeln!(out, "    {id}[\"{} (missing)\"]", mermaid_label(key));
            ids.insert((key, true), id);
        }
        // Mermaid numbers links in the order they are written.
        let (mut link, mut red_links) = (0usize, Vec::new());
        for (dep, dependent, is_missing) in edges(self) {
            let (Some(from), Some(to)) =
                (ids.get(&(&dep, is_missing)), ids.get(&(&dependent, false)))
            else {
                continue;
            };
            let arrow = if is_missing { "-.->" } else { "-->" };
            let _ = writeln!(out, "    {from} {arrow} {to}");
            if !is_missing && on_cycle(&members, &dep, &dependent) {
                red_links.push(link.to_string());
            }
            link += 1;
        }
        if !missing.is_empty() {
            out.push_str("    classDef missing stroke-dasharray: 5 5\n");
            let list: Vec<String> = (0..missing.len()).map(|i| format!("m{i}")).collect();
            let _ = writeln!(out, "    class {} missing", list.join(","));
        }
        if !members.is_empty() {
            out.push_str("    classDef cycle stroke:#d00,stroke-width:3px,color:#d00\n");
            let list: Vec<&str> = members
                .keys()
                .filter_map(|k| ids.get(&(k, false)).map(String::as_str))
                .collect();
            let _ = writeln!(out, "    class {} cycle", list.join(","));
        }
        if !red_links.is_empty() {
            let _ = writeln!(
                out,
                "    linkStyle {} stroke:#d00,stroke-width:3px",
                red_links.join(",")
            );
        }
        out
    }

    /// A Graphviz `digraph`, edges `"dependency" -> "dependent"` (install
    /// order), missing targets as dashed nodes labelled `(missing)`, the nodes
    /// and edges of a cycle red.
    pub fn to_dot(&self) -> String {
        let members = cycle_members(self);
        let mut out = String::from("digraph fluxdeps {\n    node [shape=box];\n");
        for cycle in self.cycles() {
            let _ = writeln!(out, "    // cycle: {}", cycle_text(&cycle));
        }
        for key in &self.keys {
            let style = if members.contains_key(key) {
                " [color=red, fontcolor=red, penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(out, "    {}{style};", dot_string(&key.to_string()));
        }
        for key in missing_nodes(self) {
            let name = key.to_string();
            let label = format!("{name} (missing)");
            let _ = writeln!(
                out,
                "    {} [style=dashed, label={}];",
                dot_string(&name),
                dot_string(&label)
            );
        }
        for (dep, dependent, is_missing) in edges(self) {
            let style = if is_missing {
                " [style=dashed]"
            } else if on_cycle(&members, &dep, &dependent) {
                " [color=red, penwidth=2]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {} -> {}{style};",
                dot_string(&dep.to_string()),
                dot_string(&dependent.to_string())
            );
        }
        out.push_str("}\n");
        out
    }
}
