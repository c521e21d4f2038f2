//! Flux applies sets, not single objects: a Flux apply simulator (tests/sim) drives fluxadmit
//! through the request sequences kustomize-controller, helm-controller, external-secrets and
//! the API server produce, and checks that fluxadmit never turns a repository that converges
//! without it into one that does not, while broken repositories still get a warning or denial.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod sim;

use fluxadmit_core::cluster::{ClusterView, Tracked};
use fluxadmit_core::policy::PolicySet;
use fluxadmit_core::policy::load::load_paths;
use fluxadmit_core::state::Snapshot;
use proptest::prelude::*;
use serde_json::{Value, json};
use sim::flux::{
    Key, ROOT_NAME, ROOT_NS, ROOT_PATH, Repo, Run, Sim, config_map, deployment, external_secret,
    helm_release, kustomization, namespace, pod_spec, secret,
};
use sim::generate::{self, DEFECTS, Options, Tape};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Ticks a run may take (a tick is one retryInterval).
const LIMIT: usize = 12;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `policies/` (the defaults) plus the given files, loaded once per combination.
fn policies(extra: &[&Path]) -> PolicySet {
    static CACHE: OnceLock<Mutex<BTreeMap<Vec<PathBuf>, PolicySet>>> = OnceLock::new();
    let mut paths = vec![root().join("policies")];
    paths.extend(extra.iter().map(|p| p.to_path_buf()));
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(paths.clone())
        .or_insert_with(|| load_paths(&paths).unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

fn default_policies() -> PolicySet {
    policies(&[])
}

fn with_example(file: &str) -> PolicySet {
    policies(&[&root().join("policies/examples").join(file)])
}

/// What went wrong, for assertion messages: what is not ready, controller errors, denials.
fn report(sim: &Sim) -> String {
    let mut out = format!("not ready: {:?}\n", sim.not_ready());
    let mut seen = std::collections::BTreeSet::new();
    for f in &sim.failures {
        if seen.insert((f.who.clone(), f.error.clone())) {
            out.push_str(&format!("  tick {} {}: {}\n", f.tick, f.who, f.error));
        }
    }
    out
}

fn run(repo: Repo, policies: Option<PolicySet>) -> (Sim, Run) {
    let mut sim = Sim::new(repo, policies);
    let r = sim.run(LIMIT);
    (sim, r)
}

#[track_caller]
fn assert_converged(sim: &Sim, r: &Run, what: &str) {
    assert!(
        r.converged,
        "{what}: did not converge in {} ticks\n{}",
        r.ticks,
        report(sim)
    );
}

/// The records of reviews about `key`.
fn reviews_of<'a>(sim: &'a Sim, key: &'a Key) -> impl Iterator<Item = &'a sim::flux::Record> {
    sim.records.iter().filter(move |r| &r.key == key)
}

/// Index of the first record made after `key` was first written (or records.len()).
fn written_at(sim: &Sim, key: &Key) -> usize {
    sim.changes
        .iter()
        .find(|c| &c.key == key && c.object.is_some())
        .map(|c| c.at)
        .unwrap_or_else(|| panic!("{key} was never written"))
}

/// A warning or denial about one of `objects` containing every needle.
#[track_caller]
fn assert_reported(sim: &Sim, objects: &[Key], needles: &[&str]) {
    let hit = sim
        .records
        .iter()
        .filter(|r| objects.contains(&r.key))
        .any(|r| needles.iter().all(|n| r.text().contains(n)));
    if !hit {
        let texts: Vec<String> = sim
            .records
            .iter()
            .filter(|r| objects.contains(&r.key))
            .map(|r| {
                format!(
                    "{} {} dry={} allowed={}: {}",
                    r.endpoint,
                    r.operation,
                    r.dry_run,
                    r.allowed,
                    r.text()
                )
            })
            .collect();
        panic!(
            "no warning or denial for {objects:?} containing {needles:?}; reviews:\n{}\n{}",
            texts.join("\n"),
            report(sim)
        );
    }
}

fn values_from(name: &str) -> Value {
    json!({"kind": "Secret", "name": name})
}

// ---------------------------------------------------------------------------------------------
// The simulator itself.

#[test]
fn ssa_sort_order_follows_flux() {
    let mut objs = vec![
        helm_release("a", "x", "c", &[], &[]),
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "v"}}),
        external_secret("a", "es", None, &["k"]),
        deployment("a", "d", json!({}), pod_spec("i", true)),
        secret("b", "s", &["k"]),
        secret("a", "s", &["k"]),
        config_map("a", "c", &["k"]),
        namespace("a", false),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa", "namespace": "a"}}),
        kustomization("k", "p", &[], false, &[]),
    ];
    sim::flux::sort_objects(&mut objs);
    let order: Vec<String> = objs.iter().map(|o| Key::of(o).to_string()).collect();
    assert_eq!(
        order,
        [
            "Namespace a",
            "ServiceAccount a/sa",
            "ConfigMap a/c",
            "Secret a/s",
            "Secret b/s",
            "Deployment a/d",
            "ExternalSecret a/es",
            "HelmRelease a/x",
            "Kustomization flux-system/k",
            "ValidatingWebhookConfiguration v",
        ]
    );
}

