//! `fluxadmit-bench rapid-reset`: what the HTTP/2 "rapid reset" pattern (CVE-2023-44487:
//! streams opened and cancelled at once, so the server's stream limit never holds the client
//! back) costs `fluxadmit serve` in CPU, against what the same server spends on reviews it
//! answers. The question: does a reset stream cost the server more than a request it carries?
//!
//! The phases, after a warm-up: one reset phase per `--batch` value (streams opened and reset,
//! a PING after every batch of them, on one connection after another as the server closes
//! them), each followed by one review on a new connection to see the server still answers;
//! PINGs alone (what the reset phases' pacing costs); reviews answered in full. The server is
//! the `fluxadmit` binary with its defaults ([`start_serve`], as `load` starts it); its CPU
//! time is read from `/proc/<pid>/stat` (user + system) before and after each phase.
//!
//! The client is the `h2` crate over tokio-rustls, on a current-thread runtime, so a stream's
//! HEADERS, DATA and RST_STREAM are queued together before the connection task writes them.
//! On a multi-thread runtime the connection task could take a stream out of its open queue
//! between `send_request` and `send_reset`; `h2` then drops the unwritten HEADERS with the
//! reset, and the RST_STREAM goes out alone on a stream the server never saw: a protocol
//! error, not a rapid reset.

use super::generate;
use super::load::{ServeProcess, TempDir, Tls, start_serve};
use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use h2::client::SendRequest;
use h2::{Ping, PingPong, Reason};
use http::{StatusCode, header};
use rustls::pki_types::ServerName;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What one `rapid-reset` run does.
#[derive(Debug, Clone)]
pub struct RapidConfig {
    /// Streams to open and reset, in each reset phase; also the PINGs of the PING phase.
    pub streams: u64,
    /// A reset phase stops after this long even if `streams` were not all sent.
    pub max_time: Duration,
    /// One reset phase per value: the streams written between two PINGs. The client waits
    /// for each PONG, so it is never more than a batch ahead of what the server has read,
    /// and it counts what the server has read. 1: every stream is read and handled, the
    /// server's reset limits never trip; larger: the server sees the resets in bursts.
    pub batches: Vec<u64>,
    /// Reviews to send and have answered.
    pub reviews: u64,
    /// Reviews in flight at once, as streams of one connection.
    pub concurrency: usize,
}

/// One measured phase.
#[derive(Debug, Clone, Default)]
pub struct Phase {
    /// Streams the client opened and reset (reset phase: handed to the connection, which
    /// writes them after each batch; of the last batch on a connection the server closed,
    /// part may never have gone out), PINGs answered (PING phase), or reviews answered 200
    /// allowed.
    pub count: u64,
    /// Reset phase: streams the server had read before it answered a PING (those of batches
    /// whose PONG came back); a lower bound, as the server may have read part of a batch
    /// before it closed the connection. Otherwise equal to `count`.
    pub confirmed: u64,
    /// Reviews not answered 200 with allowed=true (reviews phase only).
    pub failed: u64,
    /// Client time from the first stream to the last PONG (or the last answer).
    pub wall: Duration,
    /// The server's user + system CPU time over the phase.
    pub cpu: Duration,
    /// Connections (TCP + TLS + h2 handshake) the client opened.
    pub connections: u64,
    /// Connections the server closed (GOAWAY, reset or EOF), not the client.
    pub closed_by_server: u64,
    /// How the connections ended that the client did not close itself, and how often.
    pub ends: BTreeMap<String, u64>,
    /// What the server's `fluxadmit_bad_requests_total{reason="cancelled"}` grew by: reset
    /// streams that reached the review handler (their body read ended with the client's
    /// reset). `None`: metrics not read.
    pub cancelled: Option<u64>,
}

impl Phase {
    /// Server CPU per stream or review, in µs.
    pub fn cpu_us_each(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        self.cpu.as_secs_f64() * 1e6 / self.count as f64
    }
}

