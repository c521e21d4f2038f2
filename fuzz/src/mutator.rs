//! Input makers: byte-level mutations (flip, set, insert, delete, duplicate, splice between
//! corpus entries, dictionary tokens), tree-level mutations of the YAML/JSON a seed parses to,
//! and structure-aware generators per target (AdmissionReviews, DeploymentPolicies, overlays
//! with anchors, CEL expressions, multi-document manifest streams).

use crate::rng::Rng;
use crate::targets::Target;
use fluxadmit_core::cluster::load::parse_manifests;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Longest input produced.
pub const MAX_INPUT: usize = 64 * 1024;

/// Tokens worth inserting into any text input.
const TOKENS: &[&str] = &[
    "---\n",
    "\n---\n",
    "...\n",
    "- ",
    ": ",
    "? ",
    "&a ",
    "*a",
    "<<: *a\n",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!!map ",
    "!!seq ",
    "!tag ",
    "%YAML 1.2\n",
    "%TAG ! tag:x,2000:\n",
    "|\n  ",
    ">-\n  ",
    "\t",
    "\r\n",
    "\u{feff}",
    "\"",
    "'",
    "\\u0000",
    "\\uD800",
    "{",
    "}",
    "[",
    "]",
    ",",
    "null",
    "~",
    "true",
    "false",
    "yes",
    "0x1F",
    "0o17",
    "0777",
    "1_000",
    "1e999",
    "-0",
    ".inf",
    ".nan",
    "9223372036854775808",
    "-9223372036854775809",
    "1.7976931348623157e309",
    "apiVersion: v1\n",
    "kind: List\n",
    "items:\n",
    "metadata:\n  name: x\n",
    "namespace: ",
    "+(",
    "(",
    ")",
    "<(",
    "=(",
    "X(",
    "^(",
    "*",
    "?",
    "|",
    "&",
    ">=",
    "<=",
    "!",
    "!-",
    "1-5",
    "100m",
    "1Gi",
    "1.5Ki",
    "2h45m",
    "-1s",
    "1e3",
    "\u{10FFFF}",
    "\u{0085}",
    "\u{2028}",
    "AdmissionReview",
    "admission.k8s.io/v1",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "kustomize.toolkit.fluxcd.io/v1",
    "helm.toolkit.fluxcd.io/v2",
    "Kustomization",
    "HelmRelease",
    "dependsOn",
    "readyExpr",
    "valuesFrom",
    "secretRef",
    "DeploymentPolicy",
    "fluxadmit.io/v1alpha1",
    "object.",
    "has(",
    ".exists(",
    "size(",
    "?.",
    ".orValue(",
    "dyn(",
    "int(",
    "uint(",
    "double(",
    "duration(",
    "timestamp(",
    "matches(",
    "'\\",
    "b'",
    "r'",
    "'''",
    "\"\"\"",
    "&&",
    "||",
    "==",
    "!=",
    "in",
    "[0]",
    "[-1]",
    "%",
    "/",
    "0u",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615u",
];

/// Byte mutations, stacked 1 to 8 at a time.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let rounds = 1 + rng.below(8);
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                data[i] = rng.byte();
            }
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
                data.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                data.drain(i..i + n);
            }
            4 if len > 0 => {
                // Duplicate a range in place (deepens nesting, repeats keys).
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = data[i..i + n].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, chunk);
            }
            5 | 6 => {
                if let Some(t) = rng.pick(TOKENS) {
                    let i = rng.below(len + 1);
                    data.splice(i..i, t.bytes());
                }
            }
            7 => {
                // Splice: our head, another entry's tail.
                if let Some(other) = rng.pick(corpus) {
                    let cut = rng.below(len + 1);
                    let from = rng.below(other.len() + 1);
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
            8 => {
                // Insert a slice of another entry.
                if let Some(other) = rng.pick(corpus)
                    && !other.is_empty()
                {
                    let a = rng.below(other.len());
                    let n = 1 + rng.below((other.len() - a).min(512));
                    let at = rng.below(len + 1);
                    data.splice(at..at, other[a..a + n].iter().copied());
                }
            }
            9 if len > 0 => {
                // Swap a digit for an extreme number, or an ASCII byte for a look-alike.
                let i = rng.below(len);
                data[i] = match data[i] {
                    b'0'..=b'9' => b"09-.e"[rng.below(5)],
                    b' ' => b"\t\n  "[rng.below(4)],
                    b':' => b":= "[rng.below(3)],
                    c => c.wrapping_add(1),
                };
            }
            _ => {
                let i = rng.below(len + 1);
                data.truncate(i);
            }
        }
    }
    data.truncate(MAX_INPUT);
}