/// splitmix64, for deterministic tapes outside proptest.
fn tape_for(seed: u64, len: usize) -> Vec<u32> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u32
        })
        .collect()
}

#[test]
fn generated_repositories_converge_and_exercise_the_apply_order() {
    // The properties below are vacuous for repositories that do not converge without
    // fluxadmit, and weak if providers always come before their consumers: check that most
    // generated repositories converge, and that many make fluxadmit see a reference before
    // the object it names exists (a warning in the run).
    let n = 64;
    let (mut converged, mut early_references, mut slower) = (0, 0, 0);
    for seed in 0..n {
        let g = generate::repo(&mut Tape::new(tape_for(seed, 96)), &Options::default());
        let (_, base) = run(g.repo.clone(), None);
        if !base.converged {
            continue;
        }
        converged += 1;
        let (sim, r) = run(g.repo, Some(default_policies()));
        early_references += usize::from(sim.records.iter().any(|r| {
            r.warnings.iter().any(|w| w.contains("not found")) || r.message.contains("not found")
        }));
        slower += usize::from(!r.converged || r.settled_after > base.settled_after);
    }
    eprintln!(
        "{converged} of {n} generated repositories converge without fluxadmit; \
         {early_references} of them show a reference reviewed before its target existed; \
         {slower} settle later with fluxadmit"
    );
    assert!(
        converged * 2 >= n as usize,
        "only {converged} of {n} converge"
    );
    assert!(
        early_references * 4 >= converged,
        "only {early_references} of {converged} exercise the order"
    );
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Kustomization `apps` (wait: true) applying a SOPS-decrypted Secret and the HelmRelease that
/// reads its values from it.
fn sops_repo(ns: &str, tenant: bool) -> Repo {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace(ns, tenant));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/podinfo", &[], true, &[]),
    );
    repo.add(
        "apps/podinfo",
        secret(ns, "podinfo-values", &["values.yaml"]),
    );
    repo.add(
        "apps/podinfo",
        helm_release(
            ns,
            "podinfo",
            "podinfo",
            &[],
            &[values_from("podinfo-values")],
        ),
    );
    repo
}

#[test]
fn helm_release_and_its_sops_values_secret_in_one_kustomization_converge() {
    let (plain, r) = run(sops_repo("podinfo", false), None);
    assert_converged(&plain, &r, "without fluxadmit");

    let (sim, r) = run(sops_repo("podinfo", false), Some(default_policies()));
    assert_converged(&sim, &r, "with fluxadmit");
    assert_eq!(sim.keys(), plain.keys());
    let hr = Key::hr("podinfo", "podinfo");
    let secret = Key::secret("podinfo", "podinfo-values");
    assert!(sim.hr_is_ready(&hr));
    assert!(
        sim.cluster
            .contains_key(&Key::deployment("podinfo", "podinfo"))
    );
    // Flux dry-runs the whole stage before writing any of it: the HelmRelease was dry-run
    // while its Secret did not exist yet.
    let before = written_at(&sim, &secret);
    assert!(
        sim.records[..before]
            .iter()
            .any(|r| r.key == hr && r.dry_run),
        "no HelmRelease dry run before the Secret was written"
    );
}

#[test]
fn external_secret_in_the_same_path_converges() {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("db", false));
    repo.add(ROOT_PATH, kustomization("db", "apps/db", &[], true, &[]));
    repo.add(
        "apps/db",
        external_secret(
            "db",
            "postgres-creds",
            Some("postgres-values"),
            &["values.yaml"],
        ),
    );
    repo.add(
        "apps/db",
        helm_release(
            "db",
            "postgres",
            "postgresql",
            &[],
            &[values_from("postgres-values")],
        ),
    );
    let (plain, r) = run(repo.clone(), None);
    assert_converged(&plain, &r, "without fluxadmit");
    let (sim, r) = run(repo, Some(default_policies()));
    assert_converged(&sim, &r, "with fluxadmit");
    assert_eq!(sim.keys(), plain.keys());
    let s = &sim.cluster[&Key::secret("db", "postgres-values")];
    assert!(
        s.pointer("/metadata/labels/kustomize.toolkit.fluxcd.io~1name")
            .is_none(),
        "written by external-secrets, not by Flux: {s}"
    );
    // The Secret came a tick after the ExternalSecret; the HelmRelease was applied before it.
    let es_tick = sim
        .changes
        .iter()
        .find(|c| c.key.kind == "ExternalSecret")
        .unwrap()
        .tick;
    let secret_tick = sim
        .changes
        .iter()
        .find(|c| c.key == Key::secret("db", "postgres-values"))
        .unwrap()
        .tick;
    assert_eq!(secret_tick, es_tick + 1);
    assert!(
        written_at(&sim, &Key::hr("db", "postgres"))
            < written_at(&sim, &Key::secret("db", "postgres-values"))
    );
}

