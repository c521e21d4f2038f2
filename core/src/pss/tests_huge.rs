//! Pods with tens of thousands of containers: the check stays linear (not timed here; see
//! BENCHMARKS.md) and what one review produces stays bounded.

use serde_json::{Value, json};

use super::{
    Level, MAX_FINDING_BYTES, MAX_MESSAGES_PER_CHECK, MAX_SUMMARY_BYTES, Version, Violation,
    check_pod, summarize,
};
use crate::admission::{MAX_MESSAGE_BYTES as MAX_ANSWER_MESSAGE, MAX_WARNINGS_TOTAL};
use crate::engine::Mode;
use crate::policy::load::compile_yaml;
use crate::state::Snapshot;

const N: usize = 60_000;

fn containers(n: usize, privileged: bool) -> Vec<Value> {
    (0..n)
        .map(|i| {
            if privileged {
                json!({"name": format!("c{i}"), "image": "nginx",
                       "securityContext": {"privileged": true}})
            } else {
                json!({"name": format!("c{i}"), "image": "nginx"})
            }
        })
        .collect()
}

fn privileged_message(name: &str) -> String {
    format!(r#"privileged (container "{name}" must not set securityContext.privileged=true)"#)
}

#[test]
fn summary_of_a_huge_pod_names_the_first_offenders_and_counts_the_rest() {
    let spec = json!({"containers": containers(N, true)});
    let v = check_pod(Level::Baseline, Version::Latest, None, &spec, "", &|_| {
        false
    });
    assert_eq!(v.len(), N, "every container is still found");
    let s = summarize(Level::Baseline, Version::Latest, &v);
    assert!(s.len() <= MAX_SUMMARY_BYTES, "{} bytes", s.len());
    let listed: Vec<String> = (0..MAX_MESSAGES_PER_CHECK)
        .map(|i| privileged_message(&format!("c{i}")))
        .collect();
    assert_eq!(
        s,
        format!(
            "violates PodSecurity \"baseline:latest\": {}, and {} more \"privileged\" findings",
            listed.join(", "),
            N - MAX_MESSAGES_PER_CHECK
        )
    );
}

#[test]
fn summary_caps_each_check_and_counts_distinct_messages_only() {
    let v = |check: &'static str, message: String| Violation {
        check,
        path: String::new(),
        message,
    };
    let mut all = Vec::new();
    for i in 0..12 {
        all.push(v(
            "hostPorts",
            format!("hostPort (container \"a\" uses hostPort {i})"),
        ));
        // A repeated message is listed once and not counted again.
        all.push(v(
            "hostPorts",
            "hostPort (container \"a\" uses hostPort 0)".into(),
        ));
    }
    all.push(v("privileged", privileged_message("a")));
    let s = summarize(Level::Baseline, Version::Latest, &all);
    assert!(
        s.contains("uses hostPort 9), and 2 more \"hostPorts\" findings, privileged ("),
        "{s}"
    );
    assert!(!s.contains("hostPort 10"), "{s}");
    // Exactly ten (the cap) is listed in full, with no count.
    let ten: Vec<Violation> = all
        .iter()
        .filter(|x| !x.message.ends_with(" 0)"))
        .take(10)
        .cloned()
        .collect();
    assert!(!summarize(Level::Baseline, Version::Latest, &ten).contains("more"));
}

#[test]
fn a_long_finding_is_cut_at_a_char_boundary() {
    // A malformed value is shown as its JSON text, which can be as long as the object allows.
    let long = "é".repeat(5000);
    let spec = json!({"containers": [{"name": "a", "image": "x",
                      "securityContext": {"procMount": long}}]});
    let v = check_pod(Level::Baseline, Version::Latest, None, &spec, "", &|_| {
        false
    });
    assert_eq!(v.len(), 1);
    let s = summarize(Level::Baseline, Version::Latest, &v);
    let head = "violates PodSecurity \"baseline:latest\": ";
    let finding = s.strip_prefix(head).unwrap();
    assert!(finding.len() <= MAX_FINDING_BYTES, "{}", finding.len());
    assert!(
        finding.starts_with(
            "procMount (container \"a\" must not set securityContext.procMount to \"éé"
        )
    );
    let cut = v[0].message.len() - finding.find('…').unwrap();
    assert!(
        finding.ends_with(&format!("é… (truncated, {cut} more bytes)")),
        "{finding}"
    );
}