/// One reset phase.
#[derive(Debug, Clone)]
pub struct ResetRun {
    /// Streams between two PINGs.
    pub batch: u64,
    pub phase: Phase,
    /// It ended at `max_time`, before `streams` were sent.
    pub timed_out: bool,
    /// One review on a new connection right after it: answered 200, allowed.
    pub answered_after: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct RapidReport {
    pub cfg: RapidConfig,
    pub body_len: usize,
    pub chunk_len: usize,
    pub resets: Vec<ResetRun>,
    /// PINGs alone on one connection, one at a time: what the reset phases' PINGs cost.
    pub pings: Phase,
    pub reviews: Phase,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    pub ticks_per_second: u64,
    /// The server's `fluxadmit_limits_tripped_total` and `fluxadmit_bad_requests_total`
    /// lines at the end, when its metrics address was found in its log.
    pub metrics: Option<Vec<String>>,
}

/// Reviews sent before anything is measured, so the first measured phase does not pay for
/// the server's first allocations and lazily built state.
const WARMUP_REVIEWS: u64 = 100;

/// How long the server's CPU time must stay unchanged after a phase before it is read (a
/// tick is 10 ms at the usual 100 Hz).
const SETTLE: Duration = Duration::from_millis(200);

/// Bytes of the review body sent on a stream before it is reset.
const CHUNK: usize = 512;

/// Starts `fluxadmit serve` and runs the phases against it. Progress goes to stderr.
pub fn run(cfg: &RapidConfig) -> anyhow::Result<RapidReport> {
    let ticks_per_second = clock_ticks()?;
    let tmp = TempDir::new("rapid")?;
    let tls = Tls::generate(tmp.path())?;
    let h1 = tls.connector(b"http/1.1")?;
    let h2 = tls.connector(b"h2")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    eprintln!("starting fluxadmit serve");
    let serve = start_serve(tmp.path(), &h1, &rt)?;
    let result = rt.block_on(measure(cfg, &serve, &h2, ticks_per_second));
    if result.is_err() {
        let tail = std::fs::read_to_string(&serve.log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        eprintln!(
            "server log, last lines (newest first):\n{}",
            tail.join("\n")
        );
    }
    drop(serve);
    rt.shutdown_timeout(Duration::from_secs(2));
    result
}

/// The warm-up and the measured phases against the running server.
async fn measure(
    cfg: &RapidConfig,
    serve: &ServeProcess,
    connector: &TlsConnector,
    ticks_per_second: u64,
) -> anyhow::Result<RapidReport> {
    let meter = Meter {
        pid: serve.pid(),
        ticks_per_second,
        metrics: logged_metrics_addr(&serve.log).await,
    };
    if meter.metrics.is_none() {
        eprintln!("  the server's metrics address is not in its log: metrics not read");
    }
    let addr = serve.addr;
    let uid = "bench-rapid-0001";
    let body = Bytes::from(generate::deployment_review(uid));
    let chunk = body.slice(..CHUNK.min(body.len()));

    let warm = reviews(addr, connector, &body, uid, WARMUP_REVIEWS, cfg.concurrency).await?;
    if warm.failed > 0 {
        bail!("{} of {WARMUP_REVIEWS} warm-up reviews failed", warm.failed);
    }

    let mut runs = Vec::new();
    for &batch in &cfg.batches {
        let batch = batch.max(1);
        eprintln!(
            "reset phase: up to {} streams or {:?}, a PING every {batch}",
            cfg.streams, cfg.max_time
        );
        let mark = meter.mark().await?;
        let mut phase = resets(addr, connector, cfg, batch, &body, &chunk).await?;
        meter.done(mark, &mut phase).await?;
        eprintln!(
            "  {} streams reset ({} read by the server) in {:?} over {} connection(s), {} closed by the server; server CPU {:?}",
            phase.count,
            phase.confirmed,
            phase.wall,
            phase.connections,
            phase.closed_by_server,
            phase.cpu
        );
        // Still serving? One review on a new connection, outside the measured CPU.
        let answered_after = match review_once(addr, connector, &body, uid).await {
            Ok(()) => true,
            Err(e) => {
                eprintln!("  the review after the reset phase failed: {e:#}");
                false
            }
        };
        runs.push(ResetRun {
            batch,
            timed_out: phase.count < cfg.streams,
            phase,
            answered_after,
        });
    }

    eprintln!("PING phase: {} PINGs, one at a time", cfg.streams);
    let mark = meter.mark().await?;
    let mut pinged = pings(addr, connector, cfg.streams).await?;
    meter.done(mark, &mut pinged).await?;
    eprintln!(
        "  {} PONGs in {:?}; server CPU {:?}",
        pinged.count, pinged.wall, pinged.cpu
    );

    eprintln!(
        "reviews phase: {} reviews, {} in flight",
        cfg.reviews, cfg.concurrency
    );
    let mark = meter.mark().await?;
    let mut answered = reviews(addr, connector, &body, uid, cfg.reviews, cfg.concurrency).await?;
    meter.done(mark, &mut answered).await?;
    eprintln!(
        "  {} answered, {} failed in {:?}; server CPU {:?}",
        answered.count, answered.failed, answered.wall, answered.cpu
    );

    let metrics = match meter.metrics {
        Some(m) => match scrape(m).await {
            Ok(text) => Some(
                text.lines()
                    .filter(|l| {
                        l.starts_with("fluxadmit_limits_tripped_total")
                            || l.starts_with("fluxadmit_bad_requests_total")
                    })
                    .map(str::to_owned)
                    .collect(),
            ),
            Err(e) => {
                eprintln!("  metrics not read: {e:#}");
                None
            }
        },
        None => None,
    };

    Ok(RapidReport {
        cfg: cfg.clone(),
        body_len: body.len(),
        chunk_len: chunk.len(),
        resets: runs,
        pings: pinged,
        reviews: answered,
        ticks_per_second,
        metrics,
    })
}

// ---------------------------------------------------------------------------------------------
// The server's CPU time.

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times (`getconf CLK_TCK`).
fn clock_ticks() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("running getconf CLK_TCK")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let n: u64 = text
        .trim()
        .parse()
        .with_context(|| format!("getconf CLK_TCK printed {text:?}"))?;
    anyhow::ensure!(n > 0, "getconf CLK_TCK printed 0");
    Ok(n)
}

/// utime + stime of a process (fields 14 and 15 of `/proc/<pid>/stat`), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_ticks(&text).ok_or_else(|| anyhow!("{path}: no utime/stime in {text:?}"))
}