#[test]
fn substitute_from_provided_by_another_kustomization_converges() {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("web", false));
    // `apps` sorts (and reconciles) before `infra`, which provides its variables: its first
    // build fails, the retry succeeds.
    let subs = [
        json!({"kind": "ConfigMap", "name": "cluster-vars"}),
        json!({"kind": "Secret", "name": "cluster-secret-vars"}),
    ];
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/web", &[], false, &subs),
    );
    repo.add(ROOT_PATH, kustomization("infra", "infra", &[], false, &[]));
    repo.add(
        "infra",
        config_map(ROOT_NS, "cluster-vars", &["cluster_name", "region"]),
    );
    repo.add(
        "infra",
        secret(ROOT_NS, "cluster-secret-vars", &["api_token"]),
    );
    repo.add("apps/web", config_map("web", "web-config", &["settings"]));
    let (plain, r) = run(repo.clone(), None);
    assert_converged(&plain, &r, "without fluxadmit");
    let (sim, r) = run(repo, Some(default_policies()));
    assert_converged(&sim, &r, "with fluxadmit");
    assert_eq!(sim.keys(), plain.keys());
}

fn sibling_dependency_repo() -> Repo {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("shop", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/shop", &[], true, &[]),
    );
    repo.add(
        "apps/shop",
        helm_release("shop", "postgres", "postgresql", &[], &[]),
    );
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[json!({"name": "postgres"})], &[]),
    );
    repo
}

#[test]
fn helm_release_depending_on_a_sibling_in_the_same_apply_converges() {
    let (plain, r) = run(sibling_dependency_repo(), None);
    assert_converged(&plain, &r, "without fluxadmit");
    let (sim, r) = run(sibling_dependency_repo(), Some(default_policies()));
    assert_converged(&sim, &r, "default policies");
    assert_eq!(sim.keys(), plain.keys());

    // Even a policy that says a missing dependency is denied cannot deny it on the dry run
    // (the dependency is in the same apply) nor on Flux's write.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("strict-dependencies.yaml");
    std::fs::write(
        &file,
        r#"apiVersion: fluxadmit.io/v1alpha1
kind: DeploymentPolicy
metadata:
  name: strict-dependencies
spec:
  action: Enforce
  match:
    resources:
      - apiGroups: ["helm.toolkit.fluxcd.io"]
        kinds: ["HelmRelease"]
  rules:
    - name: depends-on
      dependsOn:
        missing: Deny
"#,
    )
    .unwrap();
    let (sim, r) = run(sibling_dependency_repo(), Some(policies(&[&file])));
    assert_converged(&sim, &r, "dependsOn missing: Deny");
    assert_eq!(sim.keys(), plain.keys());
}

#[test]
fn provider_in_a_sibling_kustomization_that_depends_on_the_consumer_converges() {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("shop", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/shop", &[], false, &[]),
    );
    repo.add(
        ROOT_PATH,
        kustomization("secrets", "secrets/shop", &["apps"], false, &[]),
    );
    repo.add(
        "secrets/shop",
        secret("shop", "shared-values", &["values.yaml"]),
    );
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[], &[values_from("shared-values")]),
    );
    let (plain, r) = run(repo.clone(), None);
    assert_converged(&plain, &r, "without fluxadmit");
    let (sim, r) = run(repo, Some(default_policies()));
    assert_converged(&sim, &r, "with fluxadmit");
    assert_eq!(sim.keys(), plain.keys());
}

/// (deletionTimestamp set, finalizers) of a record's object.
fn deletion_state(r: &sim::flux::Record) -> (bool, Value) {
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    let meta = &body["request"]["object"]["metadata"];
    (
        !meta["deletionTimestamp"].is_null(),
        meta["finalizers"].clone(),
    )
}

/// Index of the record before which `key` was removed from the cluster.
fn removed_at(sim: &Sim, key: &Key) -> usize {
    sim.changes
        .iter()
        .find(|c| &c.key == key && c.object.is_none())
        .map(|c| c.at)
        .unwrap_or_else(|| panic!("{key} was never removed"))
}

