//! What Flux would apply from a repository: the objects `check` and `graph` judge.
//!
//! A directory with a `kustomization.yaml` is built with a real kustomize; one without is
//! read the way kustomize-controller reads it (every Kubernetes manifest below it, a
//! subdirectory with its own `kustomization.yaml` built as one). Flux Kustomizations whose
//! source is this repository are followed: their `spec.path` is rendered with their
//! `targetNamespace`, `patches`, `components`, `images`, `commonMetadata`, `namePrefix` and
//! `nameSuffix`, then `postBuild` substitution. Each cluster in the repository is its own
//! world.

pub mod helm;
pub mod substitute;

use crate::check::Document;
use crate::cluster::load::parse_manifests_with_lines;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// How to render.
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// `--kustomize`: the kustomize (or kubectl) binary; found on PATH when None.
    pub kustomize: Option<PathBuf>,
    /// `--cluster`: render only this cluster directory (one world).
    pub cluster: Option<PathBuf>,
    /// `--helm`: the helm binary; found on PATH when None.
    pub helm: Option<PathBuf>,
    /// `--charts`: a local chart cache (`.tgz` files or unpacked charts).
    pub charts: Vec<PathBuf>,
}

/// One cluster's objects: what one Flux installation applies.
#[derive(Debug, Default)]
pub struct World {
    /// The cluster directory, when the repository was split into clusters.
    pub name: Option<String>,
    pub docs: Vec<Document>,
}

#[derive(Debug, Default)]
pub struct Rendered {
    pub worlds: Vec<World>,
    /// Said once each in the summary (what could not be built, what is not local).
    pub notes: Vec<String>,
    /// Files that are not Kubernetes manifests, skipped (listed with `-v`).
    pub skipped: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Load(#[from] crate::cluster::load::LoadError),
    #[error("{path}: {message}")]
    Build { path: String, message: String },
}

/// kustomize, or `kubectl kustomize`.
#[derive(Debug, Clone)]
struct Kustomize {
    program: PathBuf,
    kubectl: bool,
}

impl Kustomize {
    fn find(explicit: Option<&Path>) -> Option<Kustomize> {
        let named = |p: &Path| {
            let kubectl = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("kubectl"));
            Kustomize {
                program: p.to_path_buf(),
                kubectl,
            }
        };
        if let Some(p) = explicit {
            return Some(named(p));
        }
        ["kustomize", "kubectl"]
            .iter()
            .find_map(|b| on_path(b))
            .map(|p| named(&p))
    }

    /// `kustomize build DIR` with the load restrictions kustomize-controller uses (none).
    fn build(&self, dir: &Path) -> Result<String, String> {
        let mut cmd = Command::new(&self.program);
        if self.kubectl {
            cmd.arg("kustomize");
        } else {
            cmd.arg("build");
        }
        cmd.arg("--load-restrictor=LoadRestrictionsNone").arg(dir);
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!("kustomize build failed: {}", err.trim()));
        }
        String::from_utf8(out.stdout).map_err(|_| "kustomize output is not UTF-8".into())
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

const KUSTOMIZATION_FILES: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn is_flux_kustomization(v: &Value) -> bool {
    str_at(v, "/kind") == Some("Kustomization")
        && str_at(v, "/apiVersion").is_some_and(|a| a.starts_with("kustomize.toolkit.fluxcd.io/"))
}

fn ns_name(v: &Value) -> (String, String) {
    let ns = str_at(v, "/metadata/namespace")
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let name = str_at(v, "/metadata/name").unwrap_or("");
    (ns.to_owned(), name.to_owned())
}

/// The identity Flux tracks an object by.
fn identity(v: &Value) -> (String, String, String, String) {
    let group = str_at(v, "/apiVersion")
        .and_then(|a| a.rsplit_once('/').map(|(g, _)| g))
        .unwrap_or("");
    let (ns, name) = ns_name(v);
    (
        group.to_owned(),
        str_at(v, "/kind").unwrap_or("").to_owned(),
        ns,
        name,
    )
}

/// The work tree's root: the nearest parent with `.git`, else the path itself (its directory).
fn repo_root(path: &Path) -> PathBuf {
    let start = if path.is_dir() {
        path.to_path_buf()
    } else {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let abs = std::fs::canonicalize(&start).unwrap_or_else(|_| start.clone());
    let mut dir = abs.as_path();
    loop {
        if dir.join(".git").exists() {
            return relative_to_cwd(dir);
        }
        match dir.parent() {
            Some(p) => dir = p,
            None => return start,
        }
    }
}

/// A path as the user would write it from the working directory (findings name files so).
fn relative_to_cwd(p: &Path) -> PathBuf {
    let Ok(cwd) = std::env::current_dir().and_then(std::fs::canonicalize) else {
        return p.to_path_buf();
    };
    if let Ok(rel) = p.strip_prefix(&cwd) {
        return if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel.to_path_buf()
        };
    }
    p.to_path_buf()
}

