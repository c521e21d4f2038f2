use proptest::prelude::*;
use serde_json::{Value as JsonValue, json};

use super::{CelError, Expression, MAX_SOURCE_BYTES, compile_ready_expr, eval_ready_expr};

fn ready_err(src: &str) -> CelError {
    match compile_ready_expr(src) {
        Ok(_) => panic!("{src:?} should not compile"),
        Err(e) => e,
    }
}

fn ready_ok(src: &str) {
    if let Err(e) = compile_ready_expr(src) {
        panic!("{src:?} should compile: {e}");
    }
}

#[test]
fn flux_rejects_a_dyn_output_with_its_position() {
    let e = ready_err("dep.status.ready");
    assert_eq!((e.line, e.column), (1, 1));
    assert!(e.message.contains("expected bool, got dyn"), "{e}");
    let e = ready_err("\n  dep.status.ready");
    assert_eq!((e.line, e.column), (2, 3), "{e}");
}

#[test]
fn flux_examples_that_compile() {
    for src in [
        "dep.status.ready == true",
        "self.metadata.name == dep.metadata.name",
        "has(dep.status.conditions) && dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
        "dep.status.conditions.all(c, c.status == 'True')",
        "dep.status.conditions.exists_one(c, c.type == 'Ready')",
        "dep.status.conditions.filter(c, c.type == 'Ready').size() == 1",
        "size(dep.status.conditions.map(c, c.type)) > 0",
        "!has(dep.status.failures) || dep.status.failures == 0",
        "dep.metadata.name.startsWith('db-') && dep.metadata.name.lowerAscii().endsWith('x')",
        "dep.status.?ready.orValue(false) == true",
        "dep.status.ready ? true : false",
        "bool(dep.status.ready)",
        "int(dep.status.observedGeneration) >= int(dep.metadata.generation)",
        "'Ready' in dep.status.conditions.map(c, c.type)",
        "type(dep.status.ready) == bool && dep.status.ready",
        "base64.encode(b'x') == 'eA==' && sets.contains(['a', 'b'], ['a'])",
        "dep.status.conditions.exists(c, c.type == 'Ready') && self.spec.x.exists(k, k == 'y')",
        "dep.status.ready == true && 1 + 2 == 3 && 'a' + 'b' == 'ab' && -1 < 0",
    ] {
        ready_ok(src);
    }
}

#[test]
fn flux_rejects_undeclared_references() {
    let e = ready_err("foo == 1");
    assert_eq!(
        e,
        CelError {
            line: 1,
            column: 1,
            message: "undeclared reference to 'foo'".into()
        }
    );
    let e = ready_err("dep.x == 1 && bar");
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (1, 15, "undeclared reference to 'bar'")
    );
    // Comprehension variables are scoped to their comprehension.
    ready_err("dep.items.exists(c, true) && c.ready == true");
    assert!(
        ready_err("dep.name.foo() == 1")
            .message
            .contains("undeclared reference to 'foo'")
    );
    // No lists/math extensions in Flux's environment.
    assert!(
        ready_err("lists.range(3).size() == 3")
            .message
            .contains("'lists'")
    );
    assert!(ready_err("object.x == 1").message.contains("'object'"));
}

#[test]
fn flux_rejects_non_bool_and_mismatched_types() {
    for (src, want) in [
        ("dep.status.conditions.map(c, c.type)", "got list"),
        ("dep.x ? 1 : 2", "got int"),
        ("size(dep.status.conditions)", "got int"),
        ("dep.metadata.name.lowerAscii()", "got string"),
        ("optional.of(dep.x)", "got optional_type"),
        ("1 + 'a' == 2", "'_+_' applied to '(int, string)'"),
        ("1 + 1.0 == 2.0", "'_+_' applied to '(int, double)'"),
        ("dep.items.exists(c, 1)", "'_||_' applied to '(bool, int)'"),
        ("1 && dep.ready", "'_&&_' applied to '(int, dyn)'"),
        (
            "'abc'.x == 1",
            "type 'string' does not support field selection",
        ),
        (
            "1.exists(x, true)",
            "cannot be the range of a comprehension",
        ),
        ("'abc'[0] == 'a'", "'_[_]' applied to '(string, int)'"),
    ] {
        let e = ready_err(src);
        assert!(e.message.contains(want), "{src}: {e}");
    }
}