#[test]
fn pruning_a_helm_release_with_its_values_secret_in_one_sync_is_admitted() {
    let hr = Key::hr("podinfo", "podinfo");
    let values = Key::secret("podinfo", "podinfo-values");
    for policies in [None, Some(default_policies())] {
        let with = policies.is_some();
        let mut sim = Sim::new(sops_repo("podinfo", false), policies);
        let r = sim.run(LIMIT);
        assert_converged(&sim, &r, "first revision");
        assert_eq!(
            sim.cluster[&hr]["metadata"]["finalizers"],
            json!(["finalizers.fluxcd.io"])
        );
        // The next revision removes both. DeleteAll goes in reverse order: the HelmRelease
        // gets its deletionTimestamp, the Secret goes, then helm-controller uninstalls and
        // removes its finalizer: that UPDATE is reviewed with the Secret already gone.
        let mut next = sops_repo("podinfo", false);
        next.paths.insert("apps/podinfo".into(), Vec::new());
        sim.push(next);
        let from = sim.records.len();
        let r = sim.run(LIMIT);
        assert_converged(&sim, &r, &format!("prune (fluxadmit: {with})"));
        for k in [&hr, &values, &Key::deployment("podinfo", "podinfo")] {
            assert!(!sim.cluster.contains_key(k), "{k} is still there");
        }
        if with {
            let updates: Vec<(usize, &sim::flux::Record)> = sim
                .records
                .iter()
                .enumerate()
                .skip(from)
                .filter(|(_, r)| r.key == hr && r.operation == "UPDATE")
                .collect();
            for (_, r) in &updates {
                assert!(r.allowed, "{} {}: {}", r.endpoint, r.operation, r.message);
            }
            let marked = updates
                .iter()
                .find(|(_, r)| deletion_state(r) == (true, json!(["finalizers.fluxcd.io"])))
                .expect("the deletionTimestamp UPDATE is reviewed");
            let released = updates
                .iter()
                .find(|(_, r)| deletion_state(r) == (true, Value::Null))
                .expect("the finalizer removal UPDATE is reviewed");
            assert!(
                marked.0 < removed_at(&sim, &values),
                "HelmRelease marked before the Secret goes"
            );
            assert!(
                released.0 >= removed_at(&sim, &values),
                "finalizer removed after the Secret went"
            );
        }
    }
}

#[test]
fn pruning_a_helm_release_whose_values_secret_is_already_gone_is_admitted() {
    // The state after an earlier revision dropped the Secret: the release is installed, its
    // values Secret gone. This revision drops the HelmRelease: its deletionTimestamp UPDATE
    // and its finalizer removal name a missing Secret. (Seeded, so this holds whatever the
    // earlier applies did.)
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("podinfo", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/podinfo", &[], true, &[]),
    );
    let mut sim = Sim::new(repo.clone(), Some(default_policies()));
    let hr = stored_hr("podinfo", &[], &[values_from("podinfo-values")]);
    let key = Key::of(&hr);
    let mut ns = namespace("podinfo", false);
    let mut ks = kustomization("apps", "apps/podinfo", &[], true, &[]);
    for o in [&mut ns, &mut ks] {
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!(ROOT_NAME);
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ROOT_NS);
    }
    sim.seed(ns);
    sim.seed(ks);
    sim.seed(sim::flux::chart_deployment(&hr));
    sim.seed(hr);
    sim.seed_ready_hr(&key);
    sim.seed_ks_inventory(&Key::ks(ROOT_NS, "apps"), std::slice::from_ref(&key));
    sim.push(repo);
    let r = sim.run(LIMIT);
    assert_converged(&sim, &r, "prune of the HelmRelease");
    assert!(!sim.cluster.contains_key(&key), "{key} is still there");
    let updates: Vec<_> = reviews_of(&sim, &key)
        .filter(|r| r.operation == "UPDATE")
        .collect();
    assert!(
        updates
            .iter()
            .any(|r| deletion_state(r) == (true, json!(["finalizers.fluxcd.io"]))),
        "the deletionTimestamp UPDATE is reviewed"
    );
    assert!(
        updates
            .iter()
            .any(|r| deletion_state(r) == (true, Value::Null)),
        "the finalizer removal UPDATE is reviewed"
    );
    for r in updates {
        assert!(r.allowed, "{} {}: {}", r.endpoint, r.operation, r.message);
    }
}

