//! The charts behind HelmReleases, rendered with a real `helm template` where the chart can
//! be had offline (in the repository, or in a local chart cache).
//!
//! Where the chart is: a path in this repository (`chart: ./charts/x` from the repository's
//! own GitRepository, `flux-system`), or `NAME` from a HelmRepository, Bucket or (through
//! `spec.chartRef`) an OCIRepository or HelmChart, looked up in the `--charts` directories as
//! `NAME-VERSION.tgz` or an unpacked chart, the highest version the release's range allows.
//! Nothing is fetched: a chart that is not there is named once in the summary.
//!
//! The values are composed the way helm-controller composes them: `valuesFrom` in order
//! (ConfigMaps and Secrets of the world; SOPS-encrypted ones cannot be read), each merged
//! deeply onto the last or set at its `targetPath`, then `values` on top. The output then goes
//! through the release's kustomize post-renderers in order (`patches`, `images`, and the
//! older inline `patchesStrategicMerge`/`patchesJson6902`), each a kustomize build over the
//! last output, as helm-controller runs them. HelmReleases among what a chart renders are
//! rendered in turn, a few charts deep.

use super::{CLUSTER_SCOPED, Kustomize, decode_base64, join_repo, ns_name, on_path, str_at};
use crate::check::Document;
use crate::cluster::load::parse_manifests_with_lines;
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where charts come from and the helm that renders them.
#[derive(Debug, Default)]
pub struct Charts {
    helm: Option<PathBuf>,
    cache: Vec<PathBuf>,
}

/// One release to render: everything `helm template` needs.
struct Job {
    /// `HelmRelease ns/name`.
    by: String,
    file: PathBuf,
    release: String,
    namespace: String,
    chart: PathBuf,
    /// Values files of the chart source (`spec.chart.spec.valuesFiles`), before `values`.
    values_files: Vec<PathBuf>,
    values: Value,
    crds: bool,
    /// `spec.postRenderers[].kustomize`, each a kustomization to build over the last output.
    post_renderers: Vec<Value>,
}

/// How many charts deep HelmReleases rendered by charts are rendered in turn.
const MAX_NESTED_CHARTS: usize = 3;

/// What one render gave: the objects and the notes.
type Output = (Vec<Document>, Vec<String>);

/// A chart reference as the source-controller would resolve it.
struct ChartSpec<'a> {
    chart: &'a str,
    version: Option<&'a str>,
    source_kind: &'a str,
    source_name: &'a str,
    values_files: Vec<&'a str>,
}

/// Where a release's chart is, or what it is that is not here.
enum Located {
    Found {
        chart: PathBuf,
        values_files: Vec<PathBuf>,
    },
    Missing(String),
}

impl Charts {
    pub fn new(helm: Option<&Path>, cache: &[PathBuf]) -> Charts {
        Charts {
            helm: helm.map(Path::to_path_buf),
            cache: cache.to_vec(),
        }
    }

    /// Appends what each HelmRelease in `docs` installs, and what the HelmReleases a chart
    /// renders install in turn (up to [`MAX_NESTED_CHARTS`] deep); returns notes for the
    /// summary. `kustomize` runs the releases' kustomize post-renderers.
    pub(super) fn render_releases(
        &self,
        root: &Path,
        docs: &mut Vec<Document>,
        kustomize: Option<&Kustomize>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let mut from = 0;
        for level in 0..=MAX_NESTED_CHARTS {
            let before = docs.len();
            notes.extend(self.render_from(root, docs, from, kustomize));
            from = before;
            let nested = docs[from..]
                .iter()
                .filter(|d| is_helm_release(&d.object))
                .count();
            if nested == 0 {
                break;
            }
            if level == MAX_NESTED_CHARTS {
                notes.push(format!(
                    "{nested} HelmRelease{} rendered by charts {MAX_NESTED_CHARTS} levels deep not rendered",
                    if nested == 1 { "" } else { "s" }
                ));
            }
        }
        notes
    }

    /// Renders the HelmReleases among `docs[from..]`, appending what they install.
    fn render_from(
        &self,
        root: &Path,
        docs: &mut Vec<Document>,
        from: usize,
        kustomize: Option<&Kustomize>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let mut missing = Vec::new();
        let mut jobs = Vec::new();
        for d in docs[from..].iter().filter(|d| is_helm_release(&d.object)) {
            let hr = &d.object;
            let (ns, name) = ns_name(hr);
            let by = format!("HelmRelease {ns}/{name}");
            let post_renderers = post_renderers(hr);
            if !post_renderers.is_empty() && kustomize.is_none() {
                notes.push(format!(
                    "{by}: postRenderers not applied (no kustomize: PATH or --kustomize)"
                ));
            }
            let (chart, values_files) = match self.locate(root, hr, docs) {
                Located::Found {
                    chart,
                    values_files,
                } => (chart, values_files),
                Located::Missing(what) => {
                    missing.push((what, by));
                    continue;
                }
            };
            let target = str_at(hr, "/spec/targetNamespace").filter(|s| !s.is_empty());
            let release = match str_at(hr, "/spec/releaseName").filter(|s| !s.is_empty()) {
                Some(r) => r.to_owned(),
                None => match target {
                    Some(t) => format!("{t}-{name}"),
                    None => name.clone(),
                },
            };
            jobs.push(Job {
                file: d.file.clone(),
                release,
                namespace: target.map_or(ns.clone(), str::to_owned),
                chart,
                values_files,
                values: compose_values(hr, docs),
                crds: !matches!(
                    str_at(hr, "/spec/install/crds"),
                    Some("Skip") | Some("skip")
                ),
                post_renderers,
                by,
            });
        }
        if !missing.is_empty() {
            // One entry per chart: the release when it is the only one, else how many.
            let mut by_chart: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (what, by) in &missing {
                by_chart.entry(what).or_default().push(by);
            }
            let list: Vec<String> = by_chart
                .iter()
                .map(|(what, bys)| match bys.as_slice() {
                    [one] => format!("{what} ({one})"),
                    many => format!("{what} ({} HelmReleases)", many.len()),
                })
                .collect();
            notes.push(format!(
                "{} HelmRelease{} not rendered, {} chart{} not available offline: {}",
                missing.len(),
                if missing.len() == 1 { "" } else { "s" },
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                list.join(", ")
            ));
        }
        if jobs.is_empty() {
            return notes;
        }
        let Some(helm) = self.helm.clone().or_else(|| on_path("helm")) else {
            notes.push(format!(
                "no helm found (PATH or --helm): {} HelmRelease{} not rendered",
                jobs.len(),
                if jobs.len() == 1 { "" } else { "s" }
            ));
            return notes;
        };
        for (out, job_notes) in render_all(&helm, kustomize, &jobs) {
            docs.extend(out);
            notes.extend(job_notes);
        }
        notes
    }

