//! The cluster view: an in-memory, read-only index of what the rules need to know about the
//! cluster. Secrets are reduced to name, namespace, type and key names: values never enter it.

pub mod load;

pub use load::{LoadError, load_dir};

use crate::graph::ObjKey;
use crate::policy::model::Labels;
use rustc_hash::FxHashMap as HashMap;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Objects of one kind indexed by namespace, then name; lookups borrow, never allocate.
/// Fx hashing: names are short and looked up on every request (a cycle check walks many).
#[derive(Debug, Clone)]
pub struct Index<T> {
    by_ns: HashMap<String, HashMap<String, T>>,
    len: usize,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Self {
            by_ns: HashMap::default(),
            len: 0,
        }
    }
}

impl<T> Index<T> {
    pub fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.by_ns.get(namespace)?.get(name)
    }

    pub fn insert(&mut self, namespace: &str, name: &str, value: T) {
        let ns = self.by_ns.entry(namespace.to_owned()).or_default();
        if ns.insert(name.to_owned(), value).is_none() {
            self.len += 1;
        }
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let ns = self.by_ns.get_mut(namespace)?;
        let old = ns.remove(name);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry as (namespace, name, value), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &T)> {
        self.by_ns
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(n, v)| (ns.as_str(), n.as_str(), v)))
    }
}

/// A HelmRelease or Kustomization as the dependency rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxObject {
    pub labels: Labels,
    pub depends_on: Vec<ObjKey>,
}

impl FluxObject {
    /// Reads labels and `spec.dependsOn` (namespace defaulting to the object's own).
    pub fn from_manifest(namespace: &str, obj: &Value) -> FluxObject {
        FluxObject {
            labels: labels_of(obj),
            depends_on: depends_on_of(namespace, obj),
        }
    }
}

/// `spec.dependsOn` as keys, namespace defaulted to the object's.
pub fn depends_on_of(namespace: &str, obj: &Value) -> Vec<ObjKey> {
    let Some(items) = crate::json::at(obj, "/spec/dependsOn").and_then(Value::as_array) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?;
            let ns = d
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            Some(ObjKey {
                namespace: ns.unwrap_or(namespace).to_owned(),
                name: name.to_owned(),
            })
        })
        .collect()
}

/// `metadata.labels` of a manifest (non-string values are skipped).
pub fn labels_of(obj: &Value) -> Labels {
    crate::json::at(obj, "/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Secret reduced to what rules may know: its type and key names. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The Secret's type; empty when it is not known (a Secret assumed with
    /// `--assume-secret`), and then no rule compares it.
    pub type_: String,
    pub keys: BTreeSet<String>,
    /// The key names cannot be known offline (an ExternalSecret with `dataFrom`, a secret
    /// assumed without keys): rules take it to hold every key they look for. `keys` still
    /// lists the names that are known. False for every Secret read as it is.
    pub open_keys: bool,
}

/// A ConfigMap reduced to its key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigMapInfo {
    pub keys: BTreeSet<String>,
}

/// A ServiceAccount's image pull secret names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountInfo {
    pub image_pull_secrets: Vec<String>,
}

/// Which Flux kind an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FluxKind {
    HelmRelease = 0,
    Kustomization = 1,
}

impl From<FluxKind> for Tracked {
    fn from(k: FluxKind) -> Tracked {
        match k {
            FluxKind::HelmRelease => Tracked::HelmRelease,
            FluxKind::Kustomization => Tracked::Kustomization,
        }
    }
}

impl FluxKind {
    pub fn from_group_kind(group: &str, kind: &str) -> Option<FluxKind> {
        Tracked::from_group_kind(group, kind)?.flux_kind()
    }

    pub fn name(self) -> &'static str {
        match self {
            FluxKind::HelmRelease => "HelmRelease",
            FluxKind::Kustomization => "Kustomization",
        }
    }

    pub fn other(self) -> FluxKind {
        match self {
            FluxKind::HelmRelease => FluxKind::Kustomization,
            FluxKind::Kustomization => FluxKind::HelmRelease,
        }
    }
}

/// The kinds the view tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tracked {
    HelmRelease,
    Kustomization,
    Namespace,
    ServiceAccount,
    Secret,
    ConfigMap,
    /// Flux source a HelmRelease's `spec.chartRef` may point at; held as its chart name.
    OCIRepository,
    /// Flux source a HelmRelease's `spec.chartRef` may point at; held as its chart name.
    HelmChart,
}