/// Joins `rel` (a Flux `spec.path`, `./x/y` or `x/y`) onto the repository root.
fn join_repo(root: &Path, rel: &str) -> PathBuf {
    let rel = rel.trim_start_matches("./").trim_start_matches('/');
    let joined = if rel.is_empty() || rel == "." {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    normalize(&joined)
}

/// Removes `.` and `a/..` without touching the file system.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Renders the paths. `-` reads a YAML stream from stdin (already rendered: nothing followed).
pub fn render(paths: &[PathBuf], opts: &Options) -> Result<Rendered, RenderError> {
    let r = Renderer {
        kustomize: Kustomize::find(opts.kustomize.as_deref()),
        helm: helm::Charts::new(opts.helm.as_deref(), &opts.charts),
        files: Default::default(),
    };
    let mut sink = Sink::default();
    let mut worlds = Vec::new();
    if let Some(cluster) = &opts.cluster {
        let root = repo_root(cluster);
        let docs = r.render_world(&root, cluster, &mut sink)?;
        worlds.push(World {
            name: Some(normalize(cluster).display().to_string()),
            docs,
        });
    }
    for p in paths {
        if p.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| {
                RenderError::Build {
                    path: "-".into(),
                    message: format!("cannot read stdin: {e}"),
                }
            })?;
            let docs = parse_text(Path::new("<stdin>"), &text, true, &mut sink)?;
            worlds.push(World { name: None, docs });
            continue;
        }
        if !p.is_dir() {
            // A file: its objects as written, and the Kustomizations in it followed.
            let root = repo_root(p);
            let text =
                std::fs::read_to_string(p).map_err(|e| crate::cluster::load::LoadError::Io {
                    path: p.clone(),
                    error: e,
                })?;
            let mut docs = parse_text(p, &text, true, &mut sink)?;
            r.follow(&root, &mut docs, &HashSet::new(), &mut sink)?;
            worlds.push(World { name: None, docs });
            continue;
        }
        let root = repo_root(p);
        let scan = r.scan(p)?;
        let roots = scan.roots(&root);
        if roots.is_empty() {
            // No Flux Kustomization from this repository: the directory is what is applied.
            let docs = r.render_world(&root, p, &mut sink)?;
            worlds.push(World { name: None, docs });
            continue;
        }
        // One world per cluster directory: where its root Kustomizations are declared.
        let mut clusters: BTreeSet<PathBuf> = BTreeSet::new();
        for k in &roots {
            clusters.insert(cluster_dir(&k.file));
        }
        let many = clusters.len() > 1;
        for dir in clusters {
            let name = many.then(|| dir.display().to_string());
            // A world's notes say which world they are about.
            let mut own = Sink::default();
            let docs = r.render_world(&root, &dir, &mut own)?;
            if let Some(n) = &name {
                for note in &mut own.notes {
                    *note = format!("{n}: {note}");
                }
            }
            sink.merge(own);
            worlds.push(World { name, docs });
        }
    }
    let mut notes = sink.notes;
    if sink.raw_builds > 0 {
        notes.push(format!(
            "no kustomize found (PATH or --kustomize): {} director{} with a kustomization.yaml read as raw manifests",
            sink.raw_builds,
            if sink.raw_builds == 1 { "y" } else { "ies" }
        ));
    }
    Ok(Rendered {
        worlds,
        notes,
        skipped: sink.skipped,
    })
}

/// The directory a cluster's root Kustomizations are declared in (`clusters/prod` for
/// `clusters/prod/flux-system/gotk-sync.yaml`).
fn cluster_dir(file: &Path) -> PathBuf {
    let dir = normalize(file.parent().unwrap_or(Path::new(".")));
    if dir.file_name().is_some_and(|n| n == "flux-system")
        && let Some(up) = dir.parent()
    {
        return up.to_path_buf();
    }
    dir
}

/// `path` without its trailing slashes and without `prefixes` at its start, each trimmed in
/// turn as often as it repeats: `trim_path("@artifact/apps/", &["@artifact", "/"])` is `apps`.
fn trim_path<'a>(path: &'a str, prefixes: &[&str]) -> &'a str {
    prefixes
        .iter()
        .fold(path, |p, prefix| p.trim_start_matches(prefix))
        .trim_end_matches('/')
}

/// Every manifest under a path as written: where the Flux Kustomizations are, and the
/// ConfigMaps and Secrets `substituteFrom` may name.
#[derive(Default)]
struct Scan {
    kustomizations: Vec<Declared>,
    /// (namespace, name) → the object, for ConfigMaps and Secrets.
    config: BTreeMap<(String, String, String), Value>,
    /// GitRepositories named like the repository's own (`flux-system`) or with its URL.
    local_sources: HashSet<(String, String, String)>,
    /// ExternalArtifact name → (artifact dir prefix, repository dir) copies.
    artifacts: BTreeMap<(String, String), Vec<(String, String)>>,
}

struct Declared {
    file: PathBuf,
    object: Value,
}

