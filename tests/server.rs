//! The HTTPS server end to end: a real server on 127.0.0.1 with generated certificates and
//! real TLS clients trusting only the generated CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use common::*;
use fluxadmit::MAX_BODY;
use http_body_util::BodyExt;
use hyper::header::CONTENT_LENGTH;
use hyper::{Method, StatusCode, Version};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Enforce `team`, audit `owner`, add the ACR pull secret on mutation.
const POLICIES: &str = r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: require-team}
spec:
  action: Enforce
  match: {resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]}
  rules:
    - name: team-label
      requiredLabels: {labels: [team]}
---
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: audit-owner}
spec:
  action: Audit
  match: {resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]}
  rules:
    - name: owner-label
      requiredLabels: {labels: [owner]}
---
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: acr-pull}
spec:
  action: Enforce
  match: {resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]}
  rules:
    - name: acr
      imagePullSecrets:
        registries: [{pattern: "*.azurecr.io", secret: acr-pull}]
        validate: false
"#;

const ACR_IMAGE: &str = "acme.azurecr.io/payments/web:1.4.2";

fn review_body(uid: &str, object: &Value) -> Vec<u8> {
    serde_json::to_vec(&review_json(uid, "CREATE", object)).unwrap()
}

/// The webhook contract, on one connection of either protocol.
async fn check_reviews(s: &mut Sender, version: Version) {
    let p = if s.is_h2() { "h2" } else { "h1" };

    // Compliant: allowed, no warning, no status, no patch on /validate.
    let ok = deployment(
        "web",
        "apps",
        json!({"app": "web", "team": "payments", "owner": "ana"}),
        &[ACR_IMAGE],
    );
    let uid = format!("{p}-ok");
    let resp = s
        .review("/validate", &review_json(&uid, "CREATE", &ok))
        .await;
    assert_eq!(resp.version, version);
    let r = review_response(&resp, &uid);
    assert_eq!(r["allowed"], true, "{r}");
    assert!(r.get("warnings").is_none_or(Value::is_null), "{r}");
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "/validate never patches: {r}"
    );

    // Audit only: allowed, with the audit finding as a warning.
    let no_owner = deployment(
        "web",
        "apps",
        json!({"app": "web", "team": "payments"}),
        &["nginx:1.27"],
    );
    let uid = format!("{p}-audit");
    let r = review_response(
        &s.review("/validate", &review_json(&uid, "UPDATE", &no_owner))
            .await,
        &uid,
    );
    assert_eq!(r["allowed"], true, "{r}");
    let warnings = r["warnings"]
        .as_array()
        .unwrap_or_else(|| panic!("no warnings: {r}"));
    assert_eq!(warnings.len(), 1, "{r}");
    let w = warnings[0].as_str().unwrap();
    assert!(
        w.starts_with("audit-owner/owner-label") && w.contains("\"owner\""),
        "{w}"
    );
    assert!(
        r.get("status")
            .is_none_or(|st| st.get("code").is_none_or(|c| c != 403)),
        "{r}"
    );

    // Enforce violated: denied with 403 and a message naming the policy, rule and label;
    // the Audit finding on the same object stays a warning.
    let bad = deployment("web", "apps", json!({"app": "web"}), &[ACR_IMAGE]);
    let uid = format!("{p}-deny");
    let r = review_response(
        &s.review("/validate", &review_json(&uid, "CREATE", &bad))
            .await,
        &uid,
    );
    assert_eq!(r["allowed"], false, "{r}");
    assert_eq!(r["status"]["code"], 403, "{r}");
    let msg = r["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("require-team/team-label") && msg.contains("\"team\""),
        "{msg}"
    );
    assert!(
        !msg.contains("owner"),
        "audit findings must not be part of the denial: {msg}"
    );
    assert!(
        r["warnings"]
            .to_string()
            .contains("audit-owner/owner-label"),
        "{r}"
    );
    assert!(r.get("patch").is_none(), "{r}");

    // /mutate: the ACR pull secret is added to the pod template, as a base64 JSONPatch.
    let uid = format!("{p}-mutate");
    let resp = s.review("/mutate", &review_json(&uid, "CREATE", &ok)).await;
    assert_eq!(resp.version, version);
    let r = review_response(&resp, &uid);
    assert_eq!(r["allowed"], true, "{r}");
    let mut expected = ok.clone();
    expected["spec"]["template"]["spec"]["imagePullSecrets"] = json!([{"name": "acr-pull"}]);
    assert_eq!(apply_patch(&r, &ok), expected);

    // An existing pull secret is kept and the ACR one appended once.
    let mut with_secret = ok.clone();
    with_secret["spec"]["template"]["spec"]["imagePullSecrets"] = json!([{"name": "ghcr"}]);
    let uid = format!("{p}-mutate-append");
    let r = review_response(
        &s.review("/mutate", &review_json(&uid, "UPDATE", &with_secret))
            .await,
        &uid,
    );
    let mut expected = with_secret.clone();
    expected["spec"]["template"]["spec"]["imagePullSecrets"] =
        json!([{"name": "ghcr"}, {"name": "acr-pull"}]);
    assert_eq!(apply_patch(&r, &with_secret), expected);

    // Nothing to add: no patch at all.
    let uid = format!("{p}-mutate-none");
    let r = review_response(
        &s.review("/mutate", &review_json(&uid, "CREATE", &no_owner))
            .await,
        &uid,
    );
    assert_eq!(r["allowed"], true, "{r}");
    assert!(
        r.get("patch").is_none() && r.get("patchType").is_none(),
        "{r}"
    );
}

