//! `fluxadmit serve`: TLS listener, connection handling and graceful shutdown.
//!
//! Shutdown: `/readyz` turns false and every response asks the client to stop reusing the
//! connection (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) while the server keeps answering
//! for the drain period; then it stops accepting, closes idle connections, lets in-flight
//! requests finish, and returns.

pub mod http;
pub mod tls;

use crate::metrics::{Limit, Metrics};
use anyhow::Context as _;
use http::AppState;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Connection phases broadcast to every connection task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Serving,
    /// Still answering; HTTP/2 connections have been sent GOAWAY.
    Draining,
    /// Close idle connections; finish in-flight requests.
    Closing,
}

/// A running server: its bound addresses and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub state: Arc<AppState>,
    stop: watch::Sender<Stop>,
    done: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// How the server is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Running,
    /// SIGTERM: keep answering for the drain period while the endpoints move away.
    Drain,
    /// SIGINT (Ctrl-C): no drain; requests in flight still finish.
    Now,
}

impl Running {
    /// Starts the graceful shutdown (as SIGTERM does) and waits for it to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(Stop::Drain);
        self.done.await.context("server task")?
    }

    /// Stops without the drain (as Ctrl-C does): stops accepting, lets the requests in flight
    /// finish, and waits for that.
    pub async fn interrupt(self) -> anyhow::Result<()> {
        let _ = self.stop.send(Stop::Now);
        self.done.await.context("server task")?
    }

    /// Starts the graceful shutdown without waiting.
    pub fn begin_shutdown(&self) {
        let _ = self.stop.send(Stop::Drain);
    }

    /// Waits for the server to end (after a shutdown began).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.done.await.context("server task")?
    }
}

pub struct Options {
    pub drain: Duration,
    /// Upper bound on waiting for in-flight requests after the drain.
    pub close_timeout: Duration,
}

/// The webhook port's queue of connections the kernel has completed and the server not yet
/// accepted (the kernel caps it at `net.core.somaxconn`, 4096 on current kernels). tokio's
/// default, 1024, overflows under a connection flood: a client's SYN is then dropped and
/// retried a second later.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket with `backlog` (and `SO_REUSEADDR`, as `TcpListener::bind` sets it).
fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Binds and starts serving. Returns once the sockets are bound.
pub async fn start(
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    opts: Options,
) -> anyhow::Result<Running> {
    let listener = bind(addr, LISTEN_BACKLOG).with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let metrics_listener = match metrics_addr {
        Some(a) => Some(
            TcpListener::bind(a)
                .await
                .with_context(|| format!("binding metrics {a}"))?,
        ),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(l) => Some(l.local_addr()?),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(Stop::Running);
    // Metrics stay up through the drain, so the shutdown itself can be observed.
    let (finished_tx, mut finished_rx) = watch::channel(false);
    if let Some(l) = metrics_listener {
        let app = metrics_app(state.metrics.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = serve_metrics(l, app) => {}
                _ = finished_rx.wait_for(|s| *s) => {}
            }
        });
    }
    let serving = serve(listener, tls, state.clone(), stop_rx, opts);
    let done = tokio::spawn(async move {
        let res = serving.await;
        let _ = finished_tx.send(true);
        res
    });
    Ok(Running {
        addr,
        metrics_addr,
        state,
        stop,
        done,
    })
}

/// Connections the metrics listener serves at once; more are closed as they are accepted, so
/// scrapers (or anything else) holding connections open cannot take the process's file
/// descriptors from the webhook port.
pub const METRICS_MAX_CONNECTIONS: usize = 64;

/// How long the metrics listener waits for a request's headers, on a new connection and
/// between requests on a kept-alive one, before closing it.
pub const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `/metrics` over plain HTTP/1.1 until dropped: at most [`METRICS_MAX_CONNECTIONS`]
/// connections, each closed when its headers take longer than [`METRICS_HEADER_TIMEOUT`]
/// (a half-sent request, or an idle keep-alive connection).
async fn serve_metrics(listener: TcpListener, app: axum::Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_MAX_CONNECTIONS));
    loop {
        let (tcp, peer) = accept(&listener, "metrics").await;
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics: connection limit reached; closing");
            drop(tcp);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(METRICS_HEADER_TIMEOUT);
            let conn = b.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app));
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
            drop(slot);
        });
    }
}