/// Everything the seeds parse to: whole documents, and every subtree, key and string in them
/// (what tree mutations and generators draw from).
#[derive(Debug, Default)]
pub struct Pool {
    pub docs: Vec<Value>,
    pub subtrees: Vec<Value>,
    pub keys: Vec<String>,
    pub strings: Vec<String>,
    pub rules: Vec<Value>,
    pub matches: Vec<Value>,
    pub overlays: Vec<Value>,
    pub exprs: Vec<String>,
}

impl Pool {
    pub fn new(seeds: &[Vec<u8>]) -> Pool {
        let mut pool = Pool::default();
        for s in seeds {
            let text = String::from_utf8_lossy(s);
            if let Ok(docs) = parse_manifests(Path::new("seed.yaml"), &text) {
                for d in docs {
                    pool.harvest(&d, 0);
                    if let Some(rules) = d.pointer("/spec/rules").and_then(Value::as_array) {
                        for r in rules {
                            if let Some(o) = r.pointer("/mutate/overlay") {
                                pool.overlays.push(o.clone());
                            }
                            pool.rules.push(r.clone());
                        }
                    }
                    if let Some(m) = d.pointer("/spec/match") {
                        pool.matches.push(m.clone());
                    }
                    pool.docs.push(d);
                }
            }
        }
        pool.keys.sort();
        pool.keys.dedup();
        pool.strings.sort();
        pool.strings.dedup();
        pool.subtrees.truncate(20_000);
        pool
    }

    fn harvest(&mut self, v: &Value, depth: usize) {
        if depth > 0 && self.subtrees.len() < 20_000 {
            self.subtrees.push(v.clone());
        }
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    self.keys.push(k.clone());
                    if matches!(
                        k.as_str(),
                        "expression" | "messageExpression" | "readyExpr" | "celExpr"
                    ) && let Some(s) = x.as_str()
                    {
                        self.exprs.push(s.to_string());
                    }
                    self.harvest(x, depth + 1);
                }
            }
            Value::Array(a) => {
                for x in a {
                    self.harvest(x, depth + 1);
                }
            }
            Value::String(s) if s.len() < 200 => self.strings.push(s.clone()),
            _ => {}
        }
    }
}

fn random_scalar(rng: &mut Rng, pool: &Pool) -> Value {
    match rng.below(12) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => json!(rng.next_u64() as i64),
        3 => json!([0, 1, -1, 2, 80, 65535, i64::MAX, i64::MIN][rng.below(8)]),
        4 => json!([0.5, -1.5, 1e300, 1e-300, 3.0][rng.below(5)]),
        5 => json!(u64::MAX),
        6 => json!(""),
        7..=9 => json!(rng.pick(&pool.strings).cloned().unwrap_or_default()),
        _ => json!(rng.pick(TOKENS).copied().unwrap_or_default()),
    }
}

/// A key: from the seeds, an anchor around one, or a token.
fn random_key(rng: &mut Rng, pool: &Pool) -> String {
    let base = rng
        .pick(&pool.keys)
        .cloned()
        .unwrap_or_else(|| "name".into());
    match rng.below(8) {
        0 => format!("+({base})"),
        1 => format!("({base})"),
        2 => format!("<({base})"),
        3 => format!("{}({base})", ["=", "X", "^", "", "+", "<"][rng.below(6)]),
        4 => rng.pick(TOKENS).copied().unwrap_or_default().to_string(),
        _ => base,
    }
}

