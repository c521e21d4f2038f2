//! `fluxadmit serve`: TLS listener, connection handling and graceful shutdown.
//!
//! Shutdown: `/readyz` turns false and every response asks the client to stop reusing the
//! connection (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY) while the server keeps answering
//! for the drain period; then it stops accepting, closes idle connections, lets in-flight
//! requests finish, and returns.

pub mod http;
pub mod tls;

use crate::metrics::Metrics;
use anyhow::Context as _;
use http::AppState;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
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

/// Binds and starts serving. Returns once the sockets are bound.
pub async fn start(
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<AppState>,
    opts: Options,
) -> anyhow::Result<Running> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
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
    let accepting = || accept_loop(&listener, &acceptor, &app, &phase_rx, &tracker);
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

/// Accepts connections until dropped; each is handshaken and served in a tracked task.
async fn accept_loop(
    listener: &TcpListener,
    acceptor: &TlsAcceptor,
    app: &axum::Router,
    phase_rx: &watch::Receiver<Phase>,
    tracker: &TaskTracker,
) {
    loop {
        let (tcp, peer) = accept(listener, "webhook").await;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let phase_rx = phase_rx.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            if h2 {
                // hyper waits for the HTTP/2 preface without a limit: a client that negotiates
                // h2 and sends nothing would hold the connection (and its descriptor) forever.
                let mut tls = tls;
                let mut preface = [0u8; H2_PREFACE.len()];
                match tokio::time::timeout(H2_PREFACE_TIMEOUT, tls.read_exact(&mut preface)).await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "connection closed before the HTTP/2 preface");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "no HTTP/2 preface in time; closing");
                        return;
                    }
                }
                let io = Replayed {
                    head: preface,
                    at: 0,
                    inner: tls,
                };
                serve_connection(io, true, app, phase_rx).await;
            } else {
                serve_connection(tls, false, app, phase_rx).await;
            }
        });
    }
}

/// The client preface every HTTP/2 connection starts with (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long a connection that negotiated HTTP/2 has to send its 24-byte preface (as Go's
/// net/http allows) before it is closed.
pub const H2_PREFACE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream whose first bytes, already read from it, are read again first: the HTTP/2
/// preface, read here to bound the wait for it, is handed to hyper as if unread.
struct Replayed<S> {
    head: [u8; H2_PREFACE.len()],
    at: usize,
    inner: S,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Replayed<S> {
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

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Replayed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_connection<S>(io: S, h2: bool, app: axum::Router, mut phase: watch::Receiver<Phase>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let svc = TowerToHyperService::new(app);
    if h2 {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut goaway_sent = false;
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
            }
        }
    } else {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .keep_alive(true)
            .header_read_timeout(Duration::from_secs(30));
        let conn = b.serve_connection(io, svc);
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res { tracing::debug!(error = %e, "http/1.1 connection ended"); }
                    return;
                }
                changed = phase.changed(), if !closing => {
                    // While draining, responses carry `Connection: close`; once closing, idle
                    // connections are shut and an in-flight request still gets its answer.
                    if changed.is_err() || *phase.borrow() >= Phase::Closing {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}