impl Tracked {
    pub const ALL: [Tracked; 8] = [
        Tracked::HelmRelease,
        Tracked::Kustomization,
        Tracked::Namespace,
        Tracked::ServiceAccount,
        Tracked::Secret,
        Tracked::ConfigMap,
        Tracked::OCIRepository,
        Tracked::HelmChart,
    ];

    pub fn from_group_kind(group: &str, kind: &str) -> Option<Tracked> {
        match (group, kind) {
            ("helm.toolkit.fluxcd.io", "HelmRelease") => Some(Tracked::HelmRelease),
            ("kustomize.toolkit.fluxcd.io", "Kustomization") => Some(Tracked::Kustomization),
            ("", "Namespace") => Some(Tracked::Namespace),
            ("", "ServiceAccount") => Some(Tracked::ServiceAccount),
            ("", "Secret") => Some(Tracked::Secret),
            ("", "ConfigMap") => Some(Tracked::ConfigMap),
            ("source.toolkit.fluxcd.io", "OCIRepository") => Some(Tracked::OCIRepository),
            ("source.toolkit.fluxcd.io", "HelmChart") => Some(Tracked::HelmChart),
            _ => None,
        }
    }

    /// The Flux kind, for HelmRelease and Kustomization.
    pub fn flux_kind(self) -> Option<FluxKind> {
        match self {
            Tracked::HelmRelease => Some(FluxKind::HelmRelease),
            Tracked::Kustomization => Some(FluxKind::Kustomization),
            _ => None,
        }
    }

    /// Kinds the view can do without: a cluster may not serve them (source-controller CRDs
    /// at another version, or not granted to the webhook). Only `spec.chartRef` resolution
    /// needs them, so the watch counts them listed (and empty) when the API server answers
    /// 404 or 403, instead of never becoming ready.
    pub fn is_optional(self) -> bool {
        matches!(self, Tracked::OCIRepository | Tracked::HelmChart)
    }

    /// The resource as the API server serves it, for kube-rs dynamic APIs.
    pub fn api_resource(self) -> kube::core::ApiResource {
        let (group, version, kind, plural) = self.resource();
        kube::core::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(group, version, kind),
            plural,
        )
    }

    /// (group, version, kind, plural) as served by the API server.
    pub fn resource(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Tracked::HelmRelease => (
                "helm.toolkit.fluxcd.io",
                "v2",
                "HelmRelease",
                "helmreleases",
            ),
            Tracked::Kustomization => (
                "kustomize.toolkit.fluxcd.io",
                "v1",
                "Kustomization",
                "kustomizations",
            ),
            Tracked::Namespace => ("", "v1", "Namespace", "namespaces"),
            Tracked::ServiceAccount => ("", "v1", "ServiceAccount", "serviceaccounts"),
            Tracked::Secret => ("", "v1", "Secret", "secrets"),
            Tracked::ConfigMap => ("", "v1", "ConfigMap", "configmaps"),
            Tracked::OCIRepository => (
                "source.toolkit.fluxcd.io",
                "v1",
                "OCIRepository",
                "ocirepositories",
            ),
            Tracked::HelmChart => ("source.toolkit.fluxcd.io", "v1", "HelmChart", "helmcharts"),
        }
    }
}

/// Reverse dependsOn edges of one Flux kind: who depends on a key.
type Dependents = rustc_hash::FxHashMap<ObjKey, Vec<ObjKey>>;

/// The whole view. Built once, then shared read-only behind an `Arc` snapshot.
///
/// Each kind's index sits behind its own `Arc`, so cloning a view is a handful of `Arc`
/// clones, and changing one kind (`apply`, `delete`, `replace_kind`) copies that kind's index
/// only if it is shared (`Arc::make_mut`): the watch publishes a new view after a change to
/// Secrets that shares every other kind with the view it published before.
#[derive(Debug, Default, Clone)]
pub struct ClusterView {
    pub helm_releases: Arc<Index<FluxObject>>,
    pub kustomizations: Arc<Index<FluxObject>>,
    pub namespaces: Arc<HashMap<String, Labels>>,
    pub service_accounts: Arc<Index<ServiceAccountInfo>>,
    pub secrets: Arc<Index<SecretInfo>>,
    pub config_maps: Arc<Index<ConfigMapInfo>>,
    /// OCIRepositories, reduced to the chart name (last path segment of `spec.url`).
    pub oci_repositories: Arc<Index<String>>,
    /// HelmCharts, reduced to `spec.chart`.
    pub helm_charts: Arc<Index<String>>,
    /// Whether ConfigMaps are tracked at all (offline state may leave them out).
    pub tracks_config_maps: bool,
    /// Reverse dependsOn edges per Flux kind (HelmRelease, Kustomization): who depends on a key.
    /// Kept in step with the indexes by every method that changes them; shared and copied with
    /// its kind's index.
    dependents: [Arc<Dependents>; 2],
}