fn metrics_app(metrics: Arc<Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.encode(),
                )
            }
        }),
    )
}

async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    mut stop_rx: watch::Receiver<Stop>,
    opts: Options,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    let app = http::app(state.clone());
    let (phase_tx, phase_rx) = watch::channel(Phase::Serving);
    let tracker = TaskTracker::new();
    let slots = Slots::new(&state);
    let accepting = || {
        accept_loop(
            &listener, &acceptor, &app, &phase_rx, &tracker, &slots, &state,
        )
    };
    let stopped = async {
        let _ = stop_rx.wait_for(|s| *s != Stop::Running).await;
    };
    tokio::select! {
        _ = accepting() => {}
        _ = stopped => {}
    }
    // The listener stays open during the drain: endpoints are removed from the Service slowly,
    // and a request still routed here must be answered.
    state.draining.store(true, Ordering::SeqCst);
    let _ = phase_tx.send(Phase::Draining);
    if *stop_rx.borrow() == Stop::Now {
        tracing::info!("interrupted: closing without the drain");
    } else {
        tracing::info!(drain = ?opts.drain, "shutting down: draining connections");
        tokio::select! {
            _ = accepting() => {}
            _ = tokio::time::sleep(opts.drain) => {}
        }
    }
    // Connections the kernel completed but the loop has not taken yet: a client may already
    // have written its request on one. Serve them before the listener closes (they get
    // `Connection: close` answers), instead of letting the close reset them.
    while let Some(Ok((tcp, peer))) = futures::FutureExt::now_or_never(listener.accept()) {
        spawn_connection(
            tcp, peer, &acceptor, &app, &phase_rx, &tracker, &slots, &state,
        );
    }
    drop(listener);
    let _ = phase_tx.send(Phase::Closing);
    tracker.close();
    if tokio::time::timeout(opts.close_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the close timeout; exiting anyway");
    }
    tracing::info!("shutdown complete");
    Ok(())
}

