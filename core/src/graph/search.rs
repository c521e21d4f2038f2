//! Searches from one incoming object, over the part of the graph it reaches.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::ObjKey;

/// The cycle that the incoming object `start`, with its (new) dependencies
/// `start_deps`, would close, if any.
///
/// `edges(k)` gives the stored dependencies of every other object (`None`:
/// object not known, a leaf). `edges(start)` is never consulted: `start`'s
/// edges are `start_deps`, which replace whatever is stored for it (an UPDATE).
///
/// Returns the path starting and ending with `start`, `[start, b, c, start]`,
/// with no other node repeated; a self-dependency is `[start, start]`.
/// Depth-first, iterative, O(reachable nodes + edges); dependencies are
/// explored in the order given, and the first cycle met in that order is
/// reported.
pub fn find_cycle_through<'a, F>(
    start: &'a ObjKey,
    start_deps: &'a [ObjKey],
    edges: F,
) -> Option<Vec<&'a ObjKey>>
where
    F: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
{
    // Nodes already explored (or on the path): none of them leads to `start`
    // without going through the path, so they are never explored twice.
    let mut seen: HashSet<&ObjKey> = HashSet::default();
    seen.insert(start);
    // The current path: each node with its dependencies and the next to visit.
    let mut path: Vec<(&ObjKey, &[ObjKey], usize)> = vec![(start, start_deps, 0)];
    while let Some(top) = path.last_mut() {
        let deps = top.1;
        let Some(next) = deps.get(top.2) else {
            path.pop();
            continue;
        };
        top.2 += 1;
        if next == start {
            let mut cycle: Vec<&ObjKey> = path.iter().map(|(k, _, _)| *k).collect();
            cycle.push(start);
            return Some(cycle);
        }
        if !seen.insert(next) {
            continue;
        }
        if let Some(next_deps) = edges(next)
            && !next_deps.is_empty()
        {
            path.push((next, next_deps, 0));
        }
    }
    None
}

/// The length, in edges, of the longest dependency chain starting at `start`
/// (0 without dependencies), for a depth limit.
///
/// `start`'s edges are `start_deps` (`edges(start)` is never consulted); an
/// unknown dependency (`edges` gives `None`) still counts as one edge.
/// Assumes no cycle goes through `start`; a cycle elsewhere cannot make it
/// loop: an edge back onto the current path is ignored, so the result is
/// always finite (a lower bound of nothing in particular in that case, but
/// such a graph is already broken). Iterative, O(reachable nodes + edges).
pub fn longest_chain<'a, F>(start: &ObjKey, start_deps: &[ObjKey], edges: F) -> usize
where
    F: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
{
    // Longest chain from each finished node.
    let mut done: HashMap<&ObjKey, usize> = HashMap::default();
    let mut on_path: HashSet<&ObjKey> = HashSet::default();
    on_path.insert(start);
    // (node, its deps, next dep to visit, longest chain found so far)
    let mut path: Vec<(&ObjKey, &[ObjKey], usize, usize)> = vec![(start, start_deps, 0, 0)];
    while let Some(top) = path.last_mut() {
        let deps = top.1;
        if let Some(next) = deps.get(top.2) {
            top.2 += 1;
            if on_path.contains(next) {
                continue; // a cycle: ignore the edge closing it
            }
            if let Some(&len) = done.get(next) {
                top.3 = top.3.max(len + 1);
                continue;
            }
            match edges(next) {
                Some(next_deps) if !next_deps.is_empty() => {
                    on_path.insert(next);
                    path.push((next, next_deps, 0, 0));
                }
                _ => {
                    done.insert(next, 0);
                    top.3 = top.3.max(1);
                }
            }
        } else {
            let (node, _, _, len) = *top;
            path.pop();
            on_path.remove(node);
            match path.last_mut() {
                Some(parent) => {
                    parent.3 = parent.3.max(len + 1);
                    done.insert(node, len);
                }
                None => return len,
            }
        }
    }
    0
}