/// A HelmRelease written before the policy (or its dependencies) changed, as it is stored.
fn stored_hr(name: &str, spec_deps: &[Value], values: &[Value]) -> Value {
    let mut hr = helm_release("podinfo", name, "podinfo", spec_deps, values);
    hr["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!("apps");
    hr["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ROOT_NS);
    hr["metadata"]["finalizers"] = json!(["finalizers.fluxcd.io"]);
    hr
}

#[test]
fn flux_reconcile_annotation_on_a_violating_helm_release_is_admitted() {
    let cases = [
        (
            "its values Secret is gone",
            stored_hr("missing-values", &[], &[values_from("gone-values")]),
        ),
        (
            "it has a duplicate dependsOn",
            stored_hr(
                "dup-deps",
                &[
                    json!({"name": "db"}),
                    json!({"name": "db", "namespace": "podinfo"}),
                ],
                &[],
            ),
        ),
    ];
    for (why, hr) in cases {
        let mut sim = Sim::new(Repo::default(), Some(default_policies()));
        sim.seed(namespace("podinfo", false));
        let key = Key::of(&hr);
        sim.seed(hr);
        let result = sim.flux_reconcile(&key);
        let r = sim.records.last().unwrap();
        assert_eq!(r.key, key);
        assert!(
            result.is_ok() && r.allowed,
            "`flux reconcile hr` on a HelmRelease whose {why} was denied: {}",
            r.message
        );
    }
}

#[test]
fn deployment_finalizer_removal_in_a_tenant_namespace_is_admitted() {
    // A Deployment written before pod-security-restricted was installed (it is not compliant),
    // with a custom finalizer; the next revision removes it.
    let policies = with_example("pod-security-restricted.yaml");
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("team-a", true));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/team-a", &[], false, &[]),
    );
    let mut sim = Sim::new(repo.clone(), Some(policies));
    let labels = |o: &mut Value, ks: &str| {
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!(ks);
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ROOT_NS);
    };
    let mut ns = namespace("team-a", true);
    labels(&mut ns, "flux-system");
    sim.seed(ns);
    let mut ks = kustomization("apps", "apps/team-a", &[], false, &[]);
    labels(&mut ks, "flux-system");
    sim.seed(ks);
    let mut legacy = deployment(
        "team-a",
        "legacy",
        json!({}),
        pod_spec("ghcr.io/acme/legacy:1", false),
    );
    labels(&mut legacy, "apps");
    // An explicit value the tenant mutation never overwrites: still not restricted-compliant
    // after /mutate.
    legacy["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": true});
    legacy["metadata"]["finalizers"] = json!(["platform.acme.io/cleanup"]);
    let key = Key::of(&legacy);
    sim.seed(legacy);
    sim.seed_ks_inventory(&Key::ks(ROOT_NS, "apps"), std::slice::from_ref(&key));
    sim.push(repo);
    let r = sim.run(LIMIT);
    assert_converged(&sim, &r, "prune of the legacy Deployment");
    assert!(
        !sim.cluster.contains_key(&key),
        "the Deployment is still there"
    );
    let updates: Vec<_> = reviews_of(&sim, &key)
        .filter(|r| r.endpoint == "/validate")
        .collect();
    assert!(
        updates.len() >= 2,
        "deletionTimestamp and finalizer removal UPDATEs are reviewed"
    );
    for r in updates {
        assert!(r.allowed, "{} {}: {}", r.endpoint, r.operation, r.message);
    }
}

/// A Deployment stored before pod-security-restricted existed (it violates it), and a new
/// revision that changes its image: the UPDATE is judged against what the object already was.
fn existing_violation_sim(policies: PolicySet) -> (Sim, Run, Key) {
    let mut legacy = deployment(
        "web",
        "legacy",
        json!({}),
        pod_spec("ghcr.io/acme/legacy:1", false),
    );
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("web", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/web", &[], false, &[]),
    );
    let mut next = legacy.clone();
    next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("ghcr.io/acme/legacy:2");
    repo.add("apps/web", next);
    let mut sim = Sim::new(repo.clone(), Some(policies));
    let mut ns = namespace("web", false);
    let mut ks = kustomization("apps", "apps/web", &[], false, &[]);
    for (o, by) in [
        (&mut ns, ROOT_NAME),
        (&mut ks, ROOT_NAME),
        (&mut legacy, "apps"),
    ] {
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/name"] = json!(by);
        o["metadata"]["labels"]["kustomize.toolkit.fluxcd.io/namespace"] = json!(ROOT_NS);
    }
    let key = Key::of(&legacy);
    sim.seed(ns);
    sim.seed(ks);
    sim.seed(legacy);
    sim.seed_ks_inventory(&Key::ks(ROOT_NS, "apps"), std::slice::from_ref(&key));
    sim.push(repo);
    let r = sim.run(LIMIT);
    (sim, r, key)
}

