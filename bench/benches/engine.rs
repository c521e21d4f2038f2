//! Engine benchmarks: one review through `Snapshot::review` (no I/O), the JSON Patch build,
//! the dependency cycle check, and how a HelmRelease review scales with matching rules and
//! view size. The inputs come from `fluxadmit_bench::generate` (bench/src/gen.rs), shared with `fluxadmit-bench`.
//!
//! `cargo bench --bench engine` uses the real sizes (a 65,000-object view). Under
//! `cargo test`, where criterion runs each benchmark once as a check, the views are shrunk so
//! the setup stays fast in a debug build.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// The same allocator as the `fluxadmit` binary, so these numbers are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{BenchmarkId, Criterion};
use fluxadmit_bench::generate::{self, Graph, ViewSize};
use fluxadmit_core::admission;
use fluxadmit_core::engine::{self, Mode};
use fluxadmit_core::graph::{ObjKey, find_cycle_bidirectional, find_cycle_through};
use fluxadmit_core::mutate::journal::Journal;
use fluxadmit_core::mutate::overlay::Overlay;
use fluxadmit_core::state::Snapshot;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use std::cell::Cell;
use std::hint::black_box;

fn main() {
    // `cargo bench` passes --bench; `cargo test` does not (criterion's test mode).
    let full = std::env::args().any(|a| a == "--bench");
    let scale = |n: usize| if full { n } else { (n / 100).max(650) };
    let mut c = Criterion::default().configure_from_args();

    let size = ViewSize::of(scale(65_000));
    let snap = Snapshot {
        policies: generate::policies().unwrap(),
        view: generate::view(&size),
    };
    reviews(&mut c, &snap, &size);
    expressions(&mut c);
    judgement(&mut c);
    patch(&mut c, &snap);
    graph(&mut c);
    scaling(&mut c, snap, &size, scale);
    c.final_summary();
}