impl ClusterView {
    pub fn flux(&self, kind: FluxKind) -> &Index<FluxObject> {
        match kind {
            FluxKind::HelmRelease => &self.helm_releases,
            FluxKind::Kustomization => &self.kustomizations,
        }
    }

    /// Whether `self` and `other` hold the same copy (the same `Arc`) of `kind`'s index, and
    /// for a Flux kind of its reverse edges: true for the kinds a change left alone between
    /// two views the watch published.
    pub fn shares(&self, other: &ClusterView, kind: Tracked) -> bool {
        fn same<T>(a: &Arc<T>, b: &Arc<T>) -> bool {
            Arc::ptr_eq(a, b)
        }
        match kind {
            Tracked::HelmRelease | Tracked::Kustomization => {
                let fk = kind.flux_kind().unwrap_or(FluxKind::HelmRelease);
                let index = match fk {
                    FluxKind::HelmRelease => same(&self.helm_releases, &other.helm_releases),
                    FluxKind::Kustomization => same(&self.kustomizations, &other.kustomizations),
                };
                index
                    && same(
                        &self.dependents[fk as usize],
                        &other.dependents[fk as usize],
                    )
            }
            Tracked::Namespace => same(&self.namespaces, &other.namespaces),
            Tracked::ServiceAccount => same(&self.service_accounts, &other.service_accounts),
            Tracked::Secret => same(&self.secrets, &other.secrets),
            Tracked::ConfigMap => same(&self.config_maps, &other.config_maps),
            Tracked::OCIRepository => same(&self.oci_repositories, &other.oci_repositories),
            Tracked::HelmChart => same(&self.helm_charts, &other.helm_charts),
        }
    }

    /// The objects of `kind` whose `dependsOn` names `key`.
    pub fn dependents(&self, kind: FluxKind, key: &ObjKey) -> Option<&[ObjKey]> {
        self.dependents[kind as usize].get(key).map(Vec::as_slice)
    }

    /// Drops the reverse edges of `me`'s stored dependencies.
    fn unlink(&mut self, kind: FluxKind, me: &ObjKey) {
        let Some(old) = self.flux(kind).get(&me.namespace, &me.name) else {
            return;
        };
        if old.depends_on.is_empty() {
            return; // no edges: leave the (maybe shared) reverse index as it is
        }
        let old_deps = old.depends_on.clone();
        let rev = Arc::make_mut(&mut self.dependents[kind as usize]);
        for d in old_deps {
            if let Some(list) = rev.get_mut(&d) {
                list.retain(|k| k != me);
                if list.is_empty() {
                    rev.remove(&d);
                }
            }
        }
    }

    /// Recomputes the reverse edges of one kind from its index.
    pub(crate) fn rebuild_dependents(&mut self, kind: FluxKind) {
        let mut rev = Dependents::default();
        for (ns, name, obj) in self.flux(kind).iter() {
            for d in &obj.depends_on {
                rev.entry(d.clone())
                    .or_default()
                    .push(ObjKey::new(ns, name));
            }
        }
        for list in rev.values_mut() {
            list.sort(); // deterministic search order whatever the map order
            list.dedup();
        }
        self.dependents[kind as usize] = Arc::new(rev);
    }

    /// The index of one Flux kind, for writing: copied first if a published view shares it.
    fn flux_mut(&mut self, kind: FluxKind) -> &mut Index<FluxObject> {
        match kind {
            FluxKind::HelmRelease => Arc::make_mut(&mut self.helm_releases),
            FluxKind::Kustomization => Arc::make_mut(&mut self.kustomizations),
        }
    }

    pub fn namespace_labels(&self, namespace: &str) -> Option<&Labels> {
        self.namespaces.get(namespace)
    }

