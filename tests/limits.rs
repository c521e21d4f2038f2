//! Hardening of the webhook port against what clients do at its edges, over loopback TLS with
//! real clients: early answers (404, 405, 413, 503) reach curl over HTTP/2 and HTTP/1.1, a
//! drain loses no request of clients that reconnect, and each limit (connections, reviews in
//! flight, idle HTTP/2 connections) holds and is counted in `fluxadmit_limits_tripped`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Setup, TestServer};
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt as _;

use common::REQUIRE_TEAM as POLICIES;

fn review() -> serde_json::Value {
    let d = common::deployment("web", "apps", json!({"team": "a"}), &["nginx:1"]);
    common::review_json("u-1", "CREATE", &d)
}

fn tripped(srv: &TestServer, limit: &str) -> f64 {
    common::metric(
        &srv.state.metrics.encode(),
        "fluxadmit_limits_tripped_total",
        &[("limit", limit)],
    )
    .unwrap_or(0.0)
}

/// Runs curl against the server; returns (status, HTTP version) as curl saw them ("000" when
/// no status arrived).
fn curl(srv: &TestServer, http2: bool, method: &str, path: &str, body: &std::path::Path) -> String {
    let port = srv.addr.port();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg(if http2 { "--http2" } else { "--http1.1" })
        .arg("--cacert")
        .arg(srv.certs.path().join("ca.crt"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-X", method, "-H", "Content-Type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl (Debian package curl) runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answers_reach_curl_over_h2_and_http1() {
    let srv = Setup::new(POLICIES).start().await;
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.json");
    std::fs::write(&big, vec![b' '; 4 * 1024 * 1024]).unwrap();
    let small = dir.path().join("small.json");
    std::fs::write(&small, serde_json::to_vec(&review()).unwrap()).unwrap();
    let cases: [(&str, &str, &std::path::Path, &str); 3] = [
        ("POST", "/validate", &big, "413"),
        ("POST", "/nowhere", &small, "404"),
        ("PUT", "/validate", &small, "405"),
    ];
    let srv = Arc::new(srv);
    for (method, path, body, want) in cases {
        for http2 in [true, false] {
            let runs = if http2 { 50 } else { 20 };
            let s = srv.clone();
            let body = body.to_path_buf();
            let seen: Vec<String> = tokio::task::spawn_blocking(move || {
                (0..runs)
                    .map(|_| curl(&s, http2, method, path, &body))
                    .collect()
            })
            .await
            .unwrap();
            let version = if http2 { "2" } else { "1.1" };
            let expected = format!("{want} {version}");
            let missed: Vec<_> = seen.iter().filter(|s| **s != expected).collect();
            assert!(
                missed.is_empty(),
                "{method} {path} over HTTP/{version}: {} of {runs} not {expected}: {missed:?}",
                missed.len()
            );
        }
    }
}

/// Eight keep-alive clients that reconnect whenever an answer says `Connection: close`, through
/// a whole SIGTERM-style drain: every request written on an accepted connection is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_loses_no_request_of_reconnecting_clients() {
    let srv = Setup::new(POLICIES)
        .drain(Duration::from_millis(1500))
        .start()
        .await;
    let addr = srv.addr;
    let ca = srv.certs.ca_pem().to_owned();
    let body = serde_json::to_vec(&review()).unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let lost = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (ca, body) = (ca.clone(), body.clone());
        let (answered, lost, stop) = (answered.clone(), lost.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                // Refused (the listener closed at the end of the drain): nothing was written.
                let Ok(mut c) = common::connect(addr, &ca, &[b"http/1.1"]).await else {
                    break;
                };
                loop {
                    match c.sender.post("/validate", body.clone()).await {
                        Ok(resp) => {
                            assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
                            answered.fetch_add(1, Ordering::Relaxed);
                            if resp.header("connection") == Some("close") {
                                break;
                            }
                        }
                        Err(e) => {
                            lost.lock().unwrap().push(e.to_string());
                            break;
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = answered.load(Ordering::Relaxed);
    srv.running.begin_shutdown();
    common::within("drain", Duration::from_secs(15), srv.running.wait())
        .await
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        common::within("client", Duration::from_secs(10), c)
            .await
            .unwrap();
    }
    let total = answered.load(Ordering::Relaxed);
    let lost = lost.lock().unwrap();
    assert!(before > 0 && total > before + 50, "{before} then {total}");
    assert!(lost.is_empty(), "{} lost of {total}: {lost:?}", lost.len());
}

/// Reads from a held connection until it ends (EOF or an error), within `limit`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 256];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// `n` connections that finish the TLS handshake and then say nothing.
async fn silent_connections(
    srv: &TestServer,
    n: usize,
) -> Vec<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + use<>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(
            common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"http/1.1"])
                .await
                .unwrap(),
        );
    }
    out
}

/// At the connection cap a new connection takes the place of one with no request in flight:
/// one that has sent no request first (held longest first), then one idle longest. A flood of
/// connections that say nothing cannot lock out a client that connects to send a review, nor
/// take a kept-alive connection's place. A connection with a request in flight is never taken:
/// with every slot busy, a new connection is closed at accept, and the requests in flight are
/// all answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_idle_connections_make_room_and_busy_ones_do_not() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.max_connections = 4)
        .start()
        .await;
    let ca = srv.certs.ca_pem();
    let body = serde_json::to_vec(&review()).unwrap();

    // A kept-alive connection that has had a request, then three that say nothing.
    let mut kept = srv.connect(&[b"http/1.1"]).await;
    let r = kept.sender.post("/validate", body.clone()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    let mut fresh = silent_connections(&srv, 3).await;
    // A new connection takes the oldest silent one's place, not the kept-alive one's, though
    // the silent ones are younger than a second.
    let mut c = srv.connect(&[b"http/1.1"]).await;
    let r = c.sender.post("/validate", body.clone()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(
        closed_within(&mut fresh[0], Duration::from_secs(5)).await,
        "the oldest silent connection is still open"
    );
    let r = kept.sender.post("/validate", body.clone()).await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(tripped(&srv, "evicted"), 1.0);
    drop((kept, c, fresh));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Four connections that finish the TLS handshake and then say nothing, or (the last, a
    // slow-loris client) half a request line: it is dropped too, not left to the 30 s header
    // timeout.
    let mut silent = silent_connections(&srv, 4).await;
    silent[3].write_all(b"POST /validate HTT").await.unwrap();
    silent[3].flush().await.unwrap();
    // Past the second in which a client sends its first request.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A client that opens a connection for each review, and keeps them: every review is
    // answered; the first four take the silent connections' places, the next four those of
    // its own connections idle longest.
    let mut own = Vec::new();
    for i in 0..8 {
        let mut c = srv.connect(&[b"http/1.1"]).await;
        let r = c.sender.post("/validate", body.clone()).await.unwrap();
        assert_eq!(r.status, StatusCode::OK, "review {i}: {}", r.text());
        own.push(c);
    }
    for (i, s) in silent.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "silent connection {i} still open"
        );
    }
    assert!(tripped(&srv, "evicted") >= 9.0);
    assert_eq!(tripped(&srv, "connections"), 0.0);
    // The newest four are still served.
    for c in &mut own[4..] {
        assert_eq!(
            c.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
    }
    drop(own);

    // Four reviews whose bodies are still coming hold every slot.
    let mut busy = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while busy.len() < 4 {
        assert!(Instant::now() < deadline, "slots did not come back");
        let Ok(mut s) = common::tls_connect(srv.addr, ca, &[b"http/1.1"]).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        s.write_all(
            b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"apiVersion\"",
        )
        .await
        .unwrap();
        s.flush().await.unwrap();
        busy.push(s);
        // Its request reaches the server (and is in flight) before the next connects.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = common::connect(srv.addr, ca, &[b"http/1.1"]).await;
    let answered = match refused {
        Err(_) => false,
        Ok(mut c) => c.sender.get("/healthz").await.is_ok(),
    };
    assert!(
        !answered,
        "a fifth connection was served while four reviews were in flight"
    );
    assert!(tripped(&srv, "connections") >= 1.0);
    // Each review in flight gets its answer (a 400: its body is not a review).
    for (i, s) in busy.iter_mut().enumerate() {
        use tokio::io::AsyncReadExt as _;
        s.write_all(&[b' '; 87]).await.unwrap();
        s.flush().await.unwrap();
        let mut head = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
            .await
            .unwrap_or_else(|_| panic!("review {i} not answered"))
            .unwrap();
        assert_eq!(&head, b"HTTP/1.1 400", "review {i}");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_past_the_in_flight_cap_get_503() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.in_flight = tokio::sync::Semaphore::new(1))
        .start()
        .await;
    // A review whose body is still coming holds the only slot.
    let mut slow = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"http/1.1"])
        .await
        .unwrap();
    slow.write_all(
        b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"apiVersion\"",
    )
    .await
    .unwrap();
    slow.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut c = srv.connect(&[b"h2"]).await;
    let r = c
        .sender
        .post("/validate", serde_json::to_vec(&review()).unwrap())
        .await
        .unwrap();
    let msg = r.expect_error(StatusCode::SERVICE_UNAVAILABLE);
    assert!(msg.contains("too many reviews in flight"), "{msg}");
    assert_eq!(tripped(&srv, "in_flight"), 1.0);
    // Health checks are not reviews: they still answer.
    assert_eq!(
        c.sender.get("/healthz").await.unwrap().status,
        StatusCode::OK
    );

    // Once the slow review gives up, the slot is free again.
    drop(slow);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = c
            .sender
            .post("/validate", serde_json::to_vec(&review()).unwrap())
            .await
            .unwrap();
        if r.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the slot did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    srv.stop().await;
}

/// An HTTP/2 client that keeps its connection alive with PINGs but sends no request is told
/// to go away after the idle timeout; one that keeps sending is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h2_connections_are_closed_even_when_they_ping() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.idle_timeout = Duration::from_secs(1))
        .start()
        .await;
    let connect = || async {
        let tls = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"h2"])
            .await
            .unwrap();
        let mut b = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true);
        let (sender, conn) = b
            .handshake::<_, common::Body>(TokioIo::new(tls))
            .await
            .unwrap();
        (sender, tokio::spawn(conn))
    };
    let get = |s: &mut hyper::client::conn::http2::SendRequest<common::Body>| {
        let req = common::request(true, hyper::Method::GET, "/healthz", common::empty());
        let mut s = s.clone();
        async move { common::send_h2(&mut s, req).await }
    };

    let (mut idle, idle_conn) = connect().await;
    assert_eq!(get(&mut idle).await.unwrap().status, StatusCode::OK);
    let (mut busy, busy_conn) = connect().await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(get(&mut busy).await.unwrap().status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(idle_conn.is_finished(), "the idle connection is still open");
    assert!(!busy_conn.is_finished(), "the busy connection was closed");
    assert!(tripped(&srv, "idle") >= 1.0);
    srv.stop().await;
}

