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
    let src = format!("int(object.n){} == 300", " + 1".repeat(300));
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

fn items(n: usize) -> JsonValue {
    json!({"items": (0..n).collect::<Vec<_>>()})
}

#[test]
fn a_loop_is_charged_per_element_of_its_range() {
    // `all` evaluates 7 nodes an element: `@not_strictly_false(@result)` and `@result && x >= 0`.
    let e = policy("object.items.all(x, x >= 0)");
    let eval = |n: usize, budget: u64| e.eval_bool_within(budget, &[("object", &items(n))]);
    assert_eq!(eval(100, 700), Ok(true));
    let err = eval(101, 700).unwrap_err();
    assert!(
        err.starts_with("runtime cost limit exceeded") && err.contains("--max-cel-runtime-cost"),
        "{err}"
    );
    // An empty range costs as one element; a loop not reached costs nothing.
    assert_eq!(eval(0, 7), Ok(true));
    let guarded = policy("size(object.items) > 5 || object.items.all(x, x >= 0)");
    assert_eq!(
        guarded.eval_bool_within(1, &[("object", &items(1000))]),
        Ok(true)
    );
}

#[test]
fn a_loop_inside_a_loop_stops_once_the_budget_is_spent() {
    // The quadratic expression: loaded only under a raised estimate limit, then
    // stopped by the runtime limit long before its 64 million inner iterations.
    let e = Expression::compile_under(
        "object.items.all(c, object.items.exists_one(d, d == c))",
        &["object"],
        true,
        f64::MAX,
    )
    .unwrap();
    let object = items(8000);
    let started = std::time::Instant::now();
    let err = e
        .eval_bool_within(1_000_000, &[("object", &object)])
        .unwrap_err();
    assert!(err.starts_with("runtime cost limit exceeded"), "{err}");
    // A million nodes are a few hundred milliseconds even in a debug build; the whole
    // evaluation would take minutes.
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    // Small enough, it runs to its answer.
    assert_eq!(
        e.eval_bool_within(1_000_000, &[("object", &items(50))]),
        Ok(true)
    );
}

