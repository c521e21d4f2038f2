//! `fluxadmit check` on repositories with HelmReleases: charts in the repository or in a
//! local chart cache (`--charts`) are rendered with a real `helm template`, with the values
//! helm-controller would compose, and the workloads they make are checked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Out, baseline_policy, helm, run_in, write};
use std::path::Path;
use std::process::Command;

/// `check --policies builtin --policies <baseline> [extra...] .`
fn check(cwd: &Path, extra: &[&str]) -> Out {
    check_in_env(cwd, extra, &[])
}

/// [`check`] with an empty PATH: no helm or kustomize unless `extra` names them.
fn check_without_path(cwd: &Path, extra: &[&str]) -> Out {
    check_in_env(cwd, extra, &[("PATH", "")])
}

fn check_in_env(cwd: &Path, extra: &[&str], env: &[(&str, &str)]) -> Out {
    let pol = baseline_policy();
    let mut args = vec!["check", "--policies", "builtin", "--policies", &pol];
    args.extend_from_slice(extra);
    args.push(".");
    run_in(cwd, &args, None, env)
}

/// A repository with one cluster ([`cluster_repo`]) and the chart `charts/web` ([`chart`]).
fn web_repo() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    cluster_repo(tmp.path());
    chart(tmp.path(), "charts/web", "web", "0.1.0");
    tmp
}

/// A chart whose Deployment's container is privileged when `.Values.privileged` is.
fn chart(root: &Path, dir: &str, name: &str, version: &str) {
    write(
        root,
        &format!("{dir}/Chart.yaml"),
        &format!("apiVersion: v2\nname: {name}\nversion: {version}\n"),
    );
    write(
        root,
        &format!("{dir}/values.yaml"),
        "privileged: false\nimage: ghcr.io/example/web:1.0.0\n",
    );
    write(
        root,
        &format!("{dir}/templates/deployment.yaml"),
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      containers:
        - name: web
          image: {{ .Values.image | quote }}
          securityContext:
            privileged: {{ .Values.privileged }}
",
    );
}

/// A repository with one cluster whose `apps` Kustomization applies `./apps`.
fn cluster_repo(root: &Path) {
    write(root, ".git/HEAD", "ref: refs/heads/main\n");
    write(
        root,
        "clusters/production/flux-system/gotk-sync.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: flux-system, namespace: flux-system}
spec: {interval: 1m, url: https://example.com/fleet.git, ref: {branch: main}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: flux-system, namespace: flux-system}
spec:
  interval: 10m
  path: ./clusters/production
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
",
    );
    write(
        root,
        "clusters/production/apps.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: apps, namespace: flux-system}
spec:
  interval: 10m
  path: ./apps
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
",
    );
}

/// A HelmRelease in namespace `apps` of the chart in the repository.
fn local_release(values: &str, extra: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: web, namespace: apps}}
spec:
  interval: 10m
  chart:
    spec:
      chart: ./charts/web
      sourceRef: {{kind: GitRepository, name: flux-system, namespace: flux-system}}
  values: {values}
{extra}"
    )
}

const FINDING: &str = "Deployment apps/web error: pod-security-baseline/baseline";

#[test]
fn a_privileged_container_rendered_from_a_chart_in_the_repository_is_caught() {
    let Some(helm) = helm() else { return };
    let tmp = web_repo();
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: true}", ""),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FINDING), "{}", out.stdout);
    assert!(out.stdout.contains("privileged"), "{}", out.stdout);
    assert!(
        out.stdout.contains("HelmRelease apps/web"),
        "applied by the release: {}",
        out.stdout
    );

    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", ""),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(FINDING), "{}", out.stdout);
    assert!(!out.stdout.contains("not available"), "{}", out.stdout);

    // Without helm the chart is found but not rendered: said once, and nothing is caught.
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: true}", ""),
    );
    let out = check_without_path(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("no helm found (PATH or --helm): 1 HelmRelease not rendered"),
        "{}",
        out.stdout
    );
    // ... and `--helm` names the binary when it is not on PATH.
    let helm = helm.display().to_string();
    let out = check_without_path(tmp.path(), &["--helm", &helm]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FINDING), "{}", out.stdout);
}

#[test]
fn values_from_a_config_map_in_the_repository_reach_the_chart() {
    let Some(_) = helm() else { return };
    let tmp = web_repo();
    let values_from = "  valuesFrom:
    - {kind: ConfigMap, name: web-values}
    - {kind: ConfigMap, name: web-missing, optional: true}
";
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{image: ghcr.io/example/web:2.0.0}", values_from),
    );
    let config = |privileged: &str| {
        format!(
            "apiVersion: v1
kind: ConfigMap
metadata: {{name: web-values, namespace: apps}}
data:
  values.yaml: |
    privileged: {privileged}
"
        )
    };
    write(tmp.path(), "apps/values.yaml", &config("true"));
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FINDING), "{}", out.stdout);

    // The same release with the ConfigMap saying false: clean.
    write(tmp.path(), "apps/values.yaml", &config("false"));
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(FINDING), "{}", out.stdout);

    // spec.values win over valuesFrom.
    write(tmp.path(), "apps/values.yaml", &config("true"));
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", values_from),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
}