#[tokio::test]
async fn reviews_over_http1() {
    within("reviews over HTTP/1.1", LIMIT, async {
        let srv = Setup::new(POLICIES).start().await;
        let mut c = srv.connect(ALPN_ONLY_H1).await;
        assert_eq!(c.alpn.as_deref(), Some(ALPN_H1));
        assert!(!c.sender.is_h2());
        check_reviews(&mut c.sender, Version::HTTP_11).await;
        // A client that offers no ALPN at all gets HTTP/1.1 too.
        let mut plain = srv.connect(&[]).await;
        assert_eq!(plain.alpn, None);
        let ok = deployment(
            "web",
            "apps",
            json!({"team": "a", "owner": "b"}),
            &["nginx:1"],
        );
        let resp = plain
            .sender
            .review("/validate", &review_json("no-alpn", "CREATE", &ok))
            .await;
        assert_eq!(resp.version, Version::HTTP_11);
        assert_eq!(review_response(&resp, "no-alpn")["allowed"], true);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reviews_over_h2() {
    within("reviews over h2", LIMIT, async {
        let srv = Setup::new(POLICIES).start().await;
        // Offered both, as the API server does: the server must pick h2.
        let mut c = srv.connect(ALPN_BOTH).await;
        assert_eq!(c.alpn.as_deref(), Some(ALPN_H2));
        assert!(c.sender.is_h2());
        check_reviews(&mut c.sender, Version::HTTP_2).await;

        // Many concurrent streams on the one connection: each answer carries its own uid.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..24 {
            let mut s = c.h2();
            let labels = if i % 2 == 0 {
                json!({"team": "a", "owner": "b"})
            } else {
                json!({})
            };
            let obj = deployment(&format!("d{i}"), "apps", labels, &["nginx:1"]);
            set.spawn(async move {
                let req = request(
                    true,
                    Method::POST,
                    "/validate",
                    full(review_body(&format!("uid-{i}"), &obj)),
                );
                (i, send_h2(&mut s, req).await.unwrap())
            });
        }
        while let Some(res) = set.join_next().await {
            let (i, resp) = res.unwrap();
            assert_eq!(resp.status, StatusCode::OK);
            let r = review_response(&resp, &format!("uid-{i}"));
            assert_eq!(r["allowed"], i % 2 == 0, "{r}");
        }
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn handshake_fails_without_the_ca() {
    within("untrusted CA", LIMIT, async {
        let srv = Setup::new(POLICIES).start().await;
        // Another fluxadmit CA: same subject name, different key, so the chain fails on the
        // signature.
        let other = fluxadmit::generate_certs(&fluxadmit::CertOptions::default()).unwrap();
        let err = tls_connect(srv.addr, &other.ca_cert, ALPN_BOTH)
            .await
            .unwrap_err();
        let tls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                tls_err,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::BadSignature
                        | rustls::CertificateError::UnknownIssuer
                ))
            ),
            "expected an untrusted-chain failure, got {err:?}"
        );

        // The same server with the right CA: the handshake works for localhost and for the
        // in-cluster Service name the API server dials.
        let mut c = srv.connect(ALPN_BOTH).await;
        assert_eq!(
            c.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
        tls_connect_named(
            srv.addr,
            srv.certs.ca_pem(),
            ALPN_BOTH,
            "fluxadmit.fluxadmit.svc",
        )
        .await
        .unwrap();
        // …but not for a name the certificate does not carry.
        let err = tls_connect_named(srv.addr, srv.certs.ca_pem(), ALPN_BOTH, "evil.example.com")
            .await
            .unwrap_err();
        let tls_err = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert!(
            matches!(
                tls_err,
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{err:?}"
        );

        // TLS 1.2 and TLS 1.3 clients are both served; the wrong CA fails under either.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let cfg = client_config_versions(srv.certs.ca_pem(), ALPN_BOTH, &[version]);
            let tls = tls_connect_config(srv.addr, cfg, "localhost")
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.protocol_version(), Some(version.version));
            assert_eq!(negotiated(&tls).as_deref(), Some(ALPN_H2));
            let cfg = client_config_versions(&other.ca_cert, ALPN_BOTH, &[version]);
            tls_connect_config(srv.addr, cfg, "localhost")
                .await
                .unwrap_err();
        }
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    within("bad input", LIMIT, async {
        let srv = Setup::new(POLICIES).start().await;
        let good = deployment("web", "apps", json!({"team": "a", "owner": "b"}), &["nginx:1"]);
        let v1beta1 = review_json("u1", "CREATE", &good).to_string().replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        let mut empty_uid = review_json("", "CREATE", &good);
        empty_uid["request"]["uid"] = json!("");
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("/validate", b"{\"apiVersion\": admission".to_vec(), "body is not valid JSON: "),
            ("/mutate", Vec::new(), "body is not valid JSON: "),
            ("/validate", b"[]".to_vec(), "body is not an AdmissionReview: "),
            ("/mutate", br#"{"kind":"Pod"}"#.to_vec(), "body is not an AdmissionReview: "),
            (
                "/validate",
                v1beta1.into_bytes(),
                r#"unsupported AdmissionReview apiVersion "admission.k8s.io/v1beta1": expected "admission.k8s.io/v1""#,
            ),
            (
                "/mutate",
                br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
                "AdmissionReview has no request",
            ),
            ("/validate", serde_json::to_vec(&empty_uid).unwrap(), "AdmissionReview request has an empty uid"),
        ];
        for alpn in [ALPN_ONLY_H1, ALPN_BOTH] {
            let mut c = srv.connect(alpn).await;
            let p = if c.sender.is_h2() { "h2" } else { "h1" };
            for (path, body, want) in &cases {
                let resp = c.sender.post(path, body.clone()).await.unwrap();
                let msg = resp.expect_error(StatusCode::BAD_REQUEST);
                assert!(msg.starts_with(want), "{p} {path} {:?}: {msg}", String::from_utf8_lossy(body));
            }

            let resp = c.sender.get("/validate").await.unwrap();
            let msg = resp.expect_error(StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(msg, "method GET not allowed on /validate; use POST");
            assert_eq!(resp.header("allow"), Some("POST"));
            let req = c.sender.request(Method::PUT, "/mutate", full(review_body("u", &good)));
            let resp = c.sender.send(req).await.unwrap();
            resp.expect_error(StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(resp.header("allow"), Some("POST"));
            let resp = c.sender.post("/healthz", "x").await.unwrap();
            resp.expect_error(StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(resp.header("allow"), Some("GET"));

            let msg = c.sender.post("/validate/", review_body("u", &good)).await.unwrap().expect_error(StatusCode::NOT_FOUND);
            assert!(msg.starts_with("no route for /validate/"), "{msg}");
            let msg = c.sender.get("/metrics").await.unwrap().expect_error(StatusCode::NOT_FOUND);
            assert!(msg.starts_with("no route for /metrics"), "metrics must not be on the webhook port: {msg}");

            for path in ["/healthz", "/readyz"] {
                let resp = c.sender.get(path).await.unwrap();
                assert_eq!((resp.status, resp.text().as_str()), (StatusCode::OK, "ok"), "{p} {path}");
            }
            // After all those errors the connection still serves reviews.
            let r = review_response(&c.sender.review("/validate", &review_json("after", "CREATE", &good)).await, "after");
            assert_eq!(r["allowed"], true);
            assert!(!c.task.is_finished(), "{p}: an error answer must not close the connection");
        }
        assert_eq!(
            metric(&get_plain(srv.metrics_addr, "/metrics").await.text(), "fluxadmit_bad_requests_total", &[("reason", "malformed")]),
            Some(2.0 * cases.len() as f64)
        );
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    within("body limit", LIMIT, async {
        assert_eq!(MAX_BODY, 3 * 1024 * 1024);
        let srv = Setup::new(POLICIES).start().await;
        let limit_msg = format!("body over the {MAX_BODY} byte limit");

        // Declared too large: answered at once, without waiting for the body.
        let mut tls = tls_connect(srv.addr, srv.certs.ca_pem(), ALPN_ONLY_H1).await.unwrap();
        let head = format!(
            "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            MAX_BODY + 1
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        let (status, _, body) = within("413 on a declared length", Duration::from_secs(5), read_raw_response(&mut tls)).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!({"code": 413, "error": limit_msg}));

        // h2 with the whole body sent.
        let mut c = srv.connect(ALPN_BOTH).await;
        assert!(c.sender.is_h2());
        let resp = c.sender.post("/validate", vec![b' '; MAX_BODY + 1]).await.unwrap();
        assert_eq!(resp.expect_error(StatusCode::PAYLOAD_TOO_LARGE), limit_msg);

        // No length declared (HTTP/1.1 chunked): the limit applies while reading.
        let c1 = srv.connect(ALPN_ONLY_H1).await;
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
        let req = c1.sender.request(Method::POST, "/mutate", body.boxed());
        let Sender::H1(mut s1) = c1.sender else { unreachable!() };
        let send = tokio::spawn(async move { Resp::read(s1.send_request(req).await?).await });
        let chunk = Bytes::from(vec![b' '; 64 * 1024]);
        let mut sent = 0;
        while sent <= MAX_BODY {
            if tx.send_data(chunk.clone()).await.is_err() {
                break;
            }
            sent += chunk.len();
        }
        drop(tx);
        let resp = within("413 on a chunked body", Duration::from_secs(10), send).await.unwrap().unwrap();
        assert_eq!(resp.expect_error(StatusCode::PAYLOAD_TOO_LARGE), limit_msg);

        // Exactly at the limit is fine.
        let ok = deployment("web", "apps", json!({"team": "a", "owner": "b"}), &["nginx:1"]);
        let mut at_limit = review_body("big", &ok);
        at_limit.resize(MAX_BODY, b' ');
        let resp = c.sender.post("/validate", at_limit).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
        assert_eq!(review_response(&resp, "big")["allowed"], true);
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn stalled_body_is_answered_408() {
    within("stalled body", LIMIT, async {
        let budget = Duration::from_millis(300);
        let srv = Setup::new(POLICIES).budget(budget).start().await;
        let partial = &review_body("slow", &deployment("web", "apps", json!({}), &["nginx:1"]))[..40];

        // HTTP/1.1: headers promise 4000 bytes, 40 arrive.
        let mut tls = tls_connect(srv.addr, srv.certs.ca_pem(), ALPN_ONLY_H1).await.unwrap();
        let head = "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n";
        let start = Instant::now();
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(partial).await.unwrap();
        tls.flush().await.unwrap();
        let (status, head, body) = within("408 over HTTP/1.1", Duration::from_secs(5), read_raw_response(&mut tls)).await;
        let took = start.elapsed();
        assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{head}");
        assert!(took >= budget && took < budget + Duration::from_secs(2), "answered after {took:?}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["code"], 408);
        assert!(v["error"].as_str().unwrap().starts_with("request body not received within 300ms"), "{v}");
        // The rest of the body will never come, so the connection cannot be reused: the server
        // closes it instead of leaving it hanging.
        let mut rest = Vec::new();
        // (Ok at a clean close, Err without close_notify: either way it ended in time.)
        let _ = within("connection close after 408", Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
        assert!(rest.is_empty(), "nothing more after the 408: {:?}", String::from_utf8_lossy(&rest));

        // h2: the stalled stream is answered; the connection keeps serving other streams.
        let mut c = srv.connect(ALPN_BOTH).await;
        let (mut tx, body) = http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let mut req = request(true, Method::POST, "/validate", body.boxed());
        req.headers_mut().insert(CONTENT_LENGTH, 4000.into());
        let mut s = c.h2();
        let start = Instant::now();
        let pending = tokio::spawn(async move { send_h2(&mut s, req).await });
        tx.send_data(Bytes::copy_from_slice(partial)).await.unwrap();
        let resp = within("408 over h2", Duration::from_secs(5), pending).await.unwrap().unwrap();
        let took = start.elapsed();
        assert!(took >= budget && took < budget + Duration::from_secs(2), "answered after {took:?}");
        let msg = resp.expect_error(StatusCode::REQUEST_TIMEOUT);
        assert!(msg.starts_with("request body not received within 300ms"), "{msg}");
        drop(tx);
        assert_eq!(c.sender.get("/healthz").await.unwrap().status, StatusCode::OK);
        let ok = deployment("web", "apps", json!({"team": "a", "owner": "b"}), &["nginx:1"]);
        review_response(&c.sender.review("/validate", &review_json("after", "CREATE", &ok)).await, "after");
        srv.stop().await;
    })
    .await;
}

/// Sends reviews on `s` until `stop`, recording (phase at send time, ok?).
async fn keep_reviewing(
    mut s: Sender,
    phase: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
) -> (Sender, Vec<(u8, String)>) {
    let p = if s.is_h2() { "h2" } else { "h1" };
    let obj = deployment(
        "web",
        "apps",
        json!({"team": "a", "owner": "b"}),
        &["nginx:1"],
    );
    let mut log = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let at = phase.load(Ordering::SeqCst);
        let uid = format!("{p}-{i}");
        let outcome = match s.post("/validate", review_body(&uid, &obj)).await {
            Ok(resp)
                if resp.status == StatusCode::OK
                    && resp.json()["response"]["uid"] == uid.as_str() =>
            {
                String::new()
            }
            Ok(resp) => format!("{uid}: {} {}", resp.status, resp.text()),
            Err(e) => format!("{uid}: {e}"),
        };
        log.push((at, outcome));
        i += 1;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    (s, log)
}

#[tokio::test]
async fn certificate_reload_keeps_old_connections() {
    within("certificate reload", LIMIT, async {
        let mut srv = Setup::new(POLICIES).start().await;
        let watch = srv
            .files
            .clone()
            .spawn_watch(Duration::from_millis(100), srv.state.metrics.clone());
        let old = srv.certs.cert_der();
        let h1 = srv.connect(ALPN_ONLY_H1).await;
        let h2 = srv.connect(ALPN_BOTH).await;
        assert_eq!(
            (h1.peer_cert.clone(), h2.peer_cert.clone()),
            (old.clone(), old.clone())
        );
        assert!(h2.sender.is_h2() && !h1.sender.is_h2());

        // 0 = before the swap, 1 = swapped but not yet seen, 2 = new handshakes get the new cert.
        let phase = Arc::new(AtomicU8::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let l1 = tokio::spawn(keep_reviewing(h1.sender, phase.clone(), stop.clone()));
        let l2 = tokio::spawn(keep_reviewing(h2.sender, phase.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_millis(250)).await;

        phase.store(1, Ordering::SeqCst);
        let new = srv.certs.rotate();
        assert_ne!(new, old);
        assert_eq!(srv.certs.cert_der(), new);
        let mut seen = within("new certificate served", Duration::from_secs(10), async {
            loop {
                let c = srv.connect(ALPN_BOTH).await;
                if c.peer_cert != old {
                    break c;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        phase.store(2, Ordering::SeqCst);
        assert_eq!(
            seen.peer_cert, new,
            "a new handshake presents the new certificate"
        );
        review_response(
            &seen
                .sender
                .review(
                    "/validate",
                    &review_json(
                        "new-conn",
                        "CREATE",
                        &deployment("w", "apps", json!({}), &["x"]),
                    ),
                )
                .await,
            "new-conn",
        );
        let h1_new = srv.connect(ALPN_ONLY_H1).await;
        assert_eq!(h1_new.peer_cert, new);

        tokio::time::sleep(Duration::from_millis(250)).await;
        stop.store(true, Ordering::SeqCst);
        let (mut s1, log1) = l1.await.unwrap();
        let (mut s2, log2) = l2.await.unwrap();
        for (name, log) in [("h1", &log1), ("h2", &log2)] {
            let failed: Vec<&String> = log
                .iter()
                .map(|(_, o)| o)
                .filter(|o| !o.is_empty())
                .collect();
            assert!(
                failed.is_empty(),
                "{name}: requests failed across the reload: {failed:?}"
            );
            for ph in 0..=2 {
                assert!(
                    log.iter().any(|(p, _)| *p == ph),
                    "{name}: no request in phase {ph}: {log:?}"
                );
            }
        }
        // The old connections are still the old connections, and still work.
        assert!(!h1.task.is_finished() && !h2.task.is_finished());
        assert_eq!(s1.get("/healthz").await.unwrap().status, StatusCode::OK);
        assert_eq!(s2.get("/healthz").await.unwrap().status, StatusCode::OK);
        assert_eq!(srv.state.metrics.tls_reloads.get(), 1);
        watch.abort();
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn broken_certificate_update_keeps_the_current_one() {
    within("broken certificate update", LIMIT, async {
        let mut srv = Setup::new(POLICIES).start().await;
        let every = Duration::from_millis(100);
        let watch = srv
            .files
            .clone()
            .spawn_watch(every, srv.state.metrics.clone());
        let metrics = srv.state.metrics.clone();
        let old = srv.certs.cert_der();

        // A certificate with someone else's key: refused, counted, the current one stays.
        srv.certs.rotate_mismatched();
        within("reload error counted", Duration::from_secs(10), async {
            while metrics.tls_reload_errors.get() == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        tokio::time::sleep(every * 3).await;
        let mut c = srv.connect(ALPN_BOTH).await;
        assert_eq!(c.peer_cert, old, "the broken update must not be served");
        assert_eq!(
            c.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
        assert_eq!(metrics.tls_reloads.get(), 0);

        // The next good update is picked up.
        let new = srv.certs.rotate();
        within("good update served", Duration::from_secs(10), async {
            while srv.connect(ALPN_BOTH).await.peer_cert != new {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        assert_eq!(metrics.tls_reloads.get(), 1);
        watch.abort();
        srv.stop().await;
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_loses_no_request() {
    within("graceful shutdown", LIMIT, async {
        let drain = Duration::from_millis(800);
        // A long close timeout: idle connections must be closed, not waited out.
        let srv = Setup::new(POLICIES)
            .drain(drain)
            .close_timeout(Duration::from_secs(20))
            .start()
            .await;
        let ca = srv.certs.ca_pem().to_owned();
        let addr = srv.addr;
        let ok = deployment(
            "web",
            "apps",
            json!({"team": "a", "owner": "b"}),
            &["nginx:1"],
        );

        // An idle keep-alive HTTP/1.1 connection and an h2 connection, both used once.
        let mut a = srv.connect(ALPN_ONLY_H1).await;
        review_response(
            &a.sender
                .review("/validate", &review_json("a0", "CREATE", &ok))
                .await,
            "a0",
        );
        let mut b = srv.connect(ALPN_BOTH).await;
        assert!(b.sender.is_h2());
        review_response(
            &b.sender
                .review("/validate", &review_json("b0", "CREATE", &ok))
                .await,
            "b0",
        );
        // Two more that stay idle throughout.
        let mut d = srv.connect(ALPN_ONLY_H1).await;
        review_response(
            &d.sender
                .review("/validate", &review_json("d0", "CREATE", &ok))
                .await,
            "d0",
        );
        let mut e = srv.connect(ALPN_BOTH).await;
        assert!(e.sender.is_h2());

        // Requests in flight when the shutdown begins: half their body sent.
        let b1_body = review_body("b1", &ok);
        let (mut b1_tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let mut req = request(true, Method::POST, "/validate", body.boxed());
        req.headers_mut()
            .insert(CONTENT_LENGTH, b1_body.len().into());
        let mut s = b.h2();
        let b1 = tokio::spawn(async move { send_h2(&mut s, req).await });
        b1_tx
            .send_data(Bytes::copy_from_slice(&b1_body[..50]))
            .await
            .unwrap();

        let c = srv.connect(ALPN_ONLY_H1).await;
        let c1_body = review_body("c1", &ok);
        let (mut c1_tx, body) =
            http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(1);
        let mut req = request(false, Method::POST, "/mutate", body.boxed());
        req.headers_mut()
            .insert(CONTENT_LENGTH, c1_body.len().into());
        let Sender::H1(mut cs) = c.sender else {
            unreachable!()
        };
        let c1 = tokio::spawn(async move { Resp::read(cs.send_request(req).await?).await });
        c1_tx
            .send_data(Bytes::copy_from_slice(&c1_body[..50]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;

        let t0 = Instant::now();
        srv.running.begin_shutdown();

        // Draining: not ready, but a new connection is still answered.
        within("readyz 503", drain / 2, async {
            loop {
                let mut n = connect(addr, &ca, ALPN_ONLY_H1).await.unwrap();
                let r = n.sender.get("/readyz").await.unwrap();
                if r.status == StatusCode::SERVICE_UNAVAILABLE {
                    assert_eq!(r.text(), "shutting down");
                    assert_eq!(r.header("connection"), Some("close"));
                    break;
                }
                assert_eq!(r.status, StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let mut n = connect(addr, &ca, ALPN_BOTH).await.unwrap();
        let r = n
            .sender
            .review("/validate", &review_json("during-drain", "CREATE", &ok))
            .await;
        review_response(&r, "during-drain");

        // The pooled HTTP/1.1 connection: answered, told to close, then closed.
        let r = a
            .sender
            .review("/validate", &review_json("a1", "CREATE", &ok))
            .await;
        assert_eq!(review_response(&r, "a1")["allowed"], true);
        assert_eq!(r.header("connection"), Some("close"), "{:?}", r.headers);
        within(
            "pooled HTTP/1.1 connection closed",
            Duration::from_secs(2),
            &mut a.task,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            t0.elapsed() < drain,
            "the draining checks ran late; the test is not meaningful"
        );

        // h2: GOAWAY received, so new streams are refused on this connection…
        within("h2 GOAWAY", drain / 2, async {
            loop {
                match b.sender.get("/healthz").await {
                    Ok(r) => assert_eq!(r.status, StatusCode::OK),
                    Err(_) => break,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        // …but the stream in flight completes.
        b1_tx
            .send_data(Bytes::copy_from_slice(&b1_body[50..]))
            .await
            .unwrap();
        drop(b1_tx);
        let r = within("h2 in-flight request", Duration::from_secs(2), b1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(review_response(&r, "b1")["allowed"], true);
        within(
            "h2 connection task ends",
            Duration::from_secs(3),
            &mut b.task,
        )
        .await
        .unwrap()
        .ok();

        // After the drain: the HTTP/1.1 request in flight since before the shutdown completes.
        tokio::time::sleep((drain + Duration::from_millis(200)).saturating_sub(t0.elapsed())).await;
        c1_tx
            .send_data(Bytes::copy_from_slice(&c1_body[50..]))
            .await
            .unwrap();
        drop(c1_tx);
        let r = within("HTTP/1.1 in-flight request", Duration::from_secs(2), c1)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        assert_eq!(review_response(&r, "c1")["allowed"], true);

        // The idle h2 connection was sent GOAWAY and closed; the idle HTTP/1.1 one is closed
        // once the drain is over.
        within(
            "idle h2 connection closed",
            Duration::from_secs(2),
            &mut e.task,
        )
        .await
        .unwrap()
        .ok();
        within(
            "idle HTTP/1.1 connection closed",
            Duration::from_secs(2),
            &mut d.task,
        )
        .await
        .unwrap()
        .unwrap();
        within(
            "Running::wait",
            drain + Duration::from_secs(3),
            srv.running.wait(),
        )
        .await
        .unwrap();
        let took = t0.elapsed();
        assert!(
            took >= drain,
            "stopped before the drain period ended: {took:?}"
        );
        assert!(
            took < drain + Duration::from_secs(3),
            "shutdown waited for idle connections: {took:?}"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
    })
    .await;
}

const CANARY: &str = "canary-5f0e9c2b-d41d8cd9-not-for-your-eyes";

#[tokio::test]
async fn metrics_count_decisions_and_leak_no_secret() {
    within("metrics", LIMIT, async {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(CANARY);
        let policies = format!(
            "{POLICIES}---\n{}",
            r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: pull-secrets-exist}
spec:
  match: {resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]}
  rules:
    - name: pull-secrets
      imagePullSecrets: {validate: true}
"#
        );
        let srv = Setup::new(&policies)
            .manifest(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
            )
            .manifest(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": "app-creds", "namespace": "apps"},
                "data": {"password": b64},
                "stringData": {"token": CANARY}
            }))
            .manifest(json!({
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"name": "acr-pull", "namespace": "apps"},
                "data": {".dockerconfigjson": b64}
            }))
            .start()
            .await;
        let leaks = |text: &str| text.contains(CANARY) || text.contains(&b64);
        let annotated = |mut o: Value, pull: &[&str]| {
            o["metadata"]["annotations"] = json!({"example.com/note": CANARY});
            if !pull.is_empty() {
                let p: Vec<Value> = pull.iter().map(|n| json!({"name": n})).collect();
                o["spec"]["template"]["spec"]["imagePullSecrets"] = json!(p);
            }
            o
        };
        let mut c = srv.connect(ALPN_BOTH).await;
        let full_labels = json!({"team": "a", "owner": "b"});
        let mut bodies = Vec::new();

        // validate: allowed (the pull secret exists with the right type).
        let o = annotated(
            deployment("ok", "apps", full_labels.clone(), &[ACR_IMAGE]),
            &["acr-pull"],
        );
        let r = c
            .sender
            .review("/validate", &review_json("v-ok", "CREATE", &o))
            .await;
        assert_eq!(review_response(&r, "v-ok")["allowed"], true, "{}", r.text());
        bodies.push(r.text());
        // validate: denied, twice (missing team label; Opaque Secret used as a pull secret).
        let o = annotated(
            deployment("bad", "apps", json!({"owner": "b"}), &[ACR_IMAGE]),
            &["app-creds"],
        );
        let r = c
            .sender
            .review("/validate", &review_json("v-deny", "CREATE", &o))
            .await;
        let resp = review_response(&r, "v-deny");
        assert_eq!(resp["allowed"], false);
        let msg = resp["status"]["message"].as_str().unwrap();
        assert!(
            msg.contains("app-creds") && msg.contains("Opaque") && msg.contains("\"team\""),
            "{msg}"
        );
        bodies.push(r.text());
        // validate: warned (Audit only).
        let o = annotated(
            deployment("warn", "apps", json!({"team": "a"}), &["nginx:1"]),
            &[],
        );
        let r = c
            .sender
            .review("/validate", &review_json("v-warn", "CREATE", &o))
            .await;
        assert!(review_response(&r, "v-warn")["warnings"].is_array());
        bodies.push(r.text());
        // mutate: patched, and allowed without a patch.
        let o = annotated(
            deployment("m", "apps", full_labels.clone(), &[ACR_IMAGE]),
            &[],
        );
        let r = c
            .sender
            .review("/mutate", &review_json("m-patch", "CREATE", &o))
            .await;
        let patched = apply_patch(&review_response(&r, "m-patch"), &o);
        assert_eq!(
            patched["metadata"]["annotations"]["example.com/note"], CANARY,
            "the object itself is kept"
        );
        let raw_patch = base64::engine::general_purpose::STANDARD
            .decode(r.json()["response"]["patch"].as_str().unwrap())
            .unwrap();
        bodies.push(String::from_utf8(raw_patch).unwrap());
        bodies.push(r.text());
        let o = annotated(
            deployment("m2", "apps", full_labels.clone(), &["nginx:1"]),
            &[],
        );
        let r = c
            .sender
            .review("/mutate", &review_json("m-none", "CREATE", &o))
            .await;
        assert!(review_response(&r, "m-none").get("patch").is_none());
        bodies.push(r.text());
        // and one malformed request.
        c.sender
            .post("/validate", "{}")
            .await
            .unwrap()
            .expect_error(StatusCode::BAD_REQUEST);

        for b in &bodies {
            assert!(!leaks(b), "a response echoes the canary: {b}");
        }
        let m = get_plain(srv.metrics_addr, "/metrics").await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(m.header("content-type").unwrap().starts_with("text/plain"));
        let text = m.text();
        assert!(!leaks(&text), "/metrics leaks the canary");
        let requests = |webhook: &str, decision: &str| {
            metric(
                &text,
                "fluxadmit_admission_requests_total",
                &[("webhook", webhook), ("decision", decision)],
            )
        };
        assert_eq!(requests("validate", "allowed"), Some(1.0), "{text}");
        assert_eq!(requests("validate", "denied"), Some(1.0), "{text}");
        assert_eq!(requests("validate", "warned"), Some(1.0), "{text}");
        assert_eq!(requests("mutate", "patched"), Some(1.0), "{text}");
        assert_eq!(requests("mutate", "allowed"), Some(1.0), "{text}");
        assert_eq!(requests("mutate", "denied"), Some(0.0), "{text}"); // every series exists from the start
        assert_eq!(
            metric(
                &text,
                "fluxadmit_bad_requests_total",
                &[("reason", "malformed")]
            ),
            Some(1.0),
            "{text}"
        );
        // Findings by policy, rule and level; every loaded rule's series exists from the start.
        let findings = |policy: &str, rule: &str, level: &str| {
            metric(
                &text,
                "fluxadmit_findings_total",
                &[("policy", policy), ("rule", rule), ("level", level)],
            )
        };
        assert_eq!(
            findings("require-team", "team-label", "error"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            findings("pull-secrets-exist", "pull-secrets", "error"),
            Some(1.0),
            "{text}"
        );
        assert!(
            findings("audit-owner", "owner-label", "warning").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert_eq!(
            findings("require-team", "team-label", "warning"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(findings("acr-pull", "acr", "error"), Some(0.0), "{text}");
        assert_eq!(
            findings("fluxadmit", "policy-schema", "error"),
            Some(0.0),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("fluxadmit_findings_total{"))
            .count();
        assert_eq!(series, 2 * (4 + 1), "one per loaded rule and level: {text}");
        // Lines the non-blocking log writer dropped (none here, but the series is there).
        assert!(
            metric(&text, "fluxadmit_log_lines_dropped_total", &[]).is_some(),
            "{text}"
        );
        assert_eq!(
            metric(&text, "fluxadmit_policies_loaded", &[]),
            Some(4.0),
            "{text}"
        );
        assert_eq!(
            metric(&text, "fluxadmit_view_objects", &[]),
            Some(3.0),
            "{text}"
        );
        srv.stop().await;
    })
    .await;
}

/// The metrics port cannot be held open: a connection that sends no request (or stops halfway
/// through its headers) is closed after the header timeout, and past the connection cap new
/// connections are closed at once, so idle clients cannot take the process's file
/// descriptors. Scrapes work again as soon as slots free up.
#[tokio::test]
async fn metrics_port_closes_idle_connections_and_caps_them() {
    use fluxadmit::{METRICS_HEADER_TIMEOUT, METRICS_MAX_CONNECTIONS};
    let limit = METRICS_HEADER_TIMEOUT + LIMIT;
    within("metrics limits", limit, async {
        let srv = Setup::new(POLICIES).start().await;
        let addr = srv.metrics_addr;
        // Whether the server closes `s` within `wait` (EOF or reset), sending nothing back.
        async fn closed_within(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => true,
                Ok(Ok(n)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(_) => false,
            }
        }
        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..METRICS_MAX_CONNECTIONS {
            idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Half a request on one of them.
        idle[0]
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Over the cap: closed straight away.
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(
            closed_within(&mut extra, Duration::from_secs(2)).await,
            "connection over the cap was kept"
        );
        // The webhook port is unaffected meanwhile.
        let mut c = srv.connect(ALPN_BOTH).await;
        let r = c.sender.get("/healthz").await.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        // Every held connection, idle or half-sent, is closed after the header timeout.
        for s in &mut idle {
            let left =
                (METRICS_HEADER_TIMEOUT + Duration::from_secs(5)).saturating_sub(started.elapsed());
            assert!(closed_within(s, left).await, "held connection still open");
        }
        assert!(started.elapsed() >= METRICS_HEADER_TIMEOUT - Duration::from_secs(1));
        // Slots are free again: a scrape works.
        let m = get_plain(addr, "/metrics").await;
        assert_eq!(m.status, StatusCode::OK);
        assert!(m.text().contains("fluxadmit_"), "{}", m.text());
    })
    .await;
}

/// A TLS connection that negotiates HTTP/2 and never sends the preface (or stops partway) is
/// closed after the preface timeout instead of being held forever; HTTP/2 clients that do
/// send it are served as before (every other h2 test here goes through the same path).
#[tokio::test]
async fn h2_connection_without_preface_is_closed() {
    use fluxadmit::H2_PREFACE_TIMEOUT;
    within("h2 preface", H2_PREFACE_TIMEOUT + LIMIT, async {
        let srv = Setup::new(POLICIES).start().await;
        let started = Instant::now();
        let mut silent = tls_connect(srv.addr, srv.certs.ca_pem(), &[ALPN_H2])
            .await
            .unwrap();
        assert_eq!(silent.get_ref().1.alpn_protocol(), Some(ALPN_H2));
        let mut partial = tls_connect(srv.addr, srv.certs.ca_pem(), &[ALPN_H2])
            .await
            .unwrap();
        partial.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        partial.flush().await.unwrap();
        // A well-behaved h2 client meanwhile.
        let mut c = srv.connect(&[ALPN_H2]).await;
        assert_eq!(
            c.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
        for s in [&mut silent, &mut partial] {
            let mut buf = [0u8; 64];
            let wait =
                (H2_PREFACE_TIMEOUT + Duration::from_secs(5)).saturating_sub(started.elapsed());
            match tokio::time::timeout(wait, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {}
                Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
                Err(_) => panic!("connection without a preface still open"),
            }
        }
        assert!(started.elapsed() >= H2_PREFACE_TIMEOUT - Duration::from_secs(1));
        // The server still serves h2.
        assert_eq!(
            c.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
    })
    .await;
}
