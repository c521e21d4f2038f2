//! In a cluster: the view filled by kube-rs watchers. Every event is reduced at once to what
//! the rules need (Secrets: name, type, key names), so values are dropped as they arrive and
//! never stored. A new immutable view is published at most once per debounce interval, and
//! only after every watched kind has completed its initial list.
//!
//! Publishing is cheap: the view clones its per-kind `Arc`s, and the next change to a kind
//! copies only that kind's index (see [`ClusterView`]), so a view published after a Secret
//! changed shares every other kind with the one before it.

use crate::cluster::{ClusterView, Tracked};
use crate::metrics::Metrics;
use futures::StreamExt as _;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt as _};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// Helm keeps release history in Secrets of this type: large, numerous, never referenced by
/// Flux objects. The Secret watch leaves them out server-side.
pub const HELM_STORAGE_SELECTOR: &str = "type!=helm.sh/release.v1";

/// The view being built from watch events.
pub struct LiveView {
    view: ClusterView,
    buffers: HashMap<Tracked, ClusterView>,
    synced: BTreeSet<Tracked>,
    kinds: Vec<Tracked>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for LiveView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveView")
            .field("view", &self.view)
            .field("buffers", &self.buffers)
            .field("synced", &self.synced)
            .field("kinds", &self.kinds)
            .finish_non_exhaustive()
    }
}

impl LiveView {
    /// `metrics` counts the objects left out because they could not be read.
    pub fn new(kinds: &[Tracked], metrics: Arc<Metrics>) -> LiveView {
        LiveView {
            view: ClusterView::default(),
            buffers: HashMap::new(),
            synced: BTreeSet::new(),
            kinds: kinds.to_vec(),
            metrics,
        }
    }

    /// Applies one watch event. Returns true when the visible view changed.
    pub fn handle(&mut self, kind: Tracked, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Apply(obj) => {
                match reduce(kind.resource().2, &obj, &self.metrics) {
                    Some(v) => {
                        self.view.apply(kind, &v);
                    }
                    // Unreadable: whatever the view held for it is stale, so it goes too. A
                    // dependency on it is then confirmed with a live read before it is reported.
                    None => {
                        let ns = obj.namespace().unwrap_or_default();
                        self.view.delete(kind, &ns, &obj.name_any());
                    }
                }
                true
            }
            Event::Delete(obj) => {
                let ns = obj.namespace().unwrap_or_default();
                self.view.delete(kind, &ns, &obj.name_any());
                true
            }
            Event::Init => {
                self.buffers.insert(kind, ClusterView::default());
                false
            }
            Event::InitApply(obj) => {
                // Unreadable: not listed, so absent from the view after InitDone.
                if let Some(v) = reduce(kind.resource().2, &obj, &self.metrics) {
                    self.buffers.entry(kind).or_default().apply(kind, &v);
                }
                false
            }
            Event::InitDone => {
                let fresh = self.buffers.remove(&kind).unwrap_or_default();
                self.view.replace_kind(kind, fresh);
                self.synced.insert(kind);
                true
            }
        }
    }

    /// A watch of an optional kind failed because the API server does not serve it (404: CRD
    /// not installed, or not at the version watched) or does not let us list it (403). Until
    /// its first list succeeds, the kind counts as listed and empty, so readiness does not hang
    /// on it; the watcher keeps retrying and a later list fills it in. Returns true when this
    /// changed the view's readiness. Other kinds, and other errors, are left to the retry.
    pub fn unavailable(&mut self, kind: Tracked, error: &watcher::Error) -> bool {
        if !kind.is_optional() || self.synced.contains(&kind) || !is_absent(error) {
            return false;
        }
        self.buffers.remove(&kind);
        self.view.replace_kind(kind, ClusterView::default());
        self.synced.insert(kind);
        true
    }

    /// Whether every watched kind has been listed once.
    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(|k| self.synced.contains(k))
    }

    pub fn view(&self) -> &ClusterView {
        &self.view
    }
}