    /// Finds a release's chart in the repository or the chart cache.
    fn locate(&self, root: &Path, hr: &Value, docs: &[Document]) -> Located {
        let (ns, _) = ns_name(hr);
        if let Some(spec) = hr.pointer("/spec/chart/spec") {
            let Some(cs) = chart_spec(spec) else {
                return Located::Missing("spec.chart.spec without a chart".into());
            };
            return self.locate_spec(root, &cs);
        }
        let Some(cref) = hr.pointer("/spec/chartRef") else {
            return Located::Missing("no spec.chart or spec.chartRef".into());
        };
        let kind = str_at(cref, "/kind").unwrap_or("");
        let name = str_at(cref, "/name").unwrap_or("");
        let ref_ns = str_at(cref, "/namespace").unwrap_or(&ns);
        let Some(src) = find_object(docs, kind, "source.toolkit.fluxcd.io/", ref_ns, name) else {
            return Located::Missing(format!("{kind} {ref_ns}/{name}"));
        };
        match kind {
            "OCIRepository" => {
                let url = str_at(src, "/spec/url").unwrap_or("");
                let path = url.strip_prefix("oci://").unwrap_or(url);
                let chart = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
                let version = str_at(src, "/spec/ref/semver")
                    .or_else(|| str_at(src, "/spec/ref/tag"))
                    .filter(|t| *t != "latest");
                match self.find_cached(chart, version) {
                    Some(p) => Located::Found {
                        chart: p,
                        values_files: Vec::new(),
                    },
                    None => Located::Missing(format!("{path} {}", version.unwrap_or("*"))),
                }
            }
            "HelmChart" => match src.get("spec").and_then(chart_spec) {
                Some(cs) => self.locate_spec(root, &cs),
                None => Located::Missing(format!("HelmChart {ref_ns}/{name} without a chart")),
            },
            _ => Located::Missing(format!("{kind} {ref_ns}/{name}")),
        }
    }

    /// A chart named by a `spec.chart.spec` (or a HelmChart's spec).
    fn locate_spec(&self, root: &Path, cs: &ChartSpec) -> Located {
        if cs.source_kind == "GitRepository" {
            if cs.source_name != "flux-system" {
                return Located::Missing(format!("GitRepository {}:{}", cs.source_name, cs.chart));
            }
            let dir = join_repo(root, cs.chart);
            let packaged = dir.is_file() && dir.extension().is_some_and(|e| e == "tgz");
            if !dir.join("Chart.yaml").is_file() && !packaged {
                return Located::Missing(format!("{} (not a chart in the repository)", cs.chart));
            }
            let values_files = cs.values_files.iter().map(|f| join_repo(root, f)).collect();
            return Located::Found {
                chart: dir,
                values_files,
            };
        }
        let name = cs.chart.trim_end_matches('/');
        match self.find_cached(name, cs.version) {
            Some(p) => {
                // Values files are paths inside the chart: only an unpacked one has them.
                let values_files = if p.is_dir() {
                    cs.values_files.iter().map(|f| p.join(f)).collect()
                } else {
                    Vec::new()
                };
                Located::Found {
                    chart: p,
                    values_files,
                }
            }
            None => Located::Missing(format!(
                "{}/{} {}",
                cs.source_name,
                name,
                cs.version.unwrap_or("*")
            )),
        }
    }

    /// The highest version of chart `name` in the cache that `range` allows.
    fn find_cached(&self, name: &str, range: Option<&str>) -> Option<PathBuf> {
        if name.is_empty() {
            return None;
        }
        let range = match range.map(str::trim).filter(|r| !r.is_empty()) {
            Some(r) => Some(Range::parse(r)?),
            None => None,
        };
        let mut candidates = Vec::new();
        for dir in &self.cache {
            collect_charts(dir, name, 2, &mut candidates);
        }
        choose(candidates, range.as_ref())
    }
}

fn is_helm_release(v: &Value) -> bool {
    str_at(v, "/kind") == Some("HelmRelease")
        && str_at(v, "/apiVersion").is_some_and(|a| a.starts_with("helm.toolkit.fluxcd.io/"))
}