/// (a) the ~6 KB Deployment, validate and mutate; (b) the ~3 KB HelmRelease vs the 65k view.
fn reviews(c: &mut Criterion, snap: &Snapshot, size: &ViewSize) {
    let deploy = generate::deployment_review("bench-deploy");
    let hr = generate::helmrelease_review(size, "bench-hr");
    // The inputs are what they claim to be: admitted, no finding, the mutation patches.
    let v = snap.review(Mode::Validate, &deploy).unwrap();
    assert!(v.outcome.verdict.allowed && v.outcome.findings.is_empty());
    let m = snap.review(Mode::Mutate, &deploy).unwrap();
    assert!(m.outcome.verdict.patch.is_some_and(|p| !p.0.is_empty()));
    let h = snap.review(Mode::Validate, &hr).unwrap();
    assert!(h.outcome.verdict.allowed && h.outcome.findings.is_empty());

    let mut g = c.benchmark_group("review");
    g.bench_function("deployment_6k/validate", |b| {
        b.iter(|| snap.review(Mode::Validate, black_box(&deploy)))
    });
    g.bench_function("deployment_6k/mutate", |b| {
        b.iter(|| snap.review(Mode::Mutate, black_box(&deploy)))
    });
    g.bench_function("deployment_6k/validate+mutate", |b| {
        b.iter(|| {
            (
                snap.review(Mode::Validate, black_box(&deploy)),
                snap.review(Mode::Mutate, black_box(&deploy)),
            )
        })
    });
    g.bench_function(
        BenchmarkId::new("helmrelease_3k/validate", snap.view.len()),
        |b| b.iter(|| snap.review(Mode::Validate, black_box(&hr))),
    );
    g.finish();

    // The engine's own work on the Deployment, both webhooks, on the parsed review: with every
    // policy (defaults + examples: 4 match), and with the default policy set alone (1 matches).
    let defaults = Snapshot {
        policies: generate::default_policies().unwrap(),
        view: Default::default(),
    };
    let mut g = c.benchmark_group("engine");
    for (name, policies) in [
        ("all_policies", &snap.policies),
        ("default_policies", &defaults.policies),
    ] {
        let mut req = admission::parse_review(&deploy).unwrap();
        let m = engine::evaluate(Mode::Mutate, &mut req, policies, &snap.view);
        assert!(m.verdict.patch.is_some_and(|p| !p.0.is_empty()));
        g.bench_function(format!("deployment_6k/validate+mutate/{name}"), |b| {
            b.iter(|| {
                let r = black_box(&mut req);
                (
                    engine::evaluate(Mode::Validate, r, policies, &snap.view),
                    engine::evaluate(Mode::Mutate, r, policies, &snap.view),
                )
            })
        });
    }
    g.finish();

    // Where a review's time goes: parsing, the engine, the answer; and what parsing the same
    // bytes costs with plain serde_json (the floor server's parse is the kube-rs one).
    let mut g = c.benchmark_group("review_parts");
    let mut req = admission::parse_review(&deploy).unwrap();
    g.bench_function("deployment_6k/parse_review", |b| {
        b.iter(|| admission::parse_review(black_box(&deploy)))
    });
    g.bench_function("deployment_6k/serde_json_value_only", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&deploy)))
    });
    g.bench_function("deployment_6k/kube_admission_review_only", |b| {
        b.iter(|| {
            serde_json::from_slice::<AdmissionReview<DynamicObject>>(black_box(&deploy)).unwrap()
        })
    });
    for (name, mode) in [("validate", Mode::Validate), ("mutate", Mode::Mutate)] {
        g.bench_function(format!("deployment_6k/evaluate_{name}"), |b| {
            b.iter(|| engine::evaluate(mode, black_box(&mut req), &snap.policies, &snap.view))
        });
        let verdict = engine::evaluate(mode, &mut req, &snap.policies, &snap.view).verdict;
        g.bench_function(format!("deployment_6k/respond_{name}"), |b| {
            b.iter(|| admission::answer_json(black_box(&req), black_box(&verdict)))
        });
    }
    // A dry-run UPDATE carries the old object too; it is only read raw unless a rule needs it.
    let update = generate::deployment_update_review("bench-update");
    g.bench_function("deployment_6k_update/parse_review", |b| {
        b.iter(|| admission::parse_review(black_box(&update)))
    });
    g.bench_function("deployment_6k_update/kube_admission_review_only", |b| {
        b.iter(|| {
            serde_json::from_slice::<AdmissionReview<DynamicObject>>(black_box(&update)).unwrap()
        })
    });
    let mut hreq = admission::parse_review(&hr).unwrap();
    g.bench_function("helmrelease_3k/parse_review", |b| {
        b.iter(|| admission::parse_review(black_box(&hr)))
    });
    g.bench_function("helmrelease_3k/evaluate_validate", |b| {
        b.iter(|| {
            engine::evaluate(
                Mode::Validate,
                black_box(&mut hreq),
                &snap.policies,
                &snap.view,
            )
        })
    });
    g.finish();
}

/// (c) `json_patch::diff` between the Deployment as received and as mutated.
/// What the judgement of a request costs: a HelmRelease UPDATE under the default policies, on
/// the path with no finding, and on the paths that turn an error into a warning (a dry run; an
/// update by a person whose old object already had the error, which parses `oldObject` and
/// runs the rule on it once more).
fn judgement(c: &mut Criterion) {
    use serde_json::json;
    let snap = Snapshot {
        policies: fluxadmit_core::policy::load::load_paths(&[std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../policies"
        ))])
        .unwrap(),
        view: Default::default(),
    };
    let hr = |secret: &str, labels: serde_json::Value, interval: &str| {
        json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": "podinfo", "namespace": "apps", "labels": labels},
            "spec": {"interval": interval,
                "chart": {"spec": {"chart": "podinfo", "sourceRef": {"kind": "HelmRepository", "name": "podinfo"}}},
                "values": {"replicaCount": 2, "ingress": {"enabled": true, "hosts": [{"host": "podinfo.example.com"}]}},
                "valuesFrom": if secret.is_empty() { json!([]) } else { json!([{"kind": "Secret", "name": secret}]) }}})
    };
    let review = |object: serde_json::Value, old: serde_json::Value, dry_run: bool| {
        serde_json::to_vec(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "bench", "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
                "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
                "name": "podinfo", "namespace": "apps", "operation": "UPDATE",
                "userInfo": {"username": "jane@example.com"},
                "object": object, "oldObject": old, "dryRun": dry_run}}))
        .unwrap()
    };
    let flux = json!({"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"});
    let cases = [
        (
            "clean",
            review(hr("", json!({}), "5m"), hr("", json!({}), "10m"), false),
            true,
            false,
        ),
        (
            "flux_dry_run_missing_secret",
            review(hr("v", flux.clone(), "5m"), hr("v", flux, "10m"), true),
            true,
            true,
        ),
        (
            "person_existing_violation",
            review(hr("v", json!({}), "5m"), hr("v", json!({}), "10m"), false),
            true,
            true,
        ),
        (
            "person_new_violation",
            review(hr("v", json!({}), "5m"), hr("", json!({}), "10m"), false),
            false,
            true,
        ),
    ];
    let mut g = c.benchmark_group("judgement/helmrelease_update");
    for (name, body, allowed, warned) in &cases {
        let a = snap.review(Mode::Validate, body).unwrap();
        assert_eq!(a.outcome.verdict.allowed, *allowed, "{name}");
        assert_eq!(!a.outcome.findings.is_empty(), *warned, "{name}");
        g.bench_function(*name, |b| {
            b.iter(|| snap.review(Mode::Validate, black_box(body)))
        });
    }
    g.finish();
}

