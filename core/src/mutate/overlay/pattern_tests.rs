use serde_json::{Value, json};

use super::pattern;
use super::units::{parse_duration, parse_quantity, wildcard};

fn m(pattern: Value, value: Value) -> bool {
    match pattern::compile(&pattern, "p", 0) {
        Ok(p) => p.matches(&value),
        Err(e) => panic!("pattern {pattern} failed: {e}"),
    }
}

#[test]
fn wildcards() {
    assert!(wildcard("*", ""));
    assert!(wildcard("", ""));
    assert!(!wildcard("", "a"));
    assert!(wildcard("*.azurecr.io/*", "acme.azurecr.io/web:1"));
    assert!(!wildcard("*.azurecr.io/*", "acme.azurecr.iox/web"));
    assert!(!wildcard("*.azurecr.io/*", "docker.io/azurecr.io"));
    assert!(wildcard("?*", "a"));
    assert!(!wildcard("?*", ""));
    assert!(wildcard("a?c", "abc"));
    assert!(!wildcard("a?c", "ac"));
    assert!(wildcard("*:latest", "nginx:latest"));
    assert!(wildcard("a*b*c", "aXbYbZc"));
    assert!(wildcard("é?", "éß"));
}

#[test]
fn string_patterns() {
    assert!(m(json!("web|api"), json!("api")));
    assert!(!m(json!("web|api"), json!("db")));
    assert!(m(json!("!db"), json!("web")));
    assert!(!m(json!("!db"), json!("db")));
    assert!(m(json!("a*&*z"), json!("abcz")));
    assert!(!m(json!("a*&*z"), json!("abc")));
    assert!(m(json!("*"), json!(5)));
    assert!(m(json!("true"), json!(true)));
    assert!(!m(json!("*"), Value::Null));
    assert!(!m(json!(">1"), json!("abc")));
    assert!(m(json!("a|b"), json!("a|b")), "exact equality first");
}

#[test]
fn numeric_operators_quantities_durations() {
    assert!(m(json!(">0"), json!(1000)));
    assert!(!m(json!(">0"), json!(0)));
    assert!(m(json!(">=1000"), json!(1000)));
    assert!(m(json!("<1Gi"), json!("512Mi")));
    assert!(!m(json!("<1Gi"), json!("2Gi")));
    assert!(m(json!("<=500m"), json!("0.5")));
    assert!(
        m(json!(">5m"), json!("1h")),
        "durations are tried before quantities"
    );
    assert!(m(json!("1-10"), json!(5)));
    assert!(!m(json!("1-10"), json!(11)));
    assert!(m(json!("1!-10"), json!(11)));
    assert!(!m(json!("1!-10"), json!(5)));
    assert!(m(json!("!0"), json!(3)));
    assert!(m(json!("100"), json!(100)));
}

#[test]
fn typed_patterns() {
    assert!(m(json!(true), json!(true)));
    assert!(!m(json!(true), json!("true")));
    assert!(m(json!(3), json!(3.0)));
    assert!(m(json!(3), json!("3")));
    assert!(!m(json!(3), json!(3.5)));
    assert!(m(json!(2.5), json!("2.5")));
    assert!(m(json!(2.0), json!(2)));
    assert!(m(Value::Null, Value::Null));
    assert!(m(Value::Null, json!("")));
    assert!(!m(Value::Null, json!({})));
}

#[test]
fn map_and_list_patterns() {
    let p = json!({ "runAsNonRoot": true, "=(runAsUser)": ">0", "X(privileged)": null, "seccompProfile": "*" });
    assert!(m(
        p.clone(),
        json!({ "runAsNonRoot": true, "seccompProfile": {} })
    ));
    assert!(m(
        p.clone(),
        json!({ "runAsNonRoot": true, "runAsUser": 5, "seccompProfile": 1 })
    ));
    assert!(!m(
        p.clone(),
        json!({ "runAsNonRoot": true, "runAsUser": 0, "seccompProfile": 1 })
    ));
    assert!(!m(
        p.clone(),
        json!({ "runAsNonRoot": true, "privileged": false, "seccompProfile": 1 })
    ));
    assert!(!m(
        p.clone(),
        json!({ "runAsNonRoot": true, "seccompProfile": null })
    ));
    assert!(!m(p, json!("not a map")));
    assert!(m(json!({}), json!({ "any": 1 })));
    assert!(m(
        json!([{ "name": "?*" }]),
        json!([{ "name": "a" }, { "name": "b" }])
    ));
    assert!(!m(json!([{ "name": "?*" }]), json!([{ "name": "a" }, {}])));
    assert!(m(json!(["a*", "b"]), json!(["ax", "b", "c"])));
    assert!(!m(json!(["a*", "b"]), json!(["ax"])));
}

#[test]
fn parsers() {
    assert_eq!(parse_duration("1h30m"), Some(5400e9));
    assert_eq!(parse_duration("0"), Some(0.0));
    assert_eq!(parse_duration(".5s"), Some(0.5e9));
    assert_eq!(parse_duration("-2ms"), Some(-2e6));
    assert_eq!(parse_duration("5"), None);
    assert_eq!(parse_duration(""), None);
    assert_eq!(parse_duration("1x"), None);
    assert_eq!(parse_quantity("1Ki"), Some(1024.0));
    assert_eq!(parse_quantity("500m"), Some(0.5));
    assert_eq!(parse_quantity("1e3"), Some(1000.0));
    assert_eq!(parse_quantity("-1.5k"), Some(-1500.0));
    assert_eq!(parse_quantity("1K"), None);
    assert_eq!(parse_quantity("abc"), None);
    assert_eq!(parse_quantity("."), None);
    assert_eq!(parse_quantity("1e"), None);
}