fn chart_spec(spec: &Value) -> Option<ChartSpec<'_>> {
    Some(ChartSpec {
        chart: str_at(spec, "/chart").filter(|c| !c.is_empty())?,
        version: str_at(spec, "/version"),
        source_kind: str_at(spec, "/sourceRef/kind").unwrap_or("HelmRepository"),
        source_name: str_at(spec, "/sourceRef/name").unwrap_or(""),
        values_files: spec
            .get("valuesFiles")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect(),
    })
}

/// The last object of this kind, API group prefix, namespace and name in the world.
fn find_object<'a>(
    docs: &'a [Document],
    kind: &str,
    api_prefix: &str,
    ns: &str,
    name: &str,
) -> Option<&'a Value> {
    docs.iter().rev().map(|d| &d.object).find(|o| {
        str_at(o, "/kind") == Some(kind)
            && str_at(o, "/apiVersion").is_some_and(|a| a.starts_with(api_prefix))
            && ns_name(o) == (ns.to_owned(), name.to_owned())
    })
}

/// Charts called `name` at `path` (a `.tgz`, an unpacked chart, or a directory holding
/// them, looked into `depth` levels down), with their versions.
fn collect_charts(path: &Path, name: &str, depth: usize, out: &mut Vec<(Version, PathBuf)>) {
    if path.is_file() {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(v) = file
            .strip_suffix(".tgz")
            .and_then(|f| f.strip_prefix(name))
            .and_then(|f| f.strip_prefix('-'))
            .and_then(Version::parse)
        {
            out.push((v, path.to_path_buf()));
        }
        return;
    }
    let chart_yaml = path.join("Chart.yaml");
    if chart_yaml.is_file() {
        let meta = std::fs::read_to_string(&chart_yaml)
            .ok()
            .and_then(|t| serde_saphyr::from_str::<Value>(&t).ok());
        if let Some(meta) = meta
            && str_at(&meta, "/name") == Some(name)
        {
            let version = match meta.get("version") {
                Some(Value::String(s)) => Version::parse(s),
                Some(Value::Number(n)) => Version::parse(&n.to_string()),
                _ => None,
            };
            if let Some(v) = version {
                out.push((v, path.to_path_buf()));
            }
        }
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(path) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for e in entries {
        collect_charts(&e, name, depth - 1, out);
    }
}

/// The highest version the range allows (any when there is none); the first found of equals.
fn choose(candidates: Vec<(Version, PathBuf)>, range: Option<&Range>) -> Option<PathBuf> {
    let mut best: Option<(Version, PathBuf)> = None;
    for (v, p) in candidates {
        let fits = match range {
            Some(r) => r.matches(&v),
            None => v.pre.is_empty(),
        };
        if fits
            && best
                .as_ref()
                .is_none_or(|(b, _)| v.cmp(b) == Ordering::Greater)
        {
            best = Some((v, p));
        }
    }
    best.map(|(_, p)| p)
}

// ---- values ----

/// The values helm-controller would install the release with: `valuesFrom` in order, then
/// `values`.
fn compose_values(hr: &Value, docs: &[Document]) -> Value {
    let (ns, _) = ns_name(hr);
    let mut result = Value::Object(Map::new());
    for from in hr
        .pointer("/spec/valuesFrom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = str_at(from, "/kind").unwrap_or("ConfigMap");
        if kind != "ConfigMap" && kind != "Secret" {
            continue;
        }
        let Some(name) = str_at(from, "/name") else {
            continue;
        };
        let key = str_at(from, "/valuesKey")
            .filter(|k| !k.is_empty())
            .unwrap_or("values.yaml");
        // Not in the repository, or encrypted: left out (a missing, non-optional source is a
        // finding of the referenced-secrets rule).
        let Some(obj) = find_object(docs, kind, "v1", &ns, name) else {
            continue;
        };
        let Some(text) = source_value(obj, kind, key) else {
            continue;
        };
        match str_at(from, "/targetPath").filter(|p| !p.is_empty()) {
            Some(path) => set_path(&mut result, path, &text),
            None => {
                if let Ok(v) = serde_saphyr::from_str::<Value>(&text)
                    && v.is_object()
                {
                    merge_values(&mut result, v);
                }
            }
        }
    }
    if let Some(values) = hr.pointer("/spec/values")
        && values.is_object()
    {
        merge_values(&mut result, values.clone());
    }
    result
}

/// One key of a ConfigMap or Secret (`data`, base64 for a Secret, then `stringData`).
fn source_value(obj: &Value, kind: &str, key: &str) -> Option<String> {
    if obj.get("sops").is_some() {
        return None;
    }
    if kind == "Secret"
        && let Some(s) = obj.pointer("/stringData").and_then(|d| d.get(key))
    {
        return s.as_str().map(str::to_owned);
    }
    let raw = obj.pointer("/data").and_then(|d| d.get(key))?.as_str()?;
    if kind == "Secret" {
        decode_base64(raw)
    } else {
        Some(raw.to_owned())
    }
}

/// Merges `over` onto `base`: maps key by key, anything else replaced (Helm's MergeMaps).
fn merge_values(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge_values(existing, v);
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// One step of a `targetPath`: a map key or a list index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The largest list index Helm's `--set` accepts.
const MAX_INDEX: usize = 65536;

/// A `targetPath` as Helm's `--set` reads it: keys split at dots (`\.` is a dot in a key),
/// each key followed by any number of `[N]` list indexes (`servers[0].port`, `m[1][2]`).
/// None when a bracket is malformed or an index is past Helm's limit.
fn path_steps(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars().peekable();
    // Whether the last step was an index, so a dot after it starts a key without one before.
    let mut after_index = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                cur.push('.');
                chars.next();
            }
            '.' => {
                if !after_index {
                    steps.push(Step::Key(std::mem::take(&mut cur)));
                }
                after_index = false;
            }
            '[' => {
                if !after_index {
                    steps.push(Step::Key(std::mem::take(&mut cur)));
                }
                let mut digits = String::new();
                loop {
                    match chars.next()? {
                        ']' => break,
                        d => digits.push(d),
                    }
                }
                let i: usize = digits.trim().parse().ok()?;
                if i > MAX_INDEX {
                    return None;
                }
                steps.push(Step::Index(i));
                after_index = true;
            }
            _ if after_index => return None,
            _ => cur.push(c),
        }
    }
    if !after_index {
        steps.push(Step::Key(cur));
    }
    Some(steps)
}

