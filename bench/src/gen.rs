//! Generators shared by the criterion benches and `fluxadmit bench`: the policy set, a
//! cluster view of N objects, admission review bodies and dependency graphs. Everything is
//! deterministic (a fixed-seed SplitMix64), so two runs measure the same input.

use fluxadmit_core::cluster::ClusterView;
use fluxadmit_core::graph::ObjKey;
use fluxadmit_core::policy::load::{compile_documents, parse_documents};
use fluxadmit_core::policy::{PolicyError, PolicySet};
use rustc_hash::FxHashMap as HashMap;
use serde_json::{Value, json};

/// The example policies, embedded so the benchmark runs from anywhere (the defaults are the
/// binary's built-in set, `policy::builtin::FILES`).
const EXAMPLE_FILES: [(&str, &str); 6] = [
    (
        "examples/image-pull-secrets.yaml",
        include_str!("../../policies/examples/image-pull-secrets.yaml"),
    ),
    (
        "examples/pod-security-baseline.yaml",
        include_str!("../../policies/examples/pod-security-baseline.yaml"),
    ),
    (
        "examples/pod-security-restricted.yaml",
        include_str!("../../policies/examples/pod-security-restricted.yaml"),
    ),
    (
        "examples/required-labels.yaml",
        include_str!("../../policies/examples/required-labels.yaml"),
    ),
    (
        "examples/tiered-deployment.yaml",
        include_str!("../../policies/examples/tiered-deployment.yaml"),
    ),
    (
        "examples/wiz-kubernetes-integration.yaml",
        include_str!("../../policies/examples/wiz-kubernetes-integration.yaml"),
    ),
];

/// (path under `policies/`, text) of the default policies and every example.
pub fn policy_files() -> impl Iterator<Item = (&'static str, &'static str)> {
    fluxadmit_core::policy::builtin::FILES
        .iter()
        .copied()
        .chain(EXAMPLE_FILES)
}

/// The namespace the benchmark bodies live in (always present, labelled as a Flux tenant).
pub const BODY_NAMESPACE: &str = "team-0000";

/// The full default policy set plus every example policy.
pub fn policies() -> Result<PolicySet, PolicyError> {
    compile_files(&policy_files().collect::<Vec<_>>())
}

/// The default policy set alone: the binary's built-in set, what `serve` loads without
/// `--policies`.
pub fn default_policies() -> Result<PolicySet, PolicyError> {
    fluxadmit_core::policy::builtin::load()
}

fn compile_files(files: &[(&str, &str)]) -> Result<PolicySet, PolicyError> {
    let mut docs = Vec::new();
    for &(file, text) in files {
        docs.extend(parse_documents(file, text)?);
    }
    compile_documents(docs)
}

/// `n` policies matching HelmReleases, one rule each, cycling through the rule kinds a
/// HelmRelease meets: requiredLabels, referencedSecrets, dependsOn, a CEL expression.
pub fn scaling_policies(n: usize) -> Result<PolicySet, PolicyError> {
    let docs = (0..n)
        .map(|i| {
            let rule = match i % 4 {
                0 => json!({"name": "r", "requiredLabels": {"labels": ["app.kubernetes.io/part-of"]}}),
                1 => json!({"name": "r", "referencedSecrets": {}}),
                2 => json!({"name": "r", "dependsOn": {"missing": "Warn"}}),
                _ => json!({"name": "r", "expression": {
                    "expression": "object.metadata.name.size() < 64 && has(object.spec.chart)",
                    "message": "bad name"}}),
            };
            let doc = json!({
                "apiVersion": "fluxadmit.io/v1alpha1",
                "kind": "DeploymentPolicy",
                "metadata": {"name": format!("scaling-{i:03}")},
                "spec": {
                    "action": "Enforce",
                    "match": {"resources": [{"apiGroups": ["helm.toolkit.fluxcd.io"], "kinds": ["HelmRelease"]}]},
                    "rules": [rule],
                },
            });
            ("generated".to_owned(), doc)
        })
        .collect();
    compile_documents(docs)
}

/// A small deterministic PRNG (SplitMix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// The shape of a generated cluster view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSize {
    pub namespaces: usize,
    pub helm_releases: usize,
    pub kustomizations: usize,
    pub secrets: usize,
}

/// Secrets every namespace has, in this order, before the filler ones.
const FIXED_SECRETS: usize = 4;
/// A HelmRelease chain restarts every this many releases in a namespace.
const HR_CHAIN: usize = 25;
const KS_CHAIN: usize = 10;