#[test]
fn a_trip_is_counted_and_the_next_evaluation_has_a_fresh_budget() {
    let e = policy("object.items.all(x, x >= 0)");
    let before = super::runtime_cost_trips();
    assert!(e.eval_bool_within(10, &[("object", &items(100))]).is_err());
    assert!(super::runtime_cost_trips() > before);
    assert_eq!(
        e.eval_bool_within(700, &[("object", &items(100))]),
        Ok(true)
    );
    assert_eq!(
        e.eval_bool_within(700, &[("object", &items(100))]),
        Ok(true)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Metering changes no answer: every macro, nested, over lists and maps.
    #[test]
    fn metered_loops_give_the_answers_of_the_plain_ones(
        outer in "(all|exists|exists_one)",
        inner in "(map\\(y, y \\+ x\\)|filter\\(y, y > x\\)|map\\(y, y > x, y\\))",
        test in "(size\\(v\\) > 1|v\\.exists\\(z, z == 3\\)|v\\.all\\(z, z < 4\\))",
        xs in proptest::collection::vec(0i64..5, 0..6),
    ) {
        let src = format!(
            "object.xs.{outer}(x, object.xs.{inner}.exists(w, true) || \
             [object.xs.{inner}].{outer}(v, {test}))"
        );
        let e = Expression::compile_under(&src, &["object"], true, f64::MAX).unwrap();
        let object = json!({"xs": xs});
        let plain = e.eval_bool_unmetered(&[("object", &object)]);
        prop_assert_eq!(e.eval_bool(&[("object", &object)]), plain.clone(), "{}", src);
        prop_assert_eq!(e.eval_bool_within(u64::MAX, &[("object", &object)]), plain, "{}", src);
    }
}

#[test]
fn only_the_fields_an_expression_selects_are_converted() {
    use super::json::Shape;
    let shape = |src: &str| {
        let env = super::env::env(super::env::Dialect::Policy).unwrap();
        let program = env.compile(src).unwrap();
        Shape::of(program.expression(), "object")
    };
    // Two fields of the object, and a list used whole.
    let few =
        shape("object.metadata.name != '' && has(object.spec.x) && object.spec.y.all(v, v > 0)");
    assert_ne!(few, shape("object == oldObject"));
    assert_eq!(
        shape("object.spec.x == 1 && object.spec == {}"),
        shape("object.spec.size() == 1")
    );
    // An index, an optional select or a bare use read what they are applied to whole.
    assert_eq!(shape("object['spec'].x == 1"), shape("object == 1"));
    assert_eq!(shape("object.?spec.hasValue()"), shape("object == 1"));
    assert_eq!(shape("object.spec['x'] == 1"), shape("object.spec == 1"));

    // Pruned, the object answers as the whole one does.
    let object = json!({
        "metadata": {"name": "web", "labels": {"a": "1"}},
        "spec": {"x": 1, "y": [1, 2], "z": {"big": "x".repeat(1000)}},
        "status": {"ready": true}
    });
    for src in [
        "object.metadata.name != '' && has(object.spec.x) && object.spec.y.all(v, v > 0)",
        "!has(object.spec.w) && has(object.status)",
        "object.spec.x == 1 && size(object.spec) == 3",
        "object.metadata.labels.a == '1'",
    ] {
        let e = policy(src);
        assert_eq!(
            e.eval_bool(&[("object", &object)]),
            e.eval_bool_unmetered(&[("object", &object)]),
            "{src}"
        );
        assert_eq!(e.eval_bool(&[("object", &object)]), Ok(true), "{src}");
    }
    // A missing intermediate field is the same error either way.
    let e = policy("object.nope.x == 1");
    assert_eq!(
        e.eval_bool(&[("object", &object)]),
        e.eval_bool_unmetered(&[("object", &object)])
    );
    assert!(e.eval_bool(&[("object", &object)]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Converting only the selected parts changes no answer, errors included.
    #[test]
    fn pruned_variables_give_the_answers_of_whole_ones(
        uses in proptest::collection::vec(
            "(has\\(object(\\.(a|b|c)){1,3}\\)|object(\\.(a|b|c)){0,3}( == 1| == \\{\\}| == \\[\\]| == 'a'| == null|\\.size\\(\\) > 1|\\['a'\\] == 1| == \\{'a': 1\\}))",
            1..4,
        ),
        joins in proptest::collection::vec("( && | \\|\\| )", 3),
        object in json_object(3),
    ) {
        let mut src = String::new();
        for (i, u) in uses.iter().enumerate() {
            if i > 0 {
                src.push_str(&joins[i - 1]);
            }
            src.push_str(u);
        }
        let Ok(e) = Expression::compile(&src, &["object"], true) else {
            return Ok(());
        };
        prop_assert_eq!(
            e.eval_bool(&[("object", &object)]),
            e.eval_bool_unmetered(&[("object", &object)]),
            "{}", src
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]
    /// Converting only what macros read of each element (and only the selected parts around
    /// them) changes no answer, errors included: loops, nested loops, a loop variable used
    /// whole, indexed, or shadowing another, and the variable itself read inside a loop.
    #[test]
    fn lists_pruned_per_element_give_the_answers_of_whole_ones(
        loops in proptest::collection::vec(
            (
                "(a|b|c)",
                "(all|exists|exists_one|filter|map)",
                "(has\\(x\\.b\\)|x\\.b == 1|x\\.b\\.c == 'a'|x == \\{\\}|size\\(x\\) > 1|x\\['b'\\] == 1|has\\(object\\.b\\)|x\\.b\\.all\\(y, y\\.c == 1\\)|x\\.a\\.exists\\(x, has\\(x\\.c\\)\\)|x\\.c\\.map\\(y, y\\.a\\)\\.size\\(\\) == 1)",
            ),
            1..4,
        ),
        joins in proptest::collection::vec("( && | \\|\\| )", 3),
        object in json_with_lists(3),
    ) {
        let mut src = String::new();
        for (i, (field, mac, body)) in loops.iter().enumerate() {
            if i > 0 {
                src.push_str(&joins[i - 1]);
            }
            src.push_str(&match mac.as_str() {
                "filter" => format!("object.{field}.filter(x, {body}).size() > 0"),
                "map" => format!("object.{field}.map(x, {body}).exists(v, v)"),
                m => format!("object.{field}.{m}(x, {body})"),
            });
        }
        let Ok(e) = Expression::compile(&src, &["object"], true) else {
            return Ok(());
        };
        prop_assert_eq!(
            e.eval_bool(&[("object", &object)]),
            e.eval_bool_unmetered(&[("object", &object)]),
            "{}", src
        );
    }
}

#[test]
fn a_loop_reads_only_what_its_body_selects_of_each_element() {
    use super::json::Shape;
    let shape = |src: &str| {
        let env = super::env::env(super::env::Dialect::Policy).unwrap();
        let program = env.compile(src).unwrap();
        Shape::of(program.expression(), "object")
    };
    let whole_list = shape("size(object.spec.containers) > 0");
    let images = shape("object.spec.containers.all(c, c.image.startsWith('r/'))");
    assert_ne!(images, whole_list);
    // The element used whole, or the list used whole beside the loop: all of it.
    assert_eq!(
        shape(
            "object.spec.containers.filter(c, c.image != '').size() > 0 && size(object.spec.containers) > 0"
        ),
        whole_list
    );
    // What two loops over one list read of each element adds up.
    assert_eq!(
        shape(
            "object.spec.containers.all(c, c.image != '') && object.spec.containers.exists(d, has(d.name))"
        ),
        shape("object.spec.containers.all(c, c.image != '' && has(c.name))")
    );

    // A Deployment with a large part no rule reads: the answers are the same.
    let containers: Vec<JsonValue> = (0..3)
        .map(|i| {
            json!({"name": format!("c{i}"), "image": format!("r/app:{i}"),
                        "env": [{"name": "BIG", "value": "x".repeat(1000)}],
                        "securityContext": {"privileged": i == 2}})
        })
        .collect();
    let object = json!({"spec": {"containers": containers}});
    for (src, want) in [
        (
            "object.spec.containers.all(c, c.image.startsWith('r/'))",
            true,
        ),
        (
            "object.spec.containers.exists(c, c.securityContext.privileged)",
            true,
        ),
        (
            "object.spec.containers.all(c, !has(c.securityContext.runAsUser))",
            true,
        ),
        (
            "object.spec.containers.exists_one(c, c.name == 'c1' && size(c.env) == 1)",
            true,
        ),
        (
            "object.spec.containers.map(c, c.name).exists(n, n == 'c3')",
            false,
        ),
    ] {
        let e = policy(src);
        assert_eq!(e.eval_bool(&[("object", &object)]), Ok(want), "{src}");
        assert_eq!(
            e.eval_bool(&[("object", &object)]),
            e.eval_bool_unmetered(&[("object", &object)]),
            "{src}"
        );
    }
}

/// JSON objects with keys `a`, `b`, `c`, often lists of such objects, up to `depth` deep.
fn json_with_lists(depth: u32) -> impl Strategy<Value = JsonValue> {
    json_tree(
        depth,
        Inner {
            list_weight: 3,
            map_weight: 2,
            list_len: 4,
            size: 48,
        },
        true,
    )
}

/// JSON objects with keys `a`, `b`, `c`, mostly of objects, up to `depth` deep.
fn json_object(depth: u32) -> impl Strategy<Value = JsonValue> {
    json_tree(
        depth,
        Inner {
            list_weight: 1,
            map_weight: 4,
            list_len: 3,
            size: 32,
        },
        false,
    )
}

/// How the inner values of [`json_tree`] are made.
struct Inner {
    /// Odds of a list against a map.
    list_weight: u32,
    map_weight: u32,
    /// Lists have fewer elements than this.
    list_len: usize,
    /// About how many values a tree holds.
    size: u32,
}

/// JSON objects with keys `a`, `b`, `c` of small leaves (`true` among them when `booleans`),
/// lists and maps, up to `depth` deep.
fn json_tree(depth: u32, inner: Inner, booleans: bool) -> impl Strategy<Value = JsonValue> {
    let mut leaves = vec![
        Just(JsonValue::Null).boxed(),
        (0i64..3).prop_map(JsonValue::from).boxed(),
        "[a-z]{0,1}".prop_map(JsonValue::from).boxed(),
        Just(json!([])).boxed(),
        Just(json!({})).boxed(),
    ];
    if booleans {
        leaves.push(Just(json!(true)).boxed());
    }
    let tree =
        proptest::strategy::Union::new(leaves).prop_recursive(depth, inner.size, 3, move |v| {
            prop_oneof![
                inner.list_weight => proptest::collection::vec(v.clone(), 0..inner.list_len)
                    .prop_map(JsonValue::from),
                inner.map_weight => proptest::collection::btree_map("(a|b|c)", v, 1..4)
                    .prop_map(|m| JsonValue::Object(m.into_iter().collect())),
            ]
        });
    proptest::collection::btree_map("(a|b|c)", tree, 1..4)
        .prop_map(|m| JsonValue::Object(m.into_iter().collect()))
}