impl Scan {
    fn add(&mut self, file: &Path, v: &Value) {
        let kind = str_at(v, "/kind").unwrap_or("");
        let api = str_at(v, "/apiVersion").unwrap_or("");
        if is_flux_kustomization(v) {
            self.kustomizations.push(Declared {
                file: file.to_path_buf(),
                object: v.clone(),
            });
        } else if (kind == "ConfigMap" || kind == "Secret") && api == "v1" {
            let (ns, name) = ns_name(v);
            self.config.insert((kind.to_owned(), ns, name), v.clone());
        } else if kind == "GitRepository" && api.starts_with("source.toolkit.fluxcd.io/") {
            let (ns, name) = ns_name(v);
            if name == "flux-system" {
                self.local_sources
                    .insert(("GitRepository".into(), ns.clone(), name.clone()));
            }
        } else if kind == "ArtifactGenerator" {
            self.add_generator(v);
        }
    }

    /// An ArtifactGenerator copying directories of the repository's own GitRepository into
    /// artifacts: `@alias/dir/**` → `@artifact/prefix/`.
    fn add_generator(&mut self, v: &Value) {
        let (ns, _) = ns_name(v);
        let mut local_aliases = HashSet::new();
        for s in v
            .pointer("/spec/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if str_at(s, "/kind") == Some("GitRepository")
                && str_at(s, "/name") == Some("flux-system")
                && let Some(a) = str_at(s, "/alias")
            {
                local_aliases.insert(a.to_owned());
            }
        }
        for a in v
            .pointer("/spec/artifacts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = str_at(a, "/name") else {
                continue;
            };
            let mut copies = Vec::new();
            for c in a
                .pointer("/copy")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let (Some(from), Some(to)) = (str_at(c, "/from"), str_at(c, "/to")) else {
                    continue;
                };
                let Some(from) = from.strip_prefix('@') else {
                    continue;
                };
                let Some((alias, dir)) = from.split_once('/') else {
                    continue;
                };
                if !local_aliases.contains(alias) {
                    continue;
                }
                let dir = dir.trim_end_matches("**").trim_end_matches('/');
                let to = trim_path(to, &["@artifact", "/"]);
                copies.push((to.to_owned(), dir.to_owned()));
            }
            if !copies.is_empty() {
                self.artifacts.insert((ns.clone(), name.to_owned()), copies);
            }
        }
    }

    /// Where a Flux Kustomization's `spec.path` is in this repository, or why it is not.
    fn local_path(&self, root: &Path, ks: &Value) -> Result<PathBuf, String> {
        let (ns, _) = ns_name(ks);
        let kind = str_at(ks, "/spec/sourceRef/kind").unwrap_or("");
        let name = str_at(ks, "/spec/sourceRef/name").unwrap_or("");
        let src_ns = str_at(ks, "/spec/sourceRef/namespace").unwrap_or(&ns);
        let path = str_at(ks, "/spec/path").unwrap_or("./");
        match kind {
            "GitRepository"
                if name == "flux-system"
                    || self
                        .local_sources
                        .contains(&(kind.into(), src_ns.into(), name.into())) =>
            {
                Ok(join_repo(root, path))
            }
            "ExternalArtifact" => {
                let Some(copies) = self.artifacts.get(&(src_ns.to_owned(), name.to_owned())) else {
                    return Err(format!(
                        "source ExternalArtifact {src_ns}/{name} is not generated from this repository"
                    ));
                };
                let rel = trim_path(path, &["./"]);
                for (to, from) in copies {
                    let rest = if to.is_empty() {
                        Some(rel)
                    } else if rel == to {
                        Some("")
                    } else {
                        rel.strip_prefix(&format!("{to}/"))
                    };
                    if let Some(rest) = rest {
                        return Ok(join_repo(root, &format!("{from}/{rest}")));
                    }
                }
                Err(format!(
                    "spec.path {path} is not in artifact {src_ns}/{name}"
                ))
            }
            _ => Err(format!(
                "source {kind} {src_ns}/{name} is not this repository"
            )),
        }
    }

    /// The Kustomizations no other local Kustomization applies: their file is not under
    /// another one's path.
    fn roots(&self, root: &Path) -> Vec<&Declared> {
        let paths: Vec<(usize, PathBuf)> = self
            .kustomizations
            .iter()
            .enumerate()
            .filter_map(|(i, k)| self.local_path(root, &k.object).ok().map(|p| (i, p)))
            .collect();
        let local: HashSet<usize> = paths.iter().map(|(i, _)| *i).collect();
        self.kustomizations
            .iter()
            .enumerate()
            .filter(|(i, k)| {
                let file = normalize(&k.file);
                local.contains(i) && !paths.iter().any(|(j, p)| j != i && file.starts_with(p))
            })
            .map(|(_, k)| k)
            .collect()
    }
}

struct Renderer {
    kustomize: Option<Kustomize>,
    helm: helm::Charts,
    /// Each file parsed once: the scan and the rendering of every world read the same files.
    files: std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<Parsed>>>,
}

/// A file's documents with their lines, or why it does not parse.
type Parsed = Result<Vec<(Option<usize>, Value)>, String>;

/// A Flux Kustomization to build: the object, its path in the repository, its variables.
type Job = (Value, PathBuf, BTreeMap<String, String>);

/// What one build gave, and what it noticed.
type Built = (Result<Vec<Document>, RenderError>, Sink);

/// What rendering noticed along the way; one per thread, merged in a fixed order.
#[derive(Default)]
struct Sink {
    notes: Vec<String>,
    skipped: Vec<String>,
    raw_builds: usize,
}