/// Whether a watch error says the resource is not there for us: 404 (not served: a missing
/// CRD, or a version the cluster does not serve) or 403 (RBAC does not grant list/watch).
fn is_absent(error: &watcher::Error) -> bool {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s,
        watcher::Error::WatchError(s) => s,
        _ => return false,
    };
    matches!(status.code, 403 | 404)
}

/// The object as JSON for the view to reduce. The view keeps only what the rules read
/// (Secrets: type and key names; OCIRepository: the chart name from `spec.url`; HelmChart:
/// `spec.chart`), so the object and this copy live for one event.
///
/// None when the object cannot be turned into JSON (not expected: it was just read from
/// JSON): see [`readable`].
fn reduce(kind: &'static str, obj: &DynamicObject, metrics: &Metrics) -> Option<serde_json::Value> {
    let json = serde_json::to_value(obj);
    readable(
        kind,
        obj.metadata.namespace.as_deref().unwrap_or_default(),
        obj.metadata.name.as_deref().unwrap_or_default(),
        json,
        metrics,
    )
}

/// The object's JSON, or None when serializing it failed: then it is logged (kind, namespace,
/// name and serde_json's error, which describes the failure without quoting field values:
/// never a Secret's data) and counted in `fluxadmit_watch_reduce_errors_total`, and the
/// caller keeps it out of the view.
fn readable(
    kind: &'static str,
    namespace: &str,
    name: &str,
    json: Result<serde_json::Value, serde_json::Error>,
    metrics: &Metrics,
) -> Option<serde_json::Value> {
    match json {
        Ok(v) => Some(v),
        Err(e) => {
            metrics.watch_reduce_error(kind);
            tracing::warn!(kind, namespace, name, error = %e,
                "watched object could not be read; left out of the cluster view");
            None
        }
    }
}

/// Watches the kinds cluster-wide and calls `publish` with a fresh view whenever it changed
/// (at most once per `debounce`) once every kind is synced. Runs until the client fails for
/// good or the task is dropped; transient errors are retried with backoff.
#[cfg(test)]
pub async fn run<F>(
    client: Client,
    kinds: Vec<Tracked>,
    debounce: Duration,
    metrics: Arc<Metrics>,
    publish: F,
) where
    F: Fn(ClusterView) + Send + 'static,
{
    run_all(client, kinds, None, debounce, metrics, move |view, _| {
        publish(view)
    })
    .await
}

/// As [`run`], and with `policy_files` also watches `DeploymentPolicy` resources: on a change
/// the file policies and the resources are compiled together and published with the view.
/// A resource that does not compile is left out and logged; the others apply.
pub async fn run_all<F>(
    client: Client,
    kinds: Vec<Tracked>,
    policy_files: Option<Vec<(String, serde_json::Value)>>,
    debounce: Duration,
    metrics: Arc<Metrics>,
    publish: F,
) where
    F: Fn(ClusterView, Option<crate::policy::PolicySet>) + Send + 'static,
{
    let streams = kinds.iter().map(|&kind| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.api_resource());
        let mut cfg = watcher::Config::default();
        if kind == Tracked::Secret {
            cfg = cfg.fields(HELM_STORAGE_SELECTOR);
        }
        watcher::watcher(api, cfg)
            .default_backoff()
            .map(move |e| (Some(kind), e))
            .boxed()
    });
    let mut streams: Vec<_> = streams.collect();
    if policy_files.is_some() {
        let ar = ApiResource::erase::<crate::policy::model::DeploymentPolicy>(&());
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        streams.push(
            watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .map(|e| (None, e))
                .boxed(),
        );
    }
    let mut events = futures::stream::select_all(streams);
    let mut live = LiveView::new(&kinds, metrics.clone());
    let mut resources = PolicyResources::new(metrics);
    let mut dirty = false;
    let mut tick = tokio::time::interval(debounce);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                None => return,
                Some((Some(kind), Ok(event))) => dirty |= live.handle(kind, event),
                Some((None, Ok(event))) => dirty |= resources.handle(event),
                Some((Some(kind), Err(e))) if kind.is_optional() && is_absent(&e) => {
                    if live.unavailable(kind, &e) {
                        dirty = true;
                        tracing::warn!(?kind, error = %e,
                            "not served or not allowed: counted as empty, so HelmReleases whose \
                             spec.chartRef names one do not resolve to a chart; retrying");
                    } else {
                        tracing::debug!(?kind, error = %e, "watch failed; retrying");
                    }
                }
                Some((kind, Err(e))) => tracing::warn!(?kind, error = %e, "watch failed; retrying"),
            },
            _ = tick.tick() => {
                let policies_synced = policy_files.is_none() || resources.synced;
                if dirty && live.is_synced() && policies_synced {
                    let policies = match &policy_files {
                        Some(files) if resources.changed => resources.compile(files),
                        _ => None,
                    };
                    // Arc clones per kind: the published view shares every index with `live`.
                    publish(live.view().clone(), policies);
                    dirty = false;
                }
            }
        }
    }
}

