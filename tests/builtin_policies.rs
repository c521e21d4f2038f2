//! The built-in policy set: compiled in from `policies/*.yaml`, so `serve`, `review`, `check`
//! and `policies` work from any directory. Each test runs the real binary from an empty
//! temporary directory; `--policies` replaces the set, `--policies builtin` brings it back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use fluxadmit_core::policy::builtin;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for one run of the binary (review, check, policies).
const RUN_LIMIT: Duration = Duration::from_secs(30);

const DEFAULTS: [&str; 3] = [
    "flux-dependencies",
    "flux-referenced-secrets",
    "restricted-security-context",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cycle_review() -> PathBuf {
    root().join("examples/reviews/helmrelease-cycle.json")
}

fn state() -> PathBuf {
    root().join("examples/state")
}

fn example(file: &str) -> PathBuf {
    root().join("policies/examples").join(file)
}

/// Kills the child when dropped (a failing assertion must not leave a server running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the binary in `cwd` with no inherited policy settings, bounded by [`RUN_LIMIT`].
fn run(cwd: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(args)
        .current_dir(cwd)
        .env_remove("FLUXADMIT_POLICIES")
        .env_remove("FLUXADMIT_STATE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let mut guard = Guard(child);
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "fluxadmit {args:?}: still running after {RUN_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

macro_rules! args {
    ($($a:expr),* $(,)?) => { &[$(std::ffi::OsStr::new(&$a)),*][..] };
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The names and sources `fluxadmit policies` lists (lines without indentation are names).
fn listed(stdout: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    for line in stdout.lines() {
        if let Some(src) = line.strip_prefix("  source:") {
            out.push((name.take().unwrap(), src.trim().to_owned()));
        } else if !line.starts_with(' ') && !line.is_empty() {
            name = Some(line.to_owned());
        }
    }
    out
}

#[test]
fn the_embedded_list_is_every_default_policy_file() {
    let mut on_disk: Vec<(String, String)> = std::fs::read_dir(root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    on_disk.sort();
    let embedded: Vec<(String, String)> = builtin::FILES
        .iter()
        .map(|(f, t)| ((*f).to_owned(), (*t).to_owned()))
        .collect();
    let names = |v: &[(String, String)]| v.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&embedded),
        names(&on_disk),
        "src/policy/builtin.rs FILES must list exactly policies/*.yaml (sorted)"
    );
    assert_eq!(embedded, on_disk);
}

#[test]
fn the_builtin_set_compiles_with_builtin_sources() {
    let set = builtin::load().unwrap();
    let got: Vec<(&str, &str)> = set
        .policies
        .iter()
        .map(|p| (&*p.name, p.source.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("flux-dependencies", "builtin:flux-dependencies.yaml"),
            (
                "flux-referenced-secrets",
                "builtin:flux-referenced-secrets.yaml"
            ),
            (
                "restricted-security-context",
                "builtin:restricted-security-context.yaml"
            ),
        ]
    );
}

#[test]
fn review_uses_the_builtin_set_from_an_empty_directory() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::copy(cycle_review(), cwd.path().join("cycle.json")).unwrap();
    let out = run(
        cwd.path(),
        args!["review", "--state", state(), "cycle.json"],
    );
    // A denial: exit 1, the answer on stdout.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("flux-dependencies/depends-on") && msg.contains("dependency cycle"),
        "{msg}"
    );
}

#[test]
fn check_uses_the_builtin_set_from_an_empty_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let repo = root().join("tests/fixtures/repo");
    let out = run(cwd.path(), args!["check", repo]);
    let stdout = text(&out.stdout);
    // The fixture repository has a cycle: the built-in flux-dependencies policy finds it.
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("flux-dependencies/depends-on") && stdout.contains("dependency cycle"),
        "{stdout}"
    );
    assert!(stdout.contains("checked "), "{stdout}");

    // And a clean file passes.
    std::fs::write(
        cwd.path().join("ok.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\n",
    )
    .unwrap();
    let out = run(cwd.path(), args!["check", "ok.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn policies_lists_the_builtin_set() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cwd.path(), args!["policies"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = listed(&stdout);
    let want: Vec<(String, String)> = DEFAULTS
        .iter()
        .map(|n| ((*n).to_owned(), format!("builtin:{n}.yaml")))
        .collect();
    assert_eq!(got, want, "{stdout}");
    // Action and each rule with its kind.
    assert!(stdout.contains("action:   Enforce"), "{stdout}");
    for (rule, kind) in [
        ("depends-on", "dependsOn"),
        ("referenced-secrets", "referencedSecrets"),
        ("security-context-defaults", "mutate"),
    ] {
        assert!(
            stdout.lines().any(|l| l
                .split_whitespace()
                .collect::<Vec<_>>()
                .ends_with(&[rule, kind])),
            "{rule} ({kind}): {stdout}"
        );
    }
    assert!(
        stdout.contains("namespace labels toolkit.fluxcd.io/tenant"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("3 policies, 3 rules"),
        "{stdout}"
    );
}

#[test]
fn policies_yaml_prints_the_documents_and_loads_again() {
    let cwd = tempfile::tempdir().unwrap();
    let out = run(cwd.path(), args!["policies", "--output", "yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    assert_eq!(yaml.matches("---\n").count(), 3, "{yaml}");
    assert!(
        yaml.contains("# source: builtin:flux-dependencies.yaml"),
        "{yaml}"
    );
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    let names: Vec<&str> = docs
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, DEFAULTS);
    for (d, (file, text)) in docs.iter().zip(builtin::FILES) {
        let original: serde_json::Value = serde_saphyr::from_str(text).unwrap();
        assert_eq!(d, &original, "{file}");
    }
    // The printed set is a policy file: it replaces the built-in set with the same policies.
    std::fs::write(cwd.path().join("all.yaml"), &yaml).unwrap();
    let out = run(cwd.path(), args!["policies", "--policies", "all.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = listed(&text(&out.stdout));
    assert_eq!(
        got.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        DEFAULTS
    );
    assert!(got.iter().all(|(_, s)| s == "all.yaml"), "{got:?}");
}

#[test]
fn a_missing_path_names_itself_and_the_working_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let shown = cwd.path().canonicalize().unwrap();
    let review = cycle_review();
    for args in [
        args!["policies", "--policies", "./polcies"],
        args!["review", "--policies", "./polcies", review],
        args!["check", "--policies", "./polcies", review],
        args![
            "policies",
            "--policies",
            "builtin",
            "--policies",
            "./polcies"
        ],
    ] {
        let out = run(cwd.path(), args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let want = format!(
            "error: --policies ./polcies: no such file or directory (working directory {}); \
             use --policies builtin for the built-in set",
            shown.display()
        );
        assert!(stderr.contains(&want), "{args:?}: {stderr}");
        assert!(!stderr.contains(": :"), "{stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // The same for `serve`, before it binds anything or writes certificates.
    let out = run(
        cwd.path(),
        args![
            "serve",
            "--policies",
            "policies",
            "--addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--cert-dir",
            cwd.path().join("certs"),
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: --policies policies: no such file or directory (working directory {});",
            shown.display()
        )),
        "{stderr}"
    );
    assert!(!cwd.path().join("certs").exists());
}

#[test]
fn builtin_beside_a_file_loads_both() {
    let cwd = tempfile::tempdir().unwrap();
    let tiered = example("tiered-deployment.yaml");
    let out = run(
        cwd.path(),
        args!["policies", "--policies", "builtin", "--policies", tiered],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let got = listed(&text(&out.stdout));
    let mut want: Vec<(String, String)> = DEFAULTS
        .iter()
        .map(|n| ((*n).to_owned(), format!("builtin:{n}.yaml")))
        .collect();
    want.push(("tiered-deployment".into(), tiered.display().to_string()));
    want.sort();
    assert_eq!(got, want);

    // Comma-separated (as FLUXADMIT_POLICIES takes it), and `builtin` twice is still once.
    let out = run(
        cwd.path(),
        args![
            "policies",
            "--policies",
            format!("builtin,{},builtin", tiered.display())
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(listed(&text(&out.stdout)), want);

    // The added policy takes part in review: a tier-labelled release depending on a higher
    // tier is now denied by tiered-deployment too, and the cycle still by flux-dependencies.
    let out = run(
        cwd.path(),
        args![
            "review",
            "--state",
            state(),
            "--policies",
            "builtin",
            "--policies",
            tiered,
            cycle_review(),
        ],
    );
    // A denial: exit 1, the answer on stdout.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(msg.contains("flux-dependencies/depends-on"), "{msg}");
    assert!(
        msg.contains("tiered-deployment/tiers: spec.dependsOn[0]: apps/database (tier 1) depends on apps/frontend (tier 4)"),
        "{msg}"
    );
}

#[test]
fn a_file_alone_replaces_the_builtin_set() {
    let cwd = tempfile::tempdir().unwrap();
    let tiered = example("tiered-deployment.yaml");
    let out = run(cwd.path(), args!["policies", "--policies", tiered]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        listed(&text(&out.stdout)),
        [("tiered-deployment".to_owned(), tiered.display().to_string())]
    );
    // Without flux-dependencies the cycle is not looked for.
    let out = run(
        cwd.path(),
        args![
            "review",
            "--state",
            state(),
            "--policies",
            example("required-labels.yaml"),
            cycle_review(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["response"]["allowed"], true, "{v}");
    let answer = v.to_string();
    assert!(answer.contains("required-labels/team-label"), "{answer}");
    assert!(!answer.contains("dependency cycle"), "{answer}");
}

#[test]
fn a_policy_error_in_a_file_beside_builtin_names_both_sources() {
    let cwd = tempfile::tempdir().unwrap();
    // The same policy name as a built-in one: refused, naming the file and builtin:….
    std::fs::write(cwd.path().join("dup.yaml"), builtin::FILES[0].1).unwrap();
    let out = run(
        cwd.path(),
        args![
            "policies",
            "--policies",
            "builtin",
            "--policies",
            "dup.yaml"
        ],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("dup.yaml: policy \"flux-dependencies\": metadata.name: duplicate policy name (also defined in builtin:flux-dependencies.yaml)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_from_an_empty_directory_denies_the_cycle_and_exits_zero_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let [port, mport] = common::free_ports::<2>();
    let child = Command::new(env!("CARGO_BIN_EXE_fluxadmit"))
        .args(["serve", "--drain", "300ms"])
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{mport}")])
        .arg("--cert-dir")
        .arg(cwd.path().join("certs"))
        .arg("--state")
        .arg(state())
        .current_dir(cwd.path())
        .env_remove("FLUXADMIT_POLICIES")
        .env_remove("FLUXADMIT_STATE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = Guard(child);

    let ca_path = cwd.path().join("certs/ca.crt");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut client = loop {
        if let Ok(ca) = std::fs::read_to_string(&ca_path)
            && let Ok(c) = common::within(
                "connect",
                Duration::from_secs(5),
                common::connect(
                    format!("127.0.0.1:{port}").parse().unwrap(),
                    &ca,
                    &[b"http/1.1"],
                ),
            )
            .await
        {
            break c;
        }
        if let Some(s) = guard.0.try_wait().unwrap() {
            let mut logs = String::new();
            guard
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut logs)
                .unwrap();
            panic!("serve exited with {s}: {logs}");
        }
        assert!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let body: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cycle_review()).unwrap()).unwrap();
    let resp = common::within(
        "review",
        Duration::from_secs(10),
        client.sender.review("/validate", &body),
    )
    .await;
    let v = resp.json();
    assert_eq!(v["response"]["allowed"], false, "{v}");
    let msg = v["response"]["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("flux-dependencies/depends-on") && msg.contains("dependency cycle"),
        "{msg}"
    );
    drop(client);

    let (status, logs) = common::terminate(&mut guard.0, Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{logs}");
}