/// Sets one value at a `targetPath` (see [`path_steps`]), typed the way Helm's `--set` types
/// it; a quoted value stays a string (helm-controller's `targetPath`). A list is grown with
/// nulls up to an index past its end; a step that meets the wrong kind of value replaces it.
/// A path Helm would refuse leaves the values as they are.
fn set_path(values: &mut Value, path: &str, raw: &str) {
    let Some(steps) = path_steps(path) else {
        return;
    };
    let quoted = raw.len() >= 2
        && ((raw.starts_with('"') && raw.ends_with('"'))
            || (raw.starts_with('\'') && raw.ends_with('\'')));
    let value = if quoted {
        Value::String(raw[1..raw.len() - 1].to_owned())
    } else {
        match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => raw
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(raw.to_owned())),
        }
    };
    let mut at = values;
    for step in steps {
        at = match step {
            Step::Key(k) => {
                if !at.is_object() {
                    *at = Value::Object(Map::new());
                }
                let Some(m) = at.as_object_mut() else { return };
                m.entry(k).or_insert(Value::Null)
            }
            Step::Index(i) => {
                if !at.is_array() {
                    *at = Value::Array(Vec::new());
                }
                let Some(list) = at.as_array_mut() else {
                    return;
                };
                if list.len() <= i {
                    list.resize(i + 1, Value::Null);
                }
                let Some(slot) = list.get_mut(i) else { return };
                slot
            }
        };
    }
    *at = value;
}

// ---- running helm ----

/// Renders the releases on up to one thread per core; results in job order.
fn render_all(helm: &Path, kustomize: Option<&Kustomize>, jobs: &[Job]) -> Vec<Output> {
    super::on_each_core(jobs, |job| render_one(helm, kustomize, job))
        .into_iter()
        .zip(jobs)
        .map(|(out, job)| {
            out.unwrap_or_else(|| {
                (
                    Vec::new(),
                    vec![format!("{}: a render thread stopped", job.by)],
                )
            })
        })
        .collect()
}

/// `helm template` for one release, then its post-renderers.
fn render_one(helm: &Path, kustomize: Option<&Kustomize>, job: &Job) -> Output {
    let fail = |message: String| (Vec::new(), vec![format!("{}: {message}", job.by)]);
    let values = match tempfile::Builder::new()
        .prefix("fluxadmit-values-")
        .suffix(".json")
        .tempfile()
    {
        Ok(f) => f,
        Err(e) => return fail(format!("temporary file: {e}")),
    };
    if let Err(e) = std::fs::write(values.path(), job.values.to_string()) {
        return fail(format!("temporary file: {e}"));
    }
    let mut cmd = Command::new(helm);
    cmd.arg("template")
        .arg(&job.release)
        .arg(&job.chart)
        .arg("--namespace")
        .arg(&job.namespace);
    if job.crds {
        cmd.arg("--include-crds");
    }
    for f in &job.values_files {
        cmd.arg("-f").arg(f);
    }
    cmd.arg("-f").arg(values.path());
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot run {}: {e}", helm.display())),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_owned();
        return fail(format!("helm template failed: {first}"));
    }
    let Ok(mut text) = String::from_utf8(out.stdout) else {
        return fail("helm template output is not UTF-8".into());
    };
    // helm-controller's kustomize post-renderers, in order.
    let post_rendered = kustomize.is_some() && !job.post_renderers.is_empty();
    if let Some(k) = kustomize {
        for (i, spec) in job.post_renderers.iter().enumerate() {
            text = match post_render(k, spec, &text) {
                Ok(t) => t,
                Err(e) => return fail(format!("postRenderers[{i}]: {e}")),
            };
        }
    }
    let parsed = match parse_manifests_with_lines(&job.file, &text) {
        Ok(p) => p,
        Err(e) if post_rendered => {
            return fail(format!("post-rendered output does not parse: {e}"));
        }
        Err(e) => return fail(format!("helm template output does not parse: {e}")),
    };
    let docs = parsed
        .into_iter()
        .filter(|(_, o)| str_at(o, "/apiVersion").is_some() && str_at(o, "/kind").is_some())
        .map(|(_, mut object)| {
            default_namespace(&mut object, &job.namespace);
            Document {
                file: job.file.clone(),
                line: None,
                applied_by: Some(job.by.clone()),
                object,
            }
        })
        .collect();
    (docs, Vec::new())
}