fn patch(c: &mut Criterion, snap: &Snapshot) {
    let body = generate::deployment_review("bench-patch");
    let original = fluxadmit_core::admission::parse_review(&body)
        .unwrap()
        .object;
    let answer = snap.review(Mode::Mutate, &body).unwrap();
    let mut mutated = original.clone();
    json_patch::patch(&mut mutated, &answer.outcome.verdict.patch.unwrap()).unwrap();
    let ops = json_patch::diff(&original, &mutated).0.len();
    assert!(ops > 0);
    c.bench_function(&format!("json_patch/diff_deployment_{ops}_ops"), |b| {
        b.iter(|| json_patch::diff(black_box(&original), black_box(&mutated)))
    });

    // The patch for the default mutating overlay on the Deployment's pod template, built the way
    // the engine does it (write in place, log, patch from the log, undo) and, for comparison,
    // by copying, applying and diffing with json-patch.
    let (_, text) = generate::policy_files()
        .find(|(f, _)| *f == "restricted-security-context.yaml")
        .unwrap();
    let policy: serde_json::Value = serde_saphyr::from_str(text).unwrap();
    let overlay = Overlay::compile(&policy["spec"]["rules"][0]["mutate"]["overlay"]).unwrap();
    let mut template = original["spec"]["template"].clone();
    let expected = overlay.json_patch(&template).unwrap();
    assert!(!expected.0.is_empty());
    let mut g = c.benchmark_group("patch_build");
    g.bench_function("overlay_logged_writes", |b| {
        b.iter(|| {
            let mut journal = Journal::new();
            overlay.apply_logged(black_box(&mut template), &mut journal);
            let ops = journal.patch(&template);
            journal.undo(&mut template);
            ops
        })
    });
    g.bench_function("overlay_copy_and_json_patch_diff", |b| {
        b.iter(|| {
            let mut work = black_box(&template).clone();
            overlay.apply(&mut work);
            json_patch::diff(&template, &work)
        })
    });
    g.finish();
}

