//! `fluxadmit-bench repo`: `fluxadmit check` timed on a generated Flux repository: one
//! cluster whose flux-system Kustomization applies N app Kustomizations, each applying a
//! directory of HelmReleases (a dependsOn chain per app, a values Secret each). Without
//! `--kustomize` every app directory is read as kustomize-controller reads a plain directory
//! (no builds); with it each has a `kustomization.yaml` and a `targetNamespace`, so every
//! app goes through kustomize.

use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Writes the repository; returns (Kustomizations, HelmReleases) written.
pub fn generate(
    root: &Path,
    kustomizations: usize,
    releases: usize,
    builds: bool,
) -> anyhow::Result<(usize, usize)> {
    let write = |rel: &str, text: &str| -> anyhow::Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().context("no parent")?)?;
        std::fs::write(&p, text).with_context(|| p.display().to_string())
    };
    write(".git/HEAD", "ref: refs/heads/main\n")?;
    write(
        "clusters/prod/flux-system/gotk-sync.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {interval: 1m, url: https://example.com/fleet.git}\n---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {name: flux-system, namespace: flux-system}\nspec: {interval: 10m, path: ./clusters/prod, prune: true, sourceRef: {kind: GitRepository, name: flux-system}}\n",
    )?;
    let per_app = releases.div_ceil(kustomizations.max(1));
    let mut apps = String::new();
    let mut written = 0;
    for k in 0..kustomizations {
        let ns = format!("team-{k}");
        let target = if builds {
            format!("  targetNamespace: {ns}\n")
        } else {
            String::new()
        };
        let depends = if k > 0 {
            format!("  dependsOn: [{{name: app-{}}}]\n", k - 1)
        } else {
            String::new()
        };
        apps.push_str(&format!(
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: app-{k}, namespace: flux-system}}\nspec:\n  interval: 10m\n  path: ./apps/app-{k}\n  prune: true\n  sourceRef: {{kind: GitRepository, name: flux-system}}\n{target}{depends}  postBuild:\n    substitute: {{TEAM: {ns}}}\n"
        ));
        let mut rel = String::new();
        let mut names = Vec::new();
        for r in 0..per_app {
            if written == releases {
                break;
            }
            let dep = if r > 0 {
                format!("  dependsOn: [{{name: release-{}}}]\n", r - 1)
            } else {
                String::new()
            };
            rel.push_str(&format!(
                "---\napiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: release-{r}\n  namespace: ${{TEAM}}\nspec:\n  interval: 10m\n  chart: {{spec: {{chart: app, version: 1.x, sourceRef: {{kind: HelmRepository, name: charts, namespace: flux-system}}}}}}\n{dep}  valuesFrom:\n    - {{kind: Secret, name: values-{r}}}\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: values-{r}\n  namespace: ${{TEAM}}\nstringData: {{values.yaml: 'replicas: 2'}}\n"
            ));
            names.push(format!("releases-{r}.yaml"));
            written += 1;
        }
        write(&format!("apps/app-{k}/releases.yaml"), &rel)?;
        if builds {
            write(
                &format!("apps/app-{k}/kustomization.yaml"),
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [releases.yaml]\n",
            )?;
        }
    }
    write("clusters/prod/apps.yaml", &apps)?;
    Ok((kustomizations, written))
}

pub struct Run {
    pub wall: Duration,
    pub summary: String,
}

/// Runs `fluxadmit check .` in the repository `runs` times. `path` is PATH for the child
/// (empty: no kustomize or helm to be found).
pub fn time_check(bin: &Path, repo: &Path, runs: usize, path: &str) -> anyhow::Result<Vec<Run>> {
    let mut out = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let o = Command::new(bin)
            .current_dir(repo)
            .env("PATH", path)
            .args(["check", "."])
            .output()
            .with_context(|| bin.display().to_string())?;
        let wall = start.elapsed();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let summary = stdout
            .lines()
            .rfind(|l| l.starts_with("checked "))
            .unwrap_or("")
            .to_owned();
        anyhow::ensure!(
            o.status.code() == Some(0),
            "check failed ({:?}): {}{}",
            o.status.code(),
            stdout,
            String::from_utf8_lossy(&o.stderr)
        );
        out.push(Run { wall, summary });
    }
    Ok(out)
}

/// The whole benchmark: a table row per mode.
pub fn run(
    kustomizations: usize,
    releases: usize,
    runs: usize,
    kustomize_dir: Option<PathBuf>,
) -> anyhow::Result<String> {
    let bin = crate::startup::fluxadmit_binary()?;
    let mut table = String::from(
        "| repository | kustomize builds | runs | median | min | max | result |\n|---|---|--:|--:|--:|--:|---|\n",
    );
    let mut modes = vec![(false, String::new())];
    if let Some(d) = kustomize_dir {
        // Absolute: the check runs inside the generated repository.
        let d = std::fs::canonicalize(&d).with_context(|| d.display().to_string())?;
        modes.push((true, d.display().to_string()));
    }
    for (builds, path) in modes {
        let tmp = tempfile::tempdir()?;
        let (k, r) = generate(tmp.path(), kustomizations, releases, builds)?;
        let mut runs = time_check(&bin, tmp.path(), runs, &path)?;
        runs.sort_by_key(|r| r.wall);
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        table.push_str(&format!(
            "| {k} Kustomizations, {r} HelmReleases | {} | {} | {} | {} | {} | {} |\n",
            if builds {
                "one per Kustomization"
            } else {
                "none"
            },
            runs.len(),
            ms(runs[runs.len() / 2].wall),
            ms(runs[0].wall),
            ms(runs[runs.len() - 1].wall),
            runs[0].summary
        ));
    }
    Ok(table)
}
