use serde_json::{Value, json};

use super::tests::{applied, compile};
use super::{Overlay, OverlayError};

fn err(v: Value) -> OverlayError {
    match Overlay::compile(&v) {
        Ok(o) => panic!("expected an error, compiled {o:?}"),
        Err(e) => e,
    }
}

#[test]
fn compile_rejects_malformed_anchors() {
    let cases = [
        (
            json!({ "spec": { "containers": [{ "+(": 1 }] } }),
            "spec.containers[0].+(",
            "unterminated",
        ),
        (json!({ "a": { "()": 1 } }), "a.()", "empty anchor"),
        (json!({ "+()": 1 }), "+()", "empty anchor"),
        (json!({ "-(a)": 1 }), "-(a)", "unknown anchor prefix"),
        (json!({ "=(a)": 1 }), "=(a)", "validate-only"),
        (json!({ "ab(c)": 1 }), "ab(c)", "malformed anchor"),
        (json!({ "((a))": 1 }), "((a))", "nested parentheses"),
        (
            json!({ "c": [{ "+(name)": "x" }] }),
            "c[0].+(name)",
            "merge key",
        ),
        (json!({ "x": 1, "+(x)": 2 }), "x", "written twice"),
        (json!({ "+(x)": null }), "+(x)", "no effect"),
        (
            json!({ "(a)": { "(b)": 1 } }),
            "(a).(b)",
            "condition pattern",
        ),
        (json!({ "(a)": [] }), "(a)", "empty list pattern"),
        (json!({ "a": [1, { "(b)": 1 }] }), "a[1]", "only maps"),
        (json!(["x"]), "$", "must be a map"),
    ];
    for (ov, path, msg) in cases {
        let e = err(ov);
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(msg), "{e}");
    }
    assert_eq!(
        err(json!({ "(a": 1 })).to_string(),
        "(a: unterminated anchor `(a`: missing `)`"
    );
}

#[test]
fn anchors_accept_surrounding_whitespace() {
    let (out, _) = applied(&json!({ " +(a) ": 1 }), &json!({}));
    assert_eq!(out, json!({ "a": 1 }));
}

#[test]
fn unchanged_target_reports_false_and_no_patch() {
    let ov = compile(json!({ "a": { "+(b)": 1 }, "c": 2 }));
    let mut t = json!({ "a": { "b": 0 }, "c": 2 });
    assert!(ov.json_patch(&t).is_none());
    assert!(!ov.apply(&mut t));
    let patch = ov.json_patch(&json!({}));
    assert!(patch.is_some_and(|p| !p.0.is_empty()));
}