fn random_value(rng: &mut Rng, pool: &Pool, depth: usize) -> Value {
    if depth > 4 || rng.one_in(2) {
        return if rng.one_in(3) {
            rng.pick(&pool.subtrees)
                .cloned()
                .unwrap_or_else(|| random_scalar(rng, pool))
        } else {
            random_scalar(rng, pool)
        };
    }
    if rng.one_in(2) {
        let n = rng.below(4);
        Value::Array((0..n).map(|_| random_value(rng, pool, depth + 1)).collect())
    } else {
        let n = rng.below(4);
        let mut m = Map::new();
        for _ in 0..n {
            m.insert(random_key(rng, pool), random_value(rng, pool, depth + 1));
        }
        Value::Object(m)
    }
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(count_nodes).sum(),
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        _ => 0,
    }
}

/// Applies one mutation to the `n`th node (pre-order); returns true once applied.
fn mutate_node(rng: &mut Rng, pool: &Pool, v: &mut Value, n: &mut usize) -> bool {
    if *n == 0 {
        match rng.below(9) {
            0 | 1 => *v = random_scalar(rng, pool),
            2 => *v = random_value(rng, pool, 0),
            3 => {
                if let Some(s) = rng.pick(&pool.subtrees) {
                    *v = s.clone();
                }
            }
            4 => match v {
                Value::Object(m) if !m.is_empty() => {
                    let i = rng.below(m.len());
                    if let Some(k) = m.keys().nth(i).cloned() {
                        m.remove(&k);
                    }
                }
                Value::Array(a) if !a.is_empty() => {
                    let i = rng.below(a.len());
                    a.remove(i);
                }
                _ => *v = Value::Null,
            },
            5 => match v {
                Value::Object(m) => {
                    m.insert(random_key(rng, pool), random_value(rng, pool, 1));
                }
                Value::Array(a) => {
                    let x = if !a.is_empty() && rng.one_in(2) {
                        a[rng.below(a.len())].clone()
                    } else {
                        random_value(rng, pool, 1)
                    };
                    a.push(x);
                }
                _ => *v = json!([v.clone()]),
            },
            6 => {
                // Rename a key (often into an anchor).
                if let Value::Object(m) = v
                    && !m.is_empty()
                {
                    let i = rng.below(m.len());
                    if let Some(k) = m.keys().nth(i).cloned()
                        && let Some(x) = m.remove(&k)
                    {
                        m.insert(random_key(rng, pool), x);
                    }
                }
            }
            7 => {
                // Nest deeper.
                let inner = v.take();
                *v = if rng.one_in(2) {
                    json!([inner])
                } else {
                    json!({ random_key(rng, pool): inner })
                };
            }
            _ => {
                if let Value::String(s) = v {
                    let t = rng.pick(TOKENS).copied().unwrap_or_default();
                    let mut at = rng.below(s.len() + 1);
                    while !s.is_char_boundary(at) {
                        at -= 1;
                    }
                    s.insert_str(at, t);
                } else {
                    *v = random_scalar(rng, pool);
                }
            }
        }
        return true;
    }
    *n -= 1;
    match v {
        Value::Object(m) => {
            for x in m.values_mut() {
                if mutate_node(rng, pool, x, n) {
                    return true;
                }
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                if mutate_node(rng, pool, x, n) {
                    return true;
                }
            }
        }
        _ => {}
    }
    false
}

/// 1 to 4 tree mutations.
pub fn mutate_tree(rng: &mut Rng, pool: &Pool, v: &mut Value) {
    for _ in 0..1 + rng.below(4) {
        let mut n = rng.below(count_nodes(v));
        mutate_node(rng, pool, v, &mut n);
    }
}

/// A document stream as JSON or YAML.
pub fn serialize(rng: &mut Rng, docs: &[Value], json_only: bool) -> Vec<u8> {
    if json_only || rng.one_in(3) {
        let mut out = Vec::new();
        for d in docs {
            let s = if rng.one_in(2) {
                serde_json::to_string(d)
            } else {
                serde_json::to_string_pretty(d)
            };
            out.extend(s.unwrap_or_default().bytes());
            out.push(b'\n');
        }
        return out;
    }
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        if i > 0 || rng.one_in(4) {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(d).unwrap_or_default());
    }
    out.into_bytes()
}

