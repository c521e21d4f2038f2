//! Shared helpers for the integration tests: a real fluxadmit server started in-process on
//! 127.0.0.1 with certificates from `fluxadmit::certs`, and real TLS clients (tokio-rustls +
//! hyper's client connection API) that trust only the generated CA, as the API server does
//! with the webhook's `caBundle`.
#![allow(dead_code)] // every test binary uses a different subset

use base64::Engine as _;
use bytes::Bytes;
use fluxadmit::AppState;
use fluxadmit::CertFiles;
use fluxadmit::Metrics;
use fluxadmit::{Bundle, CertOptions};
use fluxadmit::{Running, ServerOptions as Options};
use fluxadmit_core::cluster::ClusterView;
use fluxadmit_core::policy::load::compile_yaml;
use fluxadmit_core::state::Snapshot;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{HeaderMap, Method, Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Upper bound for a whole test.
pub const LIMIT: Duration = Duration::from_secs(30);

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_H1: &[u8] = b"http/1.1";
/// What the API server's Go client offers.
pub const ALPN_BOTH: &[&[u8]] = &[ALPN_H2, ALPN_H1];
pub const ALPN_ONLY_H1: &[&[u8]] = &[ALPN_H1];

/// Runs `f`, failing the test if it takes longer than `limit`.
pub async fn within<F: Future>(what: &str, limit: Duration, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// `RUST_LOG=fluxadmit=debug cargo test` shows the server's logs.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

// ---------------------------------------------------------------------------------------------
// Certificates, laid out like a Secret mounted by the kubelet.

/// A CA and serving certificate in a temp dir, laid out as the kubelet mounts a Secret:
/// `tls.crt -> ..data/tls.crt`, `..data -> ..<timestamp>`.
pub struct CertDir {
    pub dir: tempfile::TempDir,
    ca_cert: String,
    ca_key: String,
    current: String,
    generation: u32,
}

impl CertDir {
    pub fn new() -> CertDir {
        let bundle = fluxadmit::generate_certs(&CertOptions::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ts = timestamp_dir(1);
        fluxadmit::write_certs(&dir.path().join(&ts), &bundle).unwrap();
        std::os::unix::fs::symlink(&ts, dir.path().join("..data")).unwrap();
        for f in ["ca.crt", "tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.path().join(f)).unwrap();
        }
        CertDir {
            dir,
            ca_cert: bundle.ca_cert,
            ca_key: bundle.ca_key,
            current: ts,
            generation: 1,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("tls.crt")
    }

    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("tls.key")
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_cert
    }

    /// DER of the serving certificate the files hold now (read through the symlinks).
    pub fn cert_der(&self) -> Vec<u8> {
        let pem = std::fs::read(self.cert_path()).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap().to_vec()
    }

    /// Replaces the serving certificate the way the kubelet updates a mounted Secret: a new
    /// timestamped dir with a new key and certificate signed by the same CA, a `..data_tmp`
    /// symlink renamed atomically over `..data`, then the old dir removed.
    /// Returns the new certificate's DER.
    pub fn rotate(&mut self) -> Vec<u8> {
        let (cert, key) = self.new_leaf();
        self.swap_in(&cert.pem(), &key.serialize_pem());
        cert.der().to_vec()
    }

    /// A broken update: a new certificate with a key that does not belong to it.
    pub fn rotate_mismatched(&mut self) {
        let (cert, _) = self.new_leaf();
        let (_, other_key) = self.new_leaf();
        self.swap_in(&cert.pem(), &other_key.serialize_pem());
    }

    /// A serving certificate signed by this dir's CA.
    fn new_leaf(&self) -> (rcgen::Certificate, rcgen::KeyPair) {
        // The CA as `certs::generate` made it: same name, same key, so the new leaf chains to
        // the ca.crt the client trusts.
        let ca_key = rcgen::KeyPair::from_pem(&self.ca_key).unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "fluxadmit CA");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(CertOptions::default().sans()).unwrap();
        leaf.distinguished_name
            .push(rcgen::DnType::CommonName, "fluxadmit");
        leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyEncipherment,
        ];
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        (cert, key)
    }

    /// The kubelet's atomic update of the mounted files.
    fn swap_in(&mut self, cert_pem: &str, key_pem: &str) {
        let bundle = Bundle {
            ca_cert: self.ca_cert.clone(),
            ca_key: self.ca_key.clone(),
            cert: cert_pem.to_owned(),
            key: key_pem.to_owned(),
        };
        self.generation += 1;
        let ts = timestamp_dir(self.generation);
        let root = self.dir.path();
        fluxadmit::write_certs(&root.join(&ts), &bundle).unwrap();
        let tmp = root.join("..data_tmp");
        std::os::unix::fs::symlink(&ts, &tmp).unwrap();
        std::fs::rename(&tmp, root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join(&self.current)).unwrap();
        self.current = ts;
    }
}

impl Default for CertDir {
    fn default() -> Self {
        CertDir::new()
    }
}

fn timestamp_dir(generation: u32) -> String {
    format!(
        "..2026_05_0{}_10_00_00.{:09}",
        generation.min(9),
        123_456_789 + generation
    )
}

// ---------------------------------------------------------------------------------------------
// The server.

/// What to start: policy YAML, cluster-state manifests, limits.
pub struct Setup {
    policies: String,
    manifests: Vec<Value>,
    budget: Option<Duration>,
    drain: Duration,
    close_timeout: Duration,
    configure: Option<Configure>,
}

/// A change to the server's state before it starts.
type Configure = Box<dyn FnOnce(&mut AppState)>;

impl Setup {
    pub fn new(policies: &str) -> Setup {
        Setup {
            policies: policies.to_owned(),
            manifests: Vec::new(),
            budget: None,
            drain: Duration::from_millis(50),
            close_timeout: Duration::from_secs(2),
            configure: None,
        }
    }

    /// Changes the server's state before it starts (limits, failure mode).
    #[allow(dead_code)]
    pub fn configure(mut self, f: impl FnOnce(&mut AppState) + 'static) -> Setup {
        self.configure = Some(Box::new(f));
        self
    }

    /// Adds an object to the cluster view (it must be a kind the view tracks).
    pub fn manifest(mut self, obj: Value) -> Setup {
        self.manifests.push(obj);
        self
    }

    /// `AppState.budget`: how long a request body may take.
    pub fn budget(mut self, d: Duration) -> Setup {
        self.budget = Some(d);
        self
    }

    pub fn drain(mut self, d: Duration) -> Setup {
        self.drain = d;
        self
    }

    pub fn close_timeout(mut self, d: Duration) -> Setup {
        self.close_timeout = d;
        self
    }

    pub async fn start(self) -> TestServer {
        init_tracing();
        let certs = CertDir::new();
        let policies = compile_yaml("test-policies.yaml", &self.policies).unwrap();
        let mut view = ClusterView::default();
        for m in &self.manifests {
            assert!(view.add_manifest(m), "the cluster view does not track {m}");
        }
        let metrics = Arc::new(Metrics::new());
        let mut state = AppState::new(Snapshot { policies, view }, metrics);
        if let Some(b) = self.budget {
            state.budget = b;
        }
        if let Some(f) = self.configure {
            f(&mut state);
        }
        let state = Arc::new(state);
        let files = Arc::new(CertFiles::load(certs.cert_path(), certs.key_path()).unwrap());
        let tls = files.server_config().unwrap();
        let running = fluxadmit::start_server(
            "127.0.0.1:0".parse().unwrap(),
            Some("127.0.0.1:0".parse().unwrap()),
            tls,
            state.clone(),
            Options {
                drain: self.drain,
                close_timeout: self.close_timeout,
            },
        )
        .await
        .unwrap();
        let metrics_addr = running.metrics_addr.unwrap();
        assert!(running.addr.ip().is_loopback() && metrics_addr.ip().is_loopback());
        TestServer {
            addr: running.addr,
            metrics_addr,
            state,
            certs,
            files,
            running,
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub state: Arc<AppState>,
    pub certs: CertDir,
    pub files: Arc<CertFiles>,
    pub running: Running,
}

impl TestServer {
    /// A client that trusts the server's CA, offering the given ALPN protocols.
    pub async fn connect(&self, alpn: &[&[u8]]) -> Client {
        connect(self.addr, self.certs.ca_pem(), alpn).await.unwrap()
    }

    /// Graceful shutdown; must end cleanly and in time.
    pub async fn stop(self) {
        within(
            "server shutdown",
            Duration::from_secs(10),
            self.running.shutdown(),
        )
        .await
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// TLS and HTTP clients.

pub type Body = BoxBody<Bytes, Infallible>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> Body {
    Empty::<Bytes>::new().boxed()
}

/// A rustls client config whose root store holds only `ca_pem`.
pub fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    client_config_versions(ca_pem, alpn, rustls::DEFAULT_VERSIONS)
}

/// Like [`client_config`], limited to the given TLS versions.
pub fn client_config_versions(
    ca_pem: &str,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    assert_eq!(roots.len(), 1, "exactly one CA is trusted");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// TCP + TLS handshake to `addr` for server name `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_named(addr, ca_pem, alpn, "localhost").await
}

pub async fn tls_connect_named(
    addr: SocketAddr,
    ca_pem: &str,
    alpn: &[&[u8]],
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_config(addr, client_config(ca_pem, alpn), name).await
}

/// TCP + TLS handshake with a given client config.
pub async fn tls_connect_config(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented, DER.
pub fn peer_cert(tls: &TlsStream<TcpStream>) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

pub fn negotiated(tls: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// One client connection: HTTP/2 when ALPN chose `h2`, else HTTP/1.1.
pub struct Client {
    pub sender: Sender,
    /// The hyper connection task; it ends when the connection closes.
    pub task: JoinHandle<Result<(), hyper::Error>>,
    pub peer_cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
}

impl Client {
    /// A clone of the HTTP/2 sender (to run requests concurrently on this connection).
    pub fn h2(&self) -> http2::SendRequest<Body> {
        match &self.sender {
            Sender::H2(s) => s.clone(),
            Sender::H1(_) => panic!("not an HTTP/2 connection"),
        }
    }
}

pub async fn connect(addr: SocketAddr, ca_pem: &str, alpn: &[&[u8]]) -> std::io::Result<Client> {
    let tls = tls_connect(addr, ca_pem, alpn).await?;
    let peer_cert = peer_cert(&tls);
    let alpn = negotiated(&tls);
    let io = TokioIo::new(tls);
    let (sender, task) = if alpn.as_deref() == Some(ALPN_H2) {
        let (s, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        (Sender::H2(s), tokio::spawn(conn))
    } else {
        let (s, conn) = http1::handshake(io).await.map_err(std::io::Error::other)?;
        (Sender::H1(s), tokio::spawn(conn))
    };
    Ok(Client {
        sender,
        task,
        peer_cert,
        alpn,
    })
}

pub enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

/// A response with its body read.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub async fn read(r: hyper::Response<hyper::body::Incoming>) -> Result<Resp, hyper::Error> {
        let (parts, body) = r.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Resp {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a fluxadmit error answer: the status, a JSON `{"code", "error"}` body, and
    /// returns the message.
    pub fn expect_error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "{}", self.text());
        assert_eq!(self.header("content-type"), Some("application/json"));
        let v = self.json();
        assert_eq!(v["code"], status.as_u16(), "{v}");
        v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {v}"))
            .to_owned()
    }
}

/// A request for either protocol: HTTP/1.1 gets a path and `Host`, HTTP/2 an absolute URI.
pub fn request(h2: bool, method: Method, path: &str, body: Body) -> Request<Body> {
    let b = Request::builder()
        .method(method)
        .header(CONTENT_TYPE, "application/json");
    let b = if h2 {
        b.uri(format!("https://localhost{path}"))
            .version(Version::HTTP_2)
    } else {
        b.uri(path).header(HOST, "localhost")
    };
    b.body(body).unwrap()
}

/// Sends on an HTTP/2 sender (usable from spawned tasks, the sender being a clone).
pub async fn send_h2(
    s: &mut http2::SendRequest<Body>,
    req: Request<Body>,
) -> Result<Resp, hyper::Error> {
    s.ready().await?;
    Resp::read(s.send_request(req).await?).await
}

impl Sender {
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }

    pub fn request(&self, method: Method, path: &str, body: Body) -> Request<Body> {
        request(self.is_h2(), method, path, body)
    }

    pub async fn send(&mut self, req: Request<Body>) -> Result<Resp, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                Resp::read(s.send_request(req).await?).await
            }
            Sender::H2(s) => send_h2(s, req).await,
        }
    }

    pub async fn post(&mut self, path: &str, body: impl Into<Bytes>) -> Result<Resp, hyper::Error> {
        let req = self.request(Method::POST, path, full(body));
        self.send(req).await
    }

    pub async fn get(&mut self, path: &str) -> Result<Resp, hyper::Error> {
        let req = self.request(Method::GET, path, empty());
        self.send(req).await
    }

    /// Posts an AdmissionReview; expects 200 and a JSON review back.
    pub async fn review(&mut self, path: &str, review: &Value) -> Resp {
        let resp = self
            .post(path, serde_json::to_vec(review).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK, "{path}: {}", resp.text());
        assert_eq!(resp.header("content-type"), Some("application/json"));
        resp
    }
}

/// Plain-HTTP GET (the metrics port).
pub async fn get_plain(addr: SocketAddr, path: &str) -> Resp {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut s, conn) = http1::handshake::<_, Body>(TokioIo::new(tcp))
        .await
        .unwrap();
    let task = tokio::spawn(conn);
    let resp = Resp::read(
        s.send_request(request(false, Method::GET, path, empty()))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    task.abort();
    resp
}

/// Reads one raw HTTP/1.1 response (head and a `Content-Length` body) from a stream.
pub async fn read_raw_response<S: AsyncRead + Unpin>(s: &mut S) -> (StatusCode, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the response body");
        body.extend_from_slice(&chunk[..n]);
    }
    (StatusCode::from_u16(status).unwrap(), head, body)
}

