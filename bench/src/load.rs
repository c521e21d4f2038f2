//! `fluxadmit bench load`: a floor server and the real server, driven one after the other by
//! the same closed-loop load generator (tokio + hyper client connections over tokio-rustls).
//!
//! The floor server is the least any webhook must do: TLS (the same rustls configuration),
//! HTTP/1.1 or HTTP/2, parse the body as `AdmissionReview<DynamicObject>` and answer
//! "allowed" with the uid. The ratio fluxadmit/floor is then the cost of fluxadmit itself.
//!
//! fluxadmit logs as a user's server does: at `info` (one line per denial or warning), text,
//! through its non-blocking writer, here into a file in the run's temp directory
//! (`FLUXADMIT_BENCH_SERVER_LOG` sets another filter, e.g. `warn` to measure without).

use super::generate;
use anyhow::{Context as _, anyhow, bail};
use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fluxadmit::AppState;
use fluxadmit::CertFiles;
use fluxadmit::CertOptions;
use fluxadmit::Metrics;
use fluxadmit::ServerOptions as Options;
use fluxadmit_core::state::Snapshot;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Which server is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Server {
    /// The floor server, in this process.
    Floor,
    /// fluxadmit's server in this process, with the generated view and the 9 policies.
    Fluxadmit,
    /// The `fluxadmit` binary as a user starts it: `fluxadmit serve` in its own process, from
    /// an empty working directory, with its defaults (built-in policies, empty view, log at
    /// info on stderr, here a file) and only `--cert-dir` and loopback addresses given.
    Serve,
}

impl Server {
    pub fn name(self) -> &'static str {
        match self {
            Server::Floor => "floor",
            Server::Fluxadmit => "fluxadmit",
            Server::Serve => "fluxadmit serve",
        }
    }
}

/// HTTP version on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Proto {
    H1,
    H2,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::H1 => "HTTP/1.1",
            Proto::H2 => "HTTP/2",
        }
    }
}

/// What is sent, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// The ~6 KB Deployment to /validate.
    DeployValidate,
    /// The ~6 KB Deployment to /mutate.
    DeployMutate,
    /// The ~3 KB HelmRelease (dependsOn, valuesFrom) to /validate.
    HrValidate,
    /// The Deployment as a ~12 KB dry-run UPDATE (with its oldObject) to /validate: Flux's
    /// drift check. Not in the default set.
    DeployUpdateValidate,
    /// The HelmRelease broken (a missing dependency, three missing Secrets) and applied by a
    /// person: denied with four findings, one log line at info. Not in the default set.
    HrDenied,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::DeployValidate => "Deployment /validate",
            Scenario::DeployMutate => "Deployment /mutate",
            Scenario::HrValidate => "HelmRelease /validate",
            Scenario::DeployUpdateValidate => "Deployment UPDATE /validate",
            Scenario::HrDenied => "HelmRelease denied /validate",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Scenario::DeployValidate
            | Scenario::HrValidate
            | Scenario::DeployUpdateValidate
            | Scenario::HrDenied => "/validate",
            Scenario::DeployMutate => "/mutate",
        }
    }
}

