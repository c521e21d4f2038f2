//! `fluxadmit-fuzz seed`: (re)writes `fuzz/corpus/<target>/` from the repository's fixtures
//! (`tests/fixtures`, `examples/`, `policies/`, and the YAML blocks of `policies/README.md`).

use crate::driver::files_under;
use crate::targets::{Target, fuzz_dir};
use fluxadmit_core::check;
use fluxadmit_core::cluster::load::parse_manifests;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Seeds per target, by file name.
type Seeds = BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>;

fn name_of(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace(['/', '\\'], "__")
}

fn is_manifest(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

fn is_policy(v: &Value) -> bool {
    v.get("kind").and_then(Value::as_str) == Some("DeploymentPolicy")
}

/// The ```yaml blocks of a Markdown file.
fn yaml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        let t = line.trim_start();
        match &mut cur {
            None if t.starts_with("```yaml") || t.starts_with("```yml") => {
                cur = Some(String::new())
            }
            Some(block) if t.starts_with("```") => {
                out.push(std::mem::take(block));
                cur = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    out
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if matches!(k.as_str(), "expression" | "messageExpression" | "readyExpr")
                    && let Some(s) = x.as_str()
                {
                    out.push(s.to_string());
                }
                collect_exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_exprs(x, out)),
        _ => {}
    }
}

fn collect_overlays(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "overlay" && x.is_object() {
                    out.push(x.clone());
                }
                collect_overlays(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_overlays(x, out)),
        _ => {}
    }
}

fn has_pods(v: &Value) -> bool {
    v.pointer("/spec/template/spec").is_some()
        || v.pointer("/spec/jobTemplate").is_some()
        || v.pointer("/spec/containers").is_some()
}

/// CEL expressions beyond the fixtures': the variables, macros, extensions and optionals the
/// environment offers.
const EXTRA_CEL: &[&str] = &[
    "has(object.metadata.labels) && 'app' in object.metadata.labels",
    "object.spec.?values.?replicas.orValue(1) <= 3",
    "request.operation == 'CREATE' || oldObject.metadata.name == object.metadata.name",
    "object.metadata.name.matches('^[a-z0-9-]+$') && size(object.metadata.name) < 64",
    "object.spec.template.spec.containers.all(c, !c.image.endsWith(':latest'))",
    "object.spec.template.spec.containers.exists_one(c, c.name == 'web')",
    "object.metadata.name + '-' + string(size(object.metadata)) ",
    "math.greatest([1, 2, 3]) == 3 && sets.contains([1, 2], [1])",
    "base64.encode(b'x') == 'eA==' && 'a,b'.split(',').size() == 2",
    "duration('1h') > duration('30m') && timestamp('2024-01-01T00:00:00Z').getFullYear() == 2024",
    "self.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
    "dep.status.?observedGeneration.orValue(0) >= dep.metadata.generation",
    "'Ready: ' + object.kind",
    "[1, 2, 3].map(x, x * 2).filter(x, x > 2).size() == 2",
    "{'a': 1}.exists(k, k == 'a') ? 'yes' : 'no'",
    "int('9223372036854775807') + 1 > 0",
    "1 / 0 == 0",
    "object.metadata.labels.all(k, object.metadata.labels[k] != '')",
];

/// Overlays beyond the policies': each anchor kind, list merging, patterns, deletion.
const EXTRA_OVERLAYS: &[&str] = &[
    "spec:\n  template:\n    spec:\n      containers:\n        - (name): \"*\"\n          securityContext:\n            +(allowPrivilegeEscalation): false\n",
    "metadata:\n  labels:\n    +(team): platform\n    app: null\n  annotations:\n    a: b\n",
    "metadata:\n  <(namespace): \"apps|prod-*\"\nspec:\n  replicas: 3\n",
    "spec:\n  template:\n    spec:\n      containers:\n        - (image): \"*:latest\"\n          imagePullPolicy: Always\n        - name: added\n          image: busybox\n",
    "spec:\n  (replicas): \">1\"\n  template:\n    spec:\n      containers:\n        - (resources):\n            (limits):\n              (memory): \"<=256Mi\"\n          +(env):\n            - name: SMALL\n              value: \"1\"\n",
    "spec:\n  template:\n    spec:\n      containers:\n        - <(name): web\n      +(securityContext):\n        +(runAsNonRoot): true\n",
    "spec:\n  template:\n    spec:\n      +(tolerations):\n        - key: k\n          operator: Exists\n      volumes:\n        - name: tmp\n          emptyDir: {}\n",
    "spec:\n  template:\n    spec:\n      containers:\n        - (ports):\n            - (containerPort): \"1-1024\"\n          +(readinessProbe):\n            tcpSocket:\n              port: 80\n",
    "spec:\n  template:\n    spec:\n      containers:\n        - (resources):\n            (limits):\n              (cpu): \"!500m & <2\"\n          (name): \"w?b\"\n          args: [\"--x\"]\n",
    "spec:\n  template:\n    metadata:\n      (labels):\n        +(app): web\n",
];

fn add(seeds: &mut Seeds, target: Target, name: String, data: Vec<u8>) {
    seeds.entry(target.name()).or_default().insert(name, data);
}

