use super::*;
use crate::graph::ObjKey;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::channel::{Channel, Sender};
use serde_json::{Value, json};
use std::convert::Infallible;

const CANARY: &str = "Q0FOQVJZLXZhbHVlLW5ldmVyLXN0b3JlZA==";

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new())
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn secret(name: &str, keys: &[&str]) -> DynamicObject {
    let data: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| ((*k).to_owned(), json!(CANARY)))
        .collect();
    obj(json!({"metadata": {"name": name, "namespace": "apps"}, "type": "Opaque", "data": data}))
}

#[test]
fn relist_replaces_a_kind_and_events_apply_in_order() {
    let mut live = LiveView::new(&[Tracked::Secret, Tracked::HelmRelease], metrics());
    assert!(!live.handle(Tracked::Secret, Event::Init));
    live.handle(Tracked::Secret, Event::InitApply(secret("a", &["x"])));
    live.handle(Tracked::Secret, Event::InitApply(secret("b", &["y"])));
    assert!(live.view().secrets.is_empty(), "buffered until InitDone");
    assert!(live.handle(Tracked::Secret, Event::InitDone));
    assert_eq!(live.view().secrets.len(), 2);
    assert!(!live.is_synced(), "HelmReleases not listed yet");

    live.handle(Tracked::HelmRelease, Event::Init);
    live.handle(Tracked::HelmRelease, Event::InitDone);
    assert!(live.is_synced());

    live.handle(Tracked::Secret, Event::Apply(secret("a", &["x", "z"])));
    live.handle(Tracked::Secret, Event::Delete(secret("b", &[])));
    let a = live.view().secrets.get("apps", "a").unwrap();
    assert_eq!(
        a.keys.iter().map(String::as_str).collect::<Vec<_>>(),
        ["x", "z"]
    );
    assert!(live.view().secrets.get("apps", "b").is_none());

    // A relist drops what disappeared while the watch was down.
    live.handle(Tracked::Secret, Event::Init);
    live.handle(Tracked::Secret, Event::InitApply(secret("c", &["k"])));
    live.handle(Tracked::Secret, Event::InitDone);
    assert!(live.view().secrets.get("apps", "a").is_none());
    assert!(live.view().secrets.get("apps", "c").is_some());
    assert!(
        !format!("{:?}", live.view()).contains(CANARY),
        "a secret value was stored"
    );
}

type Body = Channel<Bytes, Infallible>;

async fn respond(body: String) -> (Response<Body>, Sender<Bytes, Infallible>) {
    let (mut tx, rx) = Channel::<Bytes, Infallible>::new(16);
    tx.send_data(Bytes::from(body)).await.unwrap();
    (
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(rx)
            .unwrap(),
        tx,
    )
}

/// A scripted API server: lists answer with fixed items; the first watch per resource gets the
/// given events and stays open.
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>,
    seen: tokio::sync::mpsc::UnboundedSender<String>,
) {
    let mut open = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let uri = req.uri().to_string();
        assert_eq!(req.method(), http::Method::GET, "{uri}");
        let _ = seen.send(uri.clone());
        let path = req.uri().path().to_owned();
        let watching = uri.contains("watch=true");
        let body = match (path.as_str(), watching) {
            ("/api/v1/secrets", false) => json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {"resourceVersion": "10"},
                "items": [{"metadata": {"name": "wiz-api-token", "namespace": "wiz", "resourceVersion": "9"}, "type": "Opaque",
                           "data": {"clientId": CANARY, "clientToken": CANARY}}]}).to_string(),
            ("/apis/helm.toolkit.fluxcd.io/v2/helmreleases", false) => json!({"kind": "HelmReleaseList",
                "apiVersion": "helm.toolkit.fluxcd.io/v2", "metadata": {"resourceVersion": "10"},
                "items": [{"metadata": {"name": "api", "namespace": "apps", "resourceVersion": "8"},
                           "spec": {"dependsOn": [{"name": "database"}]}}]}).to_string(),
            ("/apis/helm.toolkit.fluxcd.io/v2/helmreleases", true) => format!("{}\n", json!({"type": "ADDED", "object": {
                "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": "database", "namespace": "apps", "resourceVersion": "11"}, "spec": {}}})),
            ("/api/v1/secrets", true) => format!("{}\n", json!({"type": "DELETED", "object": {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "wiz-api-token", "namespace": "wiz", "resourceVersion": "12"}}})),
            _ => panic!("unexpected request {uri}"),
        };
        let (resp, tx) = respond(body).await;
        if watching {
            open.push(tx); // keep the watch open
        }
        send.send_response(resp);
    }
}