// ---------------------------------------------------------------------------------------------
// Objects and reviews.

/// An `apps/v1` Deployment with the given labels and container images.
pub fn deployment(name: &str, namespace: &str, labels: Value, images: &[&str]) -> Value {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({ "name": format!("c{i}"), "image": image }))
        .collect();
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name, "namespace": namespace, "labels": labels },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": containers }
            }
        }
    })
}

/// An AdmissionReview v1 request as the API server sends it. `operation` is CREATE, UPDATE,
/// DELETE or CONNECT; the object goes into `oldObject` for DELETE. The requester is a person
/// (not a Flux controller), so errors about other objects deny a real write.
pub fn review_json(uid: &str, operation: &str, object: &Value) -> Value {
    let api_version = object["apiVersion"].as_str().unwrap_or("v1");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or_default();
    let resource = format!("{}s", kind.to_lowercase());
    let gvk = json!({ "group": group, "version": version, "kind": kind });
    let gvr = json!({ "group": group, "version": version, "resource": resource });
    let (obj, old) = match operation {
        "DELETE" => (Value::Null, object.clone()),
        "UPDATE" => (object.clone(), object.clone()),
        _ => (object.clone(), Value::Null),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": object["metadata"]["name"],
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": {
                "username": "alice@example.com",
                "groups": ["system:serviceaccounts", "system:authenticated"]
            },
            "object": obj,
            "oldObject": old,
            "dryRun": false,
            "options": { "apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions" }
        }
    })
}

