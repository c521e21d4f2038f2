//! How `serve` stops: Ctrl-C (SIGINT) on an idle server exits at once; SIGTERM (what the
//! kubelet sends) keeps answering for the whole drain period first. Both exit 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A server with a 3 s drain, once it accepts connections.
fn serve(dir: &tempfile::TempDir) -> Child {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let port = common::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["serve", "--drain", "3s"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{}", common::free_port()),
        ])
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .arg("--policies")
        .arg(root.join("policies"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Sends `signal` and returns how long the exit took, and the exit code.
fn stop(mut child: Child, signal: &str) -> (Duration, Option<i32>) {
    let sent = Instant::now();
    assert!(
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return (sent.elapsed(), s.code());
        }
        if sent.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("no exit 15 s after {signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ctrl_c_on_an_idle_server_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (took, code) = stop(serve(&dir), "-INT");
    assert_eq!(code, Some(0));
    assert!(
        took < Duration::from_secs(1),
        "took {took:?} with a 3 s drain"
    );
}

#[test]
fn sigterm_keeps_the_drain() {
    let dir = tempfile::tempdir().unwrap();
    let (took, code) = stop(serve(&dir), "-TERM");
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_secs(3),
        "took {took:?} with a 3 s drain"
    );
}