/// The next connection on `listener`. A failed accept (e.g. out of file descriptors) is
/// logged and retried after a short pause instead of spinning.
async fn accept(listener: &TcpListener, which: &str) -> (tokio::net::TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                tracing::warn!(listener = which, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The webhook port's connection slots: `--max-connections`, kept below the process's file
/// descriptor limit (less a reserve for the metrics port, files and the API client), so a
/// flood of connections cannot take the descriptors every connection needs. At the cap a new
/// connection takes the place of an open one with no request in flight ([`Slots::evict_one`]),
/// and is closed at accept only when every connection has a request in flight.
struct Slots {
    free: Arc<tokio::sync::Semaphore>,
    /// New connections waiting for the slot of a connection told to close: bounded, as each
    /// holds a descriptor.
    waiting: Arc<tokio::sync::Semaphore>,
    next: AtomicU64,
    /// The connections holding a slot. Locked when a connection opens or closes and when one
    /// is chosen to make room, never per request.
    open: std::sync::Mutex<std::collections::HashMap<u64, Open>>,
}

/// What is known of an open connection: its requests, and the token that tells it to close.
struct Open {
    activity: Arc<Activity>,
    evict: CancellationToken,
}

/// New connections that may wait at once for the slot of a connection told to close.
const EVICT_WAITING: usize = 256;
/// A connection younger than this with no request yet is taken to make room only after those
/// that have been silent longer: a client sends its first request right after the handshake.
const EVICT_FRESH: Duration = Duration::from_secs(1);
/// How long a new connection waits for the slot of the connection told to close.
const EVICT_WAIT: Duration = Duration::from_secs(2);
/// How long a connection told to close may take to close gracefully before it is dropped
/// (when it still has no request in flight: a slow-loris client half way through headers).
const EVICT_GRACE: Duration = Duration::from_millis(500);

/// A slot held by a connection's task; gives the slot back and leaves the table when dropped.
struct Held {
    slots: Arc<Slots>,
    id: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.slots.table().remove(&self.id);
    }
}

impl Slots {
    fn new(state: &AppState) -> Arc<Slots> {
        let fds = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX));
        // Room for the connections waiting for an evicted connection's slot too.
        let reserve = METRICS_MAX_CONNECTIONS + EVICT_WAITING + 192;
        let cap = state
            .max_connections
            .min(fds.saturating_sub(reserve))
            .max(1);
        if cap < state.max_connections {
            tracing::warn!(
                max_connections = state.max_connections,
                fd_limit = fds,
                using = cap,
                "--max-connections lowered below the file descriptor limit"
            );
        }
        Arc::new(Slots {
            free: Arc::new(tokio::sync::Semaphore::new(cap)),
            waiting: Arc::new(tokio::sync::Semaphore::new(EVICT_WAITING)),
            next: AtomicU64::new(0),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, Open>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn hold(
        self: &Arc<Self>,
        permit: tokio::sync::OwnedSemaphorePermit,
        activity: &Arc<Activity>,
        evict: &CancellationToken,
    ) -> Held {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.table().insert(
            id,
            Open {
                activity: activity.clone(),
                evict: evict.clone(),
            },
        );
        Held {
            slots: self.clone(),
            id,
            _permit: permit,
        }
    }

    /// Tells the open connection most worth closing to close, and takes it off the table.
    /// Only one with no request in flight, and of those one that has not sent a request yet:
    /// first one silent for the [`EVICT_FRESH`] since it was accepted, then one just
    /// accepted (held longest first, so a new connection has as long as the flood allows to
    /// send its request); last one that has served requests, idle longest first (the API
    /// server's kept-alive connections are what the cap protects). False when every
    /// connection has a request in flight. O(open connections), only at the cap.
    fn evict_one(&self) -> bool {
        let mut open = self.table();
        let victim = open
            .iter()
            .filter_map(|(id, o)| {
                let idle = o.activity.idle_for()?;
                let served = o.activity.served.load(Ordering::Acquire) > 0;
                let rank = match (served, o.activity.accepted.elapsed() >= EVICT_FRESH) {
                    (false, true) => 0,
                    (false, false) => 1,
                    (true, _) => 2,
                };
                Some(((rank, std::cmp::Reverse(idle)), *id))
            })
            .min()
            .map(|(_, id)| id);
        match victim.and_then(|id| open.remove(&id)) {
            Some(o) => {
                o.evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Accepts connections until dropped; each is handshaken and served in a tracked task.
async fn accept_loop(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
    app: &axum::Router,
    phase_rx: &watch::Receiver<Phase>,
    tracker: &TaskTracker,
    slots: &Arc<Slots>,
    state: &Arc<AppState>,
) {
    loop {
        let (tcp, peer) = accept(listener, "webhook").await;
        spawn_connection(tcp, peer, acceptor, app, phase_rx, tracker, slots, state);
    }
}

/// Serves one accepted connection in a tracked task, if a connection slot is free or can be
/// made free ([`Slots::evict_one`]).
#[allow(clippy::too_many_arguments)]
fn spawn_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    app: &axum::Router,
    phase_rx: &watch::Receiver<Phase>,
    tracker: &TaskTracker,
    slots: &Arc<Slots>,
    state: &Arc<AppState>,
) {
    // A free slot, or the promise of one: an open connection with no request in flight was
    // told to close, and this one waits (a bounded time, and a bounded number of them) for
    // its slot.
    let slot = match slots.free.clone().try_acquire_owned() {
        Ok(permit) => Ok(permit),
        Err(_) => match slots.waiting.clone().try_acquire_owned() {
            Ok(waiting) if slots.evict_one() => {
                state.metrics.limit_tripped(Limit::Evicted);
                tracing::debug!(%peer, "connection limit reached; closed an idle connection for this one");
                Err(waiting)
            }
            _ => {
                state.metrics.limit_tripped(Limit::Connections);
                tracing::debug!(%peer, "connection limit reached, every connection busy; closing");
                return;
            }
        },
    };
    let _ = tcp.set_nodelay(true);
    let acceptor = acceptor.clone();
    let app = app.clone();
    let phase_rx = phase_rx.clone();
    let state = state.clone();
    let slots = slots.clone();
    tracker.spawn(async move {
        let permit = match slot {
            Ok(permit) => permit,
            Err(_waiting) => {
                match tokio::time::timeout(EVICT_WAIT, slots.free.clone().acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    _ => {
                        state.metrics.limit_tripped(Limit::Connections);
                        tracing::debug!(%peer, "no slot came free in time; closing");
                        return;
                    }
                }
            }
        };
        let activity = Arc::new(Activity::new());
        let evict = CancellationToken::new();
        let _held = slots.hold(permit, &activity, &evict);
        let handshake = tokio::time::timeout(state.handshake_timeout, acceptor.accept(tcp));
        let tls = match tokio::select! {
            r = handshake => r,
            _ = evict.cancelled() => return,
        } {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                state.metrics.limit_tripped(Limit::Idle);
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let mut io = ConnIo {
            inner: tls,
            head: [0; H2_PREFACE.len()],
            at: H2_PREFACE.len(),
            limit: state.write_timeout,
            stalled: None,
            metrics: state.metrics.clone(),
        };
        if h2 {
            // hyper waits for the HTTP/2 preface without a limit: a client that negotiates
            // h2 and sends nothing would hold the connection (and its descriptor) forever.
            let mut preface = [0u8; H2_PREFACE.len()];
            let read = tokio::time::timeout(H2_PREFACE_TIMEOUT, io.read_exact(&mut preface));
            match tokio::select! {
                r = read => r,
                _ = evict.cancelled() => return,
            } {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection closed before the HTTP/2 preface");
                    return;
                }
                Err(_) => {
                    state.metrics.limit_tripped(Limit::Idle);
                    tracing::debug!(%peer, "no HTTP/2 preface in time; closing");
                    return;
                }
            }
            // Read here to bound the wait, handed to hyper as if unread.
            io.head = preface;
            io.at = 0;
        }
        serve_connection(io, h2, app, phase_rx, &state, &activity, &evict).await;
    });
}

/// A connection's stream as hyper sees it. Its first bytes may have been read already and
/// are read again first (`head[at..]`: the HTTP/2 preface, read to bound the wait for it).
/// Its writes fail once one has waited longer than `limit` for the peer to read: a client
/// that sends requests but never reads the answers would otherwise hold them (and the
/// connection) for as long as it likes.
struct ConnIo<S> {
    inner: S,
    head: [u8; H2_PREFACE.len()],
    at: usize,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    metrics: Arc<Metrics>,
}

impl<S> ConnIo<S> {
    /// After a write attempt: `Pending` starts (or keeps) the clock, anything else stops it.
    fn watch<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        res: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::future::Future as _;
        if res.is_ready() {
            self.stalled = None;
            return res;
        }
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if sleep.as_mut().poll(cx).is_ready() {
            self.metrics.limit_tripped(Limit::WriteStalled);
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing within the write timeout",
            )));
        }
        std::task::Poll::Pending
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ConnIo<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let me = &mut *self;
        if me.at < me.head.len() {
            let n = (me.head.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.head[me.at..me.at + n]);
            me.at += n;
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ConnIo<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, res)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, res)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let res = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, res)
    }
}