/// A release of chart `name` from a HelmRepository.
fn repo_release(release: &str, chart: &str, version: &str, privileged: bool) -> String {
    format!(
        "---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: {release}, namespace: apps}}
spec:
  interval: 10m
  chart:
    spec:
      chart: {chart}
      version: \"{version}\"
      sourceRef: {{kind: HelmRepository, name: charts, namespace: flux-system}}
  values: {{privileged: {privileged}}}
"
    )
}

#[test]
fn charts_from_a_local_cache_are_rendered_and_absent_ones_are_named() {
    let Some(helm) = helm() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let cache = tmp.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    cluster_repo(&repo);
    // Two packaged versions: the range picks 1.4.0, the one that templates the container
    // as privileged (1.3.0 hard-codes `privileged: false`).
    let src = tmp.path().join("src");
    chart(&src, "web-1.4.0", "web", "1.4.0");
    chart(&src, "web-1.3.0", "web", "1.3.0");
    write(
        &src,
        "web-1.3.0/templates/deployment.yaml",
        &std::fs::read_to_string(src.join("web-1.4.0/templates/deployment.yaml"))
            .unwrap()
            .replace("{{ .Values.privileged }}", "false"),
    );
    for dir in ["web-1.4.0", "web-1.3.0"] {
        let out = Command::new(&helm)
            .arg("package")
            .arg(src.join(dir))
            .arg("--destination")
            .arg(&cache)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(cache.join("web-1.4.0.tgz").is_file());
    let charts = cache.display().to_string();

    write(
        &repo,
        "apps/web.yaml",
        &repo_release("web", "web", "1.x", true),
    );
    let out = check(&repo, &["--charts", &charts]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FINDING), "{}", out.stdout);
    assert!(!out.stdout.contains("not available"), "{}", out.stdout);

    // An exact version picks the older package, which is clean.
    write(
        &repo,
        "apps/web.yaml",
        &repo_release("web", "web", "1.3.0", true),
    );
    let out = check(&repo, &["--charts", &charts]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(FINDING), "{}", out.stdout);

    // Not in the cache (no such version; no such chart): named once, nothing fails.
    write(
        &repo,
        "apps/web.yaml",
        &(repo_release("web", "web", "2.x", true)
            + &repo_release("podinfo", "podinfo", "6.x", true)),
    );
    let out = check(&repo, &["--charts", &charts]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    let notes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("not available offline"))
        .collect();
    assert_eq!(notes.len(), 1, "{}", out.stdout);
    assert!(
        notes[0].contains("2 HelmReleases not rendered, 2 charts not available offline"),
        "{}",
        out.stdout
    );
    assert!(
        notes[0].contains("charts/web 2.x (HelmRelease apps/web)"),
        "{}",
        out.stdout
    );
    assert!(
        notes[0].contains("charts/podinfo 6.x (HelmRelease apps/podinfo)"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_chart_that_does_not_template_is_a_note_not_a_failure() {
    let Some(_) = helm() else { return };
    let tmp = web_repo();
    write(
        tmp.path(),
        "charts/web/templates/broken.yaml",
        "{{ required \"image.digest is required\" .Values.digest }}\n",
    );
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release(
            "{privileged: true}",
            "  postRenderers:\n    - kustomize: {patches: []}\n",
        ),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("HelmRelease apps/web: helm template failed:"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("image.digest is required"),
        "{}",
        out.stdout
    );
}

/// helm-controller runs a release's kustomize post-renderers over the chart's output, in
/// order: a patch there can make a container privileged and an `images` entry moves images
/// to another registry. Both reach the checked objects, and the chart alone is clean.
#[test]
fn post_renderers_change_what_is_checked() {
    let (Some(_), Some(_)) = (helm(), common::kustomize()) else {
        return;
    };
    let tmp = web_repo();
    // Images must come from the mirror: true only once the post-renderer has rewritten them.
    let registry = tmp.path().join("registry-policy.yaml");
    std::fs::write(
        &registry,
        "apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata: {name: mirror-only}
spec:
  match: {resources: [{apiGroups: [apps], kinds: [Deployment]}]}
  rules:
    - name: mirror
      expression:
        expression: \"object.spec.template.spec.containers.all(c, c.image.startsWith('mirror.example.com/'))\"
        message: images come from mirror.example.com
",
    )
    .unwrap();
    let registry = registry.display().to_string();
    let post = "  postRenderers:
    - kustomize:
        images:
          - {name: ghcr.io/example/web, newName: mirror.example.com/example/web}
    - kustomize:
        patches:
          - target: {kind: Deployment, name: web}
            patch: |
              - op: replace
                path: /spec/template/spec/containers/0/securityContext/privileged
                value: true
";
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", post),
    );
    let out = check(tmp.path(), &["--policies", &registry]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(FINDING), "{}", out.stdout);
    assert!(out.stdout.contains("privileged"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("images come from mirror.example.com"),
        "the image was rewritten: {}",
        out.stdout
    );
    assert!(!out.stdout.contains("not applied"), "{}", out.stdout);

    // Without the post-renderers: the chart's own image, and no privileged container.
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", ""),
    );
    let out = check(tmp.path(), &["--policies", &registry]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains(FINDING), "{}", out.stdout);
    assert!(
        out.stdout.contains("images come from mirror.example.com"),
        "{}",
        out.stdout
    );

    // Without a kustomize the chart is rendered as it is, and the summary says so.
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", post),
    );
    let helm = helm().unwrap().display().to_string();
    let out = check_without_path(tmp.path(), &["--helm", &helm]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "HelmRelease apps/web: postRenderers not applied (no kustomize: PATH or --kustomize)"
        ),
        "{}",
        out.stdout
    );

    // A post-renderer kustomize cannot build is named with the release, not a crash.
    let broken = "  postRenderers:
    - kustomize:
        patches:
          - target: {kind: Deployment, name: web}
            patch: |
              - op: replace
                path: /spec/no/such/path
                value: 1
";
    write(
        tmp.path(),
        "apps/web.yaml",
        &local_release("{privileged: false}", broken),
    );
    let out = check(tmp.path(), &[]);
    assert!(
        out.stdout
            .contains("HelmRelease apps/web: postRenderers[0]: kustomize build failed"),
        "{}{}",
        out.stdout,
        out.stderr
    );
}

