//! Reading JSON values by pointer without allocating.
//!
//! `serde_json::Value::pointer` unescapes every segment into a new `String`, even when there is
//! nothing to unescape. The engine reads a handful of fixed pointers per rule on every request,
//! so this reader borrows each segment and only allocates for one that holds `~0` or `~1`.

use serde_json::Value;
use std::borrow::Cow;

/// The value at an RFC 6901 JSON pointer (`""` is the whole value), as `Value::pointer` finds it.
pub fn at<'a>(v: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(v);
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/').try_fold(v, |target, raw| {
        let token = unescape(raw);
        match target {
            Value::Object(map) => map.get(token.as_ref()),
            Value::Array(list) => index(&token).and_then(|i| list.get(i)),
            _ => None,
        }
    })
}

/// The string at a JSON pointer, if it is one.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    at(v, pointer).and_then(Value::as_str)
}

fn unescape(raw: &str) -> Cow<'_, str> {
    if raw.contains('~') {
        Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
    } else {
        Cow::Borrowed(raw)
    }
}

/// An array index as RFC 6901 writes it: digits, no sign, no leading zero.
fn index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Appends `s` as a JSON string: as it is, in quotes, when nothing in it needs escaping (JSON
/// escapes only `"`, `\` and control characters), else as serde_json escapes it. Answers and
/// log lines carry many short plain strings; this copies them without a per-byte escape loop.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    // No early exit: the whole scan vectorizes.
    let plain = !s.bytes().fold(false, |esc, b| {
        esc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        use serde::Serializer as _;
        // Writing into a Vec cannot fail.
        let _ = serde_json::Serializer::new(&mut *out).serialize_str(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn write_str_writes_what_serde_json_writes() {
        for s in [
            "",
            "plain text: spec.valuesFrom[0]",
            "quote \" inside",
            "back\\slash",
            "new\nline and tab\t",
            "\u{1}\u{1f}\u{7f}",
            "ünïcödé ✓ 🚀",
            &"long plain ".repeat(40),
            &format!("{}\"", "x".repeat(100)),
        ] {
            let mut out = b"[".to_vec();
            write_str(&mut out, s);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                format!("[{}", serde_json::to_string(s).unwrap()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let v = json!({
            "metadata": {"labels": {"a/b": "slash", "m~n": "tilde", "": "empty"}},
            "spec": {"list": [{"name": "x"}, {"name": "y"}], "n": 3},
        });
        for p in [
            "",
            "/metadata",
            "/metadata/labels/a~1b",
            "/metadata/labels/m~0n",
            "/metadata/labels/",
            "/spec/list/1/name",
            "/spec/list/01/name",
            "/spec/list/-",
            "/spec/list/+1",
            "/spec/list/9",
            "/spec/n/0",
            "/missing/deeper",
            "spec",
        ] {
            assert_eq!(at(&v, p), v.pointer(p), "{p:?}");
        }
        assert_eq!(str_at(&v, "/spec/list/0/name"), Some("x"));
        assert_eq!(str_at(&v, "/spec/n"), None);
    }
}