/// utime + stime from the text of a `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces and parentheses itself, so the fields are counted from
/// the last `)`: field 3 is the first after it, so fields 14 and 15 are the 12th and 13th.
fn parse_stat_ticks(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads the server's CPU time (and its read-error count) around a phase.
struct Meter {
    pid: u32,
    ticks_per_second: u64,
    /// The server's metrics port, if found.
    metrics: Option<SocketAddr>,
}

/// Where a phase started: the server's CPU ticks and read-error count.
struct Mark {
    ticks: u64,
    cancelled: Option<u64>,
}

impl Meter {
    /// Before a phase: the metrics first, then the CPU time once the server is idle, so the
    /// scrape is not counted in the phase.
    async fn mark(&self) -> anyhow::Result<Mark> {
        let cancelled = self.cancelled().await;
        Ok(Mark {
            ticks: settle(self.pid).await?,
            cancelled,
        })
    }

    /// After a phase: the CPU time once the server is idle again, then the metrics.
    async fn done(&self, mark: Mark, p: &mut Phase) -> anyhow::Result<()> {
        let ticks = settle(self.pid).await?;
        p.cpu = Duration::from_secs_f64(
            ticks.saturating_sub(mark.ticks) as f64 / self.ticks_per_second.max(1) as f64,
        );
        p.cancelled = match (mark.cancelled, self.cancelled().await) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        Ok(())
    }

    /// `fluxadmit_bad_requests_total{reason="cancelled"}`, if the metrics can be read.
    async fn cancelled(&self) -> Option<u64> {
        let text = scrape(self.metrics?).await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("fluxadmit_bad_requests_total{reason=\"cancelled\"} "))
            .and_then(|n| n.trim().parse().ok())
            // Not there yet: no request has ended that way.
            .or(Some(0))
    }
}

