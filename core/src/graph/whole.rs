//! Whole-graph analysis, for the offline `check` and `graph` commands.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::ObjKey;

/// A whole dependency graph, indexed once.
///
/// Nodes are kept sorted by key; an object listed more than once has the
/// union of its dependencies. Dependencies on objects not in the graph are
/// "missing": reported by [`Graph::missing`], ignored by everything else.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Known nodes, sorted and unique: a node's index is its rank.
    pub(super) keys: Vec<ObjKey>,
    /// Known dependencies of each node, by index, first-declared order, unique.
    pub(super) deps: Vec<Vec<usize>>,
    /// (from, missing target), sorted and unique.
    pub(super) missing: Vec<(ObjKey, ObjKey)>,
}

impl Graph {
    pub fn new(nodes: impl IntoIterator<Item = (ObjKey, Vec<ObjKey>)>) -> Graph {
        let mut merged: BTreeMap<ObjKey, Vec<ObjKey>> = BTreeMap::new();
        for (key, deps) in nodes {
            merged.entry(key).or_default().extend(deps);
        }
        let keys: Vec<ObjKey> = merged.keys().cloned().collect();
        let mut deps = Vec::with_capacity(keys.len());
        let mut missing = Vec::new();
        let mut unique = HashSet::new();
        for (from, targets) in &merged {
            unique.clear();
            let mut known = Vec::new();
            for target in targets {
                match keys.binary_search(target) {
                    Ok(index) => {
                        if unique.insert(index) {
                            known.push(index);
                        }
                    }
                    Err(_) => missing.push((from.clone(), target.clone())),
                }
            }
            deps.push(known);
        }
        missing.sort();
        missing.dedup();
        Graph {
            keys,
            deps,
            missing,
        }
    }

    /// The known nodes, sorted.
    pub fn nodes(&self) -> &[ObjKey] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The known dependencies of `key` (missing ones left out), in declared
    /// order; `None` if `key` is not in the graph.
    pub fn dependencies(&self, key: &ObjKey) -> Option<Vec<&ObjKey>> {
        let index = self.keys.binary_search(key).ok()?;
        let deps = self.deps.get(index)?;
        Some(deps.iter().filter_map(|&d| self.keys.get(d)).collect())
    }

    /// Every dependency on an object not in the graph: (from, missing target),
    /// sorted.
    pub fn missing(&self) -> Vec<(ObjKey, ObjKey)> {
        self.missing.clone()
    }

    /// Every cycle: one per strongly connected component of more than one
    /// node, and one per self-dependency otherwise. Each is a path `a → … → a`
    /// through the smallest node `a` of its component, a shortest such (chosen
    /// deterministically), so not necessarily through every member: see
    /// [`Graph::cyclic_components`] for those. Sorted.
    pub fn cycles(&self) -> Vec<Vec<ObjKey>> {
        let mut cycles: Vec<Vec<ObjKey>> = self
            .components()
            .iter()
            .filter_map(|component| self.cycle_in(component))
            .map(|path| path.iter().map(|&i| self.key(i)).collect())
            .collect();
        cycles.sort();
        cycles
    }

    /// The members of each component [`Graph::cycles`] reports: each sorted,
    /// and the list sorted.
    pub fn cyclic_components(&self) -> Vec<Vec<ObjKey>> {
        let mut out: Vec<Vec<ObjKey>> = self
            .components()
            .into_iter()
            .filter(|component| self.is_cyclic(component))
            .map(|component| component.iter().map(|&i| self.key(i)).collect())
            .collect();
        out.sort();
        out
    }

    /// Install order, as Kahn's topological layers: wave 0 is the nodes with
    /// no known dependency, wave n+1 those whose dependencies are all in waves
    /// up to n (so a node's wave is its longest known chain). Missing targets
    /// are ignored. Each wave sorted. `Err(self.cycles())` if there is a cycle.
    pub fn waves(&self) -> Result<Vec<Vec<ObjKey>>, Vec<Vec<ObjKey>>> {
        let n = self.keys.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut pending: Vec<usize> = Vec::with_capacity(n);
        for (node, deps) in self.deps.iter().enumerate() {
            pending.push(deps.len());
            for &dep in deps {
                if let Some(list) = dependents.get_mut(dep) {
                    list.push(node);
                }
            }
        }
        let mut current: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
        let mut waves = Vec::new();
        let mut placed = 0;
        while !current.is_empty() {
            let mut next = Vec::new();
            for &node in &current {
                for &dependent in &dependents[node] {
                    pending[dependent] -= 1;
                    if pending[dependent] == 0 {
                        next.push(dependent);
                    }
                }
            }
            next.sort_unstable();
            placed += current.len();
            waves.push(current.iter().map(|&i| self.key(i)).collect());
            current = next;
        }
        if placed < n {
            Err(self.cycles())
        } else {
            Ok(waves)
        }
    }

    pub(super) fn key(&self, index: usize) -> ObjKey {
        self.keys
            .get(index)
            .cloned()
            .unwrap_or_else(|| ObjKey::new("", ""))
    }

    fn is_cyclic(&self, component: &[usize]) -> bool {
        match component {
            [single] => self.deps[*single].contains(single),
            _ => true,
        }
    }

    /// The shortest cycle through the smallest member of `component`, as node
    /// indices (first == last), if it has one. Breadth-first, neighbours in
    /// index order, inside the component only.
    fn cycle_in(&self, component: &[usize]) -> Option<Vec<usize>> {
        let &start = component.iter().min()?;
        if component.len() == 1 {
            return self.deps[start]
                .contains(&start)
                .then(|| vec![start, start]);
        }
        let members: HashSet<usize> = component.iter().copied().collect();
        let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(node) = queue.pop_front() {
            let mut next: Vec<usize> = self.deps[node]
                .iter()
                .copied()
                .filter(|d| members.contains(d))
                .collect();
            next.sort_unstable();
            for dep in next {
                if dep == start && node != start {
                    let mut back = Vec::new();
                    let mut at = node;
                    while at != start {
                        back.push(at);
                        at = *parent.get(&at)?;
                    }
                    back.reverse();
                    let mut path = Vec::with_capacity(back.len() + 2);
                    path.push(start);
                    path.extend(back);
                    path.push(start);
                    return Some(path);
                }
                if dep != start && !parent.contains_key(&dep) {
                    parent.insert(dep, node);
                    queue.push_back(dep);
                }
            }
        }
        None
    }

    /// Strongly connected components (Tarjan, iterative), each sorted.
    fn components(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.keys.len();
        let mut index = vec![UNSEEN; n];
        let mut low = vec![0; n];
        let mut on_stack = vec![false; n];
        let mut stack: Vec<usize> = Vec::new();
        let mut calls: Vec<(usize, usize)> = Vec::new();
        let mut counter = 0;
        let mut out = Vec::new();
        for root in 0..n {
            if index[root] != UNSEEN {
                continue;
            }
            index[root] = counter;
            low[root] = counter;
            counter += 1;
            stack.push(root);
            on_stack[root] = true;
            calls.push((root, 0));
            while let Some(&(v, edge)) = calls.last() {
                if let Some(&w) = self.deps[v].get(edge) {
                    if let Some(top) = calls.last_mut() {
                        top.1 += 1;
                    }
                    if index[w] == UNSEEN {
                        index[w] = counter;
                        low[w] = counter;
                        counter += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        calls.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(index[w]);
                    }
                    continue;
                }
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    component.sort_unstable();
                    out.push(component);
                }
            }
        }
        out
    }
}