/// Builds the seeds from the repository at `root`.
pub fn build(root: &Path) -> Seeds {
    let mut seeds = Seeds::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for d in ["tests/fixtures", "examples", "policies"] {
        files.extend(
            files_under(&root.join(d))
                .into_iter()
                .filter(|p| is_manifest(p)),
        );
    }
    // (name, text, documents) of every manifest file and README block.
    let mut texts: Vec<(String, String, Vec<Value>)> = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        let docs = parse_manifests(f, &text).unwrap_or_default();
        texts.push((name_of(root, f), text, docs));
    }
    if let Ok(readme) = std::fs::read_to_string(root.join("policies/README.md")) {
        for (i, block) in yaml_blocks(&readme).into_iter().enumerate() {
            let docs = parse_manifests(Path::new("README.yaml"), &block).unwrap_or_default();
            texts.push((format!("policies__README.md__{i}.yaml"), block, docs));
        }
    }

    let mut objects: Vec<Value> = Vec::new();
    let mut overlays: Vec<Value> = Vec::new();
    let mut exprs: Vec<String> = EXTRA_CEL.iter().map(|s| s.to_string()).collect();
    for (name, text, docs) in &texts {
        let policy = docs.iter().any(is_policy) || name.starts_with("policies__README");
        if policy {
            add(
                &mut seeds,
                Target::Policy,
                name.clone(),
                text.clone().into_bytes(),
            );
        }
        if name.ends_with(".json") && text.contains("AdmissionReview") {
            add(
                &mut seeds,
                Target::Review,
                name.clone(),
                text.clone().into_bytes(),
            );
        } else if !policy {
            add(
                &mut seeds,
                Target::State,
                name.clone(),
                text.clone().into_bytes(),
            );
            add(
                &mut seeds,
                Target::Check,
                name.clone(),
                text.clone().into_bytes(),
            );
        }
        for d in docs {
            // The objects of the example reviews.
            for p in ["/request/object", "/request/oldObject"] {
                if let Some(o) = d.pointer(p).filter(|o| o.is_object()) {
                    objects.push(o.clone());
                }
            }
            collect_exprs(d, &mut exprs);
            collect_overlays(d, &mut overlays);
            if !is_policy(d) && d.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
                objects.push(d.clone());
            }
        }
    }

    // Reviews of the fixture objects: CREATE, UPDATE (against a changed copy) and DELETE.
    for (i, obj) in objects.iter().enumerate() {
        let (op, old) = match i % 3 {
            0 => ("CREATE", None),
            1 => {
                let mut old = obj.clone();
                if let Some(m) = old.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                    m.insert("generation".into(), Value::from(1));
                }
                ("UPDATE", Some(old))
            }
            _ => ("DELETE", Some(obj.clone())),
        };
        let object = (op != "DELETE").then_some(obj);
        if let Some(body) = check::admission_review(
            &format!("seed-{i}"),
            op,
            object,
            old.as_ref(),
            i % 5 == 0,
            "seed",
        ) {
            add(
                &mut seeds,
                Target::Review,
                format!("fixture-{i:03}.json"),
                body,
            );
        }
    }

    // A whole repository as one stream for `check`.
    let repo: Vec<&(String, String, Vec<Value>)> = texts
        .iter()
        .filter(|(n, _, _)| n.starts_with("tests__fixtures__repo") || n.contains("chartref__repo"))
        .collect();
    let mut stream = String::new();
    for (_, text, _) in repo {
        stream.push_str("---\n");
        stream.push_str(text);
        stream.push('\n');
    }
    add(
        &mut seeds,
        Target::Check,
        "whole-repo.yaml".into(),
        stream.into_bytes(),
    );

    // Overlays, each on the pod-bearing fixture objects (and alone: the default target).
    let pods: Vec<&Value> = objects.iter().filter(|o| has_pods(o)).collect();
    let mut overlay_texts: Vec<String> = overlays
        .iter()
        .map(|ov| serde_saphyr::to_string(ov).unwrap_or_default())
        .collect();
    overlay_texts.extend(EXTRA_OVERLAYS.iter().map(|s| s.to_string()));
    for (i, ov_yaml) in overlay_texts.iter().enumerate() {
        add(
            &mut seeds,
            Target::Overlay,
            format!("overlay-{i:02}.yaml"),
            ov_yaml.clone().into_bytes(),
        );
        for (j, p) in pods.iter().enumerate().take(6) {
            let text = format!(
                "{ov_yaml}---\n{}",
                serde_saphyr::to_string(p).unwrap_or_default()
            );
            add(
                &mut seeds,
                Target::Overlay,
                format!("overlay-{i:02}-on-{j:02}.yaml"),
                text.into_bytes(),
            );
        }
    }

    exprs.sort();
    exprs.dedup();
    for (i, e) in exprs.iter().enumerate() {
        add(
            &mut seeds,
            Target::Cel,
            format!("expr-{i:03}.cel"),
            e.clone().into_bytes(),
        );
    }
    seeds
}

/// Writes the seeds under `fuzz/corpus/`; returns how many per target.
pub fn write(root: &Path) -> std::io::Result<Vec<(String, usize)>> {
    let corpus = fuzz_dir().join("corpus");
    let mut counts = Vec::new();
    for (target, files) in build(root) {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (name, data) in &files {
            std::fs::write(dir.join(name), data)?;
        }
        counts.push((target.to_string(), files.len()));
    }
    Ok(counts)
}
