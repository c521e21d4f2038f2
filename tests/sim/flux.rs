//! The Flux model: a repository of paths, a cluster of stored objects, and the controllers that
//! move one to the other, one tick at a time, through the API server and (optionally) fluxadmit.
//!
//! Every request the API server would send to fluxadmit goes through `Snapshot::review` and is
//! recorded (endpoint, body, answer), with the cluster-view changes between them, so a run can
//! be replayed against the real server.

use fluxadmit_core::cluster::{ClusterView, Tracked};
use fluxadmit_core::engine::Mode;
use fluxadmit_core::policy::PolicySet;
use fluxadmit_core::state::Snapshot;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

pub const KUSTOMIZE_CONTROLLER: &str = "system:serviceaccount:flux-system:kustomize-controller";
pub const HELM_CONTROLLER: &str = "system:serviceaccount:flux-system:helm-controller";
pub const EXTERNAL_SECRETS: &str = "system:serviceaccount:external-secrets:external-secrets";
/// Whoever owns a custom finalizer (e.g. on a Deployment) and removes it.
pub const FINALIZER_CONTROLLER: &str = "system:serviceaccount:platform:cleanup-controller";
/// A person running the flux CLI.
pub const ADMIN: &str = "kubernetes-admin";

pub const HR_FINALIZER: &str = "finalizers.fluxcd.io";
pub const KS_NAME_LABEL: &str = "kustomize.toolkit.fluxcd.io/name";
pub const KS_NS_LABEL: &str = "kustomize.toolkit.fluxcd.io/namespace";
pub const HELM_NAME_LABEL: &str = "helm.toolkit.fluxcd.io/name";
pub const HELM_NS_LABEL: &str = "helm.toolkit.fluxcd.io/namespace";

pub const ROOT_NS: &str = "flux-system";
pub const ROOT_NAME: &str = "flux-system";
/// The path the bootstrap Kustomization (flux-system/flux-system) applies.
pub const ROOT_PATH: &str = "clusters/prod";

// ---------------------------------------------------------------------------------------------
// Objects.

/// An object's identity: group, kind, namespace ("" when cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub group: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Key {
        Key {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(obj: &Value) -> Key {
        let api_version = obj["apiVersion"].as_str().unwrap_or("v1");
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        let kind = obj["kind"].as_str().unwrap_or_default();
        let namespace = if cluster_scoped(kind) {
            ""
        } else {
            obj["metadata"]["namespace"].as_str().unwrap_or("default")
        };
        Key::new(
            group,
            kind,
            namespace,
            obj["metadata"]["name"].as_str().unwrap_or_default(),
        )
    }

    pub fn hr(namespace: &str, name: &str) -> Key {
        Key::new("helm.toolkit.fluxcd.io", "HelmRelease", namespace, name)
    }

    pub fn ks(namespace: &str, name: &str) -> Key {
        Key::new(
            "kustomize.toolkit.fluxcd.io",
            "Kustomization",
            namespace,
            name,
        )
    }

    pub fn secret(namespace: &str, name: &str) -> Key {
        Key::new("", "Secret", namespace, name)
    }

    pub fn config_map(namespace: &str, name: &str) -> Key {
        Key::new("", "ConfigMap", namespace, name)
    }

    pub fn deployment(namespace: &str, name: &str) -> Key {
        Key::new("apps", "Deployment", namespace, name)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Cluster-scoped kinds: the built-in ones, and by the naming convention of the add-ons real
/// repositories carry (cert-manager's ClusterIssuer, Gateway API's GatewayClass,
/// external-secrets' ClusterSecretStore).
fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "CustomResourceDefinition"
            | "StorageClass"
            | "PriorityClass"
            | "GatewayClass"
            | "IngressClass"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
    ) || kind.starts_with("Cluster")
}