impl ViewSize {
    /// `objects` split 10 : 5 : 50 like the 65k reference view (10,000 HelmReleases, 5,000
    /// Kustomizations, 50,000 Secrets), over one namespace per 650 objects, so each
    /// namespace has the same shape (~100 HelmReleases) whatever the total.
    pub fn of(objects: usize) -> ViewSize {
        let helm_releases = objects * 10 / 65;
        let kustomizations = objects * 5 / 65;
        let namespaces = (objects / 650).max(1);
        let secrets = (objects - helm_releases - kustomizations).max(FIXED_SECRETS * namespaces);
        ViewSize {
            namespaces,
            helm_releases,
            kustomizations,
            secrets,
        }
    }

    /// Objects in the view (namespaces included).
    pub fn total(&self) -> usize {
        self.namespaces + self.helm_releases + self.kustomizations + self.secrets
    }

    /// HelmReleases in namespace 0 (where the benchmark HelmRelease is).
    fn helm_releases_in_first(&self) -> usize {
        self.helm_releases.div_ceil(self.namespaces)
    }
}

fn ns_name(k: usize) -> String {
    format!("team-{k:04}")
}

/// Calls `f` with every manifest of the view, namespaces first.
pub fn for_each_manifest(size: &ViewSize, mut f: impl FnMut(Value)) {
    let mut rng = Rng::new(0x5EED_F1A7);
    let n = size.namespaces.max(1);
    for k in 0..n {
        let ns = ns_name(k);
        f(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {"toolkit.fluxcd.io/tenant": ns, "kubernetes.io/metadata.name": ns}},
        }));
    }
    for i in 0..size.secrets {
        let ns = ns_name(i % n);
        let j = i / n;
        let (name, type_, data) = match j {
            0 => (
                "acr-pull".to_owned(),
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "e30="}),
            ),
            1 => (
                "ghcr-acme".to_owned(),
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": "e30="}),
            ),
            2 => (
                "values-a".to_owned(),
                "Opaque",
                json!({"values.yaml": "e30="}),
            ),
            3 => (
                "values-b".to_owned(),
                "Opaque",
                json!({"values.yaml": "e30=", "extra.yaml": "e30="}),
            ),
            _ => (
                format!("s-{j:05}"),
                "Opaque",
                json!({"username": "dXNlcg==", "password": "cGFzcw=="}),
            ),
        };
        f(json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns},
            "type": type_,
            "data": data,
        }));
    }
    for i in 0..size.helm_releases {
        let ns = ns_name(i % n);
        let j = i / n;
        let mut deps = Vec::new();
        if !j.is_multiple_of(HR_CHAIN) {
            deps.push(json!({"name": format!("hr-{:05}", j - 1)}));
        }
        // A random DAG on top of the chains: edges only to earlier releases.
        if j >= 2 {
            for _ in 0..rng.below(3) {
                let k = rng.below(j - 1);
                let d = json!({"name": format!("hr-{k:05}")});
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
        }
        f(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": format!("hr-{j:05}"), "namespace": ns,
                "labels": {"app.kubernetes.io/part-of": ns, "fluxadmit.io/tier": (j + 1).to_string()}},
            "spec": {
                "interval": "10m",
                "chart": {"spec": {"chart": format!("app-{}", j % 7), "version": "1.x",
                    "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": "flux-system"}}},
                "dependsOn": deps,
                "valuesFrom": [{"kind": "Secret", "name": "values-a"}],
                "values": {"replicaCount": 2},
            },
        }));
    }
    for i in 0..size.kustomizations {
        let ns = ns_name(i % n);
        let j = i / n;
        let deps = if !j.is_multiple_of(KS_CHAIN) {
            vec![json!({"name": format!("ks-{:05}", j - 1)})]
        } else {
            Vec::new()
        };
        f(json!({
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": format!("ks-{j:05}"), "namespace": ns,
                "labels": {"app.kubernetes.io/part-of": ns}},
            "spec": {
                "interval": "10m", "prune": true, "path": format!("./apps/{ns}/ks-{j:05}"),
                "sourceRef": {"kind": "GitRepository", "name": "fleet", "namespace": "flux-system"},
                "dependsOn": deps,
            },
        }));
    }
}

