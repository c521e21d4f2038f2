//! Flux's post-build variable substitution (`spec.postBuild.substitute`/`substituteFrom`):
//! `${VAR}`, `${VAR:=default}`, `${VAR:-default}`, `${VAR=default}`, `${VAR-default}`, and
//! `$${VAR}` for a literal `${VAR}`.
//!
//! kustomize-controller substitutes in the YAML text of the built objects, so a whole scalar
//! that becomes `3` or `true` is a number or a boolean afterwards; a string made of exactly
//! one variable is re-typed the same way here. Unlike the controller (which by default puts
//! an empty string for a variable it has no value for), a variable without a value and
//! without a default is left as written: offline, a value may come from a Secret the
//! repository cannot show, and a guess would produce false findings.

use serde_json::Value;
use std::collections::BTreeMap;

/// The annotation (or label) that turns substitution off for one object.
const DISABLE: &str = "kustomize.toolkit.fluxcd.io/substitute";

/// Substitutes in every string and key of `obj`, unless the object opts out. Returns whether
/// anything changed.
pub fn substitute_object(obj: &mut Value, vars: &BTreeMap<String, String>) -> bool {
    let meta = obj.get("metadata");
    let disabled = ["annotations", "labels"].iter().any(|m| {
        meta.and_then(|v| v.get(m))
            .and_then(|v| v.get(DISABLE))
            .and_then(Value::as_str)
            == Some("disabled")
    });
    if disabled {
        return false;
    }
    substitute_value(obj, vars)
}

fn substitute_value(v: &mut Value, vars: &BTreeMap<String, String>) -> bool {
    match v {
        Value::String(s) => {
            if !s.contains('$') {
                return false;
            }
            let Some(out) = substitute_str(s, vars) else {
                return false;
            };
            let whole = is_one_reference(s);
            *v = if whole {
                retype(out)
            } else {
                Value::String(out)
            };
            true
        }
        Value::Array(a) => {
            let mut changed = false;
            for e in a {
                changed |= substitute_value(e, vars);
            }
            changed
        }
        Value::Object(m) => {
            let mut changed = false;
            if m.keys().any(|k| k.contains("${")) {
                let old = std::mem::take(m);
                for (k, val) in old {
                    let key = substitute_str(&k, vars).unwrap_or(k);
                    m.insert(key, val);
                }
                changed = true;
            }
            for val in m.values_mut() {
                changed |= substitute_value(val, vars);
            }
            changed
        }
        _ => false,
    }
}

/// A string that is exactly one `${...}` reference.
fn is_one_reference(s: &str) -> bool {
    s.starts_with("${") && s.ends_with('}') && s[2..].find('}') == Some(s.len() - 3)
}

/// A whole scalar after substitution, typed as YAML would type it in the controller's text.
fn retype(s: String) -> Value {
    match s.as_str() {
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        "null" | "Null" | "NULL" | "~" => return Value::Null,
        _ => {}
    }
    let numeric = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        && !(s.len() > 1 && s.starts_with('0') && !s.starts_with("0."));
    if numeric {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
        if let Ok(f) = s.parse::<f64>()
            && let Some(n) = serde_json::Number::from_f64(f)
        {
            return Value::Number(n);
        }
    }
    Value::String(s)
}

/// Substitutes the references in one string; None when there is nothing to change.
pub fn substitute_str(s: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut changed = false;
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            // `$${VAR}`: a literal `${VAR}`.
            out.push_str("${");
            rest = after;
            changed = true;
            continue;
        }
        if let Some(body_and_more) = tail.strip_prefix("${")
            && let Some(end) = body_and_more.find('}')
            && let Some(value) = resolve(&body_and_more[..end], vars)
        {
            out.push_str(&value);
            rest = &body_and_more[end + 1..];
            changed = true;
            continue;
        }
        out.push('$');
        rest = &tail[1..];
    }
    out.push_str(rest);
    changed.then_some(out)
}