#[test]
fn existing_violation_on_update_warns_unless_allow_existing_violations_is_false() {
    let (sim, r, key) = existing_violation_sim(with_example("pod-security-restricted.yaml"));
    assert_converged(
        &sim,
        &r,
        "image update of a Deployment that already violated the policy",
    );
    assert_eq!(
        sim.cluster[&key].pointer("/spec/template/spec/containers/0/image"),
        Some(&json!("ghcr.io/acme/legacy:2"))
    );
    let update = reviews_of(&sim, &key)
        .find(|r| r.endpoint == "/validate" && !r.dry_run)
        .expect("the write was reviewed");
    assert!(update.allowed, "{}", update.message);
    assert!(
        update.warnings.iter().any(|w| w.contains("restricted")),
        "the existing violation is a warning: {:?}",
        update.warnings
    );

    let dir = tempfile::tempdir().unwrap();
    let text =
        std::fs::read_to_string(root().join("policies/examples/pod-security-restricted.yaml"))
            .unwrap();
    let strict = text.replace(
        "  action: Enforce\n",
        "  action: Enforce\n  allowExistingViolations: false\n",
    );
    assert_ne!(strict, text);
    let file = dir.path().join("pod-security-restricted.yaml");
    std::fs::write(&file, strict).unwrap();
    let (sim, r, key) = existing_violation_sim(policies(&[&file]));
    assert!(
        !r.converged,
        "allowExistingViolations: false admitted the update"
    );
    let denied = reviews_of(&sim, &key)
        .find(|r| !r.allowed)
        .expect("a denial");
    assert!(denied.message.contains("restricted"), "{}", denied.message);
}

// Broken repositories: each defect gets a warning or a denial naming it.

fn broken_base() -> Repo {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("shop", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/shop", &[], false, &[]),
    );
    repo.add(
        "apps/shop",
        helm_release("shop", "postgres", "postgresql", &[], &[]),
    );
    repo
}

#[track_caller]
fn assert_broken(repo: Repo, objects: &[Key], needles: &[&str]) {
    let (plain, r) = run(repo.clone(), None);
    assert!(
        !r.converged,
        "the broken repository converges without fluxadmit:\n{}",
        report(&plain)
    );
    let (sim, _) = run(repo, Some(default_policies()));
    assert_reported(&sim, objects, needles);
}

#[test]
fn broken_typo_in_depends_on_is_reported() {
    let mut repo = broken_base();
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[json!({"name": "postgress"})], &[]),
    );
    assert_broken(repo, &[Key::hr("shop", "api")], &["shop/postgress"]);
}

#[test]
fn broken_dependency_cycle_is_reported() {
    let mut repo = broken_base();
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[json!({"name": "worker"})], &[]),
    );
    repo.add(
        "apps/shop",
        helm_release("shop", "worker", "worker", &[json!({"name": "api"})], &[]),
    );
    assert_broken(
        repo,
        &[Key::hr("shop", "api"), Key::hr("shop", "worker")],
        &["cycle", "shop/api", "shop/worker"],
    );
}

#[test]
fn broken_secret_no_one_provides_is_reported() {
    let mut repo = broken_base();
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[], &[values_from("api-values")]),
    );
    assert_broken(repo, &[Key::hr("shop", "api")], &["Secret shop/api-values"]);
}

#[test]
fn broken_values_key_is_reported() {
    let mut repo = broken_base();
    repo.add("apps/shop", secret("shop", "api-values", &["values.yaml"]));
    repo.add(
        "apps/shop",
        helm_release(
            "shop",
            "api",
            "api",
            &[],
            &[json!({"kind": "Secret", "name": "api-values", "valuesKey": "value.yaml"})],
        ),
    );
    assert_broken(
        repo,
        &[Key::hr("shop", "api")],
        &["shop/api-values", "value.yaml"],
    );
}

// What is about the object itself is still denied, in a Flux apply too.

#[test]
fn self_dependency_is_still_denied_on_the_dry_run() {
    let mut repo = broken_base();
    repo.add(
        "apps/shop",
        helm_release("shop", "api", "api", &[json!({"name": "api"})], &[]),
    );
    let (sim, r) = run(repo, Some(default_policies()));
    assert!(!r.converged);
    let key = Key::hr("shop", "api");
    let denied = reviews_of(&sim, &key)
        .find(|r| !r.allowed)
        .unwrap_or_else(|| panic!("not denied\n{}", report(&sim)));
    assert!(
        denied.dry_run,
        "denied on the dry run, before anything of the stage is written"
    );
    assert!(
        denied.message.contains("shop/api depends on itself"),
        "{}",
        denied.message
    );
}