/// Slow-loris: a client that sends its request headers one byte a second is closed at the
/// header timeout, and the server keeps answering others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_loris_client_is_closed_at_the_header_timeout() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.header_timeout = Duration::from_secs(2))
        .start()
        .await;
    let mut slow = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"http/1.1"])
        .await
        .unwrap();
    let head = b"POST /validate HTTP/1.1\r\nHost: localhost\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let started = Instant::now();
    let mut closed_after = None;
    let mut other = srv.connect(&[b"h2"]).await;
    for b in head {
        if slow.write_all(&[*b]).await.is_err() || slow.flush().await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        assert_eq!(
            other.sender.get("/healthz").await.unwrap().status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let took = closed_after.expect("the slow client was never closed");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "closed after {took:?} with a 2 s header timeout"
    );
    srv.stop().await;
}

/// A connection that completes no TLS handshake is closed at the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_handshake_timeout() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.handshake_timeout = Duration::from_secs(1))
        .start()
        .await;
    let mut tcp = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = common::within(
        "the server closing",
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read(&mut tcp, &mut buf),
    )
    .await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(tripped(&srv, "idle") >= 1.0);
    srv.stop().await;
}

/// A client that sends requests and never reads the answers: once a write has waited the
/// write timeout, the connection is closed, with what it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_at_the_write_timeout() {
    let srv = Setup::new(POLICIES)
        .configure(|s| s.write_timeout = Duration::from_secs(1))
        .start()
        .await;
    let tls = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"http/1.1"])
        .await
        .unwrap();
    let (mut rd, mut wr) = tokio::io::split(tls);
    // 3,000 pipelined requests whose 404 answers echo an 8 KB path: ~25 MB of answers fill
    // every buffer between the two ends long before they are all written.
    let writer = tokio::spawn(async move {
        let one = format!(
            "GET /{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "a".repeat(8000)
        );
        for _ in 0..3000 {
            if wr.write_all(one.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while tripped(&srv, "write_stalled") < 1.0 {
        assert!(Instant::now() < deadline, "no write stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What was written before the close can still be read, then the end.
    let mut sink = Vec::new();
    let read = common::within(
        "reading to the close",
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut rd, &mut sink),
    )
    .await;
    let answers = sink.windows(12).filter(|w| w == b"HTTP/1.1 404").count();
    assert!(answers < 3000, "{answers} answers, {read:?}");
    writer.abort();
    // The server still answers everyone else.
    let mut c = srv.connect(&[b"http/1.1"]).await;
    assert_eq!(
        c.sender.get("/healthz").await.unwrap().status,
        StatusCode::OK
    );
    srv.stop().await;
}

/// HTTP/2 rapid reset (CVE-2023-44487): streams opened and cancelled at once, as fast as a
/// client can. The connection is cut off (GOAWAY) or the flood runs out, and a well-behaved
/// client on its own connection is answered throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_does_not_starve_other_clients() {
    let srv = Setup::new(POLICIES).start().await;
    let tls = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let body = serde_json::to_vec(&review()).unwrap();
    let flood = tokio::spawn(async move {
        let mut client = client;
        let mut sent = 0usize;
        for _ in 0..50_000 {
            client = match client.ready().await {
                Ok(c) => c,
                Err(_) => break,
            };
            let req = hyper::Request::post("https://localhost/validate")
                .body(())
                .unwrap();
            let Ok((resp, mut stream)) = client.send_request(req, false) else {
                break;
            };
            let _ = stream.send_data(bytes::Bytes::from_static(b"{"), false);
            stream.send_reset(h2::Reason::CANCEL);
            drop(resp);
            sent += 1;
        }
        sent
    });
    let mut c = srv.connect(&[b"h2"]).await;
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        let t = Instant::now();
        let r = common::within(
            "a review during the flood",
            Duration::from_secs(5),
            c.sender.review("/validate", &review()),
        )
        .await;
        assert_eq!(common::review_response(&r, "u-1")["allowed"], true);
        slowest = slowest.max(t.elapsed());
    }
    let sent = flood.await.unwrap();
    let _ = common::within("the flood connection", Duration::from_secs(10), conn).await;
    assert!(
        slowest < Duration::from_secs(2),
        "a review took {slowest:?} during the flood ({sent} streams reset)"
    );
    let _ = body;
    srv.stop().await;
}

/// A review whose stream the client resets while its body is on the way is counted as
/// cancelled, not as a failed read: a rapid-reset flood does not look like a broken client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_by_the_client_is_counted_as_cancelled() {
    let srv = Setup::new(POLICIES).start().await;
    let tls = common::tls_connect(srv.addr, srv.certs.ca_pem(), &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let idle_slots = srv.state.in_flight.available_permits();
    let body = serde_json::to_vec(&review()).unwrap();
    let req = hyper::Request::post("https://localhost/validate")
        .header("content-length", body.len())
        .body(())
        .unwrap();
    let (_resp, mut stream) = client.send_request(req, false).unwrap();
    stream
        .send_data(
            bytes::Bytes::copy_from_slice(&body[..body.len() / 2]),
            false,
        )
        .unwrap();
    // Reset only once the handler holds its in-flight slot, i.e. it is reading the body. (A
    // PING is no such signal: h2 writes a queued PING ahead of queued stream frames.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.state.in_flight.available_permits() == idle_slots {
        assert!(
            Instant::now() < deadline,
            "the review never reached its handler"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stream.send_reset(h2::Reason::CANCEL);
    let bad = |reason: &str| {
        common::metric(
            &srv.state.metrics.encode(),
            "fluxadmit_bad_requests_total",
            &[("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.state.in_flight.available_permits() != idle_slots && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let counts = ["cancelled", "read", "timeout", "malformed"].map(|r| (r, bad(r)));
    assert_eq!(
        counts,
        [
            ("cancelled", 1.0),
            ("read", 0.0),
            ("timeout", 0.0),
            ("malformed", 0.0)
        ],
        "the reset review is counted once, as cancelled"
    );
    drop(client);
    conn.abort();
    srv.stop().await;
}

/// `--h2-max-concurrent-streams` and `--h2-max-header-list-size` reach the client in the
/// server's SETTINGS, through the binary's flags: the stream limit is what the client may
/// open, and a header list past the size is answered 431 while one under it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_stream_and_header_limits_are_announced_and_held() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve_child(
        dir.path(),
        &[
            "--drain",
            "0s",
            "--h2-max-concurrent-streams",
            "3",
            "--h2-max-header-list-size",
            "4096",
        ],
    )
    .await;
    let tls = common::tls_connect(served.addr, &served.ca, &[b"h2"])
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::pin!(conn);
    let mut client = client.ready().await.unwrap();
    let mut get = |header: usize| {
        let req = hyper::Request::get("https://localhost/healthz")
            .header("x-padding", "p".repeat(header))
            .body(())
            .unwrap();
        client.send_request(req, true).unwrap().0
    };
    let (small, big) = (get(2000), get(6000));
    let statuses = common::within("both answers", Duration::from_secs(10), async {
        let both = async { (small.await.unwrap().status(), big.await.unwrap().status()) };
        tokio::select! {
            s = both => s,
            r = conn.as_mut() => panic!("connection ended: {r:?}"),
        }
    })
    .await;
    assert_eq!(
        statuses,
        (StatusCode::OK, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    assert_eq!(conn.max_concurrent_send_streams(), 3);
}