/// As [`find_cycle_through`], searching from both ends: forward from `start_deps` over `edges`,
/// and backward from `start` over `dependents(k)` (the objects whose stored dependencies name
/// `k`), one node at a time from whichever side has less left to explore. A cycle exists
/// exactly when the two searches meet, so the work is about twice the smaller of the two
/// reaches: a new dependency on a large graph costs little when few objects depend on `start`
/// (a new object has no dependents at all). The stored edges of `start` are never used in
/// either direction. Returns a simple cycle `[start, …, start]` (not necessarily the first in
/// dependency order).
pub fn find_cycle_bidirectional<'a, F, G>(
    start: &'a ObjKey,
    start_deps: &'a [ObjKey],
    edges: F,
    dependents: G,
) -> Option<Vec<&'a ObjKey>>
where
    F: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
    G: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
{
    use std::collections::VecDeque;
    if start_deps.contains(start) {
        return Some(vec![start, start]);
    }
    // Every node either search reached, once, with how each reached it; the map (one hash per
    // step) gives a node's place, parent links are places, so the cycle is read back without
    // hashing.
    let mut nodes: Vec<Reached<'a>> = vec![Reached::new(start)];
    nodes[0].rev = Some(None);
    let mut at: HashMap<&ObjKey, u32> = HashMap::default();
    at.insert(start, 0);
    let mut place = |k: &'a ObjKey, nodes: &mut Vec<Reached<'a>>| -> usize {
        *at.entry(k).or_insert_with(|| {
            nodes.push(Reached::new(k));
            (nodes.len() - 1) as u32
        }) as usize
    };
    let (mut fwd_seen, mut rev_seen) = (0usize, 1usize);
    let mut fq: VecDeque<usize> = VecDeque::new();
    let mut rq: VecDeque<usize> = VecDeque::from([0]);
    for d in start_deps {
        let i = place(d, &mut nodes);
        if nodes[i].fwd.is_none() {
            nodes[i].fwd = Some(None);
            fwd_seen += 1;
            fq.push_back(i);
        }
    }
    loop {
        if fq.is_empty() || rq.is_empty() {
            return None;
        }
        // The smaller frontier first; on a tie, the side that has seen less.
        if (fq.len(), fwd_seen) <= (rq.len(), rev_seen) {
            let n = fq.pop_front()?;
            if n == 0 {
                continue;
            }
            for m in edges(nodes[n].key).unwrap_or(&[]) {
                let i = place(m, &mut nodes);
                if nodes[i].fwd.is_some() {
                    continue;
                }
                nodes[i].fwd = Some(Some(n as u32));
                fwd_seen += 1;
                if nodes[i].rev.is_some() {
                    return Some(meet(i, &nodes));
                }
                fq.push_back(i);
            }
        } else {
            let n = rq.pop_front()?;
            for x in dependents(nodes[n].key).unwrap_or(&[]) {
                if x == start {
                    continue; // start's stored edges are replaced by start_deps
                }
                let i = place(x, &mut nodes);
                if nodes[i].rev.is_some() {
                    continue;
                }
                nodes[i].rev = Some(Some(n as u32));
                rev_seen += 1;
                if nodes[i].fwd.is_some() {
                    return Some(meet(i, &nodes));
                }
                rq.push_back(i);
            }
        }
    }
}

/// A node reached by either search, with its parent link in each (the place of the node it was
/// reached from; `Some(None)` at a root: one of `start_deps` forward, `start` backward), `None`
/// where that search has not been.
struct Reached<'a> {
    key: &'a ObjKey,
    fwd: Option<Option<u32>>,
    rev: Option<Option<u32>>,
}

impl<'a> Reached<'a> {
    fn new(key: &'a ObjKey) -> Reached<'a> {
        Reached {
            key,
            fwd: None,
            rev: None,
        }
    }
}

/// The cycle through `start` (place 0) where the two searches met at place `x`: start → root …
/// x (the forward parent links, reversed), then x … → start (the backward ones).
fn meet<'a>(x: usize, nodes: &[Reached<'a>]) -> Vec<&'a ObjKey> {
    let link = |i: usize, fwd: bool| {
        let n = nodes.get(i)?;
        let l = if fwd { n.fwd } else { n.rev };
        l.flatten().map(|p| p as usize)
    };
    let mut head = vec![nodes[x].key];
    let mut i = x;
    while let Some(p) = link(i, true) {
        head.push(nodes[p].key);
        i = p;
    }
    head.push(nodes[0].key);
    head.reverse();
    let mut i = x;
    while let Some(p) = link(i, false) {
        head.push(nodes[p].key);
        i = p;
    }
    head
}