/// (d) `find_cycle_through` for one new edge in a 10,000-node graph: 5 chains of 1,000 and a
/// random DAG of 5,000.
fn graph(c: &mut Criterion) {
    let g = Graph::generate(5, 1_000, 5_000);
    assert_eq!(g.len(), 10_000);
    let new = ObjKey::new("ns-0", "incoming");
    let chain = &g.chains[0];
    let own_plus = |k: &ObjKey, extra: &ObjKey| {
        let mut d = g.edges_of(k).unwrap_or_default().to_vec();
        d.push(extra.clone());
        d
    };
    let cases: Vec<(&str, ObjKey, Vec<ObjKey>)> = vec![
        ("new_to_dag_small", new.clone(), vec![g.dag[20].clone()]),
        (
            "existing_dag_node_new_edge",
            g.dag[2_500].clone(),
            own_plus(&g.dag[2_500], &g.dag[100]),
        ),
        ("new_to_chain_top", new.clone(), vec![chain[999].clone()]),
        (
            "chain_bottom_to_top_closes_cycle",
            chain[0].clone(),
            vec![chain[999].clone()],
        ),
        ("new_to_dag_last", new.clone(), vec![g.dag[4_999].clone()]),
    ];
    let mut group = c.benchmark_group("cycle_check_10k");
    for (name, start, deps) in &cases {
        let visited = Cell::new(0usize);
        let cycle = find_cycle_through(start, deps, |k| {
            visited.set(visited.get() + 1);
            g.edges_of(k)
        });
        eprintln!(
            "cycle_check_10k/{name}: {} nodes looked up, cycle: {}",
            visited.get(),
            cycle.map_or("none".to_owned(), |c| format!("{} nodes", c.len() - 1))
        );
        group.bench_function(*name, |b| {
            b.iter(|| find_cycle_through(black_box(start), black_box(deps), |k| g.edges_of(k)))
        });
    }
    group.finish();
    // What the dependsOn rule runs: both ends, with the view's reverse index.
    let mut group = c.benchmark_group("cycle_check_10k_bidirectional");
    for (name, start, deps) in &cases {
        let forward = find_cycle_through(start, deps, |k| g.edges_of(k)).is_some();
        let both = find_cycle_bidirectional(start, deps, |k| g.edges_of(k), |k| g.dependents_of(k));
        assert_eq!(forward, both.is_some(), "{name}: the two searches disagree");
        group.bench_function(*name, |b| {
            b.iter(|| {
                find_cycle_bidirectional(
                    black_box(start),
                    black_box(deps),
                    |k| g.edges_of(k),
                    |k| g.dependents_of(k),
                )
            })
        });
    }
    group.finish();
}

/// A CEL expression rule on the Deployment: a loop over its containers (metered by the
/// runtime cost limit), and one without a loop.
fn expressions(c: &mut Criterion) {
    let deploy = generate::deployment_review("bench-cel");
    let mut g = c.benchmark_group("cel");
    for (name, expression) in [
        (
            "loop",
            "object.spec.template.spec.containers.all(c, c.image.contains(':') && c.name != '')",
        ),
        (
            "no_loop",
            "object.metadata.name != '' && object.spec.replicas >= 1",
        ),
    ] {
        let doc = serde_json::json!({
            "apiVersion": "fluxadmit.io/v1alpha1", "kind": "DeploymentPolicy",
            "metadata": {"name": "cel"},
            "spec": {
                "match": {"resources": [{"apiGroups": ["apps"], "kinds": ["Deployment"]}]},
                "rules": [{"name": name, "expression": {"expression": expression, "message": "no"}}]
            }
        });
        let s = Snapshot {
            policies: fluxadmit_core::policy::load::compile_yaml("cel.yaml", &doc.to_string())
                .unwrap(),
            view: Default::default(),
        };
        let mut req = admission::parse_review(&deploy).unwrap();
        let v = engine::evaluate(Mode::Validate, &mut req, &s.policies, &s.view);
        assert!(v.verdict.allowed, "{name}: {:?}", v.findings);
        g.bench_function(format!("deployment_6k/{name}"), |b| {
            b.iter(|| engine::evaluate(Mode::Validate, black_box(&mut req), &s.policies, &s.view))
        });
    }
    g.finish();
}

/// Scaling: the HelmRelease review against matching rules (1, 10, 50) and view size.
fn scaling(c: &mut Criterion, snap: Snapshot, size: &ViewSize, scale: impl Fn(usize) -> usize) {
    let hr = generate::helmrelease_review(size, "bench-scaling");
    let mut view = snap.view;
    let mut g = c.benchmark_group("scaling_rules");
    for n in [1, 10, 50] {
        let s = Snapshot {
            policies: generate::scaling_policies(n).unwrap(),
            view,
        };
        assert_eq!(s.review(Mode::Validate, &hr).unwrap().outcome.matched, n);
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| s.review(Mode::Validate, black_box(&hr)))
        });
        view = s.view;
    }
    g.finish();
    drop(view);

    let mut g = c.benchmark_group("scaling_view");
    for objects in [1_000, 10_000, 100_000] {
        let size = ViewSize::of(scale(objects));
        let hr = generate::helmrelease_review(&size, "bench-scaling");
        let s = Snapshot {
            policies: generate::policies().unwrap(),
            view: generate::view(&size),
        };
        g.bench_function(BenchmarkId::from_parameter(objects), |b| {
            b.iter(|| s.review(Mode::Validate, black_box(&hr)))
        });
    }
    g.finish();
}