    /// The chart a HelmRelease in `namespace` installs: `spec.chart.spec.chart` when set, else
    /// the chart of the source `spec.chartRef` names (an OCIRepository or a HelmChart; its
    /// namespace defaults to the release's). None when neither resolves: no chart, a source
    /// the view does not hold, or a kind it does not know.
    pub fn release_chart<'a>(&'a self, namespace: &str, release: &'a Value) -> Option<&'a str> {
        let classic = crate::json::at(release, "/spec/chart/spec/chart")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        if classic.is_some() {
            return classic;
        }
        let chart_ref = crate::json::at(release, "/spec/chartRef")?;
        let name = chart_ref.get("name")?.as_str()?;
        let ns = chart_ref
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(or_default_namespace(namespace));
        let index = match chart_ref.get("kind")?.as_str()? {
            "OCIRepository" => &self.oci_repositories,
            "HelmChart" => &self.helm_charts,
            _ => return None,
        };
        index.get(ns, name).map(String::as_str)
    }

    /// Adds one manifest to the view. Returns false for kinds the view does not track.
    pub fn add_manifest(&mut self, obj: &Value) -> bool {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        match Tracked::from_group_kind(group, kind) {
            Some(t) => self.apply(t, obj),
            None => false,
        }
    }

    /// Adds or replaces one object of a known kind (list items carry no apiVersion/kind).
    pub fn apply(&mut self, kind: Tracked, obj: &Value) -> bool {
        let name = crate::json::at(obj, "/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        if name.is_empty() {
            return false;
        }
        let namespace = or_default_namespace(
            crate::json::at(obj, "/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        match kind {
            Tracked::HelmRelease | Tracked::Kustomization => {
                let fk = kind.flux_kind().unwrap_or(FluxKind::HelmRelease);
                let fresh = FluxObject::from_manifest(namespace, obj);
                let me = ObjKey::new(namespace, name);
                self.unlink(fk, &me);
                for d in &fresh.depends_on {
                    // Sorted, so every replica searches in the same order whatever the event order.
                    let list = Arc::make_mut(&mut self.dependents[fk as usize])
                        .entry(d.clone())
                        .or_default();
                    if let Err(at) = list.binary_search(&me) {
                        list.insert(at, me.clone());
                    }
                }
                self.flux_mut(fk).insert(namespace, name, fresh);
            }
            Tracked::Namespace => {
                Arc::make_mut(&mut self.namespaces).insert(name.to_owned(), labels_of(obj));
            }
            Tracked::Secret => {
                let type_ = obj
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("Opaque")
                    .to_owned();
                let info = SecretInfo {
                    type_,
                    keys: data_keys(obj),
                    open_keys: false,
                };
                Arc::make_mut(&mut self.secrets).insert(namespace, name, info);
            }
            Tracked::ConfigMap => {
                self.tracks_config_maps = true;
                Arc::make_mut(&mut self.config_maps).insert(
                    namespace,
                    name,
                    ConfigMapInfo {
                        keys: data_keys(obj),
                    },
                );
            }
            Tracked::ServiceAccount => {
                let pulls = obj
                    .get("imagePullSecrets")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.get("name")?.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                Arc::make_mut(&mut self.service_accounts).insert(
                    namespace,
                    name,
                    ServiceAccountInfo {
                        image_pull_secrets: pulls,
                    },
                );
            }
            Tracked::OCIRepository | Tracked::HelmChart => {
                let chart = if kind == Tracked::OCIRepository {
                    crate::json::at(obj, "/spec/url")
                        .and_then(Value::as_str)
                        .and_then(oci_chart_name)
                } else {
                    crate::json::at(obj, "/spec/chart")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                };
                match chart {
                    Some(c) => self
                        .chart_source_mut(kind)
                        .insert(namespace, name, c.to_owned()),
                    // Updated to something without a chart: what was held no longer holds.
                    None => self.remove_chart_source(kind, namespace, name),
                }
            }
        }
        true
    }

    fn chart_source_mut(&mut self, kind: Tracked) -> &mut Index<String> {
        if kind == Tracked::OCIRepository {
            Arc::make_mut(&mut self.oci_repositories)
        } else {
            Arc::make_mut(&mut self.helm_charts)
        }
    }

    /// Removes a chart source, copying its (maybe shared) index only if it holds the object.
    fn remove_chart_source(&mut self, kind: Tracked, namespace: &str, name: &str) {
        let index = if kind == Tracked::OCIRepository {
            &mut self.oci_repositories
        } else {
            &mut self.helm_charts
        };
        remove_from(index, namespace, name);
    }

    /// Removes one object.
    pub fn delete(&mut self, kind: Tracked, namespace: &str, name: &str) {
        let namespace = or_default_namespace(namespace);
        match kind {
            Tracked::HelmRelease | Tracked::Kustomization => {
                let fk = kind.flux_kind().unwrap_or(FluxKind::HelmRelease);
                if self.flux(fk).get(namespace, name).is_some() {
                    self.unlink(fk, &ObjKey::new(namespace, name));
                    self.flux_mut(fk).remove(namespace, name);
                }
            }
            Tracked::Namespace => {
                if self.namespaces.contains_key(name) {
                    Arc::make_mut(&mut self.namespaces).remove(name);
                }
            }
            Tracked::Secret => remove_from(&mut self.secrets, namespace, name),
            Tracked::ConfigMap => remove_from(&mut self.config_maps, namespace, name),
            Tracked::ServiceAccount => remove_from(&mut self.service_accounts, namespace, name),
            Tracked::OCIRepository | Tracked::HelmChart => {
                self.remove_chart_source(kind, namespace, name)
            }
        }
    }

    /// Replaces every object of one kind with those of `from` (a relist).
    pub fn replace_kind(&mut self, kind: Tracked, from: ClusterView) {
        match kind {
            Tracked::HelmRelease => {
                self.helm_releases = from.helm_releases;
                self.rebuild_dependents(FluxKind::HelmRelease);
            }
            Tracked::Kustomization => {
                self.kustomizations = from.kustomizations;
                self.rebuild_dependents(FluxKind::Kustomization);
            }
            Tracked::Namespace => self.namespaces = from.namespaces,
            Tracked::Secret => self.secrets = from.secrets,
            Tracked::ConfigMap => {
                self.config_maps = from.config_maps;
                self.tracks_config_maps = true;
            }
            Tracked::ServiceAccount => self.service_accounts = from.service_accounts,
            Tracked::OCIRepository => self.oci_repositories = from.oci_repositories,
            Tracked::HelmChart => self.helm_charts = from.helm_charts,
        }
    }

    /// Number of objects in the view.
    pub fn len(&self) -> usize {
        self.helm_releases.len()
            + self.kustomizations.len()
            + self.namespaces.len()
            + self.service_accounts.len()
            + self.secrets.len()
            + self.config_maps.len()
            + self.oci_repositories.len()
            + self.helm_charts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes one object from a kind's index; the index is copied (if shared) only when it holds
/// the object, so deleting what is not there leaves a published view's index shared.
fn remove_from<T: Clone>(index: &mut Arc<Index<T>>, namespace: &str, name: &str) {
    if index.get(namespace, name).is_some() {
        Arc::make_mut(index).remove(namespace, name);
    }
}

/// The namespace an object without one is in, as the view keys it: `default`.
fn or_default_namespace(namespace: &str) -> &str {
    if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

/// The chart an OCIRepository serves: the last path segment of its `spec.url`
/// (`oci://ghcr.io/bjw-s-labs/helm/app-template` → `app-template`), a trailing slash, a
/// `:tag` or an `@digest` left out. None for a URL with no repository path.
pub fn oci_chart_name(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.trim_end_matches('/');
    // The first segment is the registry host (maybe with a port): not a chart.
    let (_, last) = rest.rsplit_once('/')?;
    let last = last.split_once('@').map_or(last, |(n, _)| n);
    let last = last.split_once(':').map_or(last, |(n, _)| n);
    (!last.is_empty()).then_some(last)
}

/// Key names of `data`, `stringData` and `binaryData`. The values are not looked at.
fn data_keys(obj: &Value) -> BTreeSet<String> {
    ["data", "stringData", "binaryData"]
        .iter()
        .filter_map(|f| obj.get(*f)?.as_object())
        .flat_map(|m| m.keys().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_values_never_enter_the_view() {
        let canary = "CANARY-7f3a9-do-not-leak";
        let mut view = ClusterView::default();
        view.add_manifest(&json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "tok", "namespace": "apps"},
            "type": "Opaque",
            "data": {"clientId": "Q0FOQVJZ"},
            "stringData": {"clientToken": canary}
        }));
        let info = view.secrets.get("apps", "tok").expect("secret indexed");
        assert_eq!(
            info.keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["clientId", "clientToken"]
        );
        assert!(!format!("{view:?}").contains(canary));
        assert!(!format!("{view:?}").contains("Q0FOQVJZ"));
    }

    fn hr(name: &str, deps: &[&str]) -> Value {
        let deps: Vec<Value> = deps.iter().map(|d| json!({"name": d})).collect();
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": name, "namespace": "apps"}, "spec": {"dependsOn": deps}})
    }

    fn dependents_of(v: &ClusterView, name: &str) -> Vec<String> {
        v.dependents(FluxKind::HelmRelease, &ObjKey::new("apps", name))
            .unwrap_or(&[])
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn reverse_edges_follow_updates_deletes_and_relists() {
        let mut v = ClusterView::default();
        v.add_manifest(&hr("api", &["db", "cache"]));
        v.add_manifest(&hr("web", &["api"]));
        v.add_manifest(&hr("worker", &["db"]));
        assert_eq!(dependents_of(&v, "db"), ["apps/api", "apps/worker"]);
        v.add_manifest(&hr("api", &["cache"])); // UPDATE drops api → db
        assert_eq!(dependents_of(&v, "db"), ["apps/worker"]);
        assert_eq!(dependents_of(&v, "cache"), ["apps/api"]);
        v.delete(Tracked::HelmRelease, "apps", "worker");
        assert!(dependents_of(&v, "db").is_empty());
        let mut fresh = ClusterView::default();
        fresh.add_manifest(&hr("batch", &["db"]));
        v.replace_kind(Tracked::HelmRelease, fresh);
        assert_eq!(dependents_of(&v, "db"), ["apps/batch"]);
        assert!(dependents_of(&v, "api").is_empty());
        let mut merged = ClusterView::default();
        merged.merge(v);
        assert_eq!(dependents_of(&merged, "db"), ["apps/batch"]);
    }

    #[test]
    fn oci_chart_name_is_the_last_path_segment() {
        for (url, want) in [
            (
                "oci://ghcr.io/bjw-s-labs/helm/app-template",
                Some("app-template"),
            ),
            (
                "oci://ghcr.io/bjw-s-labs/helm/app-template/",
                Some("app-template"),
            ),
            (
                "oci://ghcr.io/bjw-s-labs/helm/app-template:4.1.2",
                Some("app-template"),
            ),
            (
                "oci://registry:5000/charts/podinfo@sha256:0123abcd",
                Some("podinfo"),
            ),
            (
                "oci://registry:5000/podinfo:6.7.0@sha256:0123abcd",
                Some("podinfo"),
            ),
            ("oci://ghcr.io", None),
            ("oci://ghcr.io/", None),
            ("", None),
        ] {
            assert_eq!(oci_chart_name(url), want, "{url}");
        }
    }

    fn oci(ns: &str, name: &str, url: &str, api_version: &str) -> Value {
        json!({"apiVersion": api_version, "kind": "OCIRepository",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"interval": "15m", "url": url, "ref": {"tag": "4.1.2"},
                        "layerSelector": {"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip"}}})
    }

    fn helm_chart(ns: &str, name: &str, chart: &str) -> Value {
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"chart": chart, "version": "6.x",
                        "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}})
    }

    fn chart_ref(kind: &str, name: &str, ns: Option<&str>) -> Value {
        let mut r = json!({"kind": kind, "name": name});
        if let Some(ns) = ns {
            r["namespace"] = json!(ns);
        }
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": "echo", "namespace": "apps"},
               "spec": {"interval": "1h", "chartRef": r}})
    }