#[tokio::test]
async fn watchers_list_then_watch_and_publish_a_reduced_view() {
    let (svc, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(api_server(handle, seen_tx));
    let (pub_tx, mut pub_rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(run(
        client,
        vec![Tracked::HelmRelease, Tracked::Secret],
        Duration::from_millis(20),
        metrics(),
        move |v| {
            let _ = pub_tx.send(v);
        },
    ));

    // Published views converge on: both releases, the Secret deleted by its watch event.
    let view = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let v: ClusterView = pub_rx.recv().await.unwrap();
            assert!(
                !format!("{v:?}").contains(CANARY),
                "a secret value was stored"
            );
            if v.helm_releases.get("apps", "database").is_some()
                && v.secrets.get("wiz", "wiz-api-token").is_none()
            {
                return v;
            }
        }
    })
    .await
    .expect("view published");
    let api = view.helm_releases.get("apps", "api").unwrap();
    assert_eq!(api.depends_on[0].to_string(), "apps/database");
    watch.abort();
    server.abort();

    let mut uris = Vec::new();
    while let Ok(u) = seen_rx.try_recv() {
        uris.push(u);
    }
    let secret_list = uris
        .iter()
        .find(|u| u.starts_with("/api/v1/secrets?") && !u.contains("watch=true"))
        .unwrap();
    assert!(
        secret_list.contains("fieldSelector=type%21%3Dhelm.sh%2Frelease.v1"),
        "{secret_list}"
    );
}

/// Lists: no Flux objects, and two DeploymentPolicy resources, one of which does not compile.
async fn policy_api_server(
    mut handle: tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>,
) {
    let mut open = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let uri = req.uri().to_string();
        let watching = uri.contains("watch=true");
        let body = if watching {
            String::new()
        } else if req.uri().path() == "/apis/fluxadmit.io/v1alpha1/deploymentpolicies" {
            json!({"kind": "DeploymentPolicyList", "apiVersion": "fluxadmit.io/v1alpha1", "metadata": {"resourceVersion": "5"},
                "items": [
                    {"metadata": {"name": "team-labels", "resourceVersion": "3"},
                     "spec": {"match": {"resources": [{"kinds": ["HelmRelease"]}]},
                              "rules": [{"name": "team", "requiredLabels": {"labels": ["team"]}}]}},
                    {"metadata": {"name": "broken", "resourceVersion": "4"},
                     "spec": {"match": {}, "rules": [{"name": "x", "dependsOn": {"missing": "Maybe"}}]}}
                ]})
            .to_string()
        } else {
            json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "5"}, "items": []}).to_string()
        };
        let (resp, tx) = respond(body).await;
        if watching {
            open.push(tx);
        }
        send.send_response(resp);
    }
}