/// Everything one load run is configured with.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Measured time per cell and server, over all rounds.
    pub duration: Duration,
    pub warmup: Duration,
    /// Slices per cell, taken in turn from each server (at least 1).
    pub rounds: u32,
    pub connections: Vec<usize>,
    pub objects: usize,
    pub protocols: Vec<Proto>,
    pub scenarios: Vec<Scenario>,
    pub servers: Vec<Server>,
    /// HTTP/2: the streams are spread over this many connections.
    pub h2_connections: usize,
    pub server_threads: usize,
    pub client_threads: usize,
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Row {
    pub server: Server,
    pub proto: Proto,
    pub connections: usize,
    pub scenario: Scenario,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// A temporary directory (a `tempfile` one) removed on drop, best effort; its name says
/// which part of the bench made it: `fluxadmit-bench-{tag}-XXXXXX`.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let prefix = format!("fluxadmit-bench-{tag}-");
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir()
            .with_context(|| format!("creating a temp dir {prefix}*"))?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// Server and client TLS configurations from a freshly generated CA (written under `dir`).
pub struct Tls {
    pub server: Arc<rustls::ServerConfig>,
    pub ca_pem: String,
}

impl Tls {
    pub fn generate(dir: &Path) -> anyhow::Result<Tls> {
        let bundle = fluxadmit::generate_certs(&CertOptions::default())?;
        fluxadmit::write_certs(dir, &bundle)?;
        let files = CertFiles::load(dir.join("tls.crt"), dir.join("tls.key"))?;
        Ok(Tls {
            server: files.server_config()?,
            ca_pem: bundle.ca_cert,
        })
    }

    /// A connector trusting only the generated CA, offering one ALPN protocol.
    pub fn connector(&self, alpn: &[u8]) -> anyhow::Result<TlsConnector> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| anyhow!("CA certificate: {e}"))?)?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Ok(TlsConnector::from(Arc::new(cfg)))
    }
}

// ---------------------------------------------------------------------------------------------
// The floor server.