/// A cluster view of the given shape, built through `ClusterView::add_manifest`.
pub fn view(size: &ViewSize) -> ClusterView {
    let mut v = ClusterView::default();
    for_each_manifest(size, |m| {
        v.add_manifest(&m);
    });
    v
}

fn review(uid: &str, group: &str, kind: &str, resource: &str, object: Value) -> Vec<u8> {
    review_of(uid, (group, kind, resource), "CREATE", object, Value::Null)
}

fn review_of(
    uid: &str,
    gvk: (&str, &str, &str),
    operation: &str,
    object: Value,
    old_object: Value,
) -> Vec<u8> {
    serde_json::to_vec(&review_doc(uid, gvk, operation, object, old_object)).unwrap_or_default()
}

/// The AdmissionReview of `object`, sent by kustomize-controller (a dry run for UPDATE).
fn review_doc(
    uid: &str,
    (group, kind, resource): (&str, &str, &str),
    operation: &str,
    object: Value,
    old_object: Value,
) -> Value {
    let (dry_run, options) = if operation == "UPDATE" {
        (true, "UpdateOptions")
    } else {
        (false, "CreateOptions")
    };
    let (name, namespace) = (
        object["metadata"]["name"].clone(),
        object["metadata"]["namespace"].clone(),
    );
    let version = if group == "apps" { "v1" } else { "v2" };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "name": name,
            "namespace": namespace,
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:flux-system:kustomize-controller",
                "uid": "6f1e3a52-95b5-4bd4-9c7e-4a3b9c2d1e0f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:flux-system", "system:authenticated"],
            },
            "object": object,
            "oldObject": old_object,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": options, "fieldManager": "kustomize-controller"},
        }
    })
}

fn container(name: &str, image: &str, port: u16, env: usize) -> Value {
    let env: Vec<Value> = (0..env)
        .map(|i| json!({"name": format!("{}_SETTING_{i}", name.to_uppercase()), "value": format!("value-{i}-for-{name}")}))
        .collect();
    json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": ["--port", port.to_string(), "--log-format=json"],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": env,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 10},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true},
                         {"name": "tmp", "mountPath": "/tmp"}],
        // Restricted-compliant, but without readOnlyRootFilesystem: the mutating policy adds it.
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": true,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    })
}

/// The Deployment inside [`deployment_review`].
pub fn deployment_object() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": BODY_NAMESPACE,
            "labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop",
                       "kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
            "annotations": {"kustomize.toolkit.fluxcd.io/ssa": "merge", "fluxadmit.io/owner": "team-shop"},
        },
        "spec": {
            "replicas": 3,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "web", "app.kubernetes.io/part-of": "shop"},
                             "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"}},
                "spec": {
                    "serviceAccountName": "web",
                    "terminationGracePeriodSeconds": 30,
                    // runAsNonRoot but no seccompProfile at pod level: the mutating policy adds it.
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001},
                    "initContainers": [container("migrate", "acme.azurecr.io/shop/migrate:2.14.1", 8081, 6)],
                    "containers": [
                        container("web", "acme.azurecr.io/shop/web:2.14.1", 8080, 12),
                        container("worker", "acme.azurecr.io/shop/worker:2.14.1", 8082, 8),
                        container("metrics", "ghcr.io/acme/exporter:0.9.3", 9090, 2),
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "web-config"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
                    ],
                },
            },
        },
    })
}

/// A ~6 KB AdmissionReview (CREATE) of a Deployment in a tenant namespace: restricted-PSS
/// compliant (no finding), with work for the mutating policies (readOnlyRootFilesystem,
/// the pod seccompProfile, two image pull secrets).
pub fn deployment_review(uid: &str) -> Vec<u8> {
    review(
        uid,
        "apps",
        "Deployment",
        "deployments",
        deployment_object(),
    )
}

/// A ~12 KB AdmissionReview (UPDATE, dry run) of the same Deployment, whose `oldObject` runs
/// the previous image tag: what Flux's drift check sends for a changed workload on every
/// reconciliation. Keys in API server order (`object` before `oldObject`).
pub fn deployment_update_review(uid: &str) -> Vec<u8> {
    let object = deployment_object();
    let mut old = object.clone();
    for c in old["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        if let Some(image) = c["image"].as_str() {
            c["image"] = Value::from(image.replace("2.14.1", "2.14.0"));
        }
    }
    review_of(
        uid,
        ("apps", "Deployment", "deployments"),
        "UPDATE",
        object,
        old,
    )
}