#[test]
fn pod_security_violation_in_a_flux_apply_is_still_denied() {
    let mut repo = Repo::default();
    repo.add(ROOT_PATH, namespace("web", false));
    repo.add(
        ROOT_PATH,
        kustomization("apps", "apps/web", &[], false, &[]),
    );
    repo.add(
        "apps/web",
        deployment(
            "web",
            "web",
            json!({}),
            pod_spec("ghcr.io/acme/web:1", false),
        ),
    );
    let (sim, r) = run(repo, Some(with_example("pod-security-restricted.yaml")));
    assert!(!r.converged);
    let web = Key::deployment("web", "web");
    let denied = reviews_of(&sim, &web)
        .find(|r| !r.allowed)
        .unwrap_or_else(|| panic!("not denied\n{}", report(&sim)));
    assert!(denied.dry_run);
    assert!(denied.message.contains("restricted"), "{}", denied.message);
    assert!(!sim.cluster.contains_key(&Key::deployment("web", "web")));
}

// Mutation during an apply.

#[test]
fn default_mutation_patches_tenant_workloads_and_the_reapply_is_clean() {
    let (sim, r) = run(replay_repo(), Some(default_policies()));
    assert_converged(&sim, &r, "tenant workloads");
    let web = Key::deployment("team-a", "web");
    assert!(
        reviews_of(&sim, &web).any(|r| r.endpoint == "/mutate" && r.patch.is_some()),
        "restricted-security-context (Enforce) patches a Deployment in a tenant namespace"
    );
    let stored = &sim.cluster[&web];
    assert_eq!(
        stored.pointer("/spec/template/spec/securityContext/runAsNonRoot"),
        Some(&json!(true)),
        "{stored}"
    );
    // The Deployment was written once: later dry runs of the same manifest gave the stored
    // (mutated) object back, so Flux saw no drift.
    let writes = sim.changes.iter().filter(|c| c.key == web).count();
    assert_eq!(writes, 1);
}

#[test]
fn audit_policy_never_patches_during_an_apply() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "flux-dependencies.yaml",
        "flux-referenced-secrets.yaml",
        "restricted-security-context.yaml",
    ] {
        let text = std::fs::read_to_string(root().join("policies").join(f)).unwrap();
        let text = text.replace("action: Enforce", "action: Audit");
        std::fs::write(dir.path().join(f), text).unwrap();
    }
    let audit = load_paths(&[dir.path().to_path_buf()]).unwrap();
    let (sim, r) = run(replay_repo(), Some(audit));
    assert_converged(&sim, &r, "audit policies");
    assert!(
        sim.records.iter().all(|r| r.patch.is_none()),
        "an Audit policy returned a patch"
    );
    let web = Key::deployment("team-a", "web");
    assert!(
        reviews_of(&sim, &web).any(|r| r.endpoint == "/mutate" && !r.warnings.is_empty()),
        "an Audit mutation warns with the patch it would make"
    );
}

// ---------------------------------------------------------------------------------------------
// Properties.

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        max_shrink_iters: 200,
        // No regression files are written into the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn tape() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(any::<u32>(), 96)
}

