//! Confirming a cache miss with a live read. The watch-fed view can lag (a dependency created a
//! moment ago); before reporting a missing dependency, the server asks the API server directly.
//! Kept behind a trait so the engine stays pure and tests need no cluster.

use crate::admission::Request;
use crate::cluster::{ClusterView, FluxKind, Tracked, depends_on_of};
use crate::graph::ObjKey;
use kube::api::{Api, DynamicObject};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<serde_json::Value>, String>> + Send + 'a>>;

/// Reads one Flux object from the API server.
pub trait LiveLookup: Send + Sync {
    fn get<'a>(&'a self, kind: FluxKind, namespace: &'a str, name: &'a str) -> LookupFuture<'a>;
}

/// The kube-rs implementation.
pub struct KubeLookup(pub kube::Client);

impl LiveLookup for KubeLookup {
    fn get<'a>(&'a self, kind: FluxKind, namespace: &'a str, name: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            let ar = Tracked::from(kind).api_resource();
            let api: Api<DynamicObject> = Api::namespaced_with(self.0.clone(), namespace, &ar);
            match api.get_opt(name).await {
                Ok(Some(o)) => serde_json::to_value(&o)
                    .map(Some)
                    .map_err(|e| e.to_string()),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// dependsOn targets of a Flux object that are in neither Flux index of the view.
pub fn missing_dependencies(req: &Request, view: &ClusterView) -> Vec<(FluxKind, ObjKey)> {
    let Some(kind) = FluxKind::from_group_kind(&req.group, &req.kind) else {
        return Vec::new();
    };
    if req.object.is_null() {
        return Vec::new();
    }
    depends_on_of(&req.namespace, &req.object)
        .into_iter()
        .filter(|k| {
            view.flux(kind).get(&k.namespace, &k.name).is_none()
                && view.flux(kind.other()).get(&k.namespace, &k.name).is_none()
        })
        .map(|k| (kind, k))
        .collect()
}

/// Looks the missing dependencies up (at most 8, within `budget` in all) and returns the ones
/// that exist as a small view to evaluate with. Lookup errors count as "not found".
pub async fn confirm(
    lookup: &dyn LiveLookup,
    missing: &[(FluxKind, ObjKey)],
    budget: Duration,
) -> Option<ClusterView> {
    if missing.is_empty() {
        return None;
    }
    let reads = missing.iter().take(8).map(|(kind, key)| async move {
        match lookup.get(*kind, &key.namespace, &key.name).await {
            Ok(Some(v)) => Some((*kind, key, v)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%key, error = %e, "live read of a dependency failed");
                None
            }
        }
    });
    let found = tokio::time::timeout(budget, futures::future::join_all(reads))
        .await
        .ok()?;
    let mut extra = ClusterView::default();
    let mut any = false;
    for (kind, key, v) in found.into_iter().flatten() {
        let t = Tracked::from(kind);
        let mut v = v;
        // The object lives where we asked for it, whatever the body says.
        if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.insert("namespace".into(), key.namespace.clone().into());
            meta.insert("name".into(), key.name.clone().into());
        }
        any |= extra.apply(t, &v);
    }
    any.then_some(extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::policy::load::compile_yaml;
    use crate::server::http::{AppState, app};
    use crate::state::Snapshot;
    use http::{Request as HttpRequest, Response};
    use http_body_util::BodyExt as _;
    use serde_json::{Value, json};
    use std::sync::Arc;
    use tower::ServiceExt as _;

    /// A scripted API server: `loki` and `mimir` exist in `monitoring`, everything else is a 404.
    async fn api_server(
        mut handle: tower_test::mock::Handle<HttpRequest<kube::client::Body>, Response<String>>,
    ) {
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            let resp = if path
                == "/apis/helm.toolkit.fluxcd.io/v2/namespaces/monitoring/helmreleases/mimir"
            {
                let body = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "mimir", "namespace": "monitoring"}, "spec": {"dependsOn": [{"name": "grafana"}]}});
                Response::builder().status(200).body(body.to_string())
            } else if path
                == "/apis/helm.toolkit.fluxcd.io/v2/namespaces/monitoring/helmreleases/loki"
            {
                let body = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                    "metadata": {"name": "loki", "namespace": "monitoring"}, "spec": {"dependsOn": [{"name": "minio"}]}});
                Response::builder().status(200).body(body.to_string())
            } else {
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": format!("{path} not found")});
                Response::builder().status(404).body(status.to_string())
            };
            send.send_response(resp.unwrap());
        }
    }

    const POLICY: &str = "apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: deps}
spec:
  match: {resources: [{apiGroups: [helm.toolkit.fluxcd.io], kinds: [HelmRelease]}]}
  rules:
    - name: depends-on
      dependsOn: {missing: Deny}
";

    fn review(deps: Value) -> String {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-live", "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
            "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
            "name": "grafana", "namespace": "monitoring", "operation": "CREATE", "userInfo": {},
            "object": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                       "metadata": {"name": "grafana", "namespace": "monitoring"}, "spec": {"dependsOn": deps}}}})
        .to_string()
    }

    async fn validate(state: Arc<AppState>, body: String) -> Value {
        let req = HttpRequest::post("/validate")
            .body(axum::body::Body::from(body))
            .unwrap();
        let resp = app(state).oneshot(req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_cache_miss_is_confirmed_with_a_live_read() {
        let (svc, handle) =
            tower_test::mock::pair::<HttpRequest<kube::client::Body>, Response<String>>();
        let server = tokio::spawn(api_server(handle));
        let snapshot = Snapshot {
            policies: compile_yaml("p.yaml", POLICY).unwrap(),
            view: ClusterView::default(),
        };
        let mut state = AppState::new(snapshot, Arc::new(Metrics::new()));
        state.live = Some(Arc::new(KubeLookup(kube::Client::new(svc, "default"))));
        let state = Arc::new(state);

        // loki is not in the (empty) view but exists live: admitted.
        let v = validate(state.clone(), review(json!([{"name": "loki"}]))).await;
        assert_eq!(v["response"]["allowed"], true, "{v}");

        // tempo exists nowhere: denied, as the policy says, after the live read.
        let v = validate(
            state.clone(),
            review(json!([{"name": "loki"}, {"name": "tempo"}])),
        )
        .await;
        assert_eq!(v["response"]["allowed"], false, "{v}");
        let msg = v["response"]["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("HelmRelease monitoring/tempo not found"),
            "{msg}"
        );
        assert!(!msg.contains("loki"), "{msg}");

        // A cycle through a live-read object is found (mimir depends on grafana).
        let v = validate(state, review(json!([{"name": "mimir"}]))).await;
        assert_eq!(v["response"]["allowed"], false, "{v}");
        let msg = v["response"]["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains(
                "dependency cycle: monitoring/grafana → monitoring/mimir → monitoring/grafana"
            ),
            "{msg}"
        );
        server.abort();
    }

    #[tokio::test]
    async fn missing_dependencies_skip_what_the_view_has() {
        let mut view = ClusterView::default();
        view.add_manifest(
            &json!({"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": "infra", "namespace": "apps"}}),
        );
        let req = crate::admission::parse_review(
            review(json!([{"name": "infra", "namespace": "apps"}, {"name": "x"}])).as_bytes(),
        )
        .unwrap();
        let missing = missing_dependencies(&req, &view);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].1.to_string(), "monitoring/x");
    }
}