/// A ~3 KB AdmissionReview (CREATE) of a HelmRelease with 3 `dependsOn` entries (the deepest
/// release of its namespace and two others, so the cycle check walks the namespace's graph)
/// and 2 `valuesFrom` Secrets, all present in a view of shape `size`.
pub fn helmrelease_review(size: &ViewSize, uid: &str) -> Vec<u8> {
    review(
        uid,
        "helm.toolkit.fluxcd.io",
        "HelmRelease",
        "helmreleases",
        helmrelease_object(size),
    )
}

/// Names in [`helmrelease_denied_review`] that the view does not have.
pub const DENIED_MISSING_DEPENDENCY: &str = "payments-gone";
pub const DENIED_MISSING_SECRETS: [&str; 3] =
    ["shop-values-prod", "shop-db-credentials", "shop-smtp-relay"];

/// The HelmRelease of [`helmrelease_review`] (~3 KB) broken as a bad commit breaks it, and
/// written by a person (`kubectl apply` by jane@example.com: a real write, no Flux ownership
/// labels), so the default policies deny it with four findings: a warning for the missing
/// dependency `payments-gone` (`missing: Warn`) and an error for each of three missing
/// `valuesFrom` Secrets.
pub fn helmrelease_denied_review(size: &ViewSize, uid: &str) -> Vec<u8> {
    let mut object = helmrelease_object(size);
    object["metadata"]["labels"] = json!({"app.kubernetes.io/part-of": "shop"});
    let top = size.helm_releases_in_first().saturating_sub(1);
    object["spec"]["dependsOn"] = json!([
        {"name": format!("hr-{top:05}")},
        {"name": DENIED_MISSING_DEPENDENCY},
        {"name": format!("hr-{:05}", top / 4)},
    ]);
    let [a, b, c] = DENIED_MISSING_SECRETS;
    object["spec"]["valuesFrom"] = json!([
        {"kind": "Secret", "name": "values-a"},
        {"kind": "Secret", "name": a},
        {"kind": "Secret", "name": b, "valuesKey": "database.yaml", "targetPath": "database"},
        {"kind": "Secret", "name": c, "valuesKey": "smtp.yaml", "targetPath": "mail"},
    ]);
    let mut doc = review_doc(
        uid,
        ("helm.toolkit.fluxcd.io", "HelmRelease", "helmreleases"),
        "CREATE",
        object,
        Value::Null,
    );
    doc["request"]["userInfo"] = json!({
        "username": "jane@example.com",
        "groups": ["platform-team", "system:authenticated"],
    });
    doc["request"]["options"]["fieldManager"] = json!("kubectl-client-side-apply");
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// The HelmRelease inside [`helmrelease_review`].
fn helmrelease_object(size: &ViewSize) -> Value {
    let top = size.helm_releases_in_first().saturating_sub(1);
    let deps: Vec<Value> = [top, top / 2, top / 4]
        .iter()
        .map(|j| json!({"name": format!("hr-{j:05}")}))
        .collect();
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {
            "name": "bench-release",
            "namespace": BODY_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "shop", "kustomize.toolkit.fluxcd.io/name": "apps",
                       "kustomize.toolkit.fluxcd.io/namespace": "flux-system"},
        },
        "spec": {
            "interval": "10m",
            "timeout": "5m",
            "releaseName": "bench-release",
            "chart": {"spec": {
                "chart": "shop",
                "version": "2.14.x",
                "sourceRef": {"kind": "HelmRepository", "name": "acme-charts", "namespace": "flux-system"},
                "interval": "1h",
            }},
            "install": {"remediation": {"retries": 3}, "crds": "CreateReplace"},
            "upgrade": {"remediation": {"retries": 3, "remediateLastFailure": true}, "cleanupOnFail": true},
            "dependsOn": deps,
            "valuesFrom": [
                {"kind": "Secret", "name": "values-a"},
                {"kind": "Secret", "name": "values-b", "valuesKey": "extra.yaml", "targetPath": "extra"},
            ],
            "values": {
                "global": {"imagePullSecrets": [{"name": "acr-pull"}], "domain": "shop.example.com"},
                "replicaCount": 3,
                "image": {"repository": "acme.azurecr.io/shop/web", "tag": "2.14.1", "pullPolicy": "IfNotPresent"},
                "service": {"type": "ClusterIP", "port": 8080},
                "ingress": {"enabled": true, "className": "nginx",
                    "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt", "nginx.ingress.kubernetes.io/proxy-body-size": "8m"},
                    "hosts": [{"host": "shop.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
                              {"host": "www.shop.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
                    "tls": [{"secretName": "shop-tls", "hosts": ["shop.example.com", "www.shop.example.com"]}]},
                "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                "autoscaling": {"enabled": true, "minReplicas": 3, "maxReplicas": 12, "targetCPUUtilizationPercentage": 70},
                "podSecurityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
                "env": {"LOG_LEVEL": "info", "CACHE_URL": "redis://cache:6379", "DB_HOST": "database", "FEATURE_CHECKOUT_V2": "true"},
                "postgresql": {"enabled": false},
                "metrics": {"enabled": true, "serviceMonitor": {"enabled": true, "interval": "30s"}},
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"key": "workload", "operator": "Equal", "value": "apps", "effect": "NoSchedule"}],
            },
        },
    })
}