/// A tree mutation of a seed that parses; None when it does not.
pub fn mutate_structured(
    rng: &mut Rng,
    pool: &Pool,
    target: Target,
    seed: &[u8],
) -> Option<Vec<u8>> {
    let text = String::from_utf8_lossy(seed);
    if target == Target::Cel {
        return Some(mutate_cel(rng, pool, &text).into_bytes());
    }
    let mut docs = parse_manifests(Path::new("seed.yaml"), &text).ok()?;
    if docs.is_empty() {
        return None;
    }
    let i = rng.below(docs.len());
    mutate_tree(rng, pool, &mut docs[i]);
    if matches!(target, Target::State | Target::Check) && rng.one_in(4) {
        // Another document from the pool, or a List of them.
        if let Some(d) = rng.pick(&pool.docs) {
            if rng.one_in(2) {
                docs.push(d.clone());
            } else {
                docs.push(json!({"apiVersion": "v1", "kind": "List", "items": [d.clone()]}));
            }
        }
    }
    Some(serialize(rng, &docs, target == Target::Review))
}

/// A fresh input from the target's generator.
pub fn generate(rng: &mut Rng, pool: &Pool, target: Target) -> Vec<u8> {
    match target {
        Target::Review => {
            let r = gen_review(rng, pool);
            serialize(rng, &[r], true)
        }
        Target::Policy => {
            let n = 1 + rng.below(2);
            let docs: Vec<Value> = (0..n).map(|_| gen_policy(rng, pool)).collect();
            serialize(rng, &docs, false)
        }
        Target::Overlay => {
            let ov = if rng.one_in(2) {
                rng.pick(&pool.overlays)
                    .cloned()
                    .map(|mut o| {
                        mutate_tree(rng, pool, &mut o);
                        o
                    })
                    .unwrap_or_else(|| gen_overlay(rng, pool, 0))
            } else {
                gen_overlay(rng, pool, 0)
            };
            let mut docs = vec![ov];
            if rng.below(4) != 0
                && let Some(t) = rng.pick(&pool.docs)
            {
                let mut t = t.clone();
                if rng.one_in(2) {
                    mutate_tree(rng, pool, &mut t);
                }
                docs.push(t);
            }
            serialize(rng, &docs, false)
        }
        Target::Cel => gen_cel(rng, pool, 0).into_bytes(),
        Target::State | Target::Check => {
            let n = 1 + rng.below(6);
            let mut docs: Vec<Value> = (0..n)
                .filter_map(|_| rng.pick(&pool.docs).cloned())
                .collect();
            for d in docs.iter_mut() {
                if rng.one_in(2) {
                    mutate_tree(rng, pool, d);
                }
            }
            serialize(rng, &docs, false)
        }
    }
}

const KINDS: &[(&str, &str, &str)] = &[
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("", "v1", "Pod"),
    ("", "v1", "Secret"),
    ("", "v1", "Namespace"),
    ("batch", "v1", "CronJob"),
    ("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
    ("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
    ("source.toolkit.fluxcd.io", "v1", "OCIRepository"),
    ("fluxadmit.io", "v1alpha1", "DeploymentPolicy"),
];

fn gen_object(rng: &mut Rng, pool: &Pool, kind: (&str, &str, &str)) -> Value {
    let (g, v, k) = kind;
    let mut obj = rng
        .pick(&pool.docs)
        .cloned()
        .filter(|d| d.is_object())
        .unwrap_or_else(|| json!({}));
    if rng.below(4) != 0
        && let Value::Object(m) = &mut obj
    {
        let api = if g.is_empty() {
            v.to_string()
        } else {
            format!("{g}/{v}")
        };
        m.insert("apiVersion".into(), json!(api));
        m.insert("kind".into(), json!(k));
    }
    if rng.one_in(2) {
        mutate_tree(rng, pool, &mut obj);
    }
    obj
}

fn gen_review(rng: &mut Rng, pool: &Pool) -> Value {
    let kind = *rng.pick(KINDS).unwrap_or(&KINDS[0]);
    let op = ["CREATE", "UPDATE", "DELETE", "CONNECT", "create", ""][rng.below(6)];
    let object = gen_object(rng, pool, kind);
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(json!("x"));
    let ns = object
        .pointer("/metadata/namespace")
        .cloned()
        .unwrap_or(json!("default"));
    let mut req = json!({
        "uid": format!("u-{}", rng.below(1000)),
        "kind": {"group": kind.0, "version": kind.1, "kind": kind.2},
        "resource": {"group": kind.0, "version": kind.1, "resource": kind.2.to_lowercase() + "s"},
        "name": name, "namespace": ns, "operation": op,
        "userInfo": {"username": "system:serviceaccount:flux-system:kustomize-controller",
                     "groups": ["system:serviceaccounts"]},
        "dryRun": rng.one_in(4),
    });
    if let Value::Object(m) = &mut req {
        if op != "DELETE" || rng.one_in(4) {
            m.insert("object".into(), object.clone());
        }
        if op == "UPDATE" || op == "DELETE" || rng.one_in(4) {
            let mut old = object;
            if rng.one_in(2) {
                mutate_tree(rng, pool, &mut old);
            }
            m.insert("oldObject".into(), old);
        }
        if rng.one_in(6) {
            m.insert(
                "subResource".into(),
                json!(["status", "scale", ""][rng.below(3)]),
            );
        }
        if rng.one_in(6) {
            m.insert(
                "requestKind".into(),
                json!({"group": "", "version": "v1", "kind": "X"}),
            );
        }
    }
    let mut review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                            "request": req});
    if rng.one_in(3) {
        mutate_tree(rng, pool, &mut review);
    }
    review
}