/// If the repository converges without fluxadmit, it converges with it, at most 2 ticks later,
/// to the same set of objects.
fn preserves_convergence(tape: Vec<u32>, example: Option<&str>) -> Result<(), TestCaseError> {
    let g = generate::repo(&mut Tape::new(tape), &Options::for_example(example));
    let (plain, base) = run(g.repo.clone(), None);
    if !base.converged {
        return Ok(()); // nothing to preserve
    }
    let policies = match example {
        Some(file) => with_example(file),
        None => default_policies(),
    };
    let mut sim = Sim::new(g.repo.clone(), Some(policies));
    let r = sim.run(LIMIT + 2);
    prop_assert!(
        r.converged,
        "converges without fluxadmit in {} ticks, not with it ({:?})\n{}\nrepo: {:#?}",
        base.settled_after,
        example,
        report(&sim),
        g.repo
    );
    prop_assert!(
        r.settled_after <= base.settled_after + 2,
        "settled after {} ticks with fluxadmit, {} without",
        r.settled_after,
        base.settled_after
    );
    prop_assert_eq!(sim.keys(), plain.keys());
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fluxadmit_preserves_convergence_with_default_policies(t in tape()) {
        preserves_convergence(t, None)?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_image_pull_secrets(t in tape()) {
        preserves_convergence(t, Some("image-pull-secrets.yaml"))?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_pod_security_baseline(t in tape()) {
        preserves_convergence(t, Some("pod-security-baseline.yaml"))?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_pod_security_restricted(t in tape()) {
        preserves_convergence(t, Some("pod-security-restricted.yaml"))?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_required_labels(t in tape()) {
        preserves_convergence(t, Some("required-labels.yaml"))?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_tiered_deployment(t in tape()) {
        preserves_convergence(t, Some("tiered-deployment.yaml"))?;
    }

    #[test]
    fn fluxadmit_preserves_convergence_with_wiz(t in tape()) {
        preserves_convergence(t, Some("wiz-kubernetes-integration.yaml"))?;
    }

    /// A repository with one injected defect gets, for the defective object, a warning or a
    /// denial naming the missing or bad thing.
    #[test]
    fn broken_repositories_are_reported(t in tape(), d in 0..DEFECTS.len(), on_kustomizations in any::<bool>()) {
        let mut g = generate::repo(&mut Tape::new(t), &Options::default());
        let (plain, _) = run(g.repo.clone(), None);
        // Inject into a Kustomization that applies in the valid repository.
        let Some(ks) = g.kustomizations.iter().find(|k| plain.ks_ready(&Key::ks(ROOT_NS, k))).cloned() else {
            return Ok(());
        };
        let ns = g.namespaces[0].0.clone();
        let expect = generate::inject(&mut g, DEFECTS[d], &ks, &ns, on_kustomizations);
        let (sim, _) = run(g.repo.clone(), Some(default_policies()));
        let hit = sim.records.iter().any(|r| expect.objects.contains(&r.key) && r.text().contains(&expect.needle));
        prop_assert!(
            hit,
            "{:?}: nothing names {:?} for {:?}; reviews: {:#?}\n{}",
            DEFECTS[d],
            expect.needle,
            expect.objects,
            sim.records.iter().filter(|r| expect.objects.contains(&r.key))
                .map(|r| format!("{} {} dry={} allowed={}: {}", r.endpoint, r.operation, r.dry_run, r.allowed, r.text()))
                .collect::<Vec<_>>(),
            report(&sim)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Replay through the real server.

/// A scenario with mutations: a tenant namespace with the SOPS Secret + HelmRelease (whose
/// chart's pods have no security context) and a plain Deployment in its own Kustomization.
fn replay_repo() -> Repo {
    let mut repo = sops_repo("team-a", true);
    if let Some(objs) = repo.paths.get_mut("apps/podinfo") {
        for o in objs.iter_mut().filter(|o| o["kind"] == "HelmRelease") {
            o["spec"]["values"]["podSecurity"] = json!("none");
        }
    }
    repo.add(ROOT_PATH, kustomization("web", "apps/web", &[], false, &[]));
    repo.add(
        "apps/web",
        deployment(
            "team-a",
            "web",
            json!({}),
            pod_spec("ghcr.io/acme/web:1", false),
        ),
    );
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sequence_replays_identically_through_the_real_server() {
    let policies = default_policies();
    let (sim, _) = run(replay_repo(), Some(policies.clone()));
    assert!(!sim.records.is_empty());
    assert!(
        sim.records.iter().any(|r| r.endpoint == "/mutate"),
        "the scenario exercises the mutating webhook"
    );
    assert!(
        sim.records.iter().any(|r| r.patch.is_some()),
        "the scenario has patches to compare"
    );
    assert!(
        sim.records.iter().any(|r| !r.warnings.is_empty()),
        "the scenario has warnings to compare"
    );
    let text = std::fs::read_to_string(root().join("policies/flux-dependencies.yaml")).unwrap();
    common::within("replay", common::LIMIT, async {
        let server = common::Setup::new(&text).start().await;
        let mut client = server.connect(common::ALPN_BOTH).await;
        // The server's view follows the same writes the simulator made, in the same order:
        // before each review, the changes made before it are applied and the snapshot swapped.
        let mut view = ClusterView::default();
        view.tracks_config_maps = true;
        let mut changes = sim.changes.iter().peekable();
        for (i, rec) in sim.records.iter().enumerate() {
            let mut changed = i == 0;
            while let Some(c) = changes.next_if(|c| c.at <= i) {
                match (
                    &c.object,
                    Tracked::from_group_kind(&c.key.group, &c.key.kind),
                ) {
                    (Some(o), Some(_)) => {
                        view.add_manifest(o);
                    }
                    (None, Some(t)) => view.delete(t, &c.key.namespace, &c.key.name),
                    _ => {}
                }
                changed = true;
            }
            if changed {
                server.state.snapshot.store(Arc::new(Snapshot {
                    policies: policies.clone(),
                    view: view.clone(),
                }));
            }
            let body: Value = serde_json::from_slice(&rec.body).unwrap();
            let uid = body["request"]["uid"].as_str().unwrap().to_owned();
            let resp = client.sender.review(rec.endpoint, &body).await;
            common::review_response(&resp, &uid);
            let (allowed, message, warnings, patch) = sim::flux::read_response(&resp.body);
            let what = format!(
                "record {i}: {} {} {} dry={}",
                rec.endpoint, rec.operation, rec.key, rec.dry_run
            );
            assert_eq!(allowed, rec.allowed, "{what}");
            assert_eq!(message, rec.message, "{what}");
            assert_eq!(warnings, rec.warnings, "{what}");
            assert_eq!(patch, rec.patch, "{what}");
        }
        server.stop().await;
    })
    .await;
}