/// Checks the AdmissionReview envelope and the uid echo; returns `response`.
pub fn review_response(resp: &Resp, uid: &str) -> Value {
    let v = resp.json();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1", "{v}");
    assert_eq!(v["kind"], "AdmissionReview", "{v}");
    assert_eq!(v["response"]["uid"], uid, "{v}");
    assert!(v["response"]["allowed"].is_boolean(), "{v}");
    v["response"].clone()
}

/// Decodes a response's base64 JSONPatch and applies it to `object`.
pub fn apply_patch(response: &Value, object: &Value) -> Value {
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(
            response["patch"]
                .as_str()
                .unwrap_or_else(|| panic!("no patch: {response}")),
        )
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&raw).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    out
}

/// The value of a Prometheus sample `name{labels...}` in a text exposition.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
        if n != name {
            return None;
        }
        let set = rest.strip_suffix('}')?;
        let have: Vec<&str> = if set.is_empty() {
            Vec::new()
        } else {
            set.split(',').collect()
        };
        let want: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let same = have.len() == want.len() && want.iter().all(|w| have.contains(&w.as_str()));
        if same { value.parse().ok() } else { None }
    })
}

// ---------------------------------------------------------------------------------------------
// The built binary as a process.

/// A port free on 127.0.0.1 (bound, then released for the server under test).
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free ports on 127.0.0.1: every listener is held until all are chosen, so two
/// calls in a row can never hand out the same port.
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// Sends SIGTERM to a running `fluxadmit serve` and waits, at most `limit`, for it to exit;
/// returns its exit status and what it wrote to stderr (which must be piped).
pub async fn terminate(
    child: &mut std::process::Child,
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    use std::io::Read as _;
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not exit within {limit:?} after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    (status, logs)
}