fn gen_policy(rng: &mut Rng, pool: &Pool) -> Value {
    let n = rng.below(4);
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            let mut r = rng
                .pick(&pool.rules)
                .cloned()
                .unwrap_or_else(|| json!({"name": "r"}));
            if let Value::Object(m) = &mut r {
                m.insert("name".into(), json!(format!("r{i}")));
            }
            if rng.one_in(2) {
                mutate_tree(rng, pool, &mut r);
            }
            r
        })
        .collect();
    let matcher = rng
        .pick(&pool.matches)
        .cloned()
        .unwrap_or_else(|| json!({}));
    let action = ["Enforce", "Audit", "Warn", "Deny", ""][rng.below(5)];
    let mut p = json!({
        "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
        "metadata": {"name": format!("p{}", rng.below(4))},
        "spec": {"action": action, "match": matcher, "rules": rules}
    });
    if rng.one_in(3) {
        mutate_tree(rng, pool, &mut p);
    }
    p
}

const PATTERNS: &[&str] = &[
    "*",
    "?*",
    "nginx*",
    "*:latest",
    "!*:latest",
    "a|b",
    ">1",
    "<=100m",
    ">=1Gi",
    "1-10",
    "1!-10",
    "!null",
    "1h-2h",
    "?",
    "",
    "*|!x",
    "&",
    "|",
    ">",
    "<1.5",
    "-1",
    "1e3",
    "0x10",
];

fn gen_overlay(rng: &mut Rng, pool: &Pool, depth: usize) -> Value {
    let n = 1 + rng.below(3);
    let mut m = Map::new();
    for _ in 0..n {
        let key = random_key(rng, pool);
        let v = if depth > 3 || rng.one_in(3) {
            if rng.one_in(2) {
                json!(rng.pick(PATTERNS).copied().unwrap_or("*"))
            } else {
                random_scalar(rng, pool)
            }
        } else if rng.one_in(3) {
            let k = 1 + rng.below(2);
            Value::Array((0..k).map(|_| gen_overlay(rng, pool, depth + 1)).collect())
        } else {
            gen_overlay(rng, pool, depth + 1)
        };
        m.insert(key, v);
    }
    Value::Object(m)
}