impl Sink {
    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            self.notes.push(n);
        }
    }

    fn merge(&mut self, other: Sink) {
        for n in other.notes {
            self.note(n);
        }
        self.skipped.extend(other.skipped);
        self.raw_builds += other.raw_builds;
    }
}

/// Parses a file's text into documents; what is not a Kubernetes object is skipped.
/// `strict`: a file named by the user (or a tool's output) must parse.
fn parse_text(
    file: &Path,
    text: &str,
    strict: bool,
    sink: &mut Sink,
) -> Result<Vec<Document>, RenderError> {
    let parsed = match parse_manifests_with_lines(file, text) {
        Ok(p) => p,
        Err(e) if !strict => {
            sink.skipped.push(e.to_string());
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    let mut docs = Vec::with_capacity(parsed.len());
    let mut dropped = 0;
    for (line, object) in parsed {
        if str_at(&object, "/apiVersion").is_none() || str_at(&object, "/kind").is_none() {
            dropped += 1;
            continue;
        }
        docs.push(Document {
            file: file.to_path_buf(),
            line,
            applied_by: None,
            object,
        });
    }
    if dropped > 0 && docs.is_empty() {
        sink.skipped
            .push(format!("{}: not a Kubernetes manifest", file.display()));
    }
    Ok(docs)
}

/// The path from directory `from` to `to` (both made absolute), for kustomize, which wants
/// relative paths.
fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (from, to) = (abs(from), abs(to));
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in from.components().skip(common) {
        out.push("..");
    }
    for c in to.components().skip(common) {
        out.push(c);
    }
    out
}

impl Renderer {
    /// A file's documents, parsed once.
    fn parsed(&self, path: &Path) -> Result<std::sync::Arc<Parsed>, RenderError> {
        if let Some(p) = self.files.lock().ok().and_then(|f| f.get(path).cloned()) {
            return Ok(p);
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| crate::cluster::load::LoadError::Io {
                path: path.to_path_buf(),
                error: e,
            })?;
        let parsed =
            std::sync::Arc::new(parse_manifests_with_lines(path, &text).map_err(|e| e.to_string()));
        if let Ok(mut f) = self.files.lock() {
            f.insert(path.to_path_buf(), parsed.clone());
        }
        Ok(parsed)
    }

    /// Every manifest under `dir` as written (files that do not parse are passed over),
    /// parsed on one thread per core.
    fn scan(&self, dir: &Path) -> Result<Scan, RenderError> {
        let files = if dir.is_dir() {
            crate::cluster::load::manifest_files(dir)?
        } else {
            vec![dir.to_path_buf()]
        };
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .max(1);
        let chunk = files.len().div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for part in files.chunks(chunk) {
                s.spawn(move || {
                    for f in part {
                        let _ = self.parsed(f);
                    }
                });
            }
        });
        let mut scan = Scan::default();
        for f in &files {
            if let Ok(p) = self.parsed(f)
                && let Ok(docs) = p.as_ref()
            {
                for (_, v) in docs {
                    scan.add(f, v);
                }
            }
        }
        Ok(scan)
    }

    /// A file's Kubernetes objects as documents; a file that does not parse is skipped.
    fn file_documents(&self, path: &Path, sink: &mut Sink) -> Result<Vec<Document>, RenderError> {
        let parsed = self.parsed(path)?;
        let docs = match parsed.as_ref() {
            Ok(docs) => docs,
            Err(e) => {
                sink.skipped.push(e.clone());
                return Ok(Vec::new());
            }
        };
        let out: Vec<Document> = docs
            .iter()
            .filter(|(_, o)| str_at(o, "/apiVersion").is_some() && str_at(o, "/kind").is_some())
            .map(|(line, object)| Document {
                file: path.to_path_buf(),
                line: *line,
                applied_by: None,
                object: object.clone(),
            })
            .collect();
        if out.is_empty() && !docs.is_empty() {
            sink.skipped
                .push(format!("{}: not a Kubernetes manifest", path.display()));
        }
        Ok(out)
    }

    fn build(
        &self,
        dir: &Path,
        kfile: &Path,
        sink: &mut Sink,
    ) -> Result<Vec<Document>, RenderError> {
        let Some(k) = &self.kustomize else {
            return Ok(Vec::new());
        };
        match k.build(dir) {
            Ok(text) => {
                let mut docs = parse_text(kfile, &text, true, sink)?;
                for d in &mut docs {
                    d.line = None; // built: the line is not the file's
                }
                Ok(docs)
            }
            Err(message) => {
                sink.note(format!("{}: {message}", dir.display()));
                Ok(Vec::new())
            }
        }
    }

    /// A directory as kustomize-controller reads it.
    fn render_dir(&self, dir: &Path, sink: &mut Sink) -> Result<Vec<Document>, RenderError> {
        if let Some(kfile) = kustomization_file(dir) {
            if self.kustomize.is_some() {
                return self.build(dir, &kfile, sink);
            }
            sink.raw_builds += 1;
        }
        let mut docs = Vec::new();
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
            Err(e) => {
                return Err(crate::cluster::load::LoadError::Io {
                    path: dir.to_path_buf(),
                    error: e,
                }
                .into());
            }
        };
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                docs.extend(self.render_dir(&p, sink)?);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) && !KUSTOMIZATION_FILES.contains(&name)
            {
                docs.extend(self.file_documents(&p, sink)?);
            }
        }
        Ok(docs)
    }

    /// One cluster: its directory rendered, then every local Flux Kustomization followed.
    fn render_world(
        &self,
        root: &Path,
        dir: &Path,
        sink: &mut Sink,
    ) -> Result<Vec<Document>, RenderError> {
        let mut docs = self.render_dir(dir, sink)?;
        let mut rendered = HashSet::new();
        rendered.insert(normalize(dir));
        self.follow(root, &mut docs, &rendered, sink)?;
        // The charts behind the HelmReleases, where they can be had offline.
        let notes = self
            .helm
            .render_releases(root, &mut docs, self.kustomize.as_ref());
        for n in notes {
            sink.note(n);
        }
        Ok(docs)
    }

    /// Follows the Flux Kustomizations in `docs` (and in what they apply), breadth first;
    /// the Kustomizations of one level are built in parallel, one per core.
    fn follow(
        &self,
        root: &Path,
        docs: &mut Vec<Document>,
        entry_dirs: &HashSet<PathBuf>,
        sink: &mut Sink,
    ) -> Result<(), RenderError> {
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let mut as_written = AsWritten::index(docs);
        // What this world has rendered so far: its sources and artifact generators decide
        // where a Kustomization's path is (two clusters may name theirs alike).
        let mut world = Scan::default();
        let mut next = 0;
        while next < docs.len() {
            let end = docs.len();
            for d in &docs[next..end] {
                world.add(&d.file, &d.object);
            }
            let mut batch = Vec::new();
            for d in &docs[next..end] {
                if !is_flux_kustomization(&d.object) {
                    continue;
                }
                let id = ns_name(&d.object);
                if !seen.insert(id.clone()) {
                    continue;
                }
                match world.local_path(root, &d.object) {
                    Ok(path) if entry_dirs.contains(&path) => {}
                    Ok(path) => batch.push((d.object.clone(), path)),
                    Err(why) => sink.note(format!(
                        "Kustomization {}/{} not followed: {why}",
                        id.0, id.1
                    )),
                }
            }
            next = end;
            let known: Vec<&Document> = docs.iter().collect();
            let jobs: Vec<Job> = batch
                .into_iter()
                .map(|(ks, path)| {
                    let vars = variables(&ks, &known, &world);
                    (ks, path, vars)
                })
                .collect();
            let results = self.build_all(&jobs);
            for (out, part) in results {
                sink.merge(part);
                as_written.merge(docs, out?);
            }
        }
        Ok(())
    }

    /// Builds the Kustomizations of one level. With kustomize, all of them go through one
    /// kustomize run (its start and its OpenAPI schema cost more than most builds): each gets
    /// its own directory and a label saying which it is, taken off afterwards. When that run
    /// fails (two Kustomizations apply the same object, one path does not build), each is
    /// built on its own, on up to one thread per core, so the failure is named.
    fn build_all(&self, jobs: &[Job]) -> Vec<Built> {
        // kustomize's work grows faster than its input: a few dozen Kustomizations per run,
        // the runs on one thread per core.
        const PER_RUN: usize = 32;
        let Some(tool) = &self.kustomize else {
            return self.build_each(jobs);
        };
        if jobs.len() < 2 {
            return self.build_each(jobs);
        }
        let chunks: Vec<&[Job]> = jobs.chunks(PER_RUN).collect();
        let done = on_each_core(&chunks, |chunk| {
            self.build_together(tool, chunk).unwrap_or_else(|| {
                chunk
                    .iter()
                    .map(|(ks, path, vars)| {
                        let mut sink = Sink::default();
                        let out = self.render_kustomization(ks, path, vars, &mut sink);
                        (out, sink)
                    })
                    .collect()
            })
        });
        if done.iter().any(Option::is_none) {
            return self.build_each(jobs); // a thread stopped: build each on its own
        }
        done.into_iter().flatten().flatten().collect()
    }

    /// Builds each Kustomization on its own, on up to one thread per core; the results come
    /// back in the jobs' order.
    fn build_each(&self, jobs: &[Job]) -> Vec<Built> {
        on_each_core(jobs, |(ks, path, vars)| {
            let mut sink = Sink::default();
            let out = self.render_kustomization(ks, path, vars, &mut sink);
            (out, sink)
        })
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                (
                    Err(RenderError::Build {
                        path: String::new(),
                        message: "a build thread stopped".into(),
                    }),
                    Sink::default(),
                )
            })
        })
        .collect()
    }

    /// One kustomize run for a level's Kustomizations; None when it fails. Each job's
    /// kustomization sits inside one that adds a name suffix of its own (`-fxjob7q`), so
    /// objects that share a name before substitution (`${APP}`) do not collide, and each
    /// object says which job made it; the suffix is taken out of every string afterwards,
    /// which undoes it in names and in the references kustomize rewrote with them.
    fn build_together(&self, tool: &Kustomize, jobs: &[Job]) -> Option<Vec<Built>> {
        let tmp = tempfile::tempdir().ok()?;
        let mut prepared = Vec::with_capacity(jobs.len());
        let mut dirs = Vec::new();
        for (i, (ks, path, _)) in jobs.iter().enumerate() {
            let mut sink = Sink::default();
            if !self.needs_build(ks, path) {
                let ready = self.prepare(ks, path, path, &mut sink);
                prepared.push((ready, sink));
                continue;
            }
            let outer = tmp.path().join(format!("j{i}"));
            let inner = outer.join("in");
            std::fs::create_dir_all(&inner).ok()?;
            match self.prepare(ks, path, &inner, &mut sink) {
                Ok(Prepared::Built(plan)) => {
                    let k = serde_json::json!({"apiVersion": "kustomize.config.k8s.io/v1beta1",
                        "kind": "Kustomization", "resources": ["in"],
                        "nameSuffix": job_token(i)});
                    std::fs::write(outer.join("kustomization.yaml"), k.to_string()).ok()?;
                    dirs.push(format!("j{i}"));
                    prepared.push((Ok(Prepared::Built(plan)), sink));
                }
                other => prepared.push((other, sink)),
            }
        }
        if dirs.is_empty() {
            return None; // nothing for kustomize: the jobs are cheap one by one
        }
        let top = serde_json::json!({"apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization", "resources": dirs});
        std::fs::write(tmp.path().join("kustomization.yaml"), top.to_string()).ok()?;
        let text = tool.build(tmp.path()).ok()?;
        let mut scratch = Sink::default();
        let built = parse_text(Path::new("<build>"), &text, true, &mut scratch).ok()?;
        let mut per_job: Vec<Vec<Document>> = jobs.iter().map(|_| Vec::new()).collect();
        for mut d in built {
            let name = str_at(&d.object, "/metadata/name")?;
            let i = job_of(name)?;
            strip_token(&mut d.object, &job_token(i));
            per_job.get_mut(i)?.push(d);
        }
        let mut out = Vec::with_capacity(jobs.len());
        for ((p, sink), ((ks, _, vars), docs)) in prepared.into_iter().zip(jobs.iter().zip(per_job))
        {
            let docs = match p {
                Ok(Prepared::Built(plan)) => Ok(plan.finish(docs)),
                Ok(Prepared::Ready(docs)) => Ok(docs),
                Err(e) => Err(e),
            };
            out.push((docs.map(|d| finish_kustomization(ks, vars, d)), sink));
        }
        Some(out)
    }

    /// What one Flux Kustomization applies, built on its own.
    fn render_kustomization(
        &self,
        ks: &Value,
        path: &Path,
        vars: &BTreeMap<String, String>,
        sink: &mut Sink,
    ) -> Result<Vec<Document>, RenderError> {
        if !self.needs_build(ks, path) {
            let docs = match self.prepare(ks, path, path, sink)? {
                Prepared::Ready(docs) => docs,
                Prepared::Built(_) => Vec::new(), // not reached: nothing was to be built
            };
            return Ok(finish_kustomization(ks, vars, docs));
        }
        let tmp = tempfile::tempdir().map_err(|e| RenderError::Build {
            path: path.display().to_string(),
            message: format!("temporary directory: {e}"),
        })?;
        let docs = match self.prepare(ks, path, tmp.path(), sink)? {
            Prepared::Ready(docs) => docs,
            Prepared::Built(plan) => {
                let Some(tool) = &self.kustomize else {
                    return Ok(Vec::new());
                };
                match tool.build(tmp.path()) {
                    Ok(text) => {
                        let docs = parse_text(&plan.file, &text, true, sink)?;
                        plan.finish(docs)
                    }
                    Err(message) => {
                        let (ns, name) = ns_name(ks);
                        sink.note(format!("Kustomization {ns}/{name}: {message}"));
                        Vec::new()
                    }
                }
            }
        };
        Ok(finish_kustomization(ks, vars, docs))
    }

    /// Whether kustomize has anything to do for this Kustomization (so a directory is
    /// needed to write its kustomization into).
    fn needs_build(&self, ks: &Value, path: &Path) -> bool {
        const FIELDS: [&str; 7] = [
            "targetNamespace",
            "patches",
            "images",
            "namePrefix",
            "nameSuffix",
            "commonMetadata",
            "components",
        ];
        self.kustomize.is_some()
            && path.is_dir()
            && (kustomization_file(path).is_some()
                || ks
                    .get("spec")
                    .is_some_and(|spec| FIELDS.iter().any(|f| spec.get(f).is_some())))
    }

    /// Gets one Flux Kustomization ready: either its objects already (nothing for kustomize
    /// to do, or no kustomize), or a kustomization written into `dir` around its path with
    /// its own kustomize fields (`targetNamespace`, `patches`, `components`, ...), the way
    /// kustomize-controller applies them.
    fn prepare(
        &self,
        ks: &Value,
        path: &Path,
        dir: &Path,
        sink: &mut Sink,
    ) -> Result<Prepared, RenderError> {
        let (ns, name) = ns_name(ks);
        if !path.is_dir() {
            sink.note(format!(
                "Kustomization {ns}/{name}: spec.path {} is not a directory of the repository",
                path.display()
            ));
            return Ok(Prepared::Ready(Vec::new()));
        }
        let spec = ks.get("spec").cloned().unwrap_or(Value::Null);
        let mut fields = serde_json::Map::new();
        if let Some(target) = spec.get("targetNamespace").and_then(Value::as_str) {
            fields.insert("namespace".into(), target.into());
        }
        for field in ["patches", "images", "namePrefix", "nameSuffix"] {
            if let Some(v) = spec.get(field) {
                fields.insert(field.into(), v.clone());
            }
        }
        if let Some(meta) = spec.get("commonMetadata") {
            if let Some(l) = meta.get("labels") {
                fields.insert(
                    "labels".into(),
                    serde_json::json!([{"pairs": l, "includeSelectors": false}]),
                );
            }
            if let Some(a) = meta.get("annotations") {
                fields.insert("commonAnnotations".into(), a.clone());
            }
        }
        let components: Vec<PathBuf> = spec
            .get("components")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|c| normalize(&path.join(c)))
            .collect();
        let kfile = kustomization_file(path);
        if self.kustomize.is_none() {
            let mut docs = self.render_dir(path, sink)?;
            if let Some(target) = spec.get("targetNamespace").and_then(Value::as_str) {
                for d in &mut docs {
                    set_namespace(&mut d.object, target);
                }
            }
            if fields.keys().any(|k| k != "namespace") || !components.is_empty() {
                sink.note(format!(
                    "Kustomization {ns}/{name}: patches, components or images not applied (no kustomize)"
                ));
            }
            return Ok(Prepared::Ready(docs));
        }
        if kfile.is_none() && fields.is_empty() && components.is_empty() {
            return Ok(Prepared::Ready(self.render_dir(path, sink)?));
        }
        let write_err = |e: std::io::Error| RenderError::Build {
            path: path.display().to_string(),
            message: format!("temporary file: {e}"),
        };
        // A kustomization.yaml in the path is included as it is; a directory without one
        // is read here first and handed over as one file.
        let mut origin: BTreeMap<(String, String), (PathBuf, Option<usize>)> = BTreeMap::new();
        let resource = if kfile.is_some() {
            relative_path(dir, path).display().to_string()
        } else {
            let docs = self.render_dir(path, sink)?;
            if docs.is_empty() {
                return Ok(Prepared::Ready(docs));
            }
            let mut stream = String::new();
            for d in &docs {
                stream.push_str("---\n");
                stream.push_str(&serde_saphyr::to_string(&d.object).unwrap_or_default());
                let kind = str_at(&d.object, "/kind").unwrap_or("").to_owned();
                let name = str_at(&d.object, "/metadata/name").unwrap_or("").to_owned();
                origin
                    .entry((kind, name))
                    .or_insert((d.file.clone(), d.line));
            }
            std::fs::write(dir.join("resources.yaml"), stream).map_err(write_err)?;
            "resources.yaml".to_owned()
        };
        let mut k = serde_json::Map::new();
        k.insert(
            "apiVersion".into(),
            "kustomize.config.k8s.io/v1beta1".into(),
        );
        k.insert("kind".into(), "Kustomization".into());
        k.insert("resources".into(), Value::from(vec![resource]));
        k.extend(fields);
        if !components.is_empty() {
            let rel: Vec<Value> = components
                .iter()
                .map(|c| Value::from(relative_path(dir, c).display().to_string()))
                .collect();
            k.insert("components".into(), rel.into());
        }
        std::fs::write(
            dir.join("kustomization.yaml"),
            serde_json::to_string(&Value::Object(k)).unwrap_or_default(),
        )
        .map_err(write_err)?;
        Ok(Prepared::Built(Plan {
            file: kfile.unwrap_or_else(|| path.to_path_buf()),
            origin,
            prefix: spec
                .get("namePrefix")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            suffix: spec
                .get("nameSuffix")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        }))
    }
}