/// The kustomize post-renderers of a release, in order, as kustomization fields: `patches`
/// and `images` as helm-controller passes them, and the older `patchesStrategicMerge`
/// (inline objects) and `patchesJson6902` (inline operations) as patches.
fn post_renderers(hr: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for pr in hr
        .pointer("/spec/postRenderers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(k) = pr.get("kustomize") else {
            continue;
        };
        let list = |field: &str| k.get(field).and_then(Value::as_array).into_iter().flatten();
        let mut patches: Vec<Value> = list("patches").cloned().collect();
        for p in list("patchesStrategicMerge") {
            patches.push(serde_json::json!({ "patch": p.to_string() }));
        }
        for p in list("patchesJson6902") {
            let mut entry = Map::new();
            if let Some(ops) = p.get("patch") {
                entry.insert("patch".into(), ops.to_string().into());
            }
            if let Some(t) = p.get("target") {
                entry.insert("target".into(), t.clone());
            }
            patches.push(Value::Object(entry));
        }
        let mut fields = Map::new();
        if !patches.is_empty() {
            fields.insert("patches".into(), patches.into());
        }
        if let Some(images) = k
            .get("images")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
        {
            fields.insert("images".into(), images.clone().into());
        }
        if !fields.is_empty() {
            out.push(Value::Object(fields));
        }
    }
    out
}

/// One kustomize post-renderer over a manifest stream: the stream as the only resource of a
/// kustomization with the renderer's fields, built.
fn post_render(kustomize: &Kustomize, fields: &Value, manifests: &str) -> Result<String, String> {
    let dir = tempfile::Builder::new()
        .prefix("fluxadmit-post-render-")
        .tempdir()
        .map_err(|e| format!("temporary directory: {e}"))?;
    let mut k = Map::new();
    k.insert(
        "apiVersion".into(),
        "kustomize.config.k8s.io/v1beta1".into(),
    );
    k.insert("kind".into(), "Kustomization".into());
    k.insert("resources".into(), serde_json::json!(["resources.yaml"]));
    if let Some(f) = fields.as_object() {
        k.extend(f.clone());
    }
    std::fs::write(dir.path().join("resources.yaml"), manifests)
        .and_then(|()| {
            std::fs::write(
                dir.path().join("kustomization.yaml"),
                Value::Object(k).to_string(),
            )
        })
        .map_err(|e| format!("temporary file: {e}"))?;
    kustomize.build(dir.path())
}

/// The release namespace on a namespaced object that names none.
fn default_namespace(obj: &mut Value, ns: &str) {
    let kind = str_at(obj, "/kind").unwrap_or("");
    if CLUSTER_SCOPED.contains(&kind) || kind.starts_with("Cluster") {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut)
        && meta
            .get("namespace")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        meta.insert("namespace".into(), ns.into());
    }
}

// ---- versions ----

/// A semantic version (Helm reads `1.2` as `1.2.0` and allows a leading `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<String>,
}