const WORKLOADS: [(&str, &str); 7] = [
    ("", "Pod"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
];

/// The webhook configurations of the chart: workloads go to /mutate then /validate; Flux
/// objects to /validate only. Secrets, ConfigMaps, Namespaces... are not sent at all.
fn is_workload(k: &Key) -> bool {
    WORKLOADS
        .iter()
        .any(|(g, kd)| *g == k.group && *kd == k.kind)
}

fn is_flux(k: &Key) -> bool {
    (k.group == "helm.toolkit.fluxcd.io" && k.kind == "HelmRelease")
        || (k.group == "kustomize.toolkit.fluxcd.io" && k.kind == "Kustomization")
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

fn set_label(obj: &mut Value, key: &str, value: &str) {
    let meta = &mut obj["metadata"];
    if !meta["labels"].is_object() {
        meta["labels"] = json!({});
    }
    meta["labels"][key] = json!(value);
}

// ---------------------------------------------------------------------------------------------
// Sort order (fluxcd/pkg ssa: utils.SortableUnstructureds / ResourceOrder).

/// Kinds applied first, in this order; every other kind after them by group then kind;
/// webhook configurations last.
pub const KIND_ORDER: [&str; 19] = [
    "CustomResourceDefinition",
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Service",
    "LimitRange",
    "PriorityClass",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const KIND_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The ssa sort key (fluxcd/pkg ssa/sort.go): the listed kinds first, in their order (index
/// -19..-1), every other kind at 0, webhook configurations last (1, 2); equal indexes by group,
/// then kind; ties by namespace, then name.
pub fn sort_key(obj: &Value) -> (i32, String, String, String, String) {
    let k = Key::of(obj);
    let index = if let Some(i) = KIND_ORDER.iter().position(|x| *x == k.kind) {
        i as i32 - KIND_ORDER.len() as i32
    } else if let Some(i) = KIND_LAST.iter().position(|x| *x == k.kind) {
        1 + i as i32
    } else {
        0
    };
    (index, k.group, k.kind, k.namespace, k.name)
}

pub fn sort_objects(objects: &mut [Value]) {
    objects.sort_by_key(sort_key);
}

/// Stage one of ApplyAllStaged: cluster definitions (CRDs and Namespaces).
fn is_cluster_definition(obj: &Value) -> bool {
    matches!(
        obj["kind"].as_str(),
        Some("CustomResourceDefinition" | "Namespace")
    )
}

// ---------------------------------------------------------------------------------------------
// Repository, records, state.

/// A Git repository: manifests by path. A Kustomization's `spec.path` names one.
#[derive(Clone, Debug, Default)]
pub struct Repo {
    pub paths: BTreeMap<String, Vec<Value>>,
}

impl Repo {
    pub fn add(&mut self, path: &str, obj: Value) {
        self.paths.entry(path.to_owned()).or_default().push(obj);
    }

    /// Every object of every path, with the path it is in.
    pub fn objects(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.paths
            .iter()
            .flat_map(|(p, objs)| objs.iter().map(move |o| (p.as_str(), o)))
    }
}

/// One review sent to fluxadmit, with its answer.
#[derive(Clone, Debug)]
pub struct Record {
    pub tick: usize,
    pub endpoint: &'static str,
    pub key: Key,
    pub operation: String,
    pub dry_run: bool,
    pub user: String,
    pub body: Vec<u8>,
    pub allowed: bool,
    pub message: String,
    pub warnings: Vec<String>,
    /// The JSON patch, as a JSON array.
    pub patch: Option<Value>,
}

impl Record {
    /// Message and warnings, for searching.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.message, self.warnings.join("\n"))
    }
}

/// A change to the cluster (and so to the view fluxadmit sees), made before record `at`.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: usize,
    pub tick: usize,
    pub key: Key,
    /// The stored object, or None when it was removed.
    pub object: Option<Value>,
}

/// What one controller failed at, in one tick.
#[derive(Clone, Debug)]
pub struct Failure {
    pub tick: usize,
    pub who: String,
    pub error: String,
}

#[derive(Clone, Debug, Default)]
struct KsStatus {
    /// The revision of the last apply that fully succeeded.
    applied: Option<u64>,
    ready: bool,
    /// What the last successful apply wrote (for prune).
    inventory: BTreeSet<Key>,
}

/// The result of [`Sim::run`].
#[derive(Clone, Debug)]
pub struct Run {
    /// Every Kustomization and HelmRelease Ready, nothing pending or being deleted.
    pub converged: bool,
    /// Ticks of this run until the last change (the run then idled for two ticks).
    pub settled_after: usize,
    pub ticks: usize,
}

pub struct Sim {
    pub repo: Repo,
    revision: u64,
    pub tick: usize,
    /// Stored objects, as the API server holds them.
    pub cluster: BTreeMap<Key, Value>,
    /// fluxadmit, when installed: policies and the view it has of the cluster.
    pub webhook: Option<Snapshot>,
    pub records: Vec<Record>,
    pub changes: Vec<Change>,
    pub failures: Vec<Failure>,
    ks: BTreeMap<Key, KsStatus>,
    /// HelmReleases helm-controller has installed, with the spec it installed.
    hr_ready: BTreeMap<Key, Value>,
    /// Secrets external-secrets will write: (tick due, Secret).
    pending_secrets: Vec<(usize, Value)>,
    uid: u64,
}

impl Sim {
    /// A cluster bootstrapped with `flux bootstrap`: the flux-system namespace and the root
    /// Kustomization (not reviewed: it exists before fluxadmit), applying [`ROOT_PATH`].
    /// `policies`: None runs without fluxadmit.
    pub fn new(repo: Repo, policies: Option<PolicySet>) -> Sim {
        let webhook = policies.map(|policies| {
            let mut view = ClusterView::default();
            // A live cluster's watch tracks ConfigMaps from the start.
            view.tracks_config_maps = true;
            Snapshot { policies, view }
        });
        let mut sim = Sim {
            repo,
            revision: 1,
            tick: 0,
            cluster: BTreeMap::new(),
            webhook,
            records: Vec::new(),
            changes: Vec::new(),
            failures: Vec::new(),
            ks: BTreeMap::new(),
            hr_ready: BTreeMap::new(),
            pending_secrets: Vec::new(),
            uid: 0,
        };
        // Every cluster has these before Flux arrives.
        for ns in ["default", "kube-system", ROOT_NS] {
            sim.seed(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        }
        sim.seed(kustomization(ROOT_NAME, ROOT_PATH, &[], false, &[]));
        sim
    }

    /// Puts an object into the cluster directly (it existed before; no review).
    pub fn seed(&mut self, obj: Value) {
        self.store(Key::of(&obj), Some(obj));
    }

    /// Marks a seeded HelmRelease as installed.
    pub fn seed_ready_hr(&mut self, key: &Key) {
        let spec = self.cluster[key]["spec"].clone();
        self.hr_ready.insert(key.clone(), spec);
    }

    /// Marks a Kustomization as having applied the current revision, owning `inventory`.
    pub fn seed_ks_inventory(&mut self, ks: &Key, inventory: &[Key]) {
        let st = self.ks.entry(ks.clone()).or_default();
        st.applied = Some(self.revision);
        st.ready = true;
        st.inventory = inventory.iter().cloned().collect();
    }

    /// A new Git revision: every Kustomization applies it.
    pub fn push(&mut self, repo: Repo) {
        self.repo = repo;
        self.revision += 1;
    }

    pub fn policies(&self) -> Option<&PolicySet> {
        self.webhook.as_ref().map(|s| &s.policies)
    }

    /// Ticks until nothing changed for two ticks, or `limit` ticks.
    pub fn run(&mut self, limit: usize) -> Run {
        let start = self.tick;
        let mut quiet = 0;
        let mut last_change = start;
        while self.tick - start < limit && quiet < 2 {
            let before = self.fingerprint();
            self.step();
            if self.fingerprint() == before {
                quiet += 1;
            } else {
                quiet = 0;
                last_change = self.tick;
            }
        }
        Run {
            converged: self.converged(),
            settled_after: last_change - start,
            ticks: self.tick - start,
        }
    }

    /// One tick: every controller once (the Kustomization retryInterval and the HelmRelease
    /// retry are one tick).
    pub fn step(&mut self) {
        self.tick += 1;
        self.external_secrets();
        self.kustomize_controller();
        self.helm_controller();
        self.finalizer_controller();
        self.ks_status();
    }

    pub fn converged(&self) -> bool {
        self.pending_secrets.is_empty()
            && self.cluster.values().all(|o| !deleting(o))
            && self
                .cluster
                .keys()
                .all(|k| match (k.group.as_str(), k.kind.as_str()) {
                    ("kustomize.toolkit.fluxcd.io", "Kustomization") => self.ks_ready(k),
                    ("helm.toolkit.fluxcd.io", "HelmRelease") => self.hr_is_ready(k),
                    _ => true,
                })
    }

    pub fn ks_ready(&self, k: &Key) -> bool {
        self.ks.get(k).is_some_and(|s| s.ready)
    }

    pub fn hr_is_ready(&self, k: &Key) -> bool {
        match (self.hr_ready.get(k), self.cluster.get(k)) {
            (Some(spec), Some(obj)) => *spec == obj["spec"],
            _ => false,
        }
    }

    pub fn keys(&self) -> BTreeSet<Key> {
        self.cluster.keys().cloned().collect()
    }

    /// What is not ready, for failure messages.
    pub fn not_ready(&self) -> Vec<String> {
        self.cluster
            .keys()
            .filter(|k| {
                (is_flux(k) && !(self.ks_ready(k) || self.hr_is_ready(k)))
                    || deleting(&self.cluster[k])
            })
            .map(ToString::to_string)
            .collect()
    }

    fn fingerprint(&self) -> String {
        let ks: Vec<_> = self
            .ks
            .iter()
            .map(|(k, s)| (k.to_string(), s.applied, s.ready, s.inventory.len()))
            .collect();
        let hrs: Vec<_> = self.hr_ready.keys().map(ToString::to_string).collect();
        format!(
            "{}|{ks:?}|{hrs:?}|{}",
            serde_json::to_string(&self.cluster.values().collect::<Vec<_>>()).unwrap_or_default(),
            self.pending_secrets.len()
        )
    }

    fn fail(&mut self, who: &str, error: String) {
        self.failures.push(Failure {
            tick: self.tick,
            who: who.to_owned(),
            error,
        });
    }

    // -----------------------------------------------------------------------------------------
    // The API server.

    /// Stores or removes an object; fluxadmit's view follows every real write (never a dry run).
    fn store(&mut self, key: Key, obj: Option<Value>) {
        match &obj {
            Some(o) => {
                self.cluster.insert(key.clone(), o.clone());
            }
            None => {
                self.cluster.remove(&key);
            }
        }
        if let Some(snap) = &mut self.webhook {
            match (&obj, Tracked::from_group_kind(&key.group, &key.kind)) {
                (Some(o), Some(_)) => {
                    snap.view.add_manifest(o);
                }
                (None, Some(t)) => snap.view.delete(t, &key.namespace, &key.name),
                _ => {}
            }
        }
        self.changes.push(Change {
            at: self.records.len(),
            tick: self.tick,
            key,
            object: obj,
        });
    }

    /// A server-side apply (or, with `dry_run`, its dry run): merges with what is stored,
    /// runs admission, and, for a real write, stores the result. Returns the resulting object.
    fn server_apply(&mut self, user: &str, desired: Value, dry_run: bool) -> Result<Value, String> {
        let key = Key::of(&desired);
        let existing = self.cluster.get(&key).cloned();
        let mut obj = desired;
        if let Some(old) = &existing {
            // Fields other managers own stay: the finalizers controllers added.
            let fins = old.pointer("/metadata/finalizers").cloned();
            if let Some(f) = fins
                && obj.pointer("/metadata/finalizers").is_none()
            {
                obj["metadata"]["finalizers"] = f;
            }
        }
        self.write(user, obj, existing.as_ref(), dry_run)
    }

    /// CREATE (no `old`) or UPDATE through admission, then stored unless a dry run.
    fn write(
        &mut self,
        user: &str,
        obj: Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, String> {
        let key = Key::of(&obj);
        if !key.namespace.is_empty()
            && !self
                .cluster
                .contains_key(&Key::new("", "Namespace", "", &key.namespace))
        {
            return Err(format!("namespaces \"{}\" not found", key.namespace));
        }
        let obj = self.admit(user, obj, old, dry_run)?;
        if !dry_run {
            // The API server removes an object being deleted once its last finalizer is gone.
            if deleting(&obj) && finalizers(&obj).is_empty() {
                self.store(key, None);
            } else {
                if key.group == "external-secrets.io" && key.kind == "ExternalSecret" {
                    self.schedule_external_secret(&obj);
                }
                self.store(key, Some(obj.clone()));
            }
        }
        Ok(obj)
    }

    /// DELETE: with finalizers, the API server sets deletionTimestamp (the webhook sees an
    /// UPDATE whose object has it and the same finalizers); without, the object goes.
    fn delete(&mut self, user: &str, key: &Key) -> Result<(), String> {
        let Some(old) = self.cluster.get(key).cloned() else {
            return Ok(());
        };
        if deleting(&old) {
            return Ok(()); // waiting for its finalizers
        }
        if finalizers(&old).is_empty() {
            self.store(key.clone(), None);
            return Ok(());
        }
        let mut obj = old.clone();
        obj["metadata"]["deletionTimestamp"] = json!(self.timestamp());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        self.write(user, obj, Some(&old), false).map(drop)
    }

    /// A controller removes its finalizer from an object being deleted (an UPDATE).
    fn remove_finalizer(&mut self, user: &str, key: &Key, finalizer: &str) -> Result<(), String> {
        let Some(old) = self.cluster.get(key).cloned() else {
            return Ok(());
        };
        let mut obj = old.clone();
        let rest: Vec<String> = finalizers(&old)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        match obj["metadata"].as_object_mut() {
            Some(m) if rest.is_empty() => {
                m.remove("finalizers");
            }
            _ => obj["metadata"]["finalizers"] = json!(rest),
        }
        self.write(user, obj, Some(&old), false).map(drop)
    }

    fn timestamp(&self) -> String {
        format!("2026-05-01T10:{:02}:00Z", self.tick % 60)
    }

    /// The API server calls the mutating webhook, applies its JSON patch, then calls the
    /// validating webhook with the mutated object; a denial is an error for this object.
    fn admit(
        &mut self,
        user: &str,
        obj: Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Result<Value, String> {
        let key = Key::of(&obj);
        if self.webhook.is_none() || !(is_workload(&key) || is_flux(&key)) {
            return Ok(obj);
        }
        let mut obj = obj;
        if is_workload(&key) {
            let r = self.call("/mutate", user, &obj, old, dry_run);
            if !r.allowed {
                return Err(format!(
                    "admission webhook \"workloads.mutate.fluxadmit.io\" denied the request: {}",
                    r.message
                ));
            }
            if let Some(p) = &r.patch {
                let patch: json_patch::Patch =
                    serde_json::from_value(p.clone()).map_err(|e| format!("bad patch: {e}"))?;
                json_patch::patch(&mut obj, &patch)
                    .map_err(|e| format!("patch does not apply: {e}"))?;
            }
        }
        let r = self.call("/validate", user, &obj, old, dry_run);
        if !r.allowed {
            return Err(format!(
                "admission webhook \"validate.fluxadmit.io\" denied the request: {}",
                r.message
            ));
        }
        Ok(obj)
    }

    /// Builds the AdmissionReview as the API server does, asks fluxadmit, records both.
    fn call(
        &mut self,
        endpoint: &'static str,
        user: &str,
        obj: &Value,
        old: Option<&Value>,
        dry_run: bool,
    ) -> Record {
        self.uid += 1;
        let key = Key::of(obj);
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let body = review_body(
            &format!("{:08x}-sim0-4000-8000-{:012x}", self.tick, self.uid),
            operation,
            user,
            obj,
            old,
            dry_run,
        );
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mode = if endpoint == "/mutate" {
            Mode::Mutate
        } else {
            Mode::Validate
        };
        let snap = self
            .webhook
            .as_ref()
            .unwrap_or_else(|| unreachable!("admit checked"));
        let answer = snap
            .review(mode, &bytes)
            .unwrap_or_else(|e| panic!("the simulator built an invalid review ({e}): {body}"));
        // What the API server reads: the response review, as serialized.
        let (allowed, message, warnings, patch) = read_response(&answer.body);
        let record = Record {
            tick: self.tick,
            endpoint,
            key,
            operation: operation.into(),
            dry_run,
            user: user.into(),
            body: bytes,
            allowed,
            message,
            warnings,
            patch,
        };
        self.records.push(record.clone());
        record
    }

    // -----------------------------------------------------------------------------------------
    // kustomize-controller.

    fn kustomize_controller(&mut self) {
        let keys: Vec<Key> = self
            .cluster
            .keys()
            .filter(|k| k.kind == "Kustomization" && k.group == "kustomize.toolkit.fluxcd.io")
            .cloned()
            .collect();
        for k in keys {
            if let Err(e) = self.reconcile_kustomization(&k) {
                self.fail(&k.to_string(), e);
            }
        }
    }

    fn reconcile_kustomization(&mut self, key: &Key) -> Result<(), String> {
        let Some(ks) = self.cluster.get(key).cloned() else {
            return Ok(());
        };
        if deleting(&ks) {
            return Ok(());
        }
        let status = self.ks.entry(key.clone()).or_default();
        if status.applied == Some(self.revision) {
            return Ok(()); // this revision is applied; readiness is checked by ks_status
        }
        status.ready = false;
        // spec.dependsOn: nothing is applied until every dependency is Ready.
        for dep in depends_on(&ks, "kustomize.toolkit.fluxcd.io", "Kustomization") {
            if !self.ks_ready(&dep) {
                return Err(format!(
                    "dependency '{}/{}' is not ready",
                    dep.namespace, dep.name
                ));
            }
        }
        // spec.postBuild.substituteFrom: read before the build, in the Kustomization's namespace;
        // a missing one that is not optional fails the build.
        for s in ks
            .pointer("/spec/postBuild/substituteFrom")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let kind = s["kind"].as_str().unwrap_or("ConfigMap");
            let name = s["name"].as_str().unwrap_or_default();
            let found = self
                .cluster
                .contains_key(&Key::new("", kind, &key.namespace, name));
            if !found && !s["optional"].as_bool().unwrap_or(false) {
                return Err(format!(
                    "substitute from '{kind}/{name}' error: {kind} \"{name}\" not found"
                ));
            }
        }
        // The build: the path's manifests, each labelled with the Kustomization's name/namespace.
        let path = ks
            .pointer("/spec/path")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut objects: Vec<Value> = self.repo.paths.get(path).cloned().unwrap_or_default();
        for o in &mut objects {
            if o["metadata"]["namespace"].is_null()
                && !cluster_scoped(o["kind"].as_str().unwrap_or_default())
            {
                o["metadata"]["namespace"] = json!("default");
            }
            set_label(o, KS_NAME_LABEL, &key.name);
            set_label(o, KS_NS_LABEL, &key.namespace);
        }
        let applied: BTreeSet<Key> = objects.iter().map(Key::of).collect();
        self.apply_all_staged(objects)?;
        // Prune (ssa DeleteAll): what the previous revision applied and this one no longer
        // contains, after the apply succeeded, in REVERSE apply order (a HelmRelease before the
        // Secret it reads), only objects still labelled as this Kustomization's; an error does
        // not stop the others.
        let old = self
            .ks
            .get(key)
            .map(|s| s.inventory.clone())
            .unwrap_or_default();
        let mut stale: Vec<Value> = old
            .difference(&applied)
            .filter_map(|k| self.cluster.get(k).cloned())
            .filter(|o| {
                o.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1name")
                    .and_then(Value::as_str)
                    == Some(key.name.as_str())
            })
            .collect();
        sort_objects(&mut stale);
        stale.reverse();
        let mut inventory = applied;
        let mut prune_error = None;
        for o in stale {
            let k = Key::of(&o);
            if let Err(e) = self.delete(KUSTOMIZE_CONTROLLER, &k) {
                inventory.insert(k.clone()); // still ours: pruned again on the retry
                prune_error.get_or_insert(format!("{k} prune failed: {e}"));
            } else if self.cluster.contains_key(&k) {
                inventory.insert(k); // being finalized
            }
        }
        let status = self.ks.entry(key.clone()).or_default();
        status.inventory = inventory;
        if let Some(e) = prune_error {
            return Err(e);
        }
        status.applied = Some(self.revision);
        Ok(())
    }

    /// ApplyAllStaged: stage one (CRDs, Namespaces) fully applied before stage two (the rest).
    fn apply_all_staged(&mut self, objects: Vec<Value>) -> Result<(), String> {
        let (defs, rest): (Vec<Value>, Vec<Value>) =
            objects.into_iter().partition(is_cluster_definition);
        self.apply_all(defs)?;
        self.apply_all(rest)
    }

    /// ApplyAll: sort; server-side dry-run every object in order, stopping at the first error
    /// with nothing of the stage applied; then apply the objects whose dry run differs from
    /// what is stored, in the same order, stopping at the first error (earlier writes stay).
    fn apply_all(&mut self, mut objects: Vec<Value>) -> Result<(), String> {
        sort_objects(&mut objects);
        let mut changed = Vec::new();
        for o in objects {
            let key = Key::of(&o);
            let dry = self
                .server_apply(KUSTOMIZE_CONTROLLER, o.clone(), true)
                .map_err(|e| format!("{key} dry-run failed: {e}"))?;
            if self.cluster.get(&key) != Some(&dry) {
                changed.push(o);
            }
        }
        for o in changed {
            let key = Key::of(&o);
            self.server_apply(KUSTOMIZE_CONTROLLER, o, false)
                .map_err(|e| format!("{key} apply failed: {e}"))?;
        }
        Ok(())
    }

    /// Ready: the last apply (and prune) of this revision fully succeeded and, with spec.wait,
    /// every HelmRelease it applied is Ready.
    fn ks_status(&mut self) {
        let revision = self.revision;
        let keys: Vec<Key> = self.ks.keys().cloned().collect();
        for k in keys {
            let Some(obj) = self.cluster.get(&k) else {
                self.ks.remove(&k);
                continue;
            };
            let wait = obj
                .pointer("/spec/wait")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let st = &self.ks[&k];
            let healthy = !wait
                || st
                    .inventory
                    .iter()
                    .filter(|i| i.kind == "HelmRelease" && self.cluster.contains_key(*i))
                    .all(|i| self.hr_is_ready(i));
            let ready = st.applied == Some(revision) && healthy;
            if let Some(st) = self.ks.get_mut(&k) {
                st.ready = ready;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // helm-controller.

    fn helm_controller(&mut self) {
        let keys: Vec<Key> = self
            .cluster
            .keys()
            .filter(|k| k.kind == "HelmRelease")
            .cloned()
            .collect();
        for k in keys {
            if let Err(e) = self.reconcile_helm_release(&k) {
                self.fail(&k.to_string(), e);
            }
        }
    }

    fn reconcile_helm_release(&mut self, key: &Key) -> Result<(), String> {
        let Some(hr) = self.cluster.get(key).cloned() else {
            return Ok(());
        };
        let target = Key::deployment(&key.namespace, &key.name);
        if deleting(&hr) {
            // Uninstall (the chart's Deployment goes, through its own finalizers), then remove
            // finalizers.fluxcd.io: an UPDATE with deletionTimestamp set and the finalizer gone.
            if self.cluster.contains_key(&target) {
                self.delete(HELM_CONTROLLER, &target)?;
                if self.cluster.contains_key(&target) {
                    return Err(format!("uninstall: waiting for {target}"));
                }
            }
            self.hr_ready.remove(key);
            return self.remove_finalizer(HELM_CONTROLLER, key, HR_FINALIZER);
        }
        // First reconcile: helm-controller adds its finalizer (an UPDATE of metadata only).
        if !finalizers(&hr).iter().any(|f| f == HR_FINALIZER) {
            let mut obj = hr.clone();
            let mut fins = finalizers(&hr);
            fins.push(HR_FINALIZER.into());
            obj["metadata"]["finalizers"] = json!(fins);
            self.write(HELM_CONTROLLER, obj, Some(&hr), false)?;
        }
        if self.hr_is_ready(key) {
            return Ok(());
        }
        // Ready needs every spec.dependsOn HelmRelease Ready...
        for dep in depends_on(&hr, "helm.toolkit.fluxcd.io", "HelmRelease") {
            if !self.hr_is_ready(&dep) {
                return Err(format!(
                    "dependency '{}/{}' is not ready",
                    dep.namespace, dep.name
                ));
            }
        }
        // ...and every spec.valuesFrom Secret/ConfigMap (unless optional) with its valuesKey.
        for v in hr
            .pointer("/spec/valuesFrom")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            let kind = v["kind"].as_str().unwrap_or_default();
            let name = v["name"].as_str().unwrap_or_default();
            let values_key = v["valuesKey"].as_str().unwrap_or("values.yaml");
            let optional = v["optional"].as_bool().unwrap_or(false);
            let found = self.cluster.get(&Key::new("", kind, &key.namespace, name));
            let has_key = found.is_some_and(|o| {
                ["data", "stringData"]
                    .iter()
                    .any(|f| o[f].get(values_key).is_some())
            });
            if !has_key && !optional {
                return Err(match found {
                    None => format!(
                        "could not resolve {kind} chart values reference '{}/{name}'",
                        key.namespace
                    ),
                    Some(_) => format!(
                        "missing key '{values_key}' in {kind} '{}/{name}'",
                        key.namespace
                    ),
                });
            }
        }
        // Install or upgrade the chart: its Deployment, written through the webhooks.
        let spec = hr["spec"].clone();
        self.server_apply(HELM_CONTROLLER, chart_deployment(&hr), false)
            .map_err(|e| format!("install failed: {e}"))?;
        self.hr_ready.insert(key.clone(), spec);
        Ok(())
    }

    /// A controller owning custom finalizers (on anything but HelmReleases) removes them once
    /// the object is being deleted.
    fn finalizer_controller(&mut self) {
        let keys: Vec<Key> = self
            .cluster
            .iter()
            .filter(|(k, o)| k.kind != "HelmRelease" && deleting(o))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            for f in finalizers(&self.cluster[&k]) {
                if let Err(e) = self.remove_finalizer(FINALIZER_CONTROLLER, &k, &f) {
                    self.fail(&k.to_string(), e);
                    break;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // external-secrets.

    /// An ExternalSecret's Secret appears one tick after it was applied.
    fn schedule_external_secret(&mut self, es: &Value) {
        let ns = es["metadata"]["namespace"].as_str().unwrap_or("default");
        let name = es
            .pointer("/spec/target/name")
            .and_then(Value::as_str)
            .or(es["metadata"]["name"].as_str())
            .unwrap_or_default();
        let mut data = serde_json::Map::new();
        for d in es
            .pointer("/spec/data")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
        {
            if let Some(k) = d["secretKey"].as_str() {
                data.insert(k.into(), json!("ZmV0Y2hlZA=="));
            }
        }
        // Written by external-secrets, not by Flux: no kustomize labels.
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": ns,
                         "labels": {"reconcile.external-secrets.io/managed": "true"}},
            "type": "Opaque", "data": data
        });
        if !self
            .pending_secrets
            .iter()
            .any(|(_, s)| Key::of(s) == Key::of(&secret))
        {
            self.pending_secrets.push((self.tick + 1, secret));
        }
    }

    fn external_secrets(&mut self) {
        let tick = self.tick;
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_secrets)
            .into_iter()
            .partition(|(t, _)| *t <= tick);
        self.pending_secrets = later;
        for (_, s) in due {
            if let Err(e) = self.server_apply(EXTERNAL_SECRETS, s.clone(), false) {
                self.fail("external-secrets", e);
                self.pending_secrets.push((tick + 1, s));
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // The flux CLI.

    /// `flux reconcile hr NAME`: an UPDATE that only adds reconcile.fluxcd.io/requestedAt.
    pub fn flux_reconcile(&mut self, key: &Key) -> Result<(), String> {
        let old = self
            .cluster
            .get(key)
            .cloned()
            .ok_or_else(|| format!("{key} not found"))?;
        let mut obj = old.clone();
        if !obj["metadata"]["annotations"].is_object() {
            obj["metadata"]["annotations"] = json!({});
        }
        obj["metadata"]["annotations"]["reconcile.fluxcd.io/requestedAt"] = json!(self.timestamp());
        self.write(ADMIN, obj, Some(&old), false).map(drop)
    }
}

/// (allowed, status.message, warnings, decoded JSON patch) of an AdmissionReview response body.
pub fn read_response(body: &[u8]) -> (bool, String, Vec<String>, Option<Value>) {
    use base64::Engine as _;
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let r = &v["response"];
    let warnings = r["warnings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let patch = r["patch"].as_str().map(|p| {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(p)
            .unwrap_or_default();
        serde_json::from_slice(&raw).unwrap_or_default()
    });
    (
        r["allowed"].as_bool().unwrap_or(false),
        r["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        warnings,
        patch,
    )
}

/// `spec.dependsOn` as keys of the given kind, namespace defaulting to the object's.
fn depends_on(obj: &Value, group: &str, kind: &str) -> Vec<Key> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default");
    obj.pointer("/spec/dependsOn")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|d| {
                    Key::new(
                        group,
                        kind,
                        d["namespace"].as_str().unwrap_or(ns),
                        d["name"].as_str().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An AdmissionReview v1 request as the API server builds it.
pub fn review_body(
    uid: &str,
    operation: &str,
    user: &str,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> Value {
    let k = Key::of(obj);
    let version = obj["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .rsplit('/')
        .next()
        .unwrap_or("v1");
    let gvk = json!({"group": k.group, "version": version, "kind": k.kind});
    let gvr = json!({"group": k.group, "version": version, "resource": format!("{}s", k.kind.to_lowercase())});
    let options_kind = if operation == "CREATE" {
        "CreateOptions"
    } else {
        "UpdateOptions"
    };
    let manager = user.rsplit(':').next().unwrap_or(user);
    let mut request = json!({
        "uid": uid,
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": k.name,
        "operation": operation,
        "userInfo": {
            "username": user,
            "groups": if user.starts_with("system:serviceaccount:") {
                json!(["system:serviceaccounts", "system:authenticated"])
            } else {
                json!(["system:masters", "system:authenticated"])
            }
        },
        "object": obj,
        "oldObject": old,
        "dryRun": dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1", "kind": options_kind, "fieldManager": manager}
    });
    if !k.namespace.is_empty() {
        request["namespace"] = json!(k.namespace);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request})
}

// ---------------------------------------------------------------------------------------------
// Manifests.

/// A child Kustomization in flux-system applying `path`.
pub fn kustomization(
    name: &str,
    path: &str,
    depends_on: &[&str],
    wait: bool,
    substitute_from: &[Value],
) -> Value {
    let mut spec = json!({
        "interval": "10m", "retryInterval": "1m", "path": path, "prune": true, "wait": wait,
        "sourceRef": {"kind": "GitRepository", "name": "flux-system"}
    });
    if !depends_on.is_empty() {
        spec["dependsOn"] = json!(
            depends_on
                .iter()
                .map(|d| json!({"name": d}))
                .collect::<Vec<_>>()
        );
    }
    if !substitute_from.is_empty() {
        spec["postBuild"] = json!({"substituteFrom": substitute_from});
    }
    json!({
        "apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
        "metadata": {"name": name, "namespace": ROOT_NS, "labels": {"app.kubernetes.io/part-of": "platform"}},
        "spec": spec
    })
}

pub fn namespace(name: &str, tenant: bool) -> Value {
    let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    if tenant {
        set_label(&mut ns, "toolkit.fluxcd.io/tenant", name);
    }
    ns
}

/// A HelmRelease of `chart`; `values_from` entries are given whole.
pub fn helm_release(
    ns: &str,
    name: &str,
    chart: &str,
    depends_on: &[Value],
    values_from: &[Value],
) -> Value {
    let mut spec = json!({
        "interval": "10m",
        "chart": {"spec": {"chart": chart, "version": "1.x",
                           "sourceRef": {"kind": "HelmRepository", "name": "charts", "namespace": ROOT_NS}}},
        "values": {"replicaCount": 1}
    });
    if !depends_on.is_empty() {
        spec["dependsOn"] = json!(depends_on);
    }
    if !values_from.is_empty() {
        spec["valuesFrom"] = json!(values_from);
    }
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": "apps"}},
        "spec": spec
    })
}

/// A Secret (SOPS-decrypted by kustomize-controller before it is applied) with these keys.
pub fn secret(ns: &str, name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), json!("dmFsdWU=")))
        .collect();
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": "Opaque", "data": data})
}

pub fn docker_secret(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns},
           "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "e30="}})
}

pub fn config_map(ns: &str, name: &str, keys: &[&str]) -> Value {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), json!("x: 1")))
        .collect();
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": data})
}

/// An external-secrets.io/v1 ExternalSecret producing Secret `target` with `keys`.
pub fn external_secret(ns: &str, name: &str, target: Option<&str>, keys: &[&str]) -> Value {
    let data: Vec<Value> = keys
        .iter()
        .map(|k| json!({"secretKey": k, "remoteRef": {"key": format!("{ns}/{name}"), "property": k}}))
        .collect();
    let mut spec = json!({
        "refreshInterval": "1h",
        "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
        "data": data
    });
    if let Some(t) = target {
        spec["target"] = json!({"name": t});
    }
    json!({"apiVersion": "external-secrets.io/v1", "kind": "ExternalSecret",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A pod spec that meets the restricted Pod Security Standard, or (`compliant` false) one
/// that meets baseline only (no security context at all).
pub fn pod_spec(image: &str, compliant: bool) -> Value {
    if compliant {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": image,
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": true, "runAsNonRoot": true,
                                    "seccompProfile": {"type": "RuntimeDefault"}}}]
        })
    } else {
        json!({"containers": [{"name": "app", "image": image}]})
    }
}

pub fn deployment(ns: &str, name: &str, labels: Value, pod: Value) -> Value {
    let mut labels = labels;
    labels["app.kubernetes.io/name"] = json!(name);
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}}, "spec": pod}
        }
    })
}

/// What helm-controller installs for a HelmRelease: a Deployment labelled with the release,
/// restricted-compliant unless `spec.values.podSecurity` is "none".
pub fn chart_deployment(hr: &Value) -> Value {
    let ns = hr["metadata"]["namespace"].as_str().unwrap_or("default");
    let name = hr["metadata"]["name"].as_str().unwrap_or_default();
    let chart = hr
        .pointer("/spec/chart/spec/chart")
        .and_then(Value::as_str)
        .unwrap_or("app");
    let compliant = hr
        .pointer("/spec/values/podSecurity")
        .and_then(Value::as_str)
        != Some("none");
    deployment(
        ns,
        name,
        json!({HELM_NAME_LABEL: name, HELM_NS_LABEL: ns, "app.kubernetes.io/managed-by": "Helm"}),
        pod_spec(&format!("ghcr.io/acme/{chart}:1.0.0"), compliant),
    )
}