/// The client preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection that negotiated HTTP/2 has to send its 24-byte preface (as Go's
/// net/http allows) before it is closed.
pub const H2_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a connection's task knows of the requests on it: how many are being answered, how
/// many were, and when the last one ended (ms since the connection was accepted).
struct Activity {
    accepted: Instant,
    in_flight: AtomicUsize,
    served: AtomicUsize,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Acquire));
        Some(self.accepted.elapsed().saturating_sub(last))
    }
}

/// How long, once the drain is over, a connection that has not sent its first request yet is
/// given to send it (Go's `Server.Shutdown` waits 5 s before treating a new connection as
/// idle): it was accepted, so a request written on it is answered, with `Connection: close`.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);

/// A connection told to make room whose [`EVICT_GRACE`] ran out: true when it is to be
/// dropped (still no request in flight); otherwise it gets another grace.
fn evict_grace_over(
    activity: &Activity,
    evicted: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
) -> bool {
    if activity.in_flight.load(Ordering::Acquire) == 0 {
        return true;
    }
    *evicted = Some(Box::pin(tokio::time::sleep(EVICT_GRACE)));
    false
}

/// Serves a connection until it ends, the server closes, or it is told to close to make room
/// (`evict`: closed gracefully, a request in flight still answered; dropped after
/// [`EVICT_GRACE`] if it has none).
async fn serve_connection<S>(
    io: S,
    h2: bool,
    app: axum::Router,
    mut phase: watch::Receiver<Phase>,
    state: &AppState,
    activity: &Arc<Activity>,
    evict: &CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let tracked = activity.clone();
    // Once told to make room: the time after which the connection is dropped if it still has
    // no request in flight.
    let mut evicted: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let activity = tracked.clone();
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        async move {
            let resp = tower::ServiceExt::oneshot(app, req).await;
            activity.last_ms.store(
                activity.accepted.elapsed().as_millis() as u64,
                Ordering::Release,
            );
            activity.served.fetch_add(1, Ordering::AcqRel);
            activity.in_flight.fetch_sub(1, Ordering::AcqRel);
            resp
        }
    });
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .max_concurrent_streams(state.h2_max_streams)
            .max_header_list_size(state.h2_max_header_list);
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut goaway_sent = false;
        let idle = state.idle_timeout;
        let mut check = tokio::time::Instant::now() + idle;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res { tracing::debug!(error = %e, "h2 connection ended"); }
                    return;
                }
                changed = phase.changed(), if !goaway_sent => {
                    if changed.is_err() || *phase.borrow() >= Phase::Draining {
                        // GOAWAY: finish the streams already sent, accept no new ones.
                        conn.as_mut().graceful_shutdown();
                        goaway_sent = true;
                    }
                }
                _ = evict.cancelled(), if evicted.is_none() => {
                    if !goaway_sent {
                        conn.as_mut().graceful_shutdown();
                        goaway_sent = true;
                    }
                    evicted = Some(Box::pin(tokio::time::sleep(EVICT_GRACE)));
                }
                _ = async { if let Some(e) = evicted.as_mut() { e.await } }, if evicted.is_some() => {
                    if evict_grace_over(activity, &mut evicted) {
                        return;
                    }
                }
                // PINGs keep a connection alive at the TCP level, not as a user of a slot: a
                // connection with no request for the idle timeout is told to go away.
                _ = tokio::time::sleep_until(check), if !goaway_sent => {
                    match activity.idle_for() {
                        Some(d) if d >= idle => {
                            state.metrics.limit_tripped(Limit::Idle);
                            conn.as_mut().graceful_shutdown();
                            goaway_sent = true;
                        }
                        Some(d) => check = tokio::time::Instant::now() + (idle - d),
                        None => check = tokio::time::Instant::now() + idle,
                    }
                }
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(state.header_timeout);
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut closing = false;
        // Set once closing a connection that has not had its first request yet.
        let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res { tracing::debug!(error = %e, "http/1.1 connection ended"); }
                    return;
                }
                changed = phase.changed(), if !closing => {
                    // While draining, responses carry `Connection: close`; once closing, idle
                    // connections are shut and an in-flight request still gets its answer. A
                    // connection with no request yet gets a grace period for its first.
                    if changed.is_err() || *phase.borrow() >= Phase::Closing {
                        closing = true;
                        let fresh = activity.served.load(Ordering::Acquire) == 0
                            && activity.in_flight.load(Ordering::Acquire) == 0;
                        let left = FIRST_REQUEST_GRACE.saturating_sub(activity.accepted.elapsed());
                        if fresh && !left.is_zero() {
                            grace = Some(Box::pin(tokio::time::sleep(left)));
                        } else {
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
                _ = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                    grace = None;
                    conn.as_mut().graceful_shutdown();
                }
                _ = evict.cancelled(), if evicted.is_none() => {
                    closing = true;
                    grace = None;
                    conn.as_mut().graceful_shutdown();
                    evicted = Some(Box::pin(tokio::time::sleep(EVICT_GRACE)));
                }
                _ = async { if let Some(e) = evicted.as_mut() { e.await } }, if evicted.is_some() => {
                    if evict_grace_over(activity, &mut evicted) {
                        return;
                    }
                }
            }
        }
    }
}

/// Streams an HTTP/2 connection may have open at once (hyper's default is 200): with
/// `--max-requests-in-flight` it bounds what one connection can make the server buffer.
pub const H2_MAX_STREAMS: u32 = 100;
