//! Memory stays bounded under unfinished bodies (hardening finding D3): three HTTP/2
//! connections, each with 100 streams that send just under 3 MiB and never finish, made a
//! server without a cap grow by 2.3 GiB. With `--max-requests-in-flight` the bodies held at
//! once are capped: the rest are answered 503 and their bytes thrown away. Measured as the
//! RSS of a `fluxadmit serve` child process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::Method;
use std::time::{Duration, Instant};

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_bodies_cannot_grow_memory_past_the_in_flight_cap() {
    let dir = tempfile::tempdir().unwrap();
    let served = common::serve_child(
        dir.path(),
        &["--drain", "0s", "--max-requests-in-flight", "16"],
    )
    .await;
    let (addr, ca) = (served.addr, served.ca);
    let mut child = served.child;
    let before = rss_mib(child.0.id());

    // 3 connections × 100 streams, each sending 3 MiB − 1 of body and never ending it.
    let chunk = Bytes::from(vec![b' '; 256 * 1024]);
    let per_stream = 3 * 1024 * 1024 - 1;
    let mut senders = Vec::new();
    let mut answers = Vec::new();
    for _ in 0..3 {
        let c = common::connect(addr, &ca, &[b"h2"]).await.unwrap();
        for _ in 0..100 {
            let (mut tx, body) =
                http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(2);
            let req = common::request(true, Method::POST, "/validate", body.boxed());
            let mut s = c.h2();
            answers.push(tokio::spawn(
                async move { common::send_h2(&mut s, req).await },
            ));
            let chunk = chunk.clone();
            senders.push(tokio::spawn(async move {
                let mut sent = 0;
                while sent < per_stream {
                    let n = chunk.len().min(per_stream - sent);
                    if tx.send_data(chunk.slice(..n)).await.is_err() {
                        return;
                    }
                    sent += n;
                }
                // Never ends: hold the stream open.
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(tx);
            }));
        }
        std::mem::forget(c.task);
    }
    // Let the bodies arrive, sampling the server's memory.
    let mut peak = before;
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        peak = peak.max(rss_mib(child.0.id()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unavailable = answers.iter().filter(|a| a.is_finished()).count();
    // 16 bodies of 3 MiB may be held at once; allocator slack and the connections' windows
    // on top. Without the cap this grew by over 800 MiB per connection.
    let grown = peak - before;
    assert!(
        grown < 16.0 * 3.0 + 150.0,
        "RSS grew {grown:.0} MiB ({before:.0} → {peak:.0}); {unavailable} streams answered"
    );
    assert!(
        unavailable >= 200,
        "only {unavailable} of 300 streams were answered"
    );
    for s in senders {
        s.abort();
    }
    let (status, _) = common::terminate(&mut child.0, Duration::from_secs(15)).await;
    assert!(status.success(), "{status:?}");
}