    #[test]
    fn release_chart_resolves_chart_ref_through_the_view() {
        let mut v = ClusterView::default();
        assert!(v.add_manifest(&oci(
            "apps",
            "app-template",
            "oci://ghcr.io/bjw-s-labs/helm/app-template",
            "source.toolkit.fluxcd.io/v1"
        )));
        assert!(v.add_manifest(&oci(
            "flux-system",
            "shared",
            "oci://ghcr.io/org/charts/shared-chart/",
            "source.toolkit.fluxcd.io/v1beta2"
        )));
        assert!(v.add_manifest(&helm_chart("apps", "podinfo", "podinfo")));
        assert_eq!(v.len(), 3);

        let hr = chart_ref("OCIRepository", "app-template", None);
        assert_eq!(v.release_chart("apps", &hr), Some("app-template"));
        let hr = chart_ref("OCIRepository", "shared", Some("flux-system"));
        assert_eq!(v.release_chart("apps", &hr), Some("shared-chart"));
        let hr = chart_ref("HelmChart", "podinfo", None);
        assert_eq!(v.release_chart("apps", &hr), Some("podinfo"));

        // Not in the view: the wrong namespace, an unknown name, an unknown kind.
        let hr = chart_ref("OCIRepository", "shared", None);
        assert_eq!(v.release_chart("apps", &hr), None);
        let hr = chart_ref("OCIRepository", "nope", None);
        assert_eq!(v.release_chart("apps", &hr), None);
        let hr = chart_ref("GitRepository", "app-template", None);
        assert_eq!(v.release_chart("apps", &hr), None);
        assert_eq!(v.release_chart("apps", &json!({"spec": {}})), None);

        // The classic form wins and needs no view.
        let classic = json!({"spec": {"chart": {"spec": {"chart": "podinfo"}},
                                       "chartRef": {"kind": "OCIRepository", "name": "app-template"}}});
        assert_eq!(
            ClusterView::default().release_chart("apps", &classic),
            Some("podinfo")
        );
    }

