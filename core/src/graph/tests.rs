use std::collections::{HashMap, HashSet, VecDeque};

use proptest::prelude::*;

use super::{Graph, ObjKey, find_cycle_bidirectional, find_cycle_through, longest_chain};

fn owned(v: Vec<&ObjKey>) -> Vec<ObjKey> {
    v.into_iter().cloned().collect()
}

fn refs(v: &[ObjKey]) -> Vec<&ObjKey> {
    v.iter().collect()
}

fn k(name: &str) -> ObjKey {
    ObjKey::new("flux-system", name)
}

fn ks(names: &[&str]) -> Vec<ObjKey> {
    names.iter().map(|n| k(n)).collect()
}

/// A stored index: name → deps.
fn index(edges: &[(&str, &[&str])]) -> HashMap<ObjKey, Vec<ObjKey>> {
    edges.iter().map(|(n, d)| (k(n), ks(d))).collect()
}

fn lookup<'a>(
    idx: &'a HashMap<ObjKey, Vec<ObjKey>>,
) -> impl Fn(&ObjKey) -> Option<&'a [ObjKey]> + 'a {
    move |key| idx.get(key).map(Vec::as_slice)
}

#[test]
fn display_is_namespace_slash_name() {
    assert_eq!(k("app").to_string(), "flux-system/app");
}

#[test]
fn self_loop_is_a_cycle() {
    let idx = index(&[]);
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["a"]), lookup(&idx)),
        Some(refs(&ks(&["a", "a"])))
    );
    let g = Graph::new([(k("a"), ks(&["a"]))]);
    assert_eq!(g.cycles(), vec![ks(&["a", "a"])]);
    assert_eq!(g.waves(), Err(vec![ks(&["a", "a"])]));
}

#[test]
fn two_and_three_cycles() {
    let idx = index(&[("b", &["a"])]);
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["b"]), lookup(&idx)),
        Some(refs(&ks(&["a", "b", "a"])))
    );
    let idx = index(&[("b", &["c"]), ("c", &["a"])]);
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["b"]), lookup(&idx)),
        Some(refs(&ks(&["a", "b", "c", "a"])))
    );
    let g = Graph::new([
        (k("a"), ks(&["b"])),
        (k("b"), ks(&["c"])),
        (k("c"), ks(&["a"])),
    ]);
    assert_eq!(g.cycles(), vec![ks(&["a", "b", "c", "a"])]);
    assert_eq!(g.cyclic_components(), vec![ks(&["a", "b", "c"])]);
    assert!(g.waves().is_err());
}

#[test]
fn update_closing_a_cycle_in_a_three_chain() {
    // Stored: a -> b -> c. UPDATE c to depend on a.
    let idx = index(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]);
    assert_eq!(
        find_cycle_through(&k("c"), &ks(&["a"]), lookup(&idx)),
        Some(refs(&ks(&["c", "a", "b", "c"])))
    );
    // The stored (old) edges of c are never used: c's new deps are acyclic.
    let idx = index(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
    assert_eq!(find_cycle_through(&k("c"), &ks(&["x"]), lookup(&idx)), None);
}

#[test]
fn first_cycle_in_dependency_order_is_reported() {
    let idx = index(&[("b", &["a"]), ("c", &["d"]), ("d", &["a"])]);
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["c", "b"]), lookup(&idx)),
        Some(refs(&ks(&["a", "c", "d", "a"])))
    );
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["b", "c"]), lookup(&idx)),
        Some(refs(&ks(&["a", "b", "a"])))
    );
}

#[test]
fn diamond_is_not_a_cycle() {
    let idx = index(&[("b", &["d"]), ("c", &["d"]), ("d", &[])]);
    assert_eq!(
        find_cycle_through(&k("a"), &ks(&["b", "c"]), lookup(&idx)),
        None
    );
    assert_eq!(longest_chain(&k("a"), &ks(&["b", "c"]), lookup(&idx)), 2);
    let g = Graph::new([
        (k("a"), ks(&["b", "c"])),
        (k("b"), ks(&["d"])),
        (k("c"), ks(&["d"])),
        (k("d"), vec![]),
    ]);
    assert!(g.cycles().is_empty());
    assert_eq!(g.waves(), Ok(vec![ks(&["d"]), ks(&["b", "c"]), ks(&["a"])]));
}

