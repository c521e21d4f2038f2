//! Filling the view from a directory of manifests (the offline source).

use super::ClusterView;
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
///
/// YAML is read with serde-saphyr. Its limits are raised to what a rendered repository or a
/// cluster dump needs (a single `kustomize build` stream can hold thousands of documents);
/// the alias limits stay at their defaults, so an alias bomb is still refused. Scalars follow
/// YAML 1.2 (`yes`, `0777` and `1_000` are strings), a repeated key keeps its last value, and
/// `.inf`/`.nan` read as null, as JSON has no such numbers.
pub fn parse_manifests(path: &Path, text: &str) -> Result<Vec<Value>, LoadError> {
    let docs = parse_documents(path, text)?;
    let mut out = Vec::with_capacity(docs.len());
    for v in docs {
        flatten_into(v, &mut out);
    }
    Ok(out)
}

/// Like [`parse_manifests`], with the line each object's document starts on (the first line
/// of content after its `---`; items of a `List` share the list's line). The lines are
/// None when the documents cannot be lined up with the text (a document that is only `~`),
/// and for JSON.
pub fn parse_manifests_with_lines(
    path: &Path,
    text: &str,
) -> Result<Vec<(Option<usize>, Value)>, LoadError> {
    let docs = parse_documents(path, text)?;
    let starts = if is_json(text) {
        Vec::new()
    } else {
        content_starts(text)
    };
    let lined = starts.len() == docs.len();
    let mut out = Vec::with_capacity(docs.len());
    for (i, v) in docs.into_iter().enumerate() {
        let line = if lined { Some(starts[i]) } else { None };
        let mut objs = Vec::new();
        flatten_into(v, &mut objs);
        out.extend(objs.into_iter().map(|o| (line, o)));
    }
    Ok(out)
}

fn is_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// The documents of a file as parsed, null documents left out and lists not flattened.
fn parse_documents(path: &Path, text: &str) -> Result<Vec<Value>, LoadError> {
    if is_json(text) {
        // A JSON file or dump (`kubectl get -o json`): serde_json reads it several times
        // faster than a YAML parser. Anything it refuses is read as YAML below, which
        // reports the error.
        let docs: Result<Vec<Value>, _> = serde_json::Deserializer::from_str(text)
            .into_iter()
            .collect();
        if let Ok(docs) = docs {
            return Ok(docs);
        }
    }
    let options = serde_saphyr::options! {
        with_snippet: false,
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: None,
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            max_documents: usize::MAX,
            max_total_scalar_bytes: usize::MAX,
            max_depth: 128,
        },
    };
    serde_saphyr::from_str_multiple_with_options::<Value, Vec<Value>>(text, options).map_err(|e| {
        LoadError::Parse {
            path: path.to_path_buf(),
            doc: e
                .location()
                .map_or(1, |l| document_at(text, l.line() as usize)),
            message: e.to_string(),
        }
    })
}

/// The first line of content (not blank, not a comment or directive) of each document.
fn content_starts(text: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut open = false; // this document already has its line
    for (i, l) in text.lines().enumerate() {
        if is_marker(l) {
            open = false;
            // `--- {a: 1}` or `--- !tag`: content on the marker line itself.
            let rest = l[3..].trim_start();
            if !(rest.is_empty() || rest.starts_with('#')) {
                out.push(i + 1);
                open = true;
            }
            continue;
        }
        let t = l.trim_start();
        if t == "..." {
            open = false;
            continue;
        }
        if open || t.is_empty() || t.starts_with('#') || t.starts_with('%') {
            continue;
        }
        out.push(i + 1);
        open = true;
    }
    out
}

fn is_marker(l: &str) -> bool {
    l.strip_prefix("---")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t'))
}