#[test]
fn syntax_errors_carry_their_position() {
    let e = ready_err("dep.status.ready ==");
    assert_eq!((e.line, e.column), (1, 20), "{e}");
    assert!(e.message.contains("Syntax error"), "{e}");
    let e = ready_err("dep.a == 1 &&\n   ) dep.b");
    assert_eq!((e.line, e.column), (2, 4), "{e}");
    assert!(ready_err("has(dep)").message.contains("has()"));
    assert!(ready_err("").message.contains("Syntax error"));
    assert_eq!(
        ready_err("dep.x == 1 &&").to_string().split(':').next(),
        Some("1")
    );
}

#[test]
fn positions_count_characters_not_bytes() {
    let e = ready_err("'éé' == dep.x && zz");
    assert_eq!((e.line, e.column), (1, 18), "{e}");
}

#[test]
fn ready_expr_evaluates_over_self_and_dep() {
    let program = compile_ready_expr(
        "has(dep.status.conditions) && dep.status.conditions.exists(c, c.type == 'Ready' && c.status == 'True')",
    )
    .unwrap();
    let me = json!({"metadata": {"name": "app"}});
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    assert_eq!(eval_ready_expr(&program, &me, &ready), Ok(true));
    assert_eq!(eval_ready_expr(&program, &me, &not_ready), Ok(false));
    assert_eq!(
        eval_ready_expr(&program, &me, &json!({"status": {}})),
        Ok(false)
    );
    // As in cel-go, has() needs everything before its last field to exist.
    assert!(eval_ready_expr(&program, &me, &json!({})).is_err());
    let sets =
        compile_ready_expr("sets.intersects(dep.tags, ['a']) && !sets.equivalent(dep.tags, ['b'])")
            .unwrap();
    assert_eq!(
        eval_ready_expr(&sets, &me, &json!({"tags": ["a", "c"]})),
        Ok(true)
    );
}

fn helm_release() -> JsonValue {
    json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2",
        "kind": "HelmRelease",
        "metadata": {"name": "Wiz-Agent", "namespace": "wiz", "labels": {"team": "sec"}},
        "spec": {
            "replicas": 3,
            "ratio": 0.5,
            "values": {
                "wiz-kubernetes-connector": {"enabled": true},
                "Wiz-broker": {"image": {"tag": "1.2.3"}},
                "list": [1, 2, 3]
            }
        }
    })
}

fn policy(src: &str) -> Expression {
    match Expression::compile(src, &["object", "oldObject", "request"], true) {
        Ok(e) => e,
        Err(e) => panic!("{src:?} should compile: {e}"),
    }
}

fn eval(src: &str, object: &JsonValue) -> Result<bool, String> {
    let request = json!({"operation": "CREATE", "userInfo": {"username": "alice"}});
    policy(src).eval_bool(&[("object", object), ("request", &request)])
}

#[test]
fn policy_expressions_over_json() {
    let hr = helm_release();
    for (src, want) in [
        (
            "object.spec.values['wiz-kubernetes-connector'].enabled == true",
            true,
        ),
        ("has(object.spec.values.foo)", false),
        ("has(object.spec.values['Wiz-broker'].image.tag)", true),
        ("!has(object.spec.values['Wiz-broker'].image.digest)", true),
        ("object.spec.values.exists(k, k == 'Wiz-broker')", true),
        ("object.spec.values.all(k, k.lowerAscii() == k)", false),
        ("object.metadata.name.lowerAscii() == 'wiz-agent'", true),
        (
            "object.metadata.name.startsWith('Wiz') && object.metadata.name.contains('-')",
            true,
        ),
        ("object.metadata.name.matches('^[a-z-]+$')", false),
        ("object.metadata.name.split('-').size() == 2", true),
        ("object.spec.replicas > 2 && object.spec.ratio < 1.0", true),
        ("object.spec.values.list.map(x, x * 2) == [2, 4, 6]", true),
        (
            "lists.range(3).size() == 3 && math.greatest(1, 5) == 5",
            true,
        ),
        ("oldObject == null && request.operation == 'CREATE'", true),
        ("'team' in object.metadata.labels", true),
        ("object.spec.?missing.orValue('x') == 'x'", true),
    ] {
        assert_eq!(eval(src, &hr), Ok(want), "{src}");
    }
}