#[tokio::test]
async fn policy_resources_compile_with_the_files_and_bad_ones_are_left_out() {
    let (svc, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let server = tokio::spawn(policy_api_server(handle));
    let file = json!({"apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy", "metadata": {"name": "from-file"},
        "spec": {"match": {}, "rules": [{"name": "deps", "dependsOn": {}}]}});
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let watch = tokio::spawn(run_all(
        client,
        vec![Tracked::HelmRelease],
        Some(vec![("policies/deps.yaml".to_owned(), file)]),
        Duration::from_millis(20),
        metrics(),
        move |_view, policies| {
            let _ = tx.send(policies);
        },
    ));
    let set = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
        .expect("policies published");
    let names: Vec<&str> = set.policies.iter().map(|p| &*p.name).collect();
    assert_eq!(names, ["from-file", "team-labels"]);
    assert_eq!(set.policies[1].source, "DeploymentPolicy/team-labels");
    watch.abort();
    server.abort();
}

fn oci_repo(name: &str, url: &str) -> DynamicObject {
    obj(
        json!({"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
               "metadata": {"name": name, "namespace": "apps"}, "spec": {"url": url}}),
    )
}

fn api_error(code: u16) -> watcher::Error {
    let status = kube::core::Status::failure("not there", "NotFound").with_code(code);
    watcher::Error::InitialListFailed(kube::Error::Api(status.boxed()))
}

#[test]
fn an_optional_kind_the_server_does_not_serve_counts_as_listed_and_empty() {
    let mut live = LiveView::new(&[Tracked::HelmRelease, Tracked::OCIRepository], metrics());
    live.handle(Tracked::HelmRelease, Event::Init);
    live.handle(Tracked::HelmRelease, Event::InitDone);
    assert!(!live.is_synced());
    // Errors that are not "absent", and absent required kinds, change nothing.
    assert!(!live.unavailable(Tracked::OCIRepository, &api_error(500)));
    assert!(!live.unavailable(Tracked::HelmRelease, &api_error(404)));
    assert!(!live.is_synced());
    assert!(live.unavailable(Tracked::OCIRepository, &api_error(404)));
    assert!(live.is_synced());
    assert!(
        !live.unavailable(Tracked::OCIRepository, &api_error(403)),
        "reported once"
    );

    // The CRD appears later: the next list fills the kind in.
    live.handle(Tracked::OCIRepository, Event::Init);
    live.handle(
        Tracked::OCIRepository,
        Event::InitApply(oci_repo(
            "app-template",
            "oci://ghcr.io/bjw-s-labs/helm/app-template",
        )),
    );
    assert!(live.handle(Tracked::OCIRepository, Event::InitDone));
    assert_eq!(
        live.view()
            .oci_repositories
            .get("apps", "app-template")
            .map(String::as_str),
        Some("app-template")
    );
    // Once listed, a later 404 (CRD removed) does not reset it: the watcher's retry owns it.
    assert!(!live.unavailable(Tracked::OCIRepository, &api_error(404)));
    assert_eq!(live.view().oci_repositories.len(), 1);
}

/// HelmReleases and OCIRepositories are served; HelmCharts are not (404, plain text as the
/// API server answers for an unknown resource path), or not allowed (403).
async fn source_api_server(
    mut handle: tower_test::mock::Handle<Request<kube::client::Body>, Response<Body>>,
    helm_charts: u16,
) {
    let mut open = Vec::new();
    while let Some((req, send)) = handle.next_request().await {
        let uri = req.uri().to_string();
        let watching = uri.contains("watch=true");
        let (status, body) = match (req.uri().path(), watching) {
            ("/apis/source.toolkit.fluxcd.io/v1/helmcharts", _) => (
                helm_charts,
                if helm_charts == 404 {
                    "404 page not found".to_owned()
                } else {
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                        "message": "helmcharts.source.toolkit.fluxcd.io is forbidden"}).to_string()
                },
            ),
            ("/apis/source.toolkit.fluxcd.io/v1/ocirepositories", false) => (
                200,
                json!({"kind": "OCIRepositoryList", "apiVersion": "source.toolkit.fluxcd.io/v1", "metadata": {"resourceVersion": "10"},
                    "items": [{"metadata": {"name": "app-template", "namespace": "apps", "resourceVersion": "7"},
                               "spec": {"url": "oci://ghcr.io/bjw-s-labs/helm/app-template", "ref": {"tag": "4.1.2"}}}]})
                .to_string(),
            ),
            ("/apis/helm.toolkit.fluxcd.io/v2/helmreleases", false) => (
                200,
                json!({"kind": "HelmReleaseList", "apiVersion": "helm.toolkit.fluxcd.io/v2", "metadata": {"resourceVersion": "10"},
                    "items": [{"metadata": {"name": "echo", "namespace": "apps", "resourceVersion": "8"},
                               "spec": {"chartRef": {"kind": "OCIRepository", "name": "app-template"}}}]})
                .to_string(),
            ),
            (_, true) => (200, String::new()),
            _ => panic!("unexpected request {uri}"),
        };
        let (mut resp, tx) = respond(body).await;
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        if watching {
            open.push(tx);
        }
        send.send_response(resp);
    }
}

#[tokio::test]
async fn a_source_kind_the_cluster_does_not_serve_does_not_block_readiness() {
    for helm_charts in [404, 403] {
        let (svc, handle) = tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let server = tokio::spawn(source_api_server(handle, helm_charts));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = tokio::spawn(run(
            Client::new(svc, "default"),
            vec![
                Tracked::HelmRelease,
                Tracked::OCIRepository,
                Tracked::HelmChart,
            ],
            Duration::from_millis(20),
            metrics(),
            move |v| {
                let _ = tx.send(v);
            },
        ));
        let view: ClusterView = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{helm_charts}: no view published"))
            .unwrap();
        let release =
            json!({"spec": {"chartRef": {"kind": "OCIRepository", "name": "app-template"}}});
        assert_eq!(view.release_chart("apps", &release), Some("app-template"));
        assert!(view.helm_releases.get("apps", "echo").is_some());
        assert!(view.helm_charts.is_empty());
        watch.abort();
        server.abort();
    }
}

fn helm_release(name: &str, deps: &[&str]) -> DynamicObject {
    let deps: Vec<Value> = deps.iter().map(|d| json!({"name": d})).collect();
    obj(
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": name, "namespace": "apps"}, "spec": {"dependsOn": deps}}),
    )
}

/// The kinds two views share (the same `Arc`: for a Flux kind, its index and reverse edges).
fn shared(a: &ClusterView, b: &ClusterView) -> Vec<Tracked> {
    Tracked::ALL
        .into_iter()
        .filter(|k| a.shares(b, *k))
        .collect()
}

fn all_but(changed: &[Tracked]) -> Vec<Tracked> {
    Tracked::ALL
        .into_iter()
        .filter(|k| !changed.contains(k))
        .collect()
}