enum Prepared {
    /// The objects, with nothing left for kustomize to do.
    Ready(Vec<Document>),
    /// A kustomization is written; build it and `finish` what it emits.
    Built(Plan),
}

struct Plan {
    /// The file findings name for what the build emits.
    file: PathBuf,
    /// (kind, name) → the file and line an object came from, for a directory read here.
    origin: BTreeMap<(String, String), (PathBuf, Option<usize>)>,
    prefix: String,
    suffix: String,
}

impl Plan {
    /// Names each built object's file, and its line when it came from a file read here.
    fn finish(&self, mut docs: Vec<Document>) -> Vec<Document> {
        for d in &mut docs {
            d.file = self.file.clone();
            d.line = None;
            let kind = str_at(&d.object, "/kind").unwrap_or("").to_owned();
            let name = str_at(&d.object, "/metadata/name").unwrap_or("");
            let bare = name.strip_prefix(self.prefix.as_str()).unwrap_or(name);
            let bare = bare
                .strip_suffix(self.suffix.as_str())
                .unwrap_or(bare)
                .to_owned();
            if let Some((f, line)) = self.origin.get(&(kind, bare)) {
                d.file = f.clone();
                d.line = *line;
            }
        }
        docs
    }
}

/// Post-build substitution and the Kustomization's name on each object it applies.
fn finish_kustomization(
    ks: &Value,
    vars: &BTreeMap<String, String>,
    mut docs: Vec<Document>,
) -> Vec<Document> {
    let (ns, name) = ns_name(ks);
    let by = format!("Kustomization {ns}/{name}");
    for d in &mut docs {
        substitute::substitute_object(&mut d.object, vars);
        d.applied_by = Some(by.clone());
    }
    docs
}