/// Waits until the server's CPU time has not moved for [`SETTLE`] (at most 10 s: a server
/// that is never idle is read as it is) and returns it: what a phase set going (a stream's
/// task, a connection's teardown) is counted in that phase.
async fn settle(pid: u32) -> anyhow::Result<u64> {
    let give_up = Instant::now() + Duration::from_secs(10);
    let mut last = cpu_ticks(pid)?;
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = cpu_ticks(pid)?;
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= SETTLE {
            return Ok(now);
        }
        if Instant::now() >= give_up {
            return Ok(now);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 connections with the `h2` crate.

/// An open h2 connection: its request handle, its PING handle and the task driving it (which
/// ends with the connection, and says how).
struct Conn {
    send: SendRequest<Bytes>,
    ping: PingPong,
    task: tokio::task::JoinHandle<Result<(), h2::Error>>,
}

/// TCP + TLS (ALPN h2, trusting the run's CA) + the h2 handshake.
async fn connect(addr: SocketAddr, connector: &TlsConnector) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?.to_owned();
    let tls: TlsStream<TcpStream> = connector.connect(name, tcp).await?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        bail!("server did not negotiate h2");
    }
    let (send, mut conn) = h2::client::handshake(tls).await?;
    let ping = conn
        .ping_pong()
        .ok_or_else(|| anyhow!("h2: no PING handle"))?;
    let task = tokio::spawn(conn);
    Ok(Conn { send, ping, task })
}