#[test]
fn long_chain_without_stack_overflow() {
    let n = 10_000;
    let keys: Vec<ObjKey> = (0..n).map(|i| k(&format!("n{i}"))).collect();
    // n{i} depends on n{i+1}; the last has no deps.
    let idx: HashMap<ObjKey, Vec<ObjKey>> = (0..n)
        .map(|i| {
            (
                keys[i].clone(),
                keys.get(i + 1).cloned().into_iter().collect(),
            )
        })
        .collect();
    let start = k("new");
    assert_eq!(find_cycle_through(&start, &keys[..1], lookup(&idx)), None);
    assert_eq!(longest_chain(&start, &keys[..1], lookup(&idx)), n);
    // The last one depending on the first closes a 10,000-node cycle.
    let cycle = find_cycle_through(&keys[n - 1], &keys[..1], lookup(&idx)).unwrap_or_default();
    assert_eq!(cycle.len(), n + 1);
    let mut nodes: Vec<(ObjKey, Vec<ObjKey>)> = idx.clone().into_iter().collect();
    nodes.push((start.clone(), keys[..1].to_vec()));
    let g = Graph::new(nodes.clone());
    assert!(g.cycles().is_empty());
    assert_eq!(g.waves().map(|w| w.len()), Ok(n + 1));
    nodes.push((keys[n - 1].clone(), keys[..1].to_vec()));
    let g = Graph::new(nodes);
    assert_eq!(g.cycles().first().map(Vec::len), Some(n + 1));
}

#[test]
fn longest_chain_terminates_on_cycles_elsewhere() {
    let idx = index(&[("b", &["c"]), ("c", &["b", "d"]), ("d", &[])]);
    let len = longest_chain(&k("a"), &ks(&["b"]), lookup(&idx));
    assert!((2..=3).contains(&len), "{len}");
    assert_eq!(longest_chain(&k("a"), &[], lookup(&idx)), 0);
    // Unknown deps count as one edge.
    assert_eq!(longest_chain(&k("a"), &ks(&["zz"]), lookup(&idx)), 1);
}

fn tiered() -> Graph {
    Graph::new([
        (k("frontend"), ks(&["api"])),
        (k("api"), ks(&["database", "cache"])),
        (k("cache"), ks(&["database"])),
        (k("database"), vec![]),
        (k("monitoring"), vec![]),
        (k("kyverno"), vec![]),
    ])
}

#[test]
fn waves_of_the_tiered_scenario() {
    let waves = tiered().waves();
    let want = vec![
        ks(&["database", "kyverno", "monitoring"]),
        ks(&["cache"]),
        ks(&["api"]),
        ks(&["frontend"]),
    ];
    assert_eq!(waves, Ok(want));
}

#[test]
fn missing_targets_are_reported_and_ignored() {
    let g = Graph::new([
        (k("app"), ks(&["db", "ghost"])),
        (k("db"), ks(&["ghost"])),
        (k("app"), ks(&["ghost", "db"])),
    ]);
    assert_eq!(
        g.missing(),
        vec![(k("app"), k("ghost")), (k("db"), k("ghost"))]
    );
    assert_eq!(g.waves(), Ok(vec![ks(&["db"]), ks(&["app"])]));
    assert_eq!(g.dependencies(&k("app")), Some(vec![&k("db")]));
    assert_eq!(g.dependencies(&k("ghost")), None);
}

#[test]
fn cycles_report_each_component_and_self_loops() {
    let g = Graph::new([
        (k("a"), ks(&["b"])),
        (k("b"), ks(&["a", "b"])),
        (k("x"), ks(&["x"])),
        (k("y"), ks(&["a"])),
    ]);
    assert_eq!(g.cycles(), vec![ks(&["a", "b", "a"]), ks(&["x", "x"])]);
    assert_eq!(g.cyclic_components(), vec![ks(&["a", "b"]), ks(&["x"])]);
}

#[test]
fn mermaid_and_dot_draw_install_order() {
    let g = Graph::new([(k("app"), ks(&["db", "ghost"])), (k("db"), vec![])]);
    let mermaid = g.to_mermaid();
    let want = "flowchart TD\n    n0[\"flux-system/app\"]\n    n1[\"flux-system/db\"]\n    \
                m0[\"flux-system/ghost (missing)\"]\n    n1 --> n0\n    m0 -.-> n0\n    \
                classDef missing stroke-dasharray: 5 5\n    class m0 missing\n";
    assert_eq!(mermaid, want);
    let dot = g.to_dot();
    assert!(dot.starts_with("digraph fluxdeps {\n"), "{dot}");
    assert!(
        dot.contains("    \"flux-system/db\" -> \"flux-system/app\";\n"),
        "{dot}"
    );
    assert!(
        dot.contains("\"flux-system/ghost\" [style=dashed, label=\"flux-system/ghost (missing)\"]")
    );
    assert!(dot.contains("\"flux-system/ghost\" -> \"flux-system/app\" [style=dashed];"));
    assert!(dot.ends_with("}\n"));
    let odd = Graph::new([(ObjKey::new("a\"b", "c\\d"), vec![])]);
    assert!(odd.to_dot().contains("\"a\\\"b/c\\\\d\";"));
    assert!(odd.to_mermaid().contains("n0[\"a#quot;b/c\\d\"]"));
}