/// The name suffix that marks job `i` of a combined build.
fn job_token(i: usize) -> String {
    format!("-fxjob{i}q")
}

/// Which job of a combined build made an object with this name.
fn job_of(name: &str) -> Option<usize> {
    let at = name.rfind("-fxjob")?;
    let rest = &name[at + "-fxjob".len()..];
    let end = rest.find('q')?;
    rest[..end].parse().ok()
}

/// Takes a job's suffix out of every string (names and the references to them) and key.
fn strip_token(v: &mut Value, token: &str) {
    match v {
        Value::String(s) if s.contains(token) => *s = s.replace(token, ""),
        Value::Array(a) => a.iter_mut().for_each(|e| strip_token(e, token)),
        Value::Object(m) => {
            if m.keys().any(|k| k.contains(token)) {
                let old = std::mem::take(m);
                for (k, val) in old {
                    m.insert(k.replace(token, ""), val);
                }
            }
            m.values_mut().for_each(|e| strip_token(e, token));
        }
        _ => {}
    }
}

/// `f` over every item on up to one thread per core, results in the items' order; None for
/// an item whose thread stopped (a panic).
pub(crate) fn on_each_core<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: Vec<Vec<(usize, R)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            break;
                        };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut slots: Vec<Option<R>> = items.iter().map(|_| None).collect();
    for (i, r) in done.into_iter().flatten() {
        slots[i] = Some(r);
    }
    slots
}