/// POST /validate with the review's headers; the body follows as DATA.
fn request(len: usize) -> anyhow::Result<http::Request<()>> {
    Ok(http::Request::post("https://localhost/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len)
        .body(())?)
}

/// How a connection the client was still using ended: (closed by the server, description).
async fn ended(task: tokio::task::JoinHandle<Result<(), h2::Error>>) -> (bool, String) {
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Err(_) => (
            false,
            "still open after an error (closed by the client)".into(),
        ),
        Ok(Err(e)) => (false, format!("connection task failed: {e}")),
        Ok(Ok(Ok(()))) => (true, "closed without error".into()),
        Ok(Ok(Err(e))) if e.is_go_away() => {
            let reason = e.reason().map_or("?".into(), |r| format!("{r:?}"));
            if e.is_remote() {
                (true, format!("GOAWAY {reason} from the server"))
            } else {
                (false, format!("GOAWAY {reason} from the client"))
            }
        }
        Ok(Ok(Err(e))) if e.is_io() => (
            true,
            format!(
                "socket closed ({})",
                e.get_io().map_or("?".into(), |io| io.kind().to_string())
            ),
        ),
        Ok(Ok(Err(e))) => (e.is_remote(), e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// The reset phase.

/// Streams opened and reset as fast as the server reads them: each is HEADERS (POST
/// /validate, the full body's length declared), one DATA frame of `chunk` (not the end) and
/// RST_STREAM CANCEL, the response never awaited. After each batch the client lets the
/// connection write and PINGs; the PONG means the server has read the batch. A connection
/// the server closes is replaced by a new one and the flood goes on.
async fn resets(
    addr: SocketAddr,
    connector: &TlsConnector,
    cfg: &RapidConfig,
    batch: u64,
    body: &Bytes,
    chunk: &Bytes,
) -> anyhow::Result<Phase> {
    let mut p = Phase::default();
    let start = Instant::now();
    let deadline = start + cfg.max_time;
    let batch = batch.max(1);
    while p.count < cfg.streams && Instant::now() < deadline {
        let mut c = connect(addr, connector)
            .await
            .context("opening a connection in the reset phase")?;
        p.connections += 1;
        // Set when the connection fails under the client.
        let mut failed = false;
        'conn: while p.count < cfg.streams && Instant::now() < deadline {
            let mut in_batch = 0;
            while in_batch < batch && p.count < cfg.streams {
                if std::future::poll_fn(|cx| c.send.poll_ready(cx))
                    .await
                    .is_err()
                {
                    failed = true;
                    break 'conn;
                }
                let Ok((response, mut stream)) = c.send.send_request(request(body.len())?, false)
                else {
                    failed = true;
                    break 'conn;
                };
                drop(response);
                // An error here is the connection's; the next poll_ready sees it.
                let _ = stream.send_data(chunk.clone(), false);
                stream.send_reset(Reason::CANCEL);
                p.count += 1;
                in_batch += 1;
            }
            // The connection task was woken by the new streams: let it write them, then PING.
            tokio::task::yield_now().await;
            match tokio::time::timeout(Duration::from_secs(10), c.ping.ping(Ping::opaque())).await {
                Ok(Ok(_)) => p.confirmed += in_batch,
                Ok(Err(_)) => {
                    failed = true;
                    break 'conn;
                }
                Err(_) => bail!("no PONG within 10 s in the reset phase"),
            }
        }
        if failed {
            let (by_server, how) = ended(c.task).await;
            if by_server {
                p.closed_by_server += 1;
            }
            *p.ends.entry(how).or_default() += 1;
        } else {
            // Done (or out of time): the client closes this one itself.
            c.task.abort();
        }
    }
    p.wall = start.elapsed();
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// The PING phase.

/// `n` PINGs on one connection, each awaited before the next: the server's cost of the PINGs
/// that pace the reset phases (a frame read, a PONG written), to set against them.
async fn pings(addr: SocketAddr, connector: &TlsConnector, n: u64) -> anyhow::Result<Phase> {
    let mut c = connect(addr, connector)
        .await
        .context("opening the PING connection")?;
    let start = Instant::now();
    let mut p = Phase {
        connections: 1,
        ..Phase::default()
    };
    for _ in 0..n {
        match tokio::time::timeout(Duration::from_secs(10), c.ping.ping(Ping::opaque())).await {
            Ok(Ok(_)) => p.count += 1,
            Ok(Err(_)) => {
                let (by_server, how) = ended(c.task).await;
                if by_server {
                    p.closed_by_server += 1;
                }
                *p.ends.entry(how).or_default() += 1;
                p.wall = start.elapsed();
                p.confirmed = p.count;
                return Ok(p);
            }
            Err(_) => bail!("no PONG within 10 s in the PING phase"),
        }
    }
    p.wall = start.elapsed();
    p.confirmed = p.count;
    c.task.abort();
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// The reviews phase.

/// One review on `send`: the whole body, then the whole answer. Ok(status, answer).
async fn review_on(
    send: &mut SendRequest<Bytes>,
    body: &Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    std::future::poll_fn(|cx| send.poll_ready(cx)).await?;
    let (response, mut stream) = send.send_request(request(body.len())?, false)?;
    stream.send_data(body.clone(), true)?;
    let response = response.await?;
    let status = response.status();
    let mut recv = response.into_body();
    let mut answer = Vec::new();
    while let Some(data) = recv.data().await {
        let data = data?;
        // Give the window back, or a long answer would stall.
        let _ = recv.flow_control().release_capacity(data.len());
        answer.extend_from_slice(&data);
    }
    Ok((status, Bytes::from(answer)))
}

/// Checks an answer: 200, an AdmissionReview echoing `uid`, allowed.
fn admitted(status: StatusCode, answer: &[u8], uid: &str) -> anyhow::Result<()> {
    if status != StatusCode::OK {
        bail!("answered {status}: {}", String::from_utf8_lossy(answer));
    }
    let v: serde_json::Value = serde_json::from_slice(answer)?;
    let resp = &v["response"];
    if resp["uid"] != uid || resp["allowed"] != true {
        bail!("not an allowed answer for {uid}: {v}");
    }
    Ok(())
}

/// One review on a new connection (closed after it): Ok if answered 200, allowed.
async fn review_once(
    addr: SocketAddr,
    connector: &TlsConnector,
    body: &Bytes,
    uid: &str,
) -> anyhow::Result<()> {
    let mut c = connect(addr, connector).await?;
    let res = tokio::time::timeout(Duration::from_secs(10), review_on(&mut c.send, body)).await;
    c.task.abort();
    let (status, answer) = res.map_err(|_| anyhow!("no answer within 10 s"))??;
    admitted(status, &answer, uid)
}

/// `n` reviews on one connection, `concurrency` streams in flight, each answered in full
/// and checked (200, allowed). A failed review is counted, not retried.
async fn reviews(
    addr: SocketAddr,
    connector: &TlsConnector,
    body: &Bytes,
    uid: &'static str,
    n: u64,
    concurrency: usize,
) -> anyhow::Result<Phase> {
    let c = connect(addr, connector)
        .await
        .context("opening the reviews connection")?;
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let mut send = c.send.clone();
        let next = next.clone();
        let body = body.clone();
        workers.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let r = tokio::time::timeout(Duration::from_secs(10), review_on(&mut send, &body))
                    .await;
                match r {
                    Ok(Ok((status, answer))) if admitted(status, &answer, uid).is_ok() => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let mut p = Phase {
        connections: 1,
        ..Phase::default()
    };
    while let Some(r) = workers.join_next().await {
        let (ok, failed) = r.map_err(|e| anyhow!("review worker failed: {e}"))?;
        p.count += ok;
        p.failed += failed;
    }
    p.wall = start.elapsed();
    p.confirmed = p.count;
    if c.task.is_finished() {
        let (by_server, how) = ended(c.task).await;
        if by_server {
            p.closed_by_server += 1;
        }
        *p.ends.entry(how).or_default() += 1;
    } else {
        c.task.abort();
    }
    Ok(p)
}

// ---------------------------------------------------------------------------------------------
// The server's metrics.

/// The metrics address from the server's "serving" log line (`metrics=Some(127.0.0.1:N)`):
/// `start_serve` picks it but does not keep it.
fn metrics_addr(log: &std::path::Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("serving"))?;
    let rest = line.split("metrics").nth(1)?;
    let inner = rest.split("Some(").nth(1)?;
    // Past the address: its closing parenthesis (an ANSI escape may follow).
    inner.split(')').next()?.trim().parse().ok()
}

/// [`metrics_addr`], waiting up to 5 s for the line: the server logs through a non-blocking
/// writer, so the line can reach the file after `/readyz` has answered.
async fn logged_metrics_addr(log: &std::path::Path) -> Option<SocketAddr> {
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let found = metrics_addr(log);
        if found.is_some() || Instant::now() >= give_up {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET /metrics over plain HTTP/1.1: the text.
async fn scrape(addr: SocketAddr) -> anyhow::Result<String> {
    use http_body_util::{BodyExt, Full};
    let tcp = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get("/metrics")
        .header(header::HOST, "localhost")
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .map_err(|_| anyhow!("no answer from the metrics port within 5 s"))??;
    let bytes = resp.into_body().collect().await?.to_bytes();
    task.abort();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

// ---------------------------------------------------------------------------------------------
// The report.

/// The markdown table, the ratios, and what the server said.
pub fn markdown(r: &RapidReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "HTTP/2 rapid reset against `fluxadmit serve` (its defaults), one client connection at a time. \
         Reset stream: HEADERS (POST /validate, content-length {}), DATA {} bytes, RST_STREAM CANCEL; \
         a PING after every batch of streams, its PONG awaited (\"read by server\": the streams of \
         the batches whose PONG came back; `bad_requests{{cancelled}} +`: how much the server's \
         count of body reads ended by the client's reset grew, i.e. the reset streams that reached \
         the review handler). A \
         connection the server closes is replaced by a new one (TCP + TLS + h2 handshake). Review: \
         the {}-byte Deployment, {} in flight on one connection, answered 200 allowed. Server CPU: \
         utime + stime from /proc/<pid>/stat, in ticks of 1/{} s, from before a phase until the \
         server is idle after it; \"CPU µs each\": per stream sent, PING or review. {} warm-up \
         reviews first.\n",
        r.body_len, r.chunk_len, r.body_len, r.cfg.concurrency, r.ticks_per_second, WARMUP_REVIEWS,
    );
    out.push_str("| phase | streams/reviews | read by server (PONG) | server's bad_requests{cancelled} + | wall s | server CPU ms | CPU µs each | connections opened | closed by server |\n");
    out.push_str("|---|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let row = |out: &mut String, name: &str, p: &Phase, count: String| {
        let _ = writeln!(
            out,
            "| {name} | {count} | {} | {} | {:.2} | {:.0} | {:.1} | {} | {} |",
            p.confirmed,
            p.cancelled.map_or("–".into(), |n| n.to_string()),
            p.wall.as_secs_f64(),
            p.cpu.as_secs_f64() * 1e3,
            p.cpu_us_each(),
            p.connections,
            p.closed_by_server,
        );
    };
    for run in &r.resets {
        let name = format!("reset, PING every {}", run.batch);
        row(&mut out, &name, &run.phase, run.phase.count.to_string());
    }
    row(&mut out, "PING alone", &r.pings, r.pings.count.to_string());
    let review_count = if r.reviews.failed == 0 {
        r.reviews.count.to_string()
    } else {
        format!("{} ({} failed)", r.reviews.count, r.reviews.failed)
    };
    row(&mut out, "reviews", &r.reviews, review_count);
    out.push('\n');
    let review_us = r.reviews.cpu_us_each();
    let ping_us = r.pings.cpu_us_each();
    for run in &r.resets {
        let reset_us = run.phase.cpu_us_each();
        if review_us <= 0.0 {
            out.push_str("No review CPU measured: no ratio.\n");
            break;
        }
        // The PINGs' share, per stream: one PING per batch.
        let bare_us = (reset_us - ping_us / run.batch as f64).max(0.0);
        let _ = writeln!(
            out,
            "- PING every {}: a reset stream costs {:.0}% of an answered review ({reset_us:.1} µs against {review_us:.1} µs of server CPU; {:.0}% less its PINGs' share, {bare_us:.1} µs).",
            run.batch,
            reset_us / review_us * 100.0,
            bare_us / review_us * 100.0,
        );
    }
    for run in &r.resets {
        let p = &run.phase;
        let _ = write!(out, "- PING every {}: ", run.batch);
        if run.timed_out {
            let _ = write!(
                out,
                "stopped at its {} s cap; ",
                r.cfg.max_time.as_secs_f64()
            );
        }
        if p.ends.is_empty() {
            out.push_str("the server closed no connection");
        } else {
            out.push_str("connections ended by");
            let ends: Vec<String> = p
                .ends
                .iter()
                .map(|(how, n)| format!("{how} ×{n}"))
                .collect();
            let _ = write!(out, " {}", ends.join(", "));
        }
        let _ = writeln!(
            out,
            "; then a review on a new connection: {}.",
            if run.answered_after {
                "answered 200, allowed"
            } else {
                "NOT answered"
            }
        );
    }
    match &r.metrics {
        Some(lines) => {
            out.push_str("\nServer metrics at the end:\n\n```\n");
            for l in lines {
                out.push_str(l);
                out.push('\n');
            }
            out.push_str("```\n");
        }
        None => out.push_str("\n(Server metrics not read.)\n"),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (fluxadmit (x) y) S 1 4242 4242 0 -1 4194560 1500 0 0 0 \
                    123 45 0 0 20 0 4 0 100 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(168));
        assert_eq!(parse_stat_ticks("garbage"), None);
        assert!(cpu_ticks(std::process::id()).is_ok());
    }

    #[test]
    fn metrics_address_is_read_from_the_serving_line() {
        let tmp = TempDir::new("rapid-log").unwrap();
        let log = tmp.path().join("serve.log");
        std::fs::write(
            &log,
            "INFO serving addr=127.0.0.1:8443 metrics=Some(127.0.0.1:9090) startup_ms=3\n",
        )
        .unwrap();
        assert_eq!(
            metrics_addr(&log),
            Some(SocketAddr::from(([127, 0, 0, 1], 9090)))
        );
    }

    /// The whole subcommand with small numbers, against the `fluxadmit` binary.
    #[test]
    fn short_rapid_reset_run() {
        let cfg = RapidConfig {
            streams: 200,
            max_time: Duration::from_secs(30),
            batches: vec![1, 50],
            reviews: 50,
            concurrency: 4,
        };
        let r = run(&cfg).unwrap();
        assert_eq!(r.resets.len(), 2, "{r:?}");
        for run in &r.resets {
            assert_eq!(run.phase.count, 200, "{r:?}");
            assert!(!run.timed_out, "{r:?}");
            assert!(run.answered_after, "{r:?}");
        }
        assert_eq!(r.pings.count, 200, "{r:?}");
        assert_eq!(r.reviews.count, 50, "{r:?}");
        assert_eq!(r.reviews.failed, 0, "{r:?}");
        assert_eq!(r.reviews.closed_by_server, 0, "{r:?}");
        // The metrics address was found in the server's log, and its counters read.
        assert!(r.metrics.is_some(), "{r:?}");
        assert_eq!(r.reviews.cancelled, Some(0), "{r:?}");
        let md = markdown(&r);
        assert!(md.contains("| reset, PING every 1 | 200 | "), "{md}");
        assert!(md.contains("PING every 1: a reset stream costs "), "{md}");
    }
}