/// A dependency graph for the cycle-check benchmark: `chains` chains of `chain_len` nodes
/// (`chain-C-K` depends on `chain-C-(K-1)`), then `dag` nodes forming a random DAG (each
/// depends on 1 to 3 earlier DAG nodes, and one in four also on a chain node).
pub struct Graph {
    pub edges: HashMap<ObjKey, Vec<ObjKey>>,
    /// Reverse edges (who depends on a key), as the cluster view keeps them.
    pub dependents: HashMap<ObjKey, Vec<ObjKey>>,
    pub chains: Vec<Vec<ObjKey>>,
    pub dag: Vec<ObjKey>,
}

impl Graph {
    pub fn generate(chains: usize, chain_len: usize, dag: usize) -> Graph {
        let mut rng = Rng::new(0xD1CE);
        let mut edges = HashMap::default();
        let chain_keys: Vec<Vec<ObjKey>> = (0..chains)
            .map(|c| {
                (0..chain_len)
                    .map(|k| ObjKey::new(format!("ns-{}", c % 10), format!("chain-{c}-{k}")))
                    .collect()
            })
            .collect();
        for chain in &chain_keys {
            for (k, key) in chain.iter().enumerate() {
                let deps = match k.checked_sub(1).and_then(|p| chain.get(p)) {
                    Some(prev) => vec![prev.clone()],
                    None => Vec::new(),
                };
                edges.insert(key.clone(), deps);
            }
        }
        let dag_keys: Vec<ObjKey> = (0..dag)
            .map(|i| ObjKey::new(format!("ns-{}", i % 10), format!("dag-{i}")))
            .collect();
        for (i, key) in dag_keys.iter().enumerate() {
            let mut deps: Vec<ObjKey> = Vec::new();
            if i > 0 {
                for _ in 0..=rng.below(3) {
                    if let Some(d) = dag_keys.get(rng.below(i))
                        && !deps.contains(d)
                    {
                        deps.push(d.clone());
                    }
                }
            }
            if rng.below(4) == 0
                && let Some(chain) = chain_keys.get(rng.below(chains))
                && let Some(d) = chain.get(rng.below(chain_len))
            {
                deps.push(d.clone());
            }
            edges.insert(key.clone(), deps);
        }
        let mut dependents: HashMap<ObjKey, Vec<ObjKey>> = HashMap::default();
        for (from, deps) in &edges {
            for d in deps {
                dependents.entry(d.clone()).or_default().push(from.clone());
            }
        }
        for list in dependents.values_mut() {
            list.sort();
        }
        Graph {
            edges,
            dependents,
            chains: chain_keys,
            dag: dag_keys,
        }
    }

    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The stored edges, in the form `find_cycle_through` reads them.
    pub fn edges_of(&self, k: &ObjKey) -> Option<&[ObjKey]> {
        self.edges.get(k).map(Vec::as_slice)
    }