/// Kinds without a namespace (the common ones; kustomize knows them all).
const CLUSTER_SCOPED: [&str; 12] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "StorageClass",
    "PriorityClass",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "IngressClass",
    "RuntimeClass",
];

fn set_namespace(obj: &mut Value, ns: &str) {
    let kind = str_at(obj, "/kind").unwrap_or("");
    if CLUSTER_SCOPED.contains(&kind) || kind.starts_with("Cluster") {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), ns.into());
    }
}

/// The objects of a world as read from the directory given, by identity: each gives way
/// once to the same object as a Kustomization applies it.
struct AsWritten {
    at: std::collections::HashMap<(String, String, String, String), usize>,
}

impl AsWritten {
    fn index(docs: &[Document]) -> AsWritten {
        let at = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.applied_by.is_none())
            .map(|(i, d)| (identity(&d.object), i))
            .collect();
        AsWritten { at }
    }

    /// Adds a Kustomization's output to the world.
    fn merge(&mut self, docs: &mut Vec<Document>, out: Vec<Document>) {
        for d in out {
            if !self.at.is_empty()
                && let Some(i) = self.at.remove(&identity(&d.object))
            {
                docs[i] = d;
            } else {
                docs.push(d);
            }
        }
    }
}

/// A Kustomization's `postBuild` variables: `substituteFrom` in order, then `substitute`
/// (which wins). Values come from ConfigMaps and Secrets in the world or the repository;
/// encrypted values (SOPS) are not values and are left out.
fn variables(ks: &Value, known: &[&Document], scan: &Scan) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    let (ns, _) = ns_name(ks);
    for from in ks
        .pointer("/spec/postBuild/substituteFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = str_at(from, "/kind").unwrap_or("ConfigMap");
        let Some(src) = str_at(from, "/name") else {
            continue;
        };
        let key = (kind.to_owned(), ns.clone(), src.to_owned());
        let found = known
            .iter()
            .rev()
            .map(|d| &d.object)
            .find(|o| {
                str_at(o, "/kind") == Some(kind) && str_at(o, "/apiVersion") == Some("v1") && {
                    let (ons, oname) = ns_name(o);
                    ons == ns && oname == src
                }
            })
            .or_else(|| scan.config.get(&key));
        // Not in the repository: its variables stay as written (a missing, non-optional
        // source is a finding of the referenced-secrets rule).
        let Some(obj) = found else {
            continue;
        };
        if obj.get("sops").is_some() {
            continue;
        }
        if let Some(data) = obj.get("data").and_then(Value::as_object) {
            for (k, v) in data {
                let Some(s) = v.as_str() else { continue };
                let value = if kind == "Secret" {
                    match decode_base64(s) {
                        Some(v) => v,
                        None => continue,
                    }
                } else {
                    s.to_owned()
                };
                vars.insert(k.clone(), value);
            }
        }
        if let Some(data) = obj.get("stringData").and_then(Value::as_object) {
            for (k, v) in data {
                if let Some(s) = v.as_str() {
                    vars.insert(k.clone(), s.to_owned());
                }
            }
        }
    }
    if let Some(sub) = ks
        .pointer("/spec/postBuild/substitute")
        .and_then(Value::as_object)
    {
        for (k, v) in sub {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            vars.insert(k.clone(), s);
        }
    }
    vars
}

fn decode_base64(s: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .ok()?;
    String::from_utf8(bytes).ok()
}
