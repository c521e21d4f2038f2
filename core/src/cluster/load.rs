//! Filling the view from a directory of manifests (the offline source).

use super::ClusterView;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: document {doc}: not valid YAML/JSON: {message}")]
    Parse {
        path: PathBuf,
        doc: usize,
        message: String,
    },
}

/// Every `*.yaml`, `*.yml` and `*.json` file under `dir` (recursively, sorted by path).
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| LoadError::Io {
            path: d.clone(),
            error: source,
        })?;
        for entry in rd {
            let entry = entry.map_err(|source| LoadError::Io {
                path: d.clone(),
                error: source,
            })?;
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue; // .git, and the kubelet's ..data staging directories
            }
            if path.is_dir() {
                stack.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parses every document of a file (multi-document YAML, JSON, `List` kinds flattened).
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<Value>, LoadError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| LoadError::Parse {
            path: path.to_path_buf(),
            doc: i + 1,
            message: e.to_string(),
        })?;
        flatten_into(v, &mut out);
    }
    Ok(out)
}

fn flatten_into(v: Value, out: &mut Vec<Value>) {
    match v {
        Value::Null => {}
        Value::Object(mut m) => {
            let is_list = m
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k == "List" || k.ends_with("List"));
            if is_list {
                if let Some(Value::Array(items)) = m.remove("items") {
                    for item in items {
                        flatten_into(item, out);
                    }
                }
            } else {
                out.push(Value::Object(m));
            }
        }
        _ => {}
    }
}

/// Loads every manifest under the directories into one view. Files are parsed in parallel;
/// they are applied in path order, so a later file wins for the same object.
pub fn load_dir(dirs: &[PathBuf]) -> Result<ClusterView, LoadError> {
    let mut files = Vec::new();
    for d in dirs {
        files.extend(manifest_files(d)?);
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .max(1);
    let chunk = files.len().div_ceil(threads).max(1);
    let parts: Vec<Result<ClusterView, LoadError>> = std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut view = ClusterView::default();
                    for path in part {
                        let text =
                            std::fs::read_to_string(path).map_err(|source| LoadError::Io {
                                path: path.clone(),
                                error: source,
                            })?;
                        for obj in parse_manifests(path, &text)? {
                            view.add_manifest(&obj);
                        }
                    }
                    Ok(view)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(LoadError::Parse {
                        path: PathBuf::new(),
                        doc: 0,
                        message: "loader thread panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut view = ClusterView::default();
    for part in parts {
        view.merge(part?);
    }
    Ok(view)
}

impl ClusterView {
    /// Moves every object of `other` into `self`; `other` wins on conflicts.
    pub fn merge(&mut self, other: ClusterView) {
        fn merge_index<T>(into: &mut super::Index<T>, from: super::Index<T>) {
            for (ns, names) in from.by_ns {
                for (name, v) in names {
                    into.insert(&ns, &name, v);
                }
            }
        }
        use std::sync::Arc;
        /// Moves `from`'s entries into `into` (copied first only if either is shared).
        fn merge_into<T: Clone>(into: &mut Arc<super::Index<T>>, from: Arc<super::Index<T>>) {
            merge_index(Arc::make_mut(into), Arc::unwrap_or_clone(from));
        }
        merge_into(&mut self.helm_releases, other.helm_releases);
        merge_into(&mut self.kustomizations, other.kustomizations);
        self.rebuild_dependents(super::FluxKind::HelmRelease);
        self.rebuild_dependents(super::FluxKind::Kustomization);
        merge_into(&mut self.service_accounts, other.service_accounts);
        merge_into(&mut self.secrets, other.secrets);
        merge_into(&mut self.config_maps, other.config_maps);
        merge_into(&mut self.oci_repositories, other.oci_repositories);
        merge_into(&mut self.helm_charts, other.helm_charts);
        Arc::make_mut(&mut self.namespaces).extend(Arc::unwrap_or_clone(other.namespaces));
        self.tracks_config_maps |= other.tracks_config_maps;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_and_lists() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: apps, labels: {team: a}}\n---\n\
            apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s, namespace: apps}\n  data: {k: dg==}\n---\n";
        let docs = parse_manifests(Path::new("x.yaml"), text).unwrap();
        assert_eq!(docs.len(), 2);
        let mut v = ClusterView::default();
        for d in &docs {
            v.add_manifest(d);
        }
        assert_eq!(v.namespace_labels("apps").unwrap()["team"], "a");
        assert!(v.secrets.get("apps", "s").unwrap().keys.contains("k"));
    }

    #[test]
    fn parse_error_names_file_and_document() {
        let err = parse_manifests(Path::new("state/bad.yaml"), "a: 1\n---\nb: [\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("state/bad.yaml: document 2:"), "{msg}");
    }
}