/// The value of one reference body (`VAR`, `VAR:=default`, ...), or None to leave it as is.
fn resolve(body: &str, vars: &BTreeMap<String, String>) -> Option<String> {
    let name_end = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let op = &body[name_end..];
    let value = vars.get(name);
    if op.is_empty() {
        return value.cloned();
    }
    // `:=`/`:-` use the default when unset or empty; `=`/`-` only when unset.
    for (prefix, when_empty) in [(":=", true), (":-", true), ("=", false), ("-", false)] {
        if let Some(default) = op.strip_prefix(prefix) {
            return Some(match value {
                Some(v) if !(when_empty && v.is_empty()) => v.clone(),
                _ => default.to_owned(),
            });
        }
    }
    None // another shell form (`${#VAR}`, `${VAR:0:3}`): left as written
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn references_defaults_and_escapes() {
        let v = vars(&[("APP", "atuin"), ("EMPTY", "")]);
        let cases = [
            ("${APP}-config", Some("atuin-config")),
            ("${MISSING:=fallback}", Some("fallback")),
            ("${MISSING:-fallback}", Some("fallback")),
            ("${EMPTY:=fallback}", Some("fallback")),
            ("${EMPTY=fallback}", Some("")),
            ("${APP:=x}.${MISSING:-y}", Some("atuin.y")),
            ("$${APP}", Some("${APP}")),
            ("${MISSING}", None),
            ("cost $5 and ${APP}", Some("cost $5 and atuin")),
            ("${#APP}", None),
            ("plain", None),
        ];
        for (input, want) in cases {
            assert_eq!(substitute_str(input, &v).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn objects_are_substituted_retyped_and_can_opt_out() {
        let v = vars(&[("APP", "web"), ("REPLICAS", "3"), ("ON", "true")]);
        let mut obj = json!({
            "metadata": {"name": "${APP}", "labels": {"${APP}/tier": "front"}},
            "spec": {"replicas": "${REPLICAS}", "paused": "${ON}", "image": "x:${REPLICAS}",
                     "left": "${UNSET}", "zero": "${Z:=007}"}
        });
        assert!(substitute_object(&mut obj, &v));
        assert_eq!(obj["metadata"]["name"], "web");
        assert_eq!(obj["metadata"]["labels"]["web/tier"], "front");
        assert_eq!(obj["spec"]["replicas"], 3);
        assert_eq!(obj["spec"]["paused"], true);
        assert_eq!(obj["spec"]["image"], "x:3");
        assert_eq!(obj["spec"]["left"], "${UNSET}");
        assert_eq!(obj["spec"]["zero"], "007");

        let mut off = json!({"metadata": {"name": "${APP}", "annotations":
            {"kustomize.toolkit.fluxcd.io/substitute": "disabled"}}});
        assert!(!substitute_object(&mut off, &v));
        assert_eq!(off["metadata"]["name"], "${APP}");
    }

    mod generated {
        use super::*;
        use proptest::prelude::*;

        /// One piece of a generated template, with what it must become.
        #[derive(Debug, Clone)]
        enum Piece {
            /// Text without `$`.
            Text(String),
            /// `${NAME}` of a variable with a value.
            Known(usize),
            /// `${NAME}` of a variable without one: left as written.
            Unknown(usize),
            /// `${NAME<op>default}` with one of the four operators.
            Default(usize, &'static str, String),
            /// `$${NAME}`: a literal `${NAME}`.
            Escaped(usize),
        }

        const NAMES: [&str; 4] = ["APP", "EMPTY", "REGION_1", "MISSING"];
        const VALUES: [Option<&str>; 4] = [Some("atuin"), Some(""), Some("eu-west"), None];

        fn piece() -> impl Strategy<Value = Piece> {
            prop_oneof![
                "[a-zA-Z0-9 ./:{}é-]{0,6}".prop_map(Piece::Text),
                (0usize..3).prop_map(Piece::Known),
                Just(Piece::Unknown(3)),
                (
                    0usize..4,
                    prop::sample::select(vec![":=", ":-", "=", "-"]),
                    "[a-z0-9./é-]{0,5}"
                )
                    .prop_map(|(n, op, d)| Piece::Default(n, op, d)),
                (0usize..4).prop_map(Piece::Escaped),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2048))]

            /// A template built from pieces substitutes to what each piece must become.
            #[test]
            fn templates_substitute_to_what_they_were_built_from(
                pieces in prop::collection::vec(piece(), 0..8)
            ) {
                let vars: BTreeMap<String, String> = NAMES
                    .iter()
                    .zip(VALUES)
                    .filter_map(|(n, v)| Some((n.to_string(), v?.to_string())))
                    .collect();
                let (mut template, mut want) = (String::new(), String::new());
                for p in &pieces {
                    match p {
                        Piece::Text(t) => {
                            template.push_str(t);
                            want.push_str(t);
                        }
                        Piece::Known(n) | Piece::Unknown(n) => {
                            template.push_str(&format!("${{{}}}", NAMES[*n]));
                            match VALUES[*n] {
                                Some(v) => want.push_str(v),
                                None => want.push_str(&format!("${{{}}}", NAMES[*n])),
                            }
                        }
                        Piece::Default(n, op, d) => {
                            template.push_str(&format!("${{{}{op}{d}}}", NAMES[*n]));
                            let use_default = match VALUES[*n] {
                                None => true,
                                Some(v) => v.is_empty() && op.starts_with(':'),
                            };
                            want.push_str(if use_default { d } else { VALUES[*n].unwrap_or("") });
                        }
                        Piece::Escaped(n) => {
                            template.push_str(&format!("$${{{}}}", NAMES[*n]));
                            want.push_str(&format!("${{{}}}", NAMES[*n]));
                        }
                    }
                }
                let got = substitute_str(&template, &vars).unwrap_or_else(|| template.clone());
                prop_assert_eq!(got, want, "template {:?}", template);
            }

            /// Any text: no panic, and text without `$` is never changed.
            #[test]
            fn any_text_is_safe_and_text_without_dollars_is_kept(
                text in "[$${}:=a-zA-Z0-9_ é#-]{0,24}"
            ) {
                let vars = BTreeMap::from([("a".to_string(), "1".to_string())]);
                let out = substitute_str(&text, &vars);
                if !text.contains('$') {
                    prop_assert_eq!(out, None);
                }
                let mut obj = serde_json::json!({"k": text.clone(), text.clone(): [text]});
                substitute_object(&mut obj, &vars);
            }
        }
    }
}