async fn floor_review(body: Bytes) -> Response {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return (StatusCode::BAD_REQUEST, "no request").into_response(),
    };
    let answer = AdmissionResponse::from(&req).into_review();
    match serde_json::to_vec(&answer) {
        Ok(b) => ([(header::CONTENT_TYPE, "application/json")], b).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Starts the floor server on 127.0.0.1; returns its address and the accept task.
pub async fn start_floor(
    tls: Arc<rustls::ServerConfig>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/validate", axum::routing::post(floor_review))
        .route("/mutate", axum::routing::post(floor_review));
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(Ok(tls)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                let svc = TowerToHyperService::new(app);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Ok((addr, task))
}

// ---------------------------------------------------------------------------------------------
// `fluxadmit serve` in its own process.

/// A running `fluxadmit serve`; killed and reaped on drop.
pub struct ServeProcess {
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: std::process::Child,
}

impl ServeProcess {
    /// The server's process id (`rapid-reset` reads its CPU time from `/proc/<pid>/stat`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `fluxadmit` binary as a user would: from an empty working directory, with its
/// defaults, given only the certificate directory (the run's, whose CA the load generator
/// trusts) and loopback addresses. Returns once `/readyz` answers 200 (within 30 s).
pub fn start_serve(
    tmp: &Path,
    connector: &TlsConnector,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<ServeProcess> {
    let exe = crate::startup::fluxadmit_binary()?;
    let cwd = tmp.join("serve-cwd");
    std::fs::create_dir_all(&cwd)?;
    let [port, metrics] = crate::startup::free_ports::<2>()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = tmp.join("serve.log");
    let child = std::process::Command::new(&exe)
        .current_dir(&cwd)
        .env_remove("RUST_LOG")
        .arg("serve")
        .arg("--cert-dir")
        .arg(tmp)
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{metrics}"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let mut serve = ServeProcess { addr, log, child };
    let ready = rt.block_on(crate::startup::until_ready(
        &mut serve.child,
        addr,
        connector,
        Instant::now(),
        Duration::from_secs(30),
    ));
    if let Err(e) = ready {
        let tail = std::fs::read_to_string(&serve.log).unwrap_or_default();
        bail!("{} serve: {e}; its log:\n{tail}", exe.display());
    }
    Ok(serve)
}

// ---------------------------------------------------------------------------------------------
// The load generator.

type Body = Full<Bytes>;

#[derive(Clone)]
enum Sender {
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Body>>>),
    H2(http2::SendRequest<Body>),
}

/// Opens a connection (TCP + TLS + HTTP handshake); the connection task runs on the current
/// runtime and ends when every sender is dropped.
async fn open(
    addr: SocketAddr,
    connector: &TlsConnector,
    proto: Proto,
) -> anyhow::Result<(Sender, tokio::task::JoinHandle<()>)> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let tls = connector.connect(name, tcp).await?;
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let io = TokioIo::new(tls);
    match proto {
        Proto::H1 => {
            let (s, conn) = http1::handshake(io).await?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok((Sender::H1(Arc::new(tokio::sync::Mutex::new(s))), task))
        }
        Proto::H2 => {
            if negotiated.as_deref() != Some(b"h2") {
                bail!("server did not negotiate h2");
            }
            let (s, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok((Sender::H2(s), task))
        }
    }
}

fn request(proto: Proto, path: &str, body: &Bytes) -> anyhow::Result<hyper::Request<Body>> {
    let uri = match proto {
        Proto::H1 => path.to_owned(),
        Proto::H2 => format!("https://localhost{path}"),
    };
    let mut b = hyper::Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if proto == Proto::H1 {
        b = b.header(header::HOST, "localhost");
    }
    Ok(b.body(Full::new(body.clone()))?)
}

/// Sends one request and reads the whole answer. Ok((status, body)).
async fn send(sender: &Sender, req: hyper::Request<Body>) -> anyhow::Result<(StatusCode, Bytes)> {
    let resp = match sender {
        Sender::H1(s) => {
            let mut s = s.lock().await;
            s.ready().await?;
            s.send_request(req).await?
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            s.ready().await?;
            s.send_request(req).await?
        }
    };
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    Ok((status, bytes))
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    // Nanoseconds, from 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

struct WorkerResult {
    hist: Histogram<u64>,
    errors: u64,
}

/// One closed loop: requests back to back until `end`; only requests started after
/// `measure_from` and finished before `end` are recorded.
async fn worker(
    sender: Sender,
    proto: Proto,
    path: &'static str,
    body: Bytes,
    measure_from: Instant,
    end: Instant,
) -> anyhow::Result<WorkerResult> {
    let mut hist = histogram()?;
    let mut errors = 0u64;
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        let req = request(proto, path, &body)?;
        let res = tokio::time::timeout(Duration::from_secs(10), send(&sender, req)).await;
        let t1 = Instant::now();
        match res {
            Ok(Ok((status, _))) if status.is_success() => {
                if t0 >= measure_from && t1 <= end {
                    let ns = u64::try_from(t1.duration_since(t0).as_nanos()).unwrap_or(u64::MAX);
                    hist.saturating_record(ns);
                }
            }
            Ok(Ok(_)) => errors += 1,
            Ok(Err(_)) | Err(_) => {
                // The connection is gone or stuck; this worker stops.
                errors += 1;
                break;
            }
        }
    }
    Ok(WorkerResult { hist, errors })
}

/// What the server answered to one probe request.
#[derive(Debug, Clone)]
pub struct Probe {
    pub allowed: bool,
    pub patch: bool,
    pub warnings: usize,
}

/// Sends one request and checks the answer is an AdmissionReview echoing the uid.
pub async fn probe(
    addr: SocketAddr,
    connector: &TlsConnector,
    scenario: Scenario,
    body: &Bytes,
    uid: &str,
) -> anyhow::Result<Probe> {
    let (sender, task) = open(addr, connector, Proto::H1).await?;
    let (status, bytes) = send(&sender, request(Proto::H1, scenario.path(), body)?).await?;
    drop(sender);
    task.abort();
    if !status.is_success() {
        bail!(
            "{} answered {status}: {}",
            scenario.name(),
            String::from_utf8_lossy(&bytes)
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes)?;
    let resp = &v["response"];
    if resp["uid"] != uid {
        bail!("{}: answer does not echo the uid: {v}", scenario.name());
    }
    Ok(Probe {
        allowed: resp["allowed"] == true,
        patch: resp.get("patch").is_some_and(|p| !p.is_null()),
        warnings: resp["warnings"].as_array().map_or(0, Vec::len),
    })
}

/// Drives one server with one (protocol, connections, scenario) for warmup + duration.
#[allow(clippy::too_many_arguments)]
pub async fn drive(
    addr: SocketAddr,
    connector: &TlsConnector,
    proto: Proto,
    connections: usize,
    h2_connections: usize,
    scenario: Scenario,
    body: Bytes,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let conns = match proto {
        Proto::H1 => connections,
        Proto::H2 => h2_connections.clamp(1, connections.max(1)),
    };
    let mut senders = Vec::with_capacity(conns);
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let (s, t) = open(addr, connector, proto).await?;
        senders.push(s);
        tasks.push(t);
    }
    let measure_from = Instant::now() + warmup;
    let end = measure_from + duration;
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..connections {
        let Some(sender) = senders.get(i % conns).cloned() else {
            continue;
        };
        workers.spawn(worker(
            sender,
            proto,
            scenario.path(),
            body.clone(),
            measure_from,
            end,
        ));
    }
    drop(senders);
    let mut hist = histogram()?;
    let mut errors = 0;
    let limit = warmup + duration + Duration::from_secs(20);
    let collected = tokio::time::timeout(limit, async {
        while let Some(r) = workers.join_next().await {
            match r {
                Ok(Ok(w)) => {
                    hist.add(&w.hist).map_err(|e| anyhow!("histogram: {e}"))?;
                    errors += w.errors;
                }
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(anyhow!("load worker failed: {e}")),
            }
        }
        Ok(())
    })
    .await;
    for t in tasks {
        t.abort();
    }
    match collected {
        Ok(r) => r?,
        Err(_) => bail!("load run did not finish within {limit:?}"),
    }
    Ok((hist.len(), errors, hist))
}

/// The probe answer for each (server, body).
pub type Probes = Vec<(Server, Scenario, Probe)>;

/// Runs the whole matrix. Progress goes to stderr; returns the rows and the probe answers.
pub fn run(cfg: &LoadConfig) -> anyhow::Result<(Vec<Row>, Probes)> {
    let tmp = TempDir::new("load")?;
    let tls = Tls::generate(tmp.path())?;
    let h1 = tls.connector(b"http/1.1")?;
    let h2 = tls.connector(b"h2")?;
    let size = generate::ViewSize::of(cfg.objects);
    let deploy = Bytes::from(generate::deployment_review("bench-deploy-0001"));
    let hr = Bytes::from(generate::helmrelease_review(&size, "bench-hr-0001"));
    let update = Bytes::from(generate::deployment_update_review("bench-update-0001"));
    let denied = Bytes::from(generate::helmrelease_denied_review(
        &size,
        "bench-denied-0001",
    ));
    let body_of = |s: Scenario| match s {
        Scenario::DeployValidate | Scenario::DeployMutate => (deploy.clone(), "bench-deploy-0001"),
        Scenario::HrValidate => (hr.clone(), "bench-hr-0001"),
        Scenario::DeployUpdateValidate => (update.clone(), "bench-update-0001"),
        Scenario::HrDenied => (denied.clone(), "bench-denied-0001"),
    };

    // The servers' log: what `serve` installs by default (info, text, non-blocking), into a
    // file. Set on every thread of the servers' runtime and around their start and stop.
    let log_path = tmp.path().join("fluxadmit-server.log");
    let log_filter =
        std::env::var("FLUXADMIT_BENCH_SERVER_LOG").unwrap_or_else(|_| "info".to_owned());
    let dropped_before = fluxadmit::log_lines_dropped();
    let (log, log_guard) = fluxadmit::log_dispatch(
        fluxadmit::LogFormat::Text,
        &log_filter,
        false,
        std::io::BufWriter::with_capacity(
            64 * 1024,
            std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?,
        ),
    );
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.server_threads.max(1))
        .thread_name("bench-server")
        .on_thread_start({
            let log = log.clone();
            move || {
                let guard = tracing::dispatcher::set_default(&log);
                SERVER_LOG.with(|g| *g.borrow_mut() = Some(guard));
            }
        })
        .on_thread_stop(|| {
            SERVER_LOG.with(|g| g.borrow_mut().take());
        })
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.client_threads.max(1))
        .thread_name("bench-client")
        .enable_all()
        .build()?;

    let mut rows = Vec::new();
    let mut probes = Vec::new();
    // Every server is started first and the cells alternate between them, so a slow drift of
    // the machine (the other core is shared) falls on both sides of each ratio alike.
    type Stop = Box<dyn FnOnce() -> anyhow::Result<()>>;
    let mut started: Vec<(Server, SocketAddr, Stop)> = Vec::new();
    let result = (|| -> anyhow::Result<()> {
        for &server in &cfg.servers {
            eprintln!("starting {} server", server.name());
            let (addr, stop): (SocketAddr, Stop) = match server {
                Server::Floor => {
                    let (addr, task) = server_rt.block_on(start_floor(tls.server.clone()))?;
                    (
                        addr,
                        Box::new(move || {
                            task.abort();
                            Ok(())
                        }),
                    )
                }
                Server::Serve => {
                    let child = start_serve(tmp.path(), &h1, &client_rt)?;
                    let addr = child.addr;
                    (
                        addr,
                        Box::new(move || {
                            drop(child);
                            Ok(())
                        }),
                    )
                }
                Server::Fluxadmit => {
                    let t = Instant::now();
                    let snap = Snapshot {
                        policies: generate::policies()?,
                        view: generate::view(&size),
                    };
                    eprintln!(
                        "  {} policies, view of {} objects built in {:?}",
                        snap.policies.len(),
                        snap.view.len(),
                        t.elapsed()
                    );
                    let state = Arc::new(AppState::new(snap, Arc::new(Metrics::new())));
                    let running = tracing::dispatcher::with_default(&log, || {
                        server_rt.block_on(fluxadmit::start_server(
                            SocketAddr::from(([127, 0, 0, 1], 0)),
                            None,
                            tls.server.clone(),
                            state,
                            Options {
                                drain: Duration::ZERO,
                                close_timeout: Duration::from_secs(2),
                            },
                        ))
                    })?;
                    let addr = running.addr;
                    let rt = server_rt.handle().clone();
                    let log = log.clone();
                    (
                        addr,
                        Box::new(move || {
                            tracing::dispatcher::with_default(&log, || {
                                rt.block_on(async {
                                    tokio::time::timeout(
                                        Duration::from_secs(10),
                                        running.shutdown(),
                                    )
                                    .await
                                    .map_err(|_| anyhow!("server did not shut down in 10 s"))?
                                })
                            })
                        }),
                    )
                }
            };
            started.push((server, addr, stop));
        }
        for &(server, addr, _) in &started {
            for &scenario in &cfg.scenarios {
                let (body, uid) = body_of(scenario);
                let p = client_rt.block_on(probe(addr, &h1, scenario, &body, uid))?;
                if server != Server::Floor && scenario == Scenario::HrDenied && p.allowed {
                    bail!("{}: fluxadmit admitted the denied body", scenario.name());
                }
                probes.push((server, scenario, p));
            }
        }
        for &proto in &cfg.protocols {
            let connector = match proto {
                Proto::H1 => &h1,
                Proto::H2 => &h2,
            };
            for &connections in &cfg.connections {
                for &scenario in &cfg.scenarios {
                    let (body, _) = body_of(scenario);
                    let rounds = cfg.rounds.max(1);
                    let slice = cfg.duration / rounds;
                    // Per server: requests, errors, latencies, over all rounds.
                    let mut totals: Vec<(u64, u64, Histogram<u64>)> = started
                        .iter()
                        .map(|_| histogram().map(|h| (0, 0, h)))
                        .collect::<anyhow::Result<_>>()?;
                    for _ in 0..rounds {
                        for (i, &(_, addr, _)) in started.iter().enumerate() {
                            let (n, errors, hist) = client_rt.block_on(drive(
                                addr,
                                connector,
                                proto,
                                connections,
                                cfg.h2_connections,
                                scenario,
                                body.clone(),
                                cfg.warmup,
                                slice,
                            ))?;
                            let t = &mut totals[i];
                            t.0 += n;
                            t.1 += errors;
                            t.2.add(&hist)
                                .map_err(|e| anyhow!("merging latencies: {e}"))?;
                        }
                    }
                    for (&(server, _, _), (n, errors, hist)) in started.iter().zip(totals) {
                        let us = |q: f64| hist.value_at_quantile(q) as f64 / 1_000.0;
                        let row = Row {
                            server,
                            proto,
                            connections,
                            scenario,
                            requests: n,
                            errors,
                            rps: n as f64 / (slice * rounds).as_secs_f64(),
                            p50_us: us(0.50),
                            p99_us: us(0.99),
                            p999_us: us(0.999),
                            max_us: hist.max() as f64 / 1_000.0,
                        };
                        eprintln!(
                            "  {:9} {:8} c={:<3} {:22} {:>9.0} req/s  p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  errors {}",
                            server.name(),
                            proto.name(),
                            connections,
                            scenario.name(),
                            row.rps,
                            row.p50_us,
                            row.p99_us,
                            row.p999_us,
                            errors
                        );
                        rows.push(row);
                    }
                }
            }
        }
        Ok(())
    })();
    let mut stopped = Ok(());
    for (_, _, stop) in started {
        let r = stop();
        if stopped.is_ok() {
            stopped = r;
        }
    }
    result?;
    stopped?;
    client_rt.shutdown_timeout(Duration::from_secs(2));
    server_rt.shutdown_timeout(Duration::from_secs(2));
    drop(log);
    drop(log_guard);
    let dropped = fluxadmit::log_lines_dropped().saturating_sub(dropped_before);
    let (lines, bytes) = std::fs::read(&log_path)
        .map(|b| (b.iter().filter(|&&c| c == b'\n').count(), b.len()))
        .unwrap_or_default();
    eprintln!(
        "fluxadmit's log ({log_filter}, text, non-blocking, to a file): {lines} lines, {:.1} MB written, {dropped} dropped",
        bytes as f64 / 1e6
    );
    Ok((rows, probes))
}

thread_local! {
    /// The servers' log subscriber on a thread of their runtime.
    static SERVER_LOG: std::cell::RefCell<Option<tracing::dispatcher::DefaultGuard>> =
        const { std::cell::RefCell::new(None) };
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "n/a".into()
    }
}