// ---------------------------------------------------------------------------------------------
// The built binary on repositories written in temp dirs (`fluxadmit check`, `graph`).

/// Writes `text` to `root/rel`, making the directories it needs.
pub fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// The path of the example policy `pod-security-baseline.yaml`, for `--policies`.
pub fn baseline_policy() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("policies/examples/pod-security-baseline.yaml")
        .display()
        .to_string()
}

/// The first of `tools` on PATH (in the order given), for a test that needs one of them.
/// Under CI, which installs them, their absence fails the test; elsewhere the test says so
/// and the caller returns, passing.
pub fn tool_on_path(tools: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = tools.iter().find_map(|b| {
        std::env::split_paths(&path)
            .map(|d| d.join(b))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let names = tools.join(" or ");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but no {names} is on PATH"
        );
        eprintln!("no {names} on PATH: test not run");
    }
    found
}

/// A kustomize: `kustomize` or `kubectl` on PATH (see [`tool_on_path`]).
pub fn kustomize() -> Option<PathBuf> {
    tool_on_path(&["kustomize", "kubectl"])
}

/// helm on PATH (see [`tool_on_path`]).
pub fn helm() -> Option<PathBuf> {
    tool_on_path(&["helm"])
}

/// How a run of a command ended and what it wrote.
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout followed by stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The built `fluxadmit`, to run in `cwd`.
pub fn fluxadmit(cwd: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fluxadmit"));
    cmd.current_dir(cwd);
    cmd
}