/// Which document (1-based) of a YAML stream holds `line` (1-based): the `---` markers
/// before it are counted, and content before the first marker is an implicit first document.
fn document_at(text: &str, line: usize) -> usize {
    let mut docs = 0;
    for l in text.lines().take(line.saturating_sub(1)) {
        if is_marker(l) {
            docs += 1;
        } else if docs == 0 {
            let t = l.trim_start();
            if !(t.is_empty() || t.starts_with('#') || t.starts_with('%')) {
                docs = 1;
            }
        }
    }
    docs.max(1)
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
        assert!(msg.contains("line 3, column 4"), "{msg}");
    }

    #[test]
    fn document_number_counts_markers_and_an_implicit_first_document() {
        // A comment and a leading marker do not open a document of their own; an empty
        // document between two markers counts, as a YAML stream has it.
        let text = "# header\n---\na: 1\n---\n---\nkind: X\n  bad: indentation\n";
        let msg = parse_manifests(Path::new("f.yaml"), text)
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("f.yaml: document 3:"), "{msg}");
        assert!(msg.contains("line 7"), "{msg}");
        let msg = parse_manifests(Path::new("f.yaml"), "a: [1,\n")
            .unwrap_err()
            .to_string();
        assert!(msg.starts_with("f.yaml: document 1:"), "{msg}");
    }

    #[test]
    fn documents_know_their_first_line() {
        let text = "# a header\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n\n# about b\nkind: List\nitems:\n- {kind: Secret, metadata: {name: s}}\n- {kind: Secret, metadata: {name: t}}\n---\n";
        let got: Vec<(Option<usize>, String)> =
            parse_manifests_with_lines(Path::new("f.yaml"), text)
                .unwrap()
                .into_iter()
                .map(|(l, v)| (l, v["metadata"]["name"].as_str().unwrap().to_owned()))
                .collect();
        let want = [(Some(3), "a"), (Some(9), "s"), (Some(9), "t")];
        assert_eq!(got, want.map(|(l, n)| (l, n.to_owned())));
    }

    #[test]
    fn yaml_reads_as_a_manifest_would() {
        let text = "kind: ConfigMap\ndata:\n  a: yes\n  b: 0777\n  c: '1'\n  d: !secret x\n  e: .inf\n  f: 1\n  f: 2\n  g: 1_000\n  h: 0o17\n  i: 0x1F\n  j: 1e3\n  k: ~\n";
        let docs = parse_manifests(Path::new("f.yaml"), text).unwrap();
        let d = &docs[0]["data"];
        // YAML 1.2: `yes` and a leading zero are strings; an application tag is read through;
        // a number JSON cannot hold is null; a repeated key keeps its last value.
        assert_eq!(d["a"], "yes");
        assert_eq!(d["b"], "0777");
        assert_eq!(d["c"], "1");
        assert_eq!(d["d"], "x");
        assert!(d["e"].is_null());
        assert_eq!(d["f"], 2);
        assert_eq!(d["g"], "1_000");
        assert_eq!((d["h"].as_i64(), d["i"].as_i64()), (Some(15), Some(31)));
        assert_eq!(d["j"].as_f64(), Some(1000.0));
        assert!(d["k"].is_null());
    }

    #[test]
    fn json_streams_and_json_lists_are_read() {
        let text = "{\"kind\":\"List\",\"items\":[{\"kind\":\"Secret\",\"metadata\":{\"name\":\"a\"}}]}\n{\"kind\":\"Namespace\",\"metadata\":{\"name\":\"n\"}}";
        let docs = parse_manifests(Path::new("dump.json"), text).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Secret", "Namespace"]);
        // Not JSON after all (a flow mapping with YAML in it): read as YAML.
        let docs = parse_manifests(
            Path::new("f.yaml"),
            "{kind: Namespace, metadata: {name: n}}\n",
        )
        .unwrap();
        assert_eq!(docs[0]["kind"], "Namespace");
        let msg = parse_manifests(Path::new("f.json"), "{\"kind\": \"Namespace\",\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("f.json: document 1: not valid YAML/JSON:"),
            "{msg}"
        );
    }
}