#[test]
fn missing_fields_are_evaluation_errors() {
    let hr = helm_release();
    let err = eval("object.spec.values.foo == 1", &hr).unwrap_err();
    assert!(err.contains("foo"), "{err}");
    assert!(eval("object.spec.values.list[7] == 1", &hr).is_err());
}

#[test]
fn policy_compile_checks_variables_and_types() {
    let e = Expression::compile("objekt.spec == 1", &["object"], true).unwrap_err();
    assert_eq!(e.message, "undeclared reference to 'objekt'");
    assert!(Expression::compile("object.metadata.name", &["object"], true).is_err());
    let e = Expression::compile(
        "object.metadata.namespace + '/' + object.metadata.name",
        &["object"],
        false,
    )
    .unwrap();
    assert_eq!(
        e.source(),
        "object.metadata.namespace + '/' + object.metadata.name"
    );
    assert_eq!(
        e.eval_string(&[("object", &helm_release())]),
        Ok("wiz/Wiz-Agent".to_string())
    );
    assert!(
        e.eval_bool(&[("object", &helm_release())])
            .unwrap_err()
            .contains("bool")
    );
    let n = Expression::compile("object.spec.replicas", &["object"], false).unwrap();
    assert!(n.eval_string(&[("object", &helm_release())]).is_err());
    assert!(format!("{e:?}").contains("Expression"));
}

#[test]
fn unbounded_inputs_are_rejected_without_overflowing_the_stack() {
    let parens = format!("{}true{}", "(".repeat(300), ")".repeat(300));
    assert!(compile_ready_expr(&parens).is_err());
    let long = format!("dep.x == '{}'", "a".repeat(MAX_SOURCE_BYTES));
    assert!(ready_err(&long).message.contains("too long"));
    let adds = format!("dep.x{} == 0", " + 1".repeat(1500));
    assert!(ready_err(&adds).message.contains("too complex"));
    let deep = format!("dep.x{} == 0", "+1".repeat(700));
    assert!(ready_err(&deep).message.contains("nested too deeply"));
    let lists = format!("{}1{} == 1", "[".repeat(200), "]".repeat(200));
    assert!(compile_ready_expr(&lists).is_err());
}

#[test]
fn deep_programs_evaluate_on_a_big_stack() {
    // ~300 levels: past the inline threshold, evaluated on the CEL thread.
    let src = format!("object.n{} == 300", " + 1".repeat(300));
    let e = Expression::compile(&src, &["object"], true).unwrap();
    assert_eq!(e.eval_bool(&[("object", &json!({"n": 0}))]), Ok(true));
    let deep_json = (0..200).fold(json!(1), |v, _| json!([v]));
    assert!(e.eval_bool(&[("object", &deep_json)]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn compiling_never_panics(src in "[a-z.()\\[\\]'\" !&|?:=<>+*/%0-9,{}\n-]{0,80}") {
        let _ = compile_ready_expr(&src);
        let _ = Expression::compile(&src, &["object"], false);
    }

    #[test]
    fn evaluation_never_panics(src in "(object|'a'|1|\\[1\\]|\\{'a': 1\\})(\\.(a|size\\(\\)|lowerAscii\\(\\))|\\[0\\]|\\['a'\\]| == 1| \\+ 1){0,6}") {
        if let Ok(e) = Expression::compile(&src, &["object"], false) {
            let _ = e.eval_bool(&[("object", &json!({"a": [1, "x", {"b": null}]}))]);
        }
    }
}

#[test]
fn only_referenced_variables_are_bound() {
    for (src, used) in [
        ("object.metadata.name == 'a'", &["object"][..]),
        (
            "has(oldObject.spec) && request.operation == 'UPDATE'",
            &["oldObject", "request"],
        ),
        ("[1, 2].all(x, x > 0)", &[]),
        (
            "object.spec.values.exists(k, k == oldObject.metadata.name)",
            &["object", "oldObject"],
        ),
        ("true", &[]),
    ] {
        let e = policy(src);
        for v in ["object", "oldObject", "request"] {
            assert_eq!(e.uses(v), used.contains(&v), "{src}: {v}");
        }
    }
    // A referenced variable that is not given is null; unreferenced ones need not be given.
    let e = policy("oldObject == null");
    assert_eq!(e.eval_bool(&[]), Ok(true));
    let obj = json!({"metadata": {"name": "a"}});
    assert_eq!(
        policy("object.metadata.name == 'a'").eval_bool(&[("object", &obj)]),
        Ok(true)
    );
}
