//! `fluxadmit check`: Secrets a repository provides without committing them in the clear
//! count as existing, with their key names; bootstrap Secrets are declared on the command line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{check, kustomize, write};

/// A HelmRelease that takes its values from `secret`'s key `values.yaml`.
fn release(name: &str, secret: &str) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: {name}, namespace: apps}}
spec:
  interval: 10m
  chart: {{spec: {{chart: {name}, sourceRef: {{kind: HelmRepository, name: charts}}}}}}
  valuesFrom:
    - kind: Secret
      name: {secret}
      valuesKey: values.yaml
"
    )
}

const PROVIDERS: [(&str, &str); 4] = [
    (
        "plain.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: plain, namespace: apps}\nstringData:\n  values.yaml: 'replicas: 2'\n",
    ),
    (
        "sops.yaml",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: sops, namespace: apps}\ntype: Opaque\ndata:\n  values.yaml: ENC[AES256_GCM,data:Zm9vYmFy,iv:aXY=,tag:dGFn,type:str]\nsops:\n  age:\n    - recipient: age1qqqq\n      enc: |\n        -----BEGIN AGE ENCRYPTED FILE-----\n  encrypted_regex: ^(data|stringData)$\n  version: 3.9.0\n",
    ),
    (
        "external.yaml",
        "apiVersion: external-secrets.io/v1\nkind: ExternalSecret\nmetadata: {name: external-source, namespace: apps}\nspec:\n  secretStoreRef: {kind: ClusterSecretStore, name: vault}\n  target: {name: external}\n  data:\n    - secretKey: values.yaml\n      remoteRef: {key: apps/values}\n",
    ),
    (
        "sealed.yaml",
        "apiVersion: bitnami.com/v1alpha1\nkind: SealedSecret\nmetadata: {name: sealed, namespace: apps}\nspec:\n  encryptedData:\n    values.yaml: AgBy3i4OJSWK+PiTySYZZA==\n",
    ),
];

#[test]
fn every_provider_counts_as_the_secret_with_its_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let names = ["plain", "sops", "external", "sealed", "assumed"];
    let releases: Vec<String> = names
        .iter()
        .map(|n| release(&format!("{n}-app"), n))
        .collect();
    write(root, "apps/releases.yaml", &releases.join("---\n"));

    // Nothing provides them yet: one finding per release, naming namespace and secret.
    let (code, out) = check(root, &["apps"]);
    assert_eq!(code, Some(1), "{out}");
    for n in names {
        assert!(
            out.contains(&format!("Secret apps/{n} not found")),
            "{n}: {out}"
        );
    }

    for (file, text) in PROVIDERS {
        write(root, &format!("apps/{file}"), text);
    }
    let (code, out) = check(
        root,
        &["--assume-secret", "apps/assumed:values.yaml", "apps"],
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 errors"), "{out}");
    // The encrypted values are never printed.
    assert!(!out.contains("ENC["), "{out}");
    assert!(!out.contains("AgBy3i4"), "{out}");

    // A provider that has the Secret but not the key: the key is named.
    write(
        root,
        "apps/sealed.yaml",
        &PROVIDERS[3]
            .1
            .replace("values.yaml: AgBy", "other.yaml: AgBy"),
    );
    let (code, out) = check(
        root,
        &["--assume-secret", "apps/assumed:values.yaml", "apps"],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("sealed"), "{out}");
    assert!(out.contains("values.yaml"), "{out}");
}

#[test]
fn a_secret_generator_counts_when_kustomize_builds_it() {
    let Some(_) = kustomize() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write(root, "apps/release.yaml", &release("gen-app", "generated"));
    write(
        root,
        "apps/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps
resources: [release.yaml]
secretGenerator:
  - name: generated
    files: [values.yaml]
    options: {disableNameSuffixHash: true}
",
    );
    write(root, "apps/values.yaml", "replicas: 2\n");
    let (code, out) = check(root, &["apps"]);
    assert_eq!(code, Some(0), "{out}");
    // The generator with another key: the key the release needs is missing.
    write(
        root,
        "apps/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: apps
resources: [release.yaml]
secretGenerator:
  - name: generated
    literals: [token=abc]
    options: {disableNameSuffixHash: true}
",
    );
    let (code, out) = check(root, &["apps"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("values.yaml"), "{out}");
    assert!(!out.contains("abc"), "{out}");
}