/// Runs `cmd` to its end: `stdin` written to its standard input (None: none at all), its
/// output collected.
pub fn output(cmd: &mut std::process::Command, stdin: Option<&str>) -> Out {
    use std::io::Write as _;
    use std::process::Stdio;
    let input = if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(s) = stdin {
        // Dropped after the write: the child reads to the end.
        let mut input = child.stdin.take().unwrap();
        input.write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `fluxadmit ARGS` in `cwd`, with `env` added to the test's environment.
pub fn run_in(cwd: &Path, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Out {
    output(fluxadmit(cwd).args(args).envs(env.iter().copied()), stdin)
}

/// `fluxadmit check ARGS` in `cwd`: the exit code, and stdout followed by stderr.
pub fn check(cwd: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = output(fluxadmit(cwd).arg("check").args(args), None);
    (out.code, out.text())
}

/// A child process killed when dropped: a test that fails midway leaves no server running.
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `fluxadmit serve` child on free loopback ports, generating its certificates in
/// `dir/certs`, with `args` added; returned once it answers over TLS. It inherits none of the
/// `FLUXADMIT_*` settings (nor `NO_COLOR`) of the environment the tests run in.
pub struct Served {
    pub child: Reaped,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    /// The generated CA (PEM).
    pub ca: String,
}

pub async fn serve_child(dir: &Path, args: &[&str]) -> Served {
    let [port, mport] = free_ports::<2>();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fluxadmit"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FLUXADMIT_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .arg("serve")
        .args(args)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{mport}")])
        .arg("--cert-dir")
        .arg(dir.join("certs"))
        .env_remove("NO_COLOR")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let child = Reaped(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let ca = loop {
        if let Ok(ca) = std::fs::read_to_string(dir.join("certs/ca.crt"))
            && connect(addr, &ca, &[b"http/1.1"]).await.is_ok()
        {
            break ca;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Served {
        child,
        addr,
        metrics_addr: format!("127.0.0.1:{mport}").parse().unwrap(),
        ca,
    }
}

/// One Enforce policy: Deployments need a `team` label (the servers of the limit tests).
pub const REQUIRE_TEAM: &str = r#"
apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: require-team}
spec:
  match: {resources: [{apiGroups: ["apps"], kinds: ["Deployment"]}]}
  rules:
    - name: team-label
      requiredLabels: {labels: [team]}
"#;
