//! Repository generators for the property tests. A generated repository is built from a
//! "tape" of random numbers (proptest shrinks it towards zeros, and zero is always the simplest
//! choice), so the structure stays valid by construction: dependsOn only points backwards in a
//! random order (acyclic), references name providers that exist (unless a defect is injected).

use super::flux::{
    Key, ROOT_NS, ROOT_PATH, Repo, config_map, deployment, docker_secret, external_secret,
    helm_release, kustomization, namespace, pod_spec, secret,
};
use serde_json::{Value, json};

/// Random choices, read in order; past the end every choice is 0.
pub struct Tape {
    data: Vec<u32>,
    pos: usize,
}

impl Tape {
    pub fn new(data: Vec<u32>) -> Tape {
        Tape { data, pos: 0 }
    }

    /// A number in 0..n.
    pub fn pick(&mut self, n: usize) -> usize {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        if n == 0 { 0 } else { v as usize % n }
    }

    /// True with `pct` percent probability (false on a zero).
    pub fn chance(&mut self, pct: u32) -> bool {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v % 100 >= 100 - pct
    }
}

/// How the generated objects must look for the example policy in play.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Every pod restricted-compliant (pod-security-restricted).
    pub restricted_pods: bool,
    /// Every HelmRelease carries fluxadmit.io/tier = 1 + the highest tier it depends on
    /// (tiered-deployment).
    pub tiers: bool,
    /// One release of the wiz-kubernetes-integration chart, with the Secrets it requires.
    pub wiz: bool,
    /// The ghcr-acme pull secret in every tenant namespace (image-pull-secrets).
    pub pull_secrets: bool,
}

impl Options {
    /// The generator options for the default policies plus one example file.
    pub fn for_example(example: Option<&str>) -> Options {
        let mut o = Options::default();
        match example {
            Some("pod-security-restricted.yaml") => o.restricted_pods = true,
            Some("tiered-deployment.yaml") => o.tiers = true,
            Some("wiz-kubernetes-integration.yaml") => o.wiz = true,
            Some("image-pull-secrets.yaml") => o.pull_secrets = true,
            // required-labels: every HelmRelease and Kustomization carries
            // app.kubernetes.io/part-of (the manifest builders always set it).
            // pod-security-baseline: the non-restricted pods are baseline-compliant.
            _ => {}
        }
        o
    }
}

/// A Secret or ConfigMap (possibly made by an ExternalSecret) a HelmRelease can read values from.
#[derive(Clone, Debug)]
pub struct Provider {
    /// Secret or ConfigMap: the kind a reference names.
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
    pub key: String,
}

#[derive(Clone, Debug)]
pub struct Generated {
    pub repo: Repo,
    pub kustomizations: Vec<String>,
    /// Namespace names and whether each is a tenant.
    pub namespaces: Vec<(String, bool)>,
    pub helm_releases: Vec<Key>,
    pub providers: Vec<Provider>,
}

pub fn ks_path(name: &str) -> String {
    format!("apps/{name}")
}