fn review(spec: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
          "resource": {"group": "", "version": "v1", "resource": "pods"},
          "namespace": "apps", "operation": "CREATE", "userInfo": {"username": "alice"},
          "object": {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": "huge", "namespace": "apps"}, "spec": spec}}
    }))
    .unwrap()
}

fn snapshot(level: &str, action: &str) -> Snapshot {
    let yaml = format!(
        "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {{name: pss}}\n\
         spec:\n  action: {action}\n  match: {{resources: [{{kinds: [Pod]}}]}}\n  \
         rules: [{{name: r, podSecurity: {{level: {level}}}}}]\n"
    );
    Snapshot {
        policies: compile_yaml("pss.yaml", &yaml).unwrap(),
        view: Default::default(),
    }
}

#[test]
fn the_answer_for_a_huge_pod_is_bounded() {
    let body = review(json!({"containers": containers(N, true)}));
    let answer = snapshot("baseline", "Enforce")
        .review(Mode::Validate, &body)
        .unwrap();
    let v = &answer.outcome.verdict;
    assert!(!v.allowed);
    assert!(v.message.len() <= MAX_ANSWER_MESSAGE, "{}", v.message.len());
    assert!(v.message.starts_with(
        "denied by fluxadmit: pss/r: spec: violates PodSecurity \"baseline:latest\": privileged (container \"c0\" must"
    ), "{}", &v.message[..200]);
    assert!(v.message.contains(&privileged_message("c9")));
    assert!(!v.message.contains("\"c10\""));
    assert!(
        v.message
            .ends_with(&format!(", and {} more \"privileged\" findings", N - 10))
    );
    assert!(
        answer.body.len() < 2 * MAX_ANSWER_MESSAGE,
        "{} bytes",
        answer.body.len()
    );
    assert_eq!(answer.outcome.findings.len(), 1);

    // Audit: the same as a warning, within what the API server passes on unchanged.
    let body = review(json!({"containers": containers(N, false)}));
    let answer = snapshot("restricted", "Audit")
        .review(Mode::Validate, &body)
        .unwrap();
    let v = &answer.outcome.verdict;
    assert!(v.allowed);
    let total: usize = v.warnings.iter().map(String::len).sum();
    assert!(total <= MAX_WARNINGS_TOTAL, "{total}");
    assert_eq!(v.warnings.len(), 1);
    let w = &v.warnings[0];
    assert!(w.starts_with("pss/r: spec: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"c0\" must"), "{w}");
    assert!(w.contains("(container \"c9\" must set securityContext.allowPrivilegeEscalation=false), and 59990 more \"allowPrivilegeEscalation\" findings"), "{w}");
    assert!(w.contains("… (truncated, "), "{w}");
}

#[test]
fn many_annotations_and_containers_stay_correct() {
    // One AppArmor annotation per container: each looks its container up once.
    let n = 2000;
    let mut annotations = serde_json::Map::new();
    for i in 0..n {
        annotations.insert(
            format!("container.apparmor.security.beta.kubernetes.io/c{i}"),
            json!("unconfined"),
        );
    }
    let meta = json!({"annotations": annotations});
    let spec = json!({"containers": containers(n, false)});
    let exempt = |image: &str| image == "nginx";
    let v = check_pod(
        Level::Baseline,
        Version::Latest,
        Some(&meta),
        &spec,
        "",
        &exempt,
    );
    assert!(
        v.is_empty(),
        "every named container is exempt: {:?}",
        v.first()
    );
    let v = check_pod(
        Level::Baseline,
        Version::Latest,
        Some(&meta),
        &spec,
        "",
        &|_| false,
    );
    assert_eq!(v.len(), n);
    assert!(v.iter().all(|v| v.check == "appArmorProfile"));
}