/// A `valuesFrom` entry with a `targetPath` that names a list element (`extra[1].privileged`,
/// Helm's `--set` syntax) sets that element, growing the list, as helm-controller does.
#[test]
fn a_target_path_with_a_list_index_reaches_the_chart() {
    let Some(_) = helm() else { return };
    let tmp = web_repo();
    write(
        tmp.path(),
        "charts/web/templates/extra.yaml",
        "{{- range $i, $c := .Values.extra }}{{ if $c }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: extra-{{ $i }}
spec:
  selector: {matchLabels: {app: extra}}
  template:
    metadata: {labels: {app: extra}}
    spec:
      containers:
        - name: c
          image: ghcr.io/example/extra:1.0.0
          securityContext:
            privileged: {{ $c.privileged | default false }}
{{- end }}{{ end }}
",
    );
    write(
        tmp.path(),
        "apps/values.yaml",
        "apiVersion: v1
kind: ConfigMap
metadata: {name: web-flags, namespace: apps}
data: {on: \"true\", off: \"false\"}
",
    );
    let release = |key: &str| {
        local_release(
            "{}",
            &format!(
                "  valuesFrom:
    - {{kind: ConfigMap, name: web-flags, valuesKey: {key}, targetPath: \"extra[1].privileged\"}}
"
            ),
        )
    };
    write(tmp.path(), "apps/web.yaml", &release("on"));
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Deployment apps/extra-1 error: pod-security-baseline/baseline"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("extra-0"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("Deployment apps/web error"),
        "{}",
        out.stdout
    );

    write(tmp.path(), "apps/web.yaml", &release("off"));
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
}

/// A chart that renders a HelmRelease (an "umbrella" of releases): that release's chart is
/// rendered in turn and its workloads judged; a chart that keeps rendering releases of itself
/// stops three levels deep, with a note.
#[test]
fn helm_releases_a_chart_renders_are_rendered_in_turn() {
    let Some(_) = helm() else { return };
    let tmp = web_repo();
    let umbrella = |dir: &str, chart: &str| {
        write(
            tmp.path(),
            &format!("{dir}/Chart.yaml"),
            "apiVersion: v2\nname: umbrella\nversion: 1.0.0\n",
        );
        write(
            tmp.path(),
            &format!("{dir}/templates/release.yaml"),
            &format!(
                "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: inner-{{{{ .Release.Name }}}}
spec:
  interval: 10m
  chart:
    spec:
      chart: {chart}
      sourceRef: {{kind: GitRepository, name: flux-system, namespace: flux-system}}
  values: {{privileged: {{{{ .Values.privileged | default false }}}}}}
"
            ),
        );
    };
    umbrella("charts/umbrella", "./charts/web");
    let outer = |chart: &str, privileged: bool| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: outer, namespace: apps}}
spec:
  interval: 10m
  chart:
    spec:
      chart: {chart}
      sourceRef: {{kind: GitRepository, name: flux-system, namespace: flux-system}}
  values: {{privileged: {privileged}}}
"
        )
    };
    write(
        tmp.path(),
        "apps/web.yaml",
        &outer("./charts/umbrella", true),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("Deployment apps/inner-outer error: pod-security-baseline/baseline"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("(applied by HelmRelease apps/inner-outer)"),
        "{}",
        out.stdout
    );
    write(
        tmp.path(),
        "apps/web.yaml",
        &outer("./charts/umbrella", false),
    );
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);

    // A chart whose release renders a release of the same chart: three levels, then a note.
    umbrella("charts/again", "./charts/again");
    write(tmp.path(), "apps/web.yaml", &outer("./charts/again", false));
    let out = check(tmp.path(), &[]);
    assert_eq!(out.code, Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains("1 HelmRelease rendered by charts 3 levels deep not rendered"),
        "{}",
        out.stdout
    );
}
