//! `fluxadmit check --base REV`: in a git work tree, only the findings a change introduces.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::check;
use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn release(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata: {{name: {name}, namespace: apps}}\nspec:\n  chart: {{spec: {{chart: {name}, sourceRef: {{kind: HelmRepository, name: charts}}}}}}\n  valuesFrom: [{{kind: Secret, name: {secret}}}]\n"
    )
}

#[test]
fn only_findings_new_against_the_base_revision_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path();
    git(repo, &["init", "--quiet", "--initial-branch=main"]);
    // The base already has one problem: `old` needs a Secret nobody provides.
    std::fs::create_dir_all(repo.join("apps")).unwrap();
    std::fs::write(repo.join("apps/old.yaml"), release("old", "old-values")).unwrap();
    git(repo, &["add", "."]);
    git(repo, &["commit", "--quiet", "-m", "base"]);

    // The change keeps it, moves it down a line, and adds a new one.
    std::fs::write(
        repo.join("apps/old.yaml"),
        format!("# moved\n{}", release("old", "old-values")),
    )
    .unwrap();
    std::fs::write(repo.join("apps/new.yaml"), release("new", "new-values")).unwrap();

    let (code, out) = check(repo, &["apps"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Secret apps/old-values not found"), "{out}");
    assert!(out.contains("Secret apps/new-values not found"), "{out}");

    let (code, out) = check(repo, &["--base", "HEAD", "apps"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("Secret apps/new-values not found"), "{out}");
    assert!(!out.contains("old-values"), "{out}");
    assert!(
        out.contains("--base HEAD: 1 finding already there left out"),
        "{out}"
    );

    // From a subdirectory, the same files are compared.
    let (code, out) = check(&repo.join("apps"), &["--base", "HEAD", "."]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("old-values"), "{out}");

    // Fixing the new problem leaves nothing new: exit 0 although the old one is still there.
    std::fs::remove_file(repo.join("apps/new.yaml")).unwrap();
    let (code, out) = check(repo, &["--base", "HEAD", "apps"]);
    assert_eq!(code, Some(0), "{out}");

    // The temporary worktree is gone; a bad revision is an input error.
    let list = Command::new("git")
        .current_dir(repo)
        .args(["worktree", "list"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), 1);
    let (code, out) = check(repo, &["--base", "no-such-rev", "apps"]);
    assert_eq!(code, Some(2), "{out}");
}