/// A valid repository: 1–3 Kustomizations (acyclic dependsOn in any direction, wait true or
/// false, some with postBuild.substituteFrom), 1–2 namespaces (some tenants), Secrets,
/// ConfigMaps and ExternalSecrets, HelmReleases with valuesFrom (some optional) and acyclic
/// dependsOn, plain Deployments. Providers land in the same or another Kustomization.
pub fn repo(t: &mut Tape, o: &Options) -> Generated {
    let mut repo = Repo::default();
    let n_ks = 1 + t.pick(3);
    let names: Vec<String> = (0..n_ks).map(|i| format!("ks{i}")).collect();
    // A random order; a Kustomization may depend only on those before it in this order.
    let mut order: Vec<usize> = (0..n_ks).collect();
    for i in (1..n_ks).rev() {
        order.swap(i, t.pick(i + 1));
    }
    let mut ks_deps: Vec<Vec<String>> = vec![Vec::new(); n_ks];
    for (p, &i) in order.iter().enumerate() {
        for &j in &order[..p] {
            if t.chance(35) {
                ks_deps[i].push(names[j].clone());
            }
        }
    }
    let waits: Vec<bool> = (0..n_ks).map(|_| t.chance(50)).collect();

    // Namespaces (stage one of the root Kustomization), and their pull secrets.
    let n_ns = 1 + t.pick(2);
    let namespaces: Vec<(String, bool)> = (0..n_ns)
        .map(|i| (format!("app{i}"), t.chance(50)))
        .collect();
    for (ns, tenant) in &namespaces {
        repo.add(ROOT_PATH, namespace(ns, *tenant));
        if o.pull_secrets && *tenant {
            repo.add(ROOT_PATH, docker_secret(ns, "ghcr-acme"));
        }
    }

    // Values providers.
    let mut providers = Vec::new();
    for i in 0..t.pick(4) {
        let ns = namespaces[t.pick(n_ns)].0.clone();
        let path = ks_path(&names[t.pick(n_ks)]);
        let key = if t.chance(30) {
            "custom.yaml"
        } else {
            "values.yaml"
        };
        let name = format!("values{i}");
        let (kind, obj) = match t.pick(3) {
            0 => ("Secret", secret(&ns, &name, &[key])),
            1 => ("ConfigMap", config_map(&ns, &name, &[key])),
            _ => {
                if t.chance(50) {
                    (
                        "Secret",
                        external_secret(&ns, &format!("{name}-es"), Some(&name), &[key]),
                    )
                } else {
                    let es = format!("{name}-es");
                    let obj = external_secret(&ns, &es, None, &[key]);
                    providers.push(Provider {
                        kind: "Secret",
                        namespace: ns.clone(),
                        name: es,
                        key: key.into(),
                    });
                    repo.add(&path, obj);
                    continue;
                }
            }
        };
        repo.add(&path, obj);
        providers.push(Provider {
            kind,
            namespace: ns,
            name,
            key: key.into(),
        });
    }

    // HelmReleases.
    let n_hr = 1 + t.pick(3);
    let mut hrs: Vec<(Key, u32)> = Vec::new();
    for i in 0..n_hr {
        let ns = namespaces[t.pick(n_ns)].0.clone();
        let ks = t.pick(n_ks);
        let path = ks_path(&names[ks]);
        let name = format!("hr{i}");
        let mut deps = Vec::new();
        let mut tier = 1;
        for (dep, dep_tier) in &hrs {
            if t.chance(30) {
                deps.push(if dep.namespace == ns {
                    json!({"name": dep.name})
                } else {
                    json!({"name": dep.name, "namespace": dep.namespace})
                });
                tier = tier.max(dep_tier + 1);
            }
        }
        let mut values_from = Vec::new();
        for p in providers.iter().filter(|p| p.namespace == ns) {
            if t.chance(60) {
                let mut v = json!({"kind": p.kind, "name": p.name});
                if p.key != "values.yaml" {
                    v["valuesKey"] = json!(p.key);
                }
                if t.chance(20) {
                    v["optional"] = json!(true);
                }
                values_from.push(v);
            }
        }
        if t.chance(10) {
            values_from
                .push(json!({"kind": "Secret", "name": "optional-overrides", "optional": true}));
        }
        let wiz = o.wiz && i == 0;
        let chart = if wiz {
            "wiz-kubernetes-integration".to_owned()
        } else {
            format!("chart{i}")
        };
        let mut hr = helm_release(&ns, &name, &chart, &deps, &values_from);
        if !o.restricted_pods && t.chance(30) {
            hr["spec"]["values"]["podSecurity"] = json!("none");
        }
        if o.tiers {
            hr["metadata"]["labels"]["fluxadmit.io/tier"] = json!(tier.to_string());
        }
        if wiz {
            // The Secrets the wiz policy requires, next to the release.
            repo.add(
                &path,
                secret(&ns, "wiz-api-token", &["clientId", "clientToken"]),
            );
            repo.add(&path, docker_secret(&ns, "aks-gitops-wiz"));
        }
        repo.add(&path, hr);
        hrs.push((Key::hr(&ns, &name), tier));
    }

    // postBuild.substituteFrom, provided by another Kustomization (or the root one).
    let mut substitute: Vec<Vec<Value>> = vec![Vec::new(); n_ks];
    for (i, subs) in substitute.iter_mut().enumerate() {
        if !t.chance(30) {
            continue;
        }
        let kind = if t.chance(50) { "ConfigMap" } else { "Secret" };
        let name = format!("vars{i}");
        let others: Vec<&String> = names.iter().filter(|n| **n != names[i]).collect();
        let path = match t.pick(others.len() + 1) {
            0 => ROOT_PATH.to_owned(),
            k => ks_path(others[k - 1]),
        };
        let obj = if kind == "ConfigMap" {
            config_map(ROOT_NS, &name, &["cluster_name"])
        } else {
            secret(ROOT_NS, &name, &["cluster_name"])
        };
        repo.add(&path, obj);
        let mut s = json!({"kind": kind, "name": name});
        if t.chance(20) {
            s["optional"] = json!(true);
        }
        subs.push(s);
    }

    // Plain Deployments applied by Kustomizations.
    for (i, n) in names.iter().enumerate() {
        if t.chance(30) {
            let ns = &namespaces[t.pick(n_ns)].0;
            let compliant = o.restricted_pods || t.chance(50);
            repo.add(
                &ks_path(n),
                deployment(
                    ns,
                    &format!("web{i}"),
                    json!({}),
                    pod_spec("ghcr.io/acme/web:1.0.0", compliant),
                ),
            );
        }
    }

    for (i, n) in names.iter().enumerate() {
        let deps: Vec<&str> = ks_deps[i].iter().map(String::as_str).collect();
        repo.add(
            ROOT_PATH,
            kustomization(n, &ks_path(n), &deps, waits[i], &substitute[i]),
        );
        repo.paths.entry(ks_path(n)).or_default();
    }

    Generated {
        repo,
        kustomizations: names,
        namespaces,
        helm_releases: hrs.into_iter().map(|(k, _)| k).collect(),
        providers,
    }
}