impl Version {
    fn parse(s: &str) -> Option<Version> {
        let p = Partial::parse(s)?;
        Some(Version {
            major: p.major?,
            minor: p.minor.unwrap_or(0),
            patch: p.patch.unwrap_or(0),
            pre: p.pre,
        })
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o != Ordering::Equal {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A version as a constraint writes it: `1`, `1.2`, `1.2.x`, `*`, `1.2.3-rc.1`.
#[derive(Debug, Clone)]
struct Partial {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Vec<String>,
}

impl Partial {
    fn parse(s: &str) -> Option<Partial> {
        let s = s.trim();
        let s = s.strip_prefix(['v', 'V']).unwrap_or(s);
        let s = s.split_once('+').map_or(s, |(v, _)| v);
        let (core, pre) = match s.split_once('-') {
            Some((c, p)) => (c, p.split('.').map(str::to_owned).collect()),
            None => (s, Vec::new()),
        };
        let mut parts = core.split('.');
        let mut field = |required: bool| -> Option<Option<u64>> {
            match parts.next() {
                None if !required => Some(None),
                None => None,
                Some("x" | "X" | "*") => Some(None),
                Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                    n.parse().ok().map(Some)
                }
                Some(_) => None,
            }
        };
        let major = field(true)?;
        let minor = field(false)?;
        let patch = field(false)?;
        if parts.next().is_some() {
            return None;
        }
        // A wildcard ends the version: `1.x.3` is not one.
        if (major.is_none() && (minor.is_some() || patch.is_some()))
            || (minor.is_none() && patch.is_some())
        {
            return None;
        }
        Some(Partial {
            major,
            minor,
            patch,
            pre,
        })
    }

    fn is_full(&self) -> bool {
        self.patch.is_some()
    }

    /// The lowest version it covers.
    fn floor(&self) -> Version {
        Version {
            major: self.major.unwrap_or(0),
            minor: self.minor.unwrap_or(0),
            patch: self.patch.unwrap_or(0),
            pre: self.pre.clone(),
        }
    }

    /// The first version past the ones it covers (None: no end, `*`).
    fn ceiling(&self) -> Option<Version> {
        let v = |major, minor, patch| Version {
            major,
            minor,
            patch,
            pre: Vec::new(),
        };
        match (self.major, self.minor, self.patch) {
            (None, _, _) => None,
            (Some(ma), None, _) => Some(v(ma + 1, 0, 0)),
            (Some(ma), Some(mi), None) => Some(v(ma, mi + 1, 0)),
            (Some(ma), Some(mi), Some(pa)) => Some(v(ma, mi, pa + 1)),
        }
    }
}

/// One comparison of a constraint.
#[derive(Debug, Clone)]
enum Bound {
    AtLeast(Version),
    Above(Version),
    Below(Version),
    AtMost(Version),
    Not(Version),
}

impl Bound {
    fn matches(&self, v: &Version) -> bool {
        match self {
            Bound::AtLeast(b) => v >= b,
            Bound::Above(b) => v > b,
            Bound::Below(b) => v < b,
            Bound::AtMost(b) => v <= b,
            Bound::Not(b) => v != b,
        }
    }
}

/// A version constraint as Helm (Masterminds semver) reads it: `||` between alternatives,
/// comma or space between the comparisons that must all hold; `=`, `!=`, `>`, `>=`, `<`,
/// `<=`, `~`, `^`, wildcards (`1.2.x`, `*`) and hyphen ranges (`1.2 - 1.4`). A pre-release
/// version fits only a constraint that names a pre-release.
#[derive(Debug, Clone)]
struct Range {
    alternatives: Vec<Vec<Bound>>,
    pre: bool,
}

impl Range {
    fn parse(s: &str) -> Option<Range> {
        let mut alternatives = Vec::new();
        let mut pre = false;
        for alt in s.split("||") {
            // Hyphen ranges first (`1.2 - 1.4`), then operators glued to their versions.
            let tokens: Vec<&str> = alt
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .collect();
            let mut joined: Vec<String> = Vec::new();
            let mut i = 0;
            while i < tokens.len() {
                let t = tokens[i];
                if matches!(t, "=" | "!=" | ">" | ">=" | "<" | "<=" | "~" | "~>" | "^")
                    && let Some(next) = tokens.get(i + 1)
                {
                    joined.push(format!("{t}{next}"));
                    i += 2;
                } else {
                    joined.push(t.to_owned());
                    i += 1;
                }
            }
            let mut bounds = Vec::new();
            let mut j = 0;
            while j < joined.len() {
                if joined.get(j + 1).map(String::as_str) == Some("-")
                    && let Some(hi) = joined.get(j + 2)
                {
                    let lo = Partial::parse(&joined[j])?;
                    let hi = Partial::parse(hi)?;
                    pre |= !lo.pre.is_empty() || !hi.pre.is_empty();
                    bounds.push(Bound::AtLeast(lo.floor()));
                    if hi.is_full() {
                        bounds.push(Bound::AtMost(hi.floor()));
                    } else if let Some(c) = hi.ceiling() {
                        bounds.push(Bound::Below(c));
                    }
                    j += 3;
                    continue;
                }
                let (op, p) = split_op(&joined[j]);
                let p = Partial::parse(p)?;
                pre |= !p.pre.is_empty();
                term(op, &p, &mut bounds)?;
                j += 1;
            }
            alternatives.push(bounds);
        }
        Some(Range { alternatives, pre })
    }

    fn matches(&self, v: &Version) -> bool {
        if !v.pre.is_empty() && !self.pre {
            return false;
        }
        self.alternatives
            .iter()
            .any(|all| all.iter().all(|b| b.matches(v)))
    }
}

fn split_op(t: &str) -> (&str, &str) {
    for op in ["!=", ">=", "<=", "~>", "=", ">", "<", "~", "^"] {
        if let Some(rest) = t.strip_prefix(op) {
            return (op, rest);
        }
    }
    ("", t)
}

/// The bounds of one comparison.
fn term(op: &str, p: &Partial, out: &mut Vec<Bound>) -> Option<()> {
    let floor = p.floor();
    match op {
        "" | "=" => {
            if p.is_full() {
                out.push(Bound::AtLeast(floor.clone()));
                out.push(Bound::AtMost(floor));
            } else if p.major.is_some() {
                out.push(Bound::AtLeast(floor));
                out.extend(p.ceiling().map(Bound::Below));
            }
        }
        // `!=1.2` excludes 1.2.0 only (a wildcard does not widen it here).
        "!=" => out.push(Bound::Not(floor)),
        ">" => match (p.is_full(), p.ceiling()) {
            (true, _) => out.push(Bound::Above(floor)),
            (false, Some(c)) => out.push(Bound::AtLeast(c)),
            (false, None) => out.push(Bound::Below(Version::parse("0.0.0")?)),
        },
        ">=" => out.push(Bound::AtLeast(floor)),
        "<" => out.push(Bound::Below(floor)),
        "<=" => match (p.is_full(), p.ceiling()) {
            (true, _) => out.push(Bound::AtMost(floor)),
            (false, Some(c)) => out.push(Bound::Below(c)),
            (false, None) => {}
        },
        "~" | "~>" => {
            out.push(Bound::AtLeast(floor));
            let upper = match (p.major, p.minor) {
                (Some(ma), Some(mi)) => Some(Version {
                    major: ma,
                    minor: mi + 1,
                    patch: 0,
                    pre: Vec::new(),
                }),
                (Some(_), None) => p.ceiling(),
                _ => None,
            };
            out.extend(upper.map(Bound::Below));
        }
        "^" => {
            out.push(Bound::AtLeast(floor));
            let v = |major, minor, patch| Version {
                major,
                minor,
                patch,
                pre: Vec::new(),
            };
            let upper = match (p.major, p.minor, p.patch) {
                (None, _, _) => None,
                (Some(ma), _, _) if ma > 0 => Some(v(ma + 1, 0, 0)),
                (Some(0), None, _) => Some(v(1, 0, 0)),
                (Some(0), Some(mi), _) if mi > 0 => Some(v(0, mi + 1, 0)),
                (Some(0), Some(0), None) => Some(v(0, 1, 0)),
                (Some(0), Some(0), Some(pa)) => Some(v(0, 0, pa + 1)),
                _ => None,
            };
            out.extend(upper.map(Bound::Below));
        }
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use serde_json::json;

    fn doc(object: Value) -> Document {
        Document {
            file: PathBuf::from("x.yaml"),
            line: None,
            applied_by: None,
            object,
        }
    }

    fn fits(range: &str, v: &str) -> bool {
        Range::parse(range)
            .unwrap()
            .matches(&Version::parse(v).unwrap())
    }

    #[test]
    fn helm_values_merge_maps_deeply_and_replace_everything_else() {
        let mut base = json!({"image": {"repository": "a", "tag": "1"}, "list": [1, 2], "x": 1});
        merge_values(
            &mut base,
            json!({"image": {"tag": "2"}, "list": [3], "x": {"y": true}}),
        );
        assert_eq!(
            base,
            json!({"image": {"repository": "a", "tag": "2"}, "list": [3], "x": {"y": true}})
        );
    }

    #[test]
    fn target_paths_take_list_indexes_as_helm_set_does() {
        let mut v = json!({"servers": [{"port": 80, "host": "a"}], "keep": 1});
        set_path(&mut v, "servers[0].port", "8080");
        set_path(&mut v, "servers[2].host", "c");
        set_path(&mut v, "matrix[1][0]", "true");
        set_path(&mut v, "a\\.b[0]", "'x'");
        assert_eq!(
            v,
            json!({
                "servers": [{"port": 8080, "host": "a"}, null, {"host": "c"}],
                "matrix": [null, [true]],
                "a.b": ["x"],
                "keep": 1
            })
        );
        // What Helm refuses changes nothing.
        let before = v.clone();
        for bad in [
            "servers[x].port",
            "servers[0",
            "servers[99999999]",
            "servers[0]x",
        ] {
            set_path(&mut v, bad, "1");
            assert_eq!(v, before, "{bad}");
        }
        assert_eq!(
            path_steps("a.b[3].c"),
            Some(vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(3),
                Step::Key("c".into())
            ])
        );
    }

    mod generated_paths {
        use super::*;
        use proptest::prelude::*;

        /// A path's text from its steps: dots in keys escaped, indexes in brackets.
        fn written(steps: &[Step]) -> String {
            let mut out = String::new();
            for (i, s) in steps.iter().enumerate() {
                match s {
                    Step::Key(k) => {
                        if i > 0 {
                            out.push('.');
                        }
                        out.push_str(&k.replace('.', "\\."));
                    }
                    Step::Index(n) => out.push_str(&format!("[{n}]")),
                }
            }
            out
        }

        fn steps() -> impl Strategy<Value = Vec<Step>> {
            // A key first, then keys and indexes in any order.
            let step = prop_oneof![
                "[a-z][a-z.]{0,3}".prop_map(Step::Key),
                (0usize..4).prop_map(Step::Index),
            ];
            ("[a-z][a-z.]{0,3}", prop::collection::vec(step, 0..5)).prop_map(|(first, rest)| {
                let mut v = vec![Step::Key(first)];
                v.extend(rest);
                v
            })
        }

        fn read<'a>(v: &'a Value, steps: &[Step]) -> Option<&'a Value> {
            steps.iter().try_fold(v, |at, s| match s {
                Step::Key(k) => at.get(k.as_str()),
                Step::Index(i) => at.get(*i),
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// A written path reads back as its steps, and setting it puts the value there
            /// whatever the values held before.
            #[test]
            fn paths_read_back_and_set_where_they_say(
                steps in steps(),
                before in prop_oneof![
                    Just(json!({})),
                    Just(json!({"a": [1, {"b": 2}], "x": "s"})),
                    Just(json!({"a": {"b": [[3]]}})),
                ],
            ) {
                let path = written(&steps);
                prop_assert_eq!(path_steps(&path), Some(steps.clone()), "{}", path);
                let mut v = before;
                set_path(&mut v, &path, "'set'");
                prop_assert_eq!(read(&v, &steps), Some(&json!("set")), "{} in {}", path, v);
            }

            /// Any text as a path: no panic.
            #[test]
            fn any_path_is_safe(path in "[a-z.\\\\\\[\\]0-9]{0,16}") {
                let mut v = json!({"a": [1]});
                set_path(&mut v, &path, "1");
            }
        }
    }

    #[test]
    fn values_from_compose_in_order_then_spec_values_win() {
        use base64::Engine;
        let secret_yaml = base64::engine::general_purpose::STANDARD
            .encode("image:\n  tag: secret\nreplicas: 3\n");
        let docs = vec![
            doc(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "base", "namespace": "apps"},
                "data": {"values.yaml": "image:\n  repository: r\n  tag: cm\nprivileged: true\n"}})),
            doc(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "over", "namespace": "apps"},
                "data": {"v.yaml": secret_yaml}})),
            doc(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "one", "namespace": "apps"},
                "data": {"host": "example.org", "n": "5", "q": "\"7\""}})),
            // Same name, other namespace: not this release's.
            doc(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "base", "namespace": "other"},
                "data": {"values.yaml": "privileged: false\n"}})),
            // Encrypted: cannot be read.
            doc(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "enc", "namespace": "apps"},
                "stringData": {"values.yaml": "replicas: 99\n"}, "sops": {"mac": "x"}})),
        ];
        let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "web", "namespace": "apps"},
            "spec": {"valuesFrom": [
                {"kind": "ConfigMap", "name": "base"},
                {"kind": "Secret", "name": "over", "valuesKey": "v.yaml"},
                {"kind": "Secret", "name": "enc"},
                {"kind": "ConfigMap", "name": "missing", "optional": true},
                {"kind": "ConfigMap", "name": "one", "valuesKey": "host", "targetPath": "ingress.hosts\\.main"},
                {"kind": "ConfigMap", "name": "one", "valuesKey": "n", "targetPath": "scale.n"},
                {"kind": "ConfigMap", "name": "one", "valuesKey": "q", "targetPath": "scale.q"},
            ], "values": {"image": {"tag": "spec"}}}});
        let v = compose_values(&hr, &docs);
        assert_eq!(
            v,
            json!({"image": {"repository": "r", "tag": "spec"}, "privileged": true,
                "replicas": 3, "ingress": {"hosts.main": "example.org"},
                "scale": {"n": 5, "q": "7"}})
        );
    }

    #[test]
    fn versions_order_as_semver_with_prereleases_first() {
        let v = |s| Version::parse(s).unwrap();
        assert!(v("1.10.0") > v("1.9.9"));
        assert!(v("2.0.0-rc.1") < v("2.0.0"));
        assert!(v("2.0.0-rc.2") > v("2.0.0-rc.1"));
        assert!(v("2.0.0-rc.10") > v("2.0.0-rc.9"));
        assert_eq!(v("v1.2"), v("1.2.0"));
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
    }

    #[test]
    fn ranges_read_as_helm_reads_them() {
        assert!(fits("1.2.x", "1.2.9") && !fits("1.2.x", "1.3.0"));
        assert!(fits("6.x", "6.5.0") && !fits("6.x", "7.0.0"));
        assert!(fits("*", "0.0.1") && !fits("*", "1.0.0-rc.1"));
        assert!(fits(">=1.0.0", "3.1.0") && !fits(">=1.0.0", "0.9.0"));
        assert!(fits(">=1.0.0 <2.0.0", "1.9.0") && !fits(">=1.0.0, <2.0.0", "2.0.0"));
        assert!(fits("1.2.3", "1.2.3") && !fits("1.2.3", "1.2.4"));
        assert!(fits("=1.2.3", "1.2.3") && !fits("!=1.2.3", "1.2.3"));
        assert!(fits("~1.2.3", "1.2.9") && !fits("~1.2.3", "1.3.0") && !fits("~1.2.3", "1.2.2"));
        assert!(fits("^1.2.3", "1.9.0") && !fits("^1.2.3", "2.0.0"));
        assert!(fits("^0.2.3", "0.2.9") && !fits("^0.2.3", "0.3.0"));
        assert!(fits("1.2 - 1.4", "1.4.7") && !fits("1.2 - 1.4", "1.5.0"));
        assert!(fits("< 1.0.0 || >= 3.0.0", "3.2.0") && !fits("<1.0.0 || >=3.0.0", "2.0.0"));
        assert!(fits(">1.2", "1.3.0") && !fits(">1.2", "1.2.5"));
        assert!(fits(">=2.0.0-0", "2.1.0-rc.1"));
        assert!(Range::parse("latest").is_none());
    }

    #[test]
    fn the_highest_version_the_range_allows_is_chosen() {
        let c = |vs: &[&str]| -> Vec<(Version, PathBuf)> {
            vs.iter()
                .map(|s| (Version::parse(s).unwrap(), PathBuf::from(s)))
                .collect()
        };
        let all = ["6.4.0", "6.5.1", "6.10.0", "7.0.0", "7.1.0-rc.1"];
        let pick = |r: Option<&str>| {
            let range = r.map(|r| Range::parse(r).unwrap());
            choose(c(&all), range.as_ref()).map(|p| p.display().to_string())
        };
        assert_eq!(pick(Some("6.x")).as_deref(), Some("6.10.0"));
        assert_eq!(pick(None).as_deref(), Some("7.0.0"));
        assert_eq!(pick(Some("*")).as_deref(), Some("7.0.0"));
        assert_eq!(pick(Some("6.5.1")).as_deref(), Some("6.5.1"));
        assert_eq!(pick(Some(">=7.1.0-0")).as_deref(), Some("7.1.0-rc.1"));
        assert_eq!(pick(Some("8.x")), None);
    }

    #[test]
    fn cached_charts_are_found_as_tgz_and_unpacked_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("podinfo-6.5.0.tgz"), b"").unwrap();
        std::fs::write(root.join("podinfo-extra-9.0.0.tgz"), b"").unwrap();
        std::fs::create_dir_all(root.join("repo/podinfo")).unwrap();
        std::fs::write(
            root.join("repo/podinfo/Chart.yaml"),
            "apiVersion: v2\nname: podinfo\nversion: 6.6.0\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.join("other")).unwrap();
        std::fs::write(
            root.join("other/Chart.yaml"),
            "apiVersion: v2\nname: other\nversion: 9.9.9\n",
        )
        .unwrap();
        let charts = Charts::new(None, &[root.to_path_buf()]);
        assert_eq!(
            charts.find_cached("podinfo", Some("6.x")),
            Some(root.join("repo/podinfo"))
        );
        assert_eq!(
            charts.find_cached("podinfo", Some("~6.5.0")),
            Some(root.join("podinfo-6.5.0.tgz"))
        );
        assert_eq!(charts.find_cached("podinfo", Some("7.x")), None);
        assert_eq!(
            charts.find_cached("podinfo-extra", None),
            Some(root.join("podinfo-extra-9.0.0.tgz"))
        );
    }
}