/// `DeploymentPolicy` resources as documents, by name.
struct PolicyResources {
    docs: std::collections::BTreeMap<String, serde_json::Value>,
    buffer: Option<std::collections::BTreeMap<String, serde_json::Value>>,
    synced: bool,
    changed: bool,
    metrics: Arc<Metrics>,
}

/// The `kind` label of a `DeploymentPolicy` that cannot be read.
const POLICY_KIND: &str = "DeploymentPolicy";

impl PolicyResources {
    fn new(metrics: Arc<Metrics>) -> PolicyResources {
        PolicyResources {
            docs: Default::default(),
            buffer: None,
            synced: false,
            changed: false,
            metrics,
        }
    }

    fn handle(&mut self, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Apply(o) => match reduce(POLICY_KIND, &o, &self.metrics) {
                Some(doc) => drop(self.docs.insert(o.name_any(), doc)),
                // Unreadable: the previous version no longer holds; leave it out.
                None => drop(self.docs.remove(&o.name_any())),
            },
            Event::Delete(o) => {
                self.docs.remove(&o.name_any());
            }
            Event::Init => {
                self.buffer = Some(Default::default());
                return false;
            }
            Event::InitApply(o) => {
                let buffer = self.buffer.get_or_insert_with(Default::default);
                if let Some(doc) = reduce(POLICY_KIND, &o, &self.metrics) {
                    buffer.insert(o.name_any(), doc);
                }
                return false;
            }
            Event::InitDone => {
                self.docs = self.buffer.take().unwrap_or_default();
                self.synced = true;
            }
        }
        self.changed = true;
        true
    }

    fn compile(
        &mut self,
        files: &[(String, serde_json::Value)],
    ) -> Option<crate::policy::PolicySet> {
        self.changed = false;
        let docs: Vec<(String, serde_json::Value)> = self
            .docs
            .iter()
            .map(|(name, mut_doc)| {
                let mut doc = mut_doc.clone();
                if let Some(o) = doc.as_object_mut() {
                    o.insert(
                        "apiVersion".into(),
                        crate::policy::model::API_VERSION.into(),
                    );
                    o.insert("kind".into(), crate::policy::model::KIND.into());
                }
                (format!("DeploymentPolicy/{name}"), doc)
            })
            .collect();
        match crate::policy::load::compile_with_resources(files, &docs) {
            Ok((set, rejected)) => {
                for e in rejected {
                    tracing::error!(error = %e, "DeploymentPolicy not applied");
                }
                tracing::info!(policies = set.len(), "policies reloaded");
                Some(set)
            }
            Err(e) => {
                tracing::error!(error = %e, "policy files no longer compile; keeping the previous set");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests;