/// The markdown report: floor vs fluxadmit side by side, then the probe answers.
pub fn markdown(cfg: &LoadConfig, rows: &[Row], probes: &Probes) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Load: {} s per cell and server, in {} round(s) taken in turn from each server, each after {} s warm-up; view of {} objects; HTTP/2 streams over {} connection(s); server runtime {} worker(s), client runtime {} worker(s).\n",
        cfg.duration.as_secs_f64(),
        cfg.rounds.max(1),
        cfg.warmup.as_secs_f64(),
        generate::ViewSize::of(cfg.objects).total(),
        cfg.h2_connections,
        cfg.server_threads,
        cfg.client_threads,
    );
    let size = generate::ViewSize::of(cfg.objects);
    let _ = writeln!(
        out,
        "Bodies: Deployment {} bytes, HelmRelease {} bytes, Deployment UPDATE {} bytes, denied HelmRelease {} bytes. fluxadmit logs at info (text) through its non-blocking writer into a file.\n",
        generate::deployment_review("bench-deploy-0001").len(),
        generate::helmrelease_review(&size, "bench-hr-0001").len(),
        generate::deployment_update_review("bench-update-0001").len(),
        generate::helmrelease_denied_review(&size, "bench-denied-0001").len()
    );
    for &server in cfg.servers.iter().filter(|&&s| s != Server::Floor) {
        if cfg.servers.len() > 2 {
            let _ = writeln!(out, "\n{}:\n", server.name());
        }
        table(&mut out, rows, server);
    }
    out.push_str("\nAnswers (one probe request per server and body):\n\n");
    for (s, sc, p) in probes {
        let _ = writeln!(
            out,
            "- {} {}: allowed={} patch={} warnings={}",
            s.name(),
            sc.name(),
            p.allowed,
            p.patch,
            p.warnings
        );
    }
    out
}