#[test]
fn a_change_to_one_kind_leaves_the_other_kinds_shared_with_the_published_view() {
    let kinds = [Tracked::HelmRelease, Tracked::Secret, Tracked::Namespace];
    let mut live = LiveView::new(&kinds, metrics());
    for kind in kinds {
        live.handle(kind, Event::Init);
    }
    live.handle(
        Tracked::HelmRelease,
        Event::InitApply(helm_release("api", &["database"])),
    );
    live.handle(
        Tracked::HelmRelease,
        Event::InitApply(helm_release("database", &[])),
    );
    live.handle(Tracked::Secret, Event::InitApply(secret("a", &["x"])));
    live.handle(
        Tracked::Namespace,
        Event::InitApply(obj(json!({"metadata": {"name": "apps"}}))),
    );
    for kind in kinds {
        live.handle(kind, Event::InitDone);
    }
    assert!(live.is_synced());

    // Published as `run_all` publishes: a clone of the live view, sharing every part.
    let first = live.view().clone();
    assert_eq!(shared(&first, live.view()), Tracked::ALL);

    // A Secret changes: the next view has new Secrets and shares everything else.
    assert!(live.handle(Tracked::Secret, Event::Apply(secret("b", &["y"]))));
    let second = live.view().clone();
    assert_eq!(shared(&first, &second), all_but(&[Tracked::Secret]));
    assert!(
        first.secrets.get("apps", "b").is_none(),
        "the published view is not changed"
    );
    assert_eq!(second.secrets.len(), 2);

    // The first change after a publish copies the kind; the next ones, until the next
    // publish, write in place.
    live.handle(Tracked::Secret, Event::Delete(secret("b", &[])));
    let copied = Arc::as_ptr(&live.view().secrets);
    live.handle(Tracked::Secret, Event::Apply(secret("c", &["z"])));
    assert!(std::ptr::eq(copied, Arc::as_ptr(&live.view().secrets)));
    assert_eq!(shared(&second, live.view()), all_but(&[Tracked::Secret]));
    assert!(second.secrets.get("apps", "b").is_some());
    let third = live.view().clone();

    // A HelmRelease changes: its index and its reverse edges are new, nothing else.
    live.handle(
        Tracked::HelmRelease,
        Event::Apply(helm_release("web", &["api"])),
    );
    let fourth = live.view().clone();
    assert_eq!(shared(&third, &fourth), all_but(&[Tracked::HelmRelease]));
    assert_eq!(
        fourth
            .dependents(
                crate::cluster::FluxKind::HelmRelease,
                &ObjKey::new("apps", "api")
            )
            .map(<[_]>::len),
        Some(1)
    );
    assert!(
        third
            .dependents(
                crate::cluster::FluxKind::HelmRelease,
                &ObjKey::new("apps", "api")
            )
            .is_none()
    );

    // A delete of what the view does not hold, and a relist of another kind, copy nothing
    // else.
    live.handle(Tracked::Secret, Event::Delete(secret("never-there", &[])));
    live.handle(Tracked::Namespace, Event::Init);
    live.handle(Tracked::Namespace, Event::InitDone);
    let fifth = live.view().clone();
    assert_eq!(shared(&fourth, &fifth), all_but(&[Tracked::Namespace]));
    assert!(fifth.namespaces.is_empty());
    assert_eq!(fourth.namespaces.len(), 1);
}

#[test]
fn an_object_that_cannot_be_read_is_logged_counted_and_left_out() {
    let m = Metrics::new();
    // A map with non-string keys: serde_json cannot turn it into JSON.
    let bad: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into_iter().collect();
    let got = readable("Secret", "apps", "tok", serde_json::to_value(&bad), &m);
    assert!(got.is_none());
    let good = readable("Secret", "apps", "ok", Ok(json!({"a": 1})), &m);
    assert_eq!(good, Some(json!({"a": 1})));
    let text = m.encode();
    assert!(
        text.contains("fluxadmit_watch_reduce_errors_total{kind=\"Secret\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("fluxadmit_watch_reduce_errors_total{kind=\"HelmRelease\"} 0"),
        "every kind's series exists from the start: {text}"
    );
    m.watch_reduce_error("NotAKind");
    assert!(
        m.encode()
            .contains("fluxadmit_watch_reduce_errors_total{kind=\"other\"} 1")
    );
}

#[test]
fn every_tracked_kind_is_a_bounded_metric_label() {
    for kind in Tracked::ALL {
        assert!(
            crate::metrics::WATCHED_KINDS.contains(&kind.resource().2),
            "{kind:?}"
        );
    }
    assert!(crate::metrics::WATCHED_KINDS.contains(&POLICY_KIND));
}