    /// The reverse edges, in the form `find_cycle_bidirectional` reads them.
    pub fn dependents_of(&self, k: &ObjKey) -> Option<&[ObjKey]> {
        self.dependents.get(k).map(Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fluxadmit_core::engine::Mode;
    use fluxadmit_core::state::Snapshot;

    fn snapshot(objects: usize) -> (Snapshot, ViewSize) {
        let size = ViewSize::of(objects);
        (
            Snapshot {
                policies: policies().unwrap(),
                view: view(&size),
            },
            size,
        )
    }

    #[test]
    fn view_has_the_requested_shape() {
        let size = ViewSize::of(65_000);
        assert_eq!(
            (size.helm_releases, size.kustomizations, size.secrets),
            (10_000, 5_000, 50_000)
        );
        assert_eq!(size.namespaces, 100);
        let small = ViewSize::of(6_500);
        assert_eq!(view(&small).len(), small.total());
    }

    #[test]
    fn bodies_have_the_intended_size_and_outcome() {
        let (snap, size) = snapshot(6_500);
        assert_eq!(snap.policies.len(), 9);
        let deploy = deployment_review("u-1");
        assert!((5_500..7_000).contains(&deploy.len()), "{}", deploy.len());
        let hr = helmrelease_review(&size, "u-2");
        assert!((2_600..3_600).contains(&hr.len()), "{}", hr.len());

        let v = snap.review(Mode::Validate, &deploy).unwrap();
        assert!(v.outcome.verdict.allowed, "{:?}", v.outcome.findings);
        assert!(v.outcome.findings.is_empty(), "{:?}", v.outcome.findings);
        assert_eq!(v.outcome.matched, 4);
        let m = snap.review(Mode::Mutate, &deploy).unwrap();
        let patch = m.outcome.verdict.patch.clone().unwrap();
        assert!(patch.0.len() >= 5, "{patch:?}");
        assert!(m.outcome.findings.is_empty(), "{:?}", m.outcome.findings);

        let h = snap.review(Mode::Validate, &hr).unwrap();
        assert!(h.outcome.verdict.allowed, "{:?}", h.outcome.findings);
        assert!(h.outcome.findings.is_empty(), "{:?}", h.outcome.findings);
        assert_eq!(h.outcome.matched, 4);

        let update = deployment_update_review("u-3");
        assert!((11_000..14_000).contains(&update.len()), "{}", update.len());
        let u = snap.review(Mode::Validate, &update).unwrap();
        assert!(u.outcome.verdict.allowed, "{:?}", u.outcome.findings);
        assert_eq!(u.outcome.matched, 4);
        assert_eq!(
            u.request.operation,
            fluxadmit_core::policy::model::OperationName::Update
        );
        assert_eq!(
            u.request.old_object()["spec"]["template"]["spec"]["containers"][0]["image"],
            "acme.azurecr.io/shop/web:2.14.0"
        );
    }

    #[test]
    fn denied_body_is_denied_with_four_findings() {
        use fluxadmit_core::rules::Level;
        let (snap, size) = snapshot(6_500);
        let body = helmrelease_denied_review(&size, "u-4");
        assert!((2_600..3_800).contains(&body.len()), "{}", body.len());
        for s in [
            snap,
            Snapshot {
                policies: default_policies().unwrap(),
                view: view(&size),
            },
        ] {
            let h = s.review(Mode::Validate, &body).unwrap();
            assert!(!h.outcome.verdict.allowed, "{:?}", h.outcome);
            let f = &h.outcome.findings;
            assert_eq!(f.len(), 4, "{f:?}");
            let warnings: Vec<_> = f
                .iter()
                .filter(|r| r.finding.level == Level::Warning)
                .collect();
            assert_eq!(warnings.len(), 1, "{f:?}");
            assert_eq!(&*warnings[0].policy, "flux-dependencies");
            assert!(
                warnings[0]
                    .finding
                    .message
                    .contains(DENIED_MISSING_DEPENDENCY),
                "{f:?}"
            );
            for name in DENIED_MISSING_SECRETS {
                assert!(
                    f.iter().any(|r| r.finding.level == Level::Error
                        && &*r.policy == "flux-referenced-secrets"
                        && r.finding.message.contains(name)),
                    "{name}: {f:?}"
                );
            }
        }
    }

    #[test]
    fn scaling_policies_compile_and_pass() {
        let size = ViewSize::of(6_500);
        let snap = Snapshot {
            policies: scaling_policies(8).unwrap(),
            view: view(&size),
        };
        let h = snap
            .review(Mode::Validate, &helmrelease_review(&size, "u"))
            .unwrap();
        assert_eq!(h.outcome.matched, 8);
        assert!(h.outcome.findings.is_empty(), "{:?}", h.outcome.findings);
    }

    #[test]
    fn graph_is_acyclic_and_sized() {
        let g = Graph::generate(5, 100, 500);
        assert_eq!(g.len(), 1_000);
        for k in g.edges.keys() {
            let deps = g.edges_of(k).unwrap();
            assert!(
                fluxadmit_core::graph::find_cycle_through(k, deps, |x| g.edges_of(x)).is_none()
            );
        }
    }
}