/// One defect a broken repository has.
#[derive(Clone, Copy, Debug)]
pub enum Defect {
    /// A dependsOn naming a HelmRelease (or Kustomization) with a typo.
    TypoDependsOn,
    /// Two HelmReleases (or Kustomizations) depending on each other.
    Cycle,
    /// valuesFrom a Secret no one provides.
    MissingSecret,
    /// valuesFrom an existing Secret with a valuesKey it does not have.
    WrongKey,
}

pub const DEFECTS: [Defect; 4] = [
    Defect::TypoDependsOn,
    Defect::Cycle,
    Defect::MissingSecret,
    Defect::WrongKey,
];

/// What fluxadmit must report for a defect: a warning or denial for one of `objects` whose
/// text contains `needle`.
#[derive(Clone, Debug)]
pub struct Expect {
    pub objects: Vec<Key>,
    pub needle: String,
}

/// Adds objects with `defect` to Kustomization `ks` (one that applies in the valid repo), in
/// namespace `ns`; `kustomization_variant` puts a dependsOn defect on Kustomizations instead.
pub fn inject(
    g: &mut Generated,
    defect: Defect,
    ks: &str,
    ns: &str,
    kustomization_variant: bool,
) -> Expect {
    let path = ks_path(ks);
    let repo = &mut g.repo;
    match (defect, kustomization_variant) {
        (Defect::TypoDependsOn, false) => {
            let typo = g
                .helm_releases
                .iter()
                .find(|k| k.namespace == ns)
                .map(|k| format!("{}x", k.name))
                .unwrap_or_else(|| "postgress".into());
            repo.add(
                &path,
                helm_release(ns, "typo", "chart-typo", &[json!({"name": typo})], &[]),
            );
            Expect {
                objects: vec![Key::hr(ns, "typo")],
                needle: format!("{ns}/{typo}"),
            }
        }
        (Defect::TypoDependsOn, true) => {
            let typo = format!("{ks}x");
            repo.add(
                ROOT_PATH,
                kustomization("typo", "apps/empty", &[&typo], false, &[]),
            );
            Expect {
                objects: vec![Key::ks(ROOT_NS, "typo")],
                needle: format!("{ROOT_NS}/{typo}"),
            }
        }
        (Defect::Cycle, false) => {
            repo.add(
                &path,
                helm_release(ns, "cyc-a", "chart-a", &[json!({"name": "cyc-b"})], &[]),
            );
            repo.add(
                &path,
                helm_release(ns, "cyc-b", "chart-b", &[json!({"name": "cyc-a"})], &[]),
            );
            Expect {
                objects: vec![Key::hr(ns, "cyc-a"), Key::hr(ns, "cyc-b")],
                needle: "cycle".into(),
            }
        }
        (Defect::Cycle, true) => {
            repo.add(
                ROOT_PATH,
                kustomization("cyc-a", "apps/empty", &["cyc-b"], false, &[]),
            );
            repo.add(
                ROOT_PATH,
                kustomization("cyc-b", "apps/empty", &["cyc-a"], false, &[]),
            );
            Expect {
                objects: vec![Key::ks(ROOT_NS, "cyc-a"), Key::ks(ROOT_NS, "cyc-b")],
                needle: "cycle".into(),
            }
        }
        (Defect::MissingSecret, _) => {
            repo.add(
                &path,
                helm_release(
                    ns,
                    "needs-secret",
                    "chart-n",
                    &[],
                    &[json!({"kind": "Secret", "name": "nobody-provides"})],
                ),
            );
            Expect {
                objects: vec![Key::hr(ns, "needs-secret")],
                needle: format!("{ns}/nobody-provides"),
            }
        }
        (Defect::WrongKey, _) => {
            repo.add(&path, secret(ns, "wrong-key-values", &["values.yaml"]));
            repo.add(
                &path,
                helm_release(
                    ns,
                    "wrong-key",
                    "chart-w",
                    &[],
                    &[json!({"kind": "Secret", "name": "wrong-key-values", "valuesKey": "vaules.yaml"})],
                ),
            );
            Expect {
                objects: vec![Key::hr(ns, "wrong-key")],
                needle: "vaules.yaml".into(),
            }
        }
    }
}