/// A cycle is marked in both drawings: its nodes and edges red, the cycle named in a comment;
/// an edge into the cycle from outside it is not red.
#[test]
fn mermaid_and_dot_mark_cycles() {
    let g = Graph::new([
        (k("a"), ks(&["b"])),
        (k("b"), ks(&["a"])),
        (k("c"), ks(&["a"])),
    ]);
    let mermaid = g.to_mermaid();
    let want = "flowchart TD\n    %% cycle: flux-system/a → flux-system/b → flux-system/a\n    \
                n0[\"flux-system/a\"]\n    n1[\"flux-system/b\"]\n    n2[\"flux-system/c\"]\n    \
                n0 --> n1\n    n0 --> n2\n    n1 --> n0\n    \
                classDef cycle stroke:#d00,stroke-width:3px,color:#d00\n    class n0,n1 cycle\n    \
                linkStyle 0,2 stroke:#d00,stroke-width:3px\n";
    assert_eq!(mermaid, want);
    let dot = g.to_dot();
    assert!(
        dot.contains("    // cycle: flux-system/a → flux-system/b → flux-system/a\n"),
        "{dot}"
    );
    assert!(
        dot.contains("    \"flux-system/a\" [color=red, fontcolor=red, penwidth=2];\n"),
        "{dot}"
    );
    assert!(dot.contains("    \"flux-system/c\";\n"), "{dot}");
    assert!(
        dot.contains("    \"flux-system/a\" -> \"flux-system/b\" [color=red, penwidth=2];\n"),
        "{dot}"
    );
    assert!(
        dot.contains("    \"flux-system/b\" -> \"flux-system/a\" [color=red, penwidth=2];\n"),
        "{dot}"
    );
    assert!(
        dot.contains("    \"flux-system/a\" -> \"flux-system/c\";\n"),
        "{dot}"
    );
    // Without a cycle nothing is red.
    let dag = Graph::new([(k("a"), ks(&["b"])), (k("b"), vec![])]);
    assert!(!dag.to_mermaid().contains("cycle") && !dag.to_dot().contains("red"));
}

/// Random DAG: node i depends only on nodes j < i.
fn dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (1usize..30).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                proptest::collection::vec(0..i.max(1), 0..4)
                    .prop_map(move |d| if i == 0 { vec![] } else { d })
            })
            .collect::<Vec<_>>()
    })
}

fn reaches(deps: &[Vec<usize>], from: usize, to: usize) -> bool {
    let mut seen = HashSet::from([from]);
    let mut queue = VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            return true;
        }
        for &d in &deps[n] {
            if seen.insert(d) {
                queue.push_back(d);
            }
        }
    }
    false
}

fn longest(deps: &[Vec<usize>], n: usize) -> usize {
    // Nodes only depend on lower indices: compute bottom-up.
    let mut len = vec![0; deps.len()];
    for i in 0..deps.len() {
        len[i] = deps[i].iter().map(|&d| len[d] + 1).max().unwrap_or(0);
    }
    len[n]
}

proptest! {
    #[test]
    fn cycle_reported_exactly_when_new_edge_closes_one(deps in dag(), u in 0usize..30, v in 0usize..30) {
        let n = deps.len();
        let (u, v) = (u % n, v % n);
        let key = |i: usize| ObjKey::new("ns", format!("n{i}"));
        let idx: HashMap<ObjKey, Vec<ObjKey>> =
            (0..n).map(|i| (key(i), deps[i].iter().map(|&d| key(d)).collect())).collect();
        let mut new_deps: Vec<ObjKey> = idx[&key(u)].clone();
        new_deps.push(key(v));
        let found = find_cycle_through(&key(u), &new_deps, lookup(&idx)).map(owned);
        prop_assert_eq!(found.is_some(), reaches(&deps, v, u));
        if let Some(path) = found {
            prop_assert!(path.len() >= 2);
            prop_assert_eq!(path.first(), Some(&key(u)));
            prop_assert_eq!(path.last(), Some(&key(u)));
            let inner: HashSet<&ObjKey> = path[..path.len() - 1].iter().collect();
            prop_assert_eq!(inner.len(), path.len() - 1, "simple cycle");
            for pair in path.windows(2) {
                let out = if pair[0] == key(u) { &new_deps } else { &idx[&pair[0]] };
                prop_assert!(out.contains(&pair[1]), "{} -> {} is not an edge", pair[0], pair[1]);
            }
        }
        // Without the new edge the DAG has no cycle, and the chain length is exact.
        prop_assert!(find_cycle_through(&key(u), &idx[&key(u)], lookup(&idx)).is_none());
        prop_assert_eq!(longest_chain(&key(u), &idx[&key(u)], lookup(&idx)), longest(&deps, u));
    }

    #[test]
    fn whole_graph_of_a_dag_has_waves_by_longest_chain(deps in dag()) {
        let key = |i: usize| ObjKey::new("ns", format!("n{i:03}"));
        let g = Graph::new((0..deps.len()).map(|i| (key(i), deps[i].iter().map(|&d| key(d)).collect())));
        prop_assert!(g.cycles().is_empty());
        let waves = g.waves();
        prop_assert!(waves.is_ok());
        for (w, wave) in waves.unwrap_or_default().iter().enumerate() {
            for node in wave {
                let i: usize = node.name[1..].parse().unwrap_or(usize::MAX);
                prop_assert_eq!(longest(&deps, i), w);
            }
        }
    }
}