const CEL_VARS: &[&str] = &[
    "object",
    "oldObject",
    "request",
    "self",
    "dep",
    "x",
    "object.metadata",
    "object.spec",
    "object.metadata.labels",
    "object.spec.values",
    "request.operation",
    "self.status.conditions",
];
const CEL_LITS: &[&str] = &[
    "1",
    "0",
    "-1",
    "1u",
    "2.5",
    "1e308",
    "'a'",
    "\"x\"",
    "b'\\x00'",
    "r'\\d+'",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    "[1, 'a']",
    "{'k': 1}",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615u",
    "'\\u00e9'",
    "duration('1h')",
    "timestamp('2024-01-01T00:00:00Z')",
    "''",
    "'Ready'",
    "'True'",
];
const CEL_BIN: &[&str] = &[
    "+", "-", "*", "/", "%", "==", "!=", "<", "<=", ">", ">=", "&&", "||", "in",
];
const CEL_METHODS: &[&str] = &[
    "size()",
    "startsWith('a')",
    "endsWith('b')",
    "contains('x')",
    "matches('^a.*$')",
    "lowerAscii()",
    "upperAscii()",
    "split(',')",
    "join(',')",
    "trim()",
    "replace('a', 'b')",
    "substring(0, 1)",
    "charAt(0)",
    "indexOf('a')",
    "exists(k, k == 'a')",
    "all(k, k != '')",
    "exists_one(k, true)",
    "map(k, k)",
    "filter(k, has(k.x))",
    "orValue(1)",
    "hasValue()",
    "value()",
    "format([1])",
    "reverse()",
    "distinct()",
    "sort()",
    "slice(0, 1)",
];
const CEL_FUNCS: &[&str] = &[
    "size",
    "has",
    "int",
    "uint",
    "double",
    "string",
    "bool",
    "bytes",
    "type",
    "dyn",
    "duration",
    "timestamp",
    "math.greatest",
    "math.least",
    "math.abs",
    "sets.contains",
    "sets.intersects",
    "base64.encode",
    "base64.decode",
    "strings.quote",
    "lists.range",
    "optional.of",
    "optional.none",
    "matches",
];

fn gen_cel(rng: &mut Rng, pool: &Pool, depth: usize) -> String {
    if depth > 5 || rng.one_in(3) {
        return match rng.below(4) {
            0 => rng.pick(CEL_LITS).copied().unwrap_or("1").to_string(),
            1 => rng
                .pick(&pool.exprs)
                .cloned()
                .unwrap_or_else(|| "true".into()),
            _ => {
                let v = rng.pick(CEL_VARS).copied().unwrap_or("object");
                let field = rng.pick(&pool.keys).cloned().unwrap_or_default();
                if rng.one_in(2) && field.chars().all(|c| c.is_ascii_alphanumeric()) {
                    format!("{v}.{field}")
                } else if rng.one_in(3) {
                    format!("{v}[?'{field}']")
                } else {
                    format!("{v}['{field}']")
                }
            }
        };
    }
    let a = gen_cel(rng, pool, depth + 1);
    match rng.below(8) {
        0 | 1 => {
            let b = gen_cel(rng, pool, depth + 1);
            let op = rng.pick(CEL_BIN).copied().unwrap_or("+");
            format!("{a} {op} {b}")
        }
        2 => format!("({a})"),
        3 => format!("!{a}"),
        4 => {
            let m = rng.pick(CEL_METHODS).copied().unwrap_or("size()");
            format!("{a}.{m}")
        }
        5 => {
            let f = rng.pick(CEL_FUNCS).copied().unwrap_or("size");
            if rng.one_in(3) {
                let b = gen_cel(rng, pool, depth + 1);
                format!("{f}({a}, {b})")
            } else {
                format!("{f}({a})")
            }
        }
        6 => {
            let b = gen_cel(rng, pool, depth + 1);
            let c = gen_cel(rng, pool, depth + 1);
            format!("{a} ? {b} : {c}")
        }
        _ => {
            let b = gen_cel(rng, pool, depth + 1);
            format!("[{a}, {b}][{}]", rng.below(3))
        }
    }
}

/// Replaces a random sub-expression-ish slice (a token or bracketed span) of `src` with a
/// generated expression, or joins it to one.
fn mutate_cel(rng: &mut Rng, pool: &Pool, src: &str) -> String {
    let g = gen_cel(rng, pool, 2);
    let chars: Vec<char> = src.chars().collect();
    match rng.below(4) {
        0 => format!("({src}) {} {g}", rng.pick(CEL_BIN).copied().unwrap_or("&&")),
        1 => format!(
            "{src}.{}",
            rng.pick(CEL_METHODS).copied().unwrap_or("size()")
        ),
        _ if !chars.is_empty() => {
            let a = rng.below(chars.len());
            let b = (a + 1 + rng.below(16)).min(chars.len());
            let head: String = chars[..a].iter().collect();
            let tail: String = chars[b..].iter().collect();
            format!("{head}{g}{tail}")
        }
        _ => g,
    }
}