    #[test]
    fn chart_sources_follow_updates_deletes_and_relists() {
        let mut v = ClusterView::default();
        let hr = chart_ref("OCIRepository", "app", None);
        v.add_manifest(&oci(
            "apps",
            "app",
            "oci://ghcr.io/a/one",
            "source.toolkit.fluxcd.io/v1",
        ));
        assert_eq!(v.release_chart("apps", &hr), Some("one"));
        v.add_manifest(&oci(
            "apps",
            "app",
            "oci://ghcr.io/a/two",
            "source.toolkit.fluxcd.io/v1",
        ));
        assert_eq!(v.release_chart("apps", &hr), Some("two"));
        assert_eq!(v.len(), 1);
        // An update without a usable URL drops what was held.
        v.add_manifest(&oci(
            "apps",
            "app",
            "oci://ghcr.io",
            "source.toolkit.fluxcd.io/v1",
        ));
        assert_eq!(v.release_chart("apps", &hr), None);
        assert_eq!(v.len(), 0);

        v.add_manifest(&oci(
            "apps",
            "app",
            "oci://ghcr.io/a/one",
            "source.toolkit.fluxcd.io/v1",
        ));
        v.delete(Tracked::OCIRepository, "apps", "app");
        assert_eq!(v.release_chart("apps", &hr), None);

        v.add_manifest(&helm_chart("apps", "hc", "podinfo"));
        let by_chart = chart_ref("HelmChart", "hc", None);
        let mut fresh = ClusterView::default();
        fresh.add_manifest(&oci(
            "apps",
            "app",
            "oci://ghcr.io/a/three",
            "source.toolkit.fluxcd.io/v1",
        ));
        v.replace_kind(Tracked::OCIRepository, fresh.clone());
        assert_eq!(v.release_chart("apps", &hr), Some("three"));
        assert_eq!(
            v.release_chart("apps", &by_chart),
            Some("podinfo"),
            "HelmCharts untouched"
        );
        v.replace_kind(Tracked::HelmChart, fresh);
        assert_eq!(v.release_chart("apps", &by_chart), None);
        assert_eq!(v.len(), 1);

        let mut merged = ClusterView::default();
        merged.add_manifest(&helm_chart("apps", "hc", "podinfo"));
        merged.merge(v);
        assert_eq!(merged.release_chart("apps", &hr), Some("three"));
        assert_eq!(merged.release_chart("apps", &by_chart), Some("podinfo"));
        assert_eq!(merged.len(), 2);
    }

    #[test]
    fn chart_sources_keep_only_the_chart_name() {
        let mut v = ClusterView::default();
        let mut o = oci(
            "apps",
            "app",
            "oci://ghcr.io/a/app-template",
            "source.toolkit.fluxcd.io/v1",
        );
        o["spec"]["secretRef"] = json!({"name": "ghcr-CANARY-auth"});
        o["status"] = json!({"artifact": {"digest": "sha256:CANARY", "url": "http://source-controller/CANARY"}});
        v.add_manifest(&o);
        assert!(!format!("{v:?}").contains("CANARY"));
    }

    #[test]
    fn depends_on_namespace_defaults_to_own() {
        let obj =
            json!({"spec": {"dependsOn": [{"name": "a"}, {"name": "b", "namespace": "infra"}]}});
        let deps = depends_on_of("apps", &obj);
        assert_eq!(deps[0].to_string(), "apps/a");
        assert_eq!(deps[1].to_string(), "infra/b");
    }
}