/// The reverse index: who depends on each node.
fn reverse(idx: &HashMap<ObjKey, Vec<ObjKey>>) -> HashMap<ObjKey, Vec<ObjKey>> {
    let mut rev: HashMap<ObjKey, Vec<ObjKey>> = HashMap::new();
    for (from, deps) in idx {
        for d in deps {
            rev.entry(d.clone()).or_default().push(from.clone());
        }
    }
    rev
}

fn assert_real_cycle(
    path: &[ObjKey],
    start: &ObjKey,
    start_deps: &[ObjKey],
    idx: &HashMap<ObjKey, Vec<ObjKey>>,
) {
    assert!(path.len() >= 2);
    assert_eq!(path.first(), Some(start));
    assert_eq!(path.last(), Some(start));
    let inner: HashSet<&ObjKey> = path[..path.len() - 1].iter().collect();
    assert_eq!(inner.len(), path.len() - 1, "simple cycle: {path:?}");
    for pair in path.windows(2) {
        let out = if &pair[0] == start {
            start_deps
        } else {
            &idx[&pair[0]]
        };
        assert!(
            out.contains(&pair[1]),
            "{} -> {} is not an edge",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn bidirectional_finds_the_update_that_closes_a_cycle_and_ignores_stale_edges() {
    // database → (nothing); api → database; frontend → api. UPDATE database → frontend.
    let idx = index(&[
        ("database", &["frontend"]),
        ("api", &["database"]),
        ("frontend", &["api"]),
    ]);
    let rev = reverse(&idx);
    let start = k("database");
    let deps = ks(&["frontend"]);
    let path = find_cycle_bidirectional(&start, &deps, lookup(&idx), lookup(&rev)).unwrap();
    assert_eq!(
        path,
        refs(&ks(&["database", "frontend", "api", "database"]))
    );
    // The stored (old) edge database → frontend must not count when the update removes it.
    assert_eq!(
        find_cycle_bidirectional(&start, &[], lookup(&idx), lookup(&rev)),
        None
    );
    assert_eq!(
        find_cycle_bidirectional(&start, &ks(&["cache"]), lookup(&idx), lookup(&rev)),
        None
    );
    // Self-dependency.
    assert_eq!(
        find_cycle_bidirectional(&start, &ks(&["database"]), lookup(&idx), lookup(&rev)),
        Some(refs(&ks(&["database", "database"])))
    );
}

proptest! {
    #[test]
    fn bidirectional_agrees_with_reachability(deps in dag(), u in 0usize..30, v in 0usize..30, extra in 0usize..30) {
        let n = deps.len();
        let (u, v, extra) = (u % n, v % n, extra % n);
        let key = |i: usize| ObjKey::new("ns", format!("n{i}"));
        let idx: HashMap<ObjKey, Vec<ObjKey>> =
            (0..n).map(|i| (key(i), deps[i].iter().map(|&d| key(d)).collect())).collect();
        // The stored graph may even hold a stale edge of u's (extra) that the update drops.
        let mut stored = idx.clone();
        stored.entry(key(u)).or_default().push(key(extra));
        let rev = reverse(&stored);
        let mut new_deps: Vec<ObjKey> = idx[&key(u)].clone();
        new_deps.push(key(v));
        let found =
            find_cycle_bidirectional(&key(u), &new_deps, lookup(&stored), lookup(&rev)).map(owned);
        // Ground truth: the graph with u's edges replaced by new_deps.
        let mut truth = deps.clone();
        truth[u].push(v);
        let closes = truth[u].iter().any(|&d| d == u || reaches(&truth, d, u));
        prop_assert_eq!(found.is_some(), closes);
        if let Some(path) = found {
            assert_real_cycle(&path, &key(u), &new_deps, &idx);
        }
        prop_assert_eq!(
            find_cycle_bidirectional(&key(u), &idx[&key(u)], lookup(&stored), lookup(&rev)).is_some(),
            find_cycle_through(&key(u), &idx[&key(u)], lookup(&stored)).is_some()
        );
    }
}
