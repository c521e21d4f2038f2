//! The binary run the way the chart's pod runs it: as uid/gid 65532 (when the test runs as
//! root, as CI does; otherwise as the current user), from an empty read-only working
//! directory, with the certificates and the policies mounted read-only and nothing writable
//! of its own. It serves, answers a review over TLS, and exits 0 on SIGTERM. An empty
//! read-only certificate directory is an error that says so, and nothing is written there.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use serde_json::json;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const POD_UID: u32 = 65532;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes a directory and its files read-only for everyone, as a kubelet volume mount is.
fn read_only(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        chmod(&e.unwrap().path(), 0o444);
    }
    chmod(dir, 0o555);
}

/// `fluxadmit` with the pod's user (when we may switch), an empty environment, and `cwd`. The
/// binary is copied into `base` first, as the image holds it: the pod's user may not be able
/// to reach the build's own (a checkout under a private directory).
fn pod_command(base: &Path, cwd: &Path) -> Command {
    let bin = base.join("fluxadmit");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_fluxadmit"), &bin).unwrap();
        chmod(&bin, 0o555);
    }
    let mut c = Command::new(bin);
    c.current_dir(cwd).env_clear().env("PATH", "/nonexistent");
    if rustix::process::geteuid().is_root() {
        // std drops root's supplementary groups when it switches the user.
        c.uid(POD_UID).gid(POD_UID);
    }
    c
}

/// Spawns the copied binary. Another test's spawn can fork while the copy is still open for
/// writing in this process; the forked child holds that descriptor until it execs, and exec
/// of the copy fails with ETXTBSY meanwhile. That passes in milliseconds: retry.
fn spawn(cmd: &mut Command) -> Child {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

/// A temp dir the pod's user can traverse (tempfile makes it 0700).
fn base() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    chmod(d.path(), 0o755);
    d
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fluxadmit did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_as_the_pod_user_from_read_only_mounts() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let base = base();
    let cwd = base.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    chmod(&cwd, 0o555);
    // The TLS Secret, as the chart mounts it at /certs.
    let certs = base.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["certs", "generate", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_only(&certs);
    // The policies ConfigMap, as the chart mounts it at /policies.
    let policies = base.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    for e in std::fs::read_dir(root.join("policies")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    read_only(&policies);

    let [port, mport] = common::free_ports::<2>();
    let mut child = spawn(
        pod_command(base.path(), &cwd)
            .args(["serve", "--log-format", "json", "--drain", "300ms"])
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(["--metrics-addr", &format!("127.0.0.1:{mport}")])
            .arg("--cert-dir")
            .arg(&certs)
            .arg("--policies")
            .arg(&policies)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );

    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        if let Ok(c) = common::connect(
            format!("127.0.0.1:{port}").parse().unwrap(),
            &ca,
            &[b"http/1.1"],
        )
        .await
        {
            break c;
        }
        if let Some(s) = child.try_wait().unwrap() {
            let mut err = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("fluxadmit exited ({s}) before serving: {err}");
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    if rustix::process::geteuid().is_root() {
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace()
                .skip(1)
                .all(|u| u == POD_UID.to_string()),
            "{uid}"
        );
    }

    // A HelmRelease that depends on itself: denied by the mounted default policies.
    let hr = json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "api", "namespace": "apps"},
        "spec": {"interval": "1h", "chart": {"spec": {"chart": "api", "sourceRef": {"kind": "HelmRepository", "name": "charts"}}},
                 "dependsOn": [{"name": "api"}]}});
    let resp = client
        .sender
        .review("/validate", &common::review_json("uid-pod", "CREATE", &hr))
        .await;
    let v = resp.json();
    assert_eq!(v["response"]["uid"], "uid-pod");
    assert_eq!(v["response"]["allowed"], false);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .contains("apps/api depends on itself"),
        "{v}"
    );
    drop(client);

    let (status, logs) = common::terminate(&mut child, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{logs}");
    // Nothing was written into the mounts or the working directory.
    assert!(std::fs::read_dir(&cwd).unwrap().next().is_none());
    assert_eq!(std::fs::read_dir(&certs).unwrap().count(), 4);
}

#[test]
fn an_empty_read_only_certificate_directory_is_named_and_left_alone() {
    let base = base();
    let cwd = base.path().join("cwd");
    std::fs::create_dir(&cwd).unwrap();
    chmod(&cwd, 0o555);
    let certs = base.path().join("certs");
    std::fs::create_dir(&certs).unwrap();
    chmod(&certs, 0o555);
    let mut child = spawn(
        pod_command(base.path(), &cwd)
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .arg("--cert-dir")
            .arg(&certs)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "{err}");
    assert!(err.contains(&certs.display().to_string()), "{err}");
    assert!(err.contains("cannot write"), "{err}");
    assert!(err.contains("mount a TLS Secret"), "{err}");
    assert!(std::fs::read_dir(&certs).unwrap().next().is_none());
}
