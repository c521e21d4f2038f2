//! The Flux `dependsOn` graph: HelmReleases depend on HelmReleases and
//! Kustomizations on Kustomizations, by `namespace/name`.
//!
//! Two kinds of use:
//! - admission time: [`find_cycle_through`] and [`longest_chain`] look only at
//!   the part of the graph reachable from the incoming object, reading the
//!   stored edges through a closure so the caller's index is never copied;
//! - offline (`check` / `graph` commands): [`Graph`] analyses a whole set of
//!   objects (cycles, missing targets, install waves, Mermaid / DOT output).
//!
//! Everything here is iterative (dependency chains may be thousands deep) and
//! deterministic.

mod render;
mod search;
mod whole;

#[cfg(test)]
mod tests;

pub use self::search::{find_cycle_bidirectional, find_cycle_through, longest_chain};
pub use self::whole::Graph;

/// A node of the graph: the object's `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> ObjKey {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjKey {
    /// `namespace/name`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