/// One markdown table: the floor against `server`, cell by cell.
fn table(out: &mut String, rows: &[Row], server: Server) {
    use std::fmt::Write as _;
    out.push_str("| body | proto | conns | floor req/s | fluxadmit req/s | thr. ratio | floor p50 µs | fluxadmit p50 µs | floor p99 µs | fluxadmit p99 µs | p99 ratio | floor p99.9 µs | fluxadmit p99.9 µs | errors |\n");
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let find = |s: Server, r: &Row| {
        rows.iter().find(|x| {
            x.server == s
                && x.proto == r.proto
                && x.connections == r.connections
                && x.scenario == r.scenario
        })
    };
    let mut seen = Vec::new();
    for r in rows {
        let key = (r.proto, r.connections, r.scenario);
        if r.server != server || seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let f = find(Server::Floor, r);
        let x = find(server, r);
        let cell = |o: Option<&Row>, g: fn(&Row) -> f64, prec: usize| {
            o.map_or("–".to_owned(), |r| format!("{:.*}", prec, g(r)))
        };
        let rat = |g: fn(&Row) -> f64| match (f, x) {
            (Some(f), Some(x)) => ratio(g(x), g(f)),
            _ => "–".into(),
        };
        let errors = f.map_or(0, |r| r.errors) + x.map_or(0, |r| r.errors);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.scenario.name(),
            r.proto.name(),
            r.connections,
            cell(f, |r| r.rps, 0),
            cell(x, |r| r.rps, 0),
            rat(|r| r.rps),
            cell(f, |r| r.p50_us, 0),
            cell(x, |r| r.p50_us, 0),
            cell(f, |r| r.p99_us, 0),
            cell(x, |r| r.p99_us, 0),
            rat(|r| r.p99_us),
            cell(f, |r| r.p999_us, 0),
            cell(x, |r| r.p999_us, 0),
            errors,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_load_run_against_both_servers() {
        let cfg = LoadConfig {
            duration: Duration::from_millis(300),
            warmup: Duration::from_millis(50),
            rounds: 2,
            connections: vec![2],
            objects: 1_300,
            protocols: vec![Proto::H1, Proto::H2],
            scenarios: vec![
                Scenario::DeployMutate,
                Scenario::HrValidate,
                Scenario::HrDenied,
            ],
            servers: vec![Server::Floor, Server::Fluxadmit, Server::Serve],
            h2_connections: 1,
            server_threads: 1,
            client_threads: 1,
        };
        let (rows, probes) = run(&cfg).unwrap();
        assert_eq!(rows.len(), 18);
        for r in &rows {
            assert!(r.requests > 0, "{r:?}");
            assert_eq!(r.errors, 0, "{r:?}");
            assert!(r.p50_us > 0.0 && r.p99_us >= r.p50_us, "{r:?}");
        }
        for (s, sc, p) in &probes {
            // `serve` has an empty view: the allowed HelmRelease's Secrets and dependencies are
            // missing there too, but it is Flux's write, so they are warnings, not a denial.
            let denied = *s != Server::Floor && *sc == Scenario::HrDenied;
            assert_eq!(p.allowed, !denied, "{s:?} {sc:?} {p:?}");
        }
        let patched = probes
            .iter()
            .any(|(s, sc, p)| *s == Server::Fluxadmit && *sc == Scenario::DeployMutate && p.patch);
        assert!(patched, "{probes:?}");
        let md = markdown(&cfg, &rows, &probes);
        assert!(md.contains("| Deployment /mutate | HTTP/2 | 2 |"), "{md}");
        assert!(md.contains("\nfluxadmit serve:\n"), "{md}");
        let serve_warns = probes
            .iter()
            .any(|(s, sc, p)| *s == Server::Serve && *sc == Scenario::HrValidate && p.warnings > 0);
        assert!(
            serve_warns,
            "an empty view: the missing objects are warned about {probes:?}"
        );
    }
}
