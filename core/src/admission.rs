//! AdmissionReview v1 in and out, with kube-rs's `kube::core::admission` types.

/// JSON string writing as answers use it, for the server's decision log line.
pub use crate::json::write_str as write_json_str;
use crate::policy::model::OperationName;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{ApiResource, DynamicResourceScope, Resource};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::cell::Cell;
use std::sync::OnceLock;

/// The parts of an admission request the engine looks at, read once per request.
#[derive(Debug, Clone)]
pub struct Request {
    pub uid: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub sub_resource: Option<String>,
    pub namespace: String,
    pub name: String,
    pub operation: OperationName,
    pub dry_run: bool,
    /// `Value::Null` when absent (DELETE).
    pub object: Value,
    /// The existing object (UPDATE, DELETE), parsed when first asked for: see [`Request::old_object`].
    pub(crate) old: LazyJson,
    /// The rest of the review in kube-rs's form (the user's details); its uid, kind, name and
    /// namespace have moved into the fields above.
    pub(crate) review: AdmissionRequest<ReviewObject>,
}

/// Why a body is not an AdmissionReview we can answer (HTTP 400).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReviewError {
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    #[error("body is not an AdmissionReview: {0}")]
    NotReview(String),
    #[error("unsupported AdmissionReview apiVersion {0:?}: expected \"admission.k8s.io/v1\"")]
    WrongVersion(String),
    #[error("AdmissionReview has no request")]
    NoRequest,
    #[error("AdmissionReview request has an empty uid")]
    NoUid,
}

/// Parses a body into a request. Never panics; every failure says what is wrong.
pub fn parse_review(body: &[u8]) -> Result<Request, ReviewError> {
    // JSON is UTF-8: checked once for the whole body, so the parser need not check each string.
    let text =
        std::str::from_utf8(body).map_err(|e| ReviewError::NotJson(format!("not UTF-8 ({e})")))?;
    let review: Result<Envelope, _> = {
        let _reading = ReadingReview::start();
        serde_json::from_str(text)
    };
    let review = review.map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            ReviewError::NotJson(e.to_string())
        } else {
            ReviewError::NotReview(e.to_string())
        }
    })?;
    if review.kind != "AdmissionReview" {
        return Err(ReviewError::NotReview(format!("kind is {:?}", review.kind)));
    }
    if review.api_version != "admission.k8s.io/v1" {
        return Err(ReviewError::WrongVersion(review.api_version));
    }
    let mut req = review.request.ok_or(ReviewError::NoRequest)?;
    req.types = kube::core::TypeMeta {
        api_version: review.api_version,
        kind: review.kind,
    };
    if req.uid.is_empty() {
        return Err(ReviewError::NoUid);
    }
    // The objects move out of the kube-rs request (the response only needs its uid and types).
    let object = match req.object.take() {
        Some(o) => o.json.into_value().map_err(ReviewError::NotReview)?,
        None => Value::Null,
    };
    let old = req.old_object.take().map(|o| o.json).unwrap_or_default();
    let operation = match req.operation {
        Operation::Create => OperationName::Create,
        Operation::Update => OperationName::Update,
        Operation::Delete => OperationName::Delete,
        Operation::Connect => OperationName::Connect,
    };
    let live = if object.is_null() { old.get() } else { &object };
    let name = if req.name.is_empty() {
        crate::rules::str_at(live, "/metadata/name")
            .unwrap_or_default()
            .to_owned()
    } else {
        std::mem::take(&mut req.name)
    };
    // The identifying fields move out too: only the user's details are read from `review`.
    Ok(Request {
        uid: std::mem::take(&mut req.uid),
        group: std::mem::take(&mut req.kind.group),
        version: std::mem::take(&mut req.kind.version),
        kind: std::mem::take(&mut req.kind.kind),
        sub_resource: req.sub_resource.take(),
        namespace: req.namespace.take().unwrap_or_default(),
        name,
        operation,
        dry_run: req.dry_run,
        object,
        old,
        review: req,
    })
}

/// An AdmissionReview as sent. kube-rs's `AdmissionReview` reads `apiVersion` and `kind`
/// through `#[serde(flatten)]`, which first buffers the whole body into an intermediate tree;
/// this reads the same fields in one pass and keeps kube-rs's `AdmissionRequest` for the rest.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    api_version: String,
    kind: String,
    #[serde(default)]
    request: Option<AdmissionRequest<ReviewObject>>,
}

/// The object inside a review, read straight into one JSON value. kube-rs's `DynamicObject`
/// reads its fields through `#[serde(flatten)]`, which buffers the whole object first and
/// costs more than the rest of a review; this type keeps kube-rs's `AdmissionReview` and
/// `AdmissionRequest` while reading the object once. Its `ObjectMeta` (for the `Resource`
/// trait kube-rs's request type asks for) is left empty: the object is read from `json`, and
/// the request's own name and namespace are in [`Request`].
#[derive(Debug, Clone, Default)]
pub(crate) struct ReviewObject {
    metadata: ObjectMeta,
    /// Parsed, or kept raw (see [`ReadingReview`]).
    json: LazyJson,
}

thread_local! {
    /// While [`parse_review`] reads a body on this thread: how many objects it has read.
    static OBJECTS_READ: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Marks the reading of one review body. The API server writes `object` before `oldObject`;
/// the first object read is parsed at once, a second one (the old object of an UPDATE) is
/// only checked and kept as raw JSON, and parsed if a rule asks for it (most never do), so an
/// UPDATE costs about one object's parse, not two. In any other order the result is the same,
/// only the raw one is then `object`, parsed right after reading.
struct ReadingReview;

impl ReadingReview {
    fn start() -> ReadingReview {
        OBJECTS_READ.with(|c| c.set(Some(0)));
        ReadingReview
    }

    /// Whether the object about to be read is not the first of the review.
    fn next_is_later() -> bool {
        OBJECTS_READ.with(|c| match c.get() {
            Some(n) => {
                c.set(Some(n + 1));
                n > 0
            }
            None => false,
        })
    }
}

impl Drop for ReadingReview {
    fn drop(&mut self) {
        OBJECTS_READ.with(|c| c.set(None));
    }
}

/// A JSON value from the review, parsed, or kept raw until first asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct LazyJson {
    raw: Option<Box<RawValue>>,
    value: OnceLock<Value>,
}

impl From<Value> for LazyJson {
    fn from(v: Value) -> LazyJson {
        LazyJson {
            raw: None,
            value: OnceLock::from(v),
        }
    }
}

impl LazyJson {
    fn raw(raw: Box<RawValue>) -> LazyJson {
        LazyJson {
            raw: Some(raw),
            value: OnceLock::new(),
        }
    }

    /// The value; `Value::Null` when absent. Raw JSON was validated when read, so parsing it
    /// here does not fail.
    pub(crate) fn get(&self) -> &Value {
        self.value.get_or_init(|| {
            self.raw
                .as_deref()
                .and_then(|r| parse_raw(r).ok())
                .unwrap_or(Value::Null)
        })
    }

    /// The value, parsing it now if it was kept raw and not asked for yet.
    fn into_value(self) -> Result<Value, String> {
        match (self.value.into_inner(), self.raw) {
            (Some(v), _) => Ok(v),
            (None, Some(raw)) => parse_raw(&raw),
            (None, None) => Ok(Value::Null),
        }
    }

    /// Whether the value has been parsed (tests of the laziness).
    #[cfg(test)]
    pub(crate) fn parsed(&self) -> bool {
        self.value.get().is_some()
    }
}

fn parse_raw(raw: &RawValue) -> Result<Value, String> {
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

impl Request {
    /// The existing object (UPDATE, DELETE); `Value::Null` when absent (CREATE).
    pub fn old_object(&self) -> &Value {
        self.old.get()
    }

    /// `request.userInfo` as the API server sent it (built when a CEL expression asks for it).
    pub fn user_info(&self) -> Value {
        serde_json::to_value(&self.review.user_info).unwrap_or(Value::Null)
    }

    /// The requesting user's name, if the review carries one.
    pub fn username(&self) -> Option<&str> {
        self.review.user_info.username.as_deref()
    }
}

impl<'de> Deserialize<'de> for ReviewObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if ReadingReview::next_is_later() {
            let raw = Box::<RawValue>::deserialize(d)?;
            if !raw.get().trim_start().starts_with('{') {
                return Err(serde::de::Error::custom("object must be a map"));
            }
            return Ok(ReviewObject {
                metadata: ObjectMeta::default(),
                json: LazyJson::raw(raw),
            });
        }
        let value = Value::deserialize(d)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom("object must be a map"));
        }
        Ok(ReviewObject {
            metadata: ObjectMeta::default(),
            json: LazyJson::from(value),
        })
    }
}

impl Serialize for ReviewObject {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.json.raw {
            Some(raw) => raw.serialize(s),
            None => self.json.get().serialize(s),
        }
    }
}

impl Resource for ReviewObject {
    type DynamicType = ApiResource;
    type Scope = DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }

    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }

    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }

    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }

    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The response's shape before it becomes an AdmissionReview.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Verdict {
    pub allowed: bool,
    /// The denial message (when not allowed).
    pub message: String,
    pub warnings: Vec<String>,
    pub patch: Option<json_patch::Patch>,
}

/// The longest denial message an answer carries, in bytes: a denial lists every error, and one
/// object with tens of thousands of findings must not make a multi-megabyte answer (the API
/// server stores the message in the request's status and audit events, `kubectl` prints it).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// The API server's budget for all the warnings of one request, in characters: past it, it
/// cuts each warning to [`MAX_WARNING_CHARS_WHEN_OVER`] characters and drops the rest
/// (`k8s.io/apiserver/pkg/endpoints/filters/warning.go`). Answers stay within it, in bytes (a
/// byte count is never below the character count).
pub const MAX_WARNINGS_TOTAL: usize = 4 * 1024;

/// What the API server cuts each warning to once the total is over [`MAX_WARNINGS_TOTAL`].
pub const MAX_WARNING_CHARS_WHEN_OVER: usize = 256;

/// Cuts `text` to at most `max` bytes at a char boundary, ending with a marker that says how
/// many bytes were cut: `… (truncated, 123 more bytes)`. A text that fits is left as it is.
/// When `max` cannot hold the marker, the text is only cut (at a char boundary).
pub fn truncate_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    // The marker with the widest count it can need: the count is below `text.len()`.
    let widest = marker(text.len()).len();
    let Some(room) = max.checked_sub(widest) else {
        let at = floor_char_boundary(text, max);
        text.truncate(at);
        return;
    };
    let at = floor_char_boundary(text, room);
    let cut = text.len() - at;
    text.truncate(at);
    text.push_str(&marker(cut));
}

fn marker(cut: usize) -> String {
    format!("… (truncated, {cut} more bytes)")
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

impl Verdict {
    /// Bounds what the answer carries: the message to [`MAX_MESSAGE_BYTES`], and the warnings
    /// to what the API server passes on unchanged ([`MAX_WARNINGS_TOTAL`] in all). Warnings
    /// that fit are left as they are; otherwise each is cut to an equal share of the total (at
    /// least [`MAX_WARNING_CHARS_WHEN_OVER`] bytes), as many as fit are kept, and a last
    /// warning says how many were left out.
    pub fn cap(&mut self) {
        truncate_text(&mut self.message, MAX_MESSAGE_BYTES);
        cap_warnings(&mut self.warnings);
    }
}

/// See [`Verdict::cap`].
pub fn cap_warnings(warnings: &mut Vec<String>) {
    let total: usize = warnings.iter().map(String::len).sum();
    if total <= MAX_WARNINGS_TOTAL {
        return;
    }
    // Room for the closing note, whose count has at most as many digits as the number of
    // warnings.
    let note = |n: usize| format!("… and {n} more warnings not shown");
    let budget = MAX_WARNINGS_TOTAL - note(warnings.len()).len();
    // A fair share of the budget each, and never less than the API server would keep.
    let share = (budget / warnings.len()).max(MAX_WARNING_CHARS_WHEN_OVER);
    let mut used = 0;
    let mut kept = 0;
    for w in warnings.iter_mut() {
        truncate_text(w, share);
        if used + w.len() > budget {
            break;
        }
        used += w.len();
        kept += 1;
    }
    let dropped = warnings.len() - kept;
    warnings.truncate(kept);
    if dropped > 0 {
        warnings.push(note(dropped));
    }
}

/// The AdmissionReview answer for a request, as JSON: the uid echoed, a denial as status 403
/// `Forbidden` with the verdict's message, warnings, and a patch as the base64 string the
/// AdmissionReview API documents (kube-rs would write a JSON array of byte values).
///
/// Written straight into one buffer sized for it: this is on every request, and building
/// kube-rs's `AdmissionResponse` to serialize it costs a copy of the message and warnings
/// and an escape loop over every byte. The bytes are those `serde_json` writes for kube-rs's
/// `AdmissionReview<DynamicObject>` (field order and omitted empty fields included); a test
/// compares the two.
pub fn answer_json(req: &Request, verdict: &Verdict) -> Vec<u8> {
    answer_json_for(&req.uid, verdict)
}

/// As [`answer_json`], for the request with `uid` (when the parsed request is gone: a panic or
/// a deadline took it).
pub fn answer_json_for(uid: &str, verdict: &Verdict) -> Vec<u8> {
    use crate::json::write_str;
    use base64::Engine as _;
    let patch = verdict
        .patch
        .as_ref()
        .filter(|p| !p.0.is_empty())
        .and_then(|p| serde_json::to_vec(p).ok());
    let size = uid.len()
        + verdict.message.len()
        + verdict.warnings.iter().map(|w| w.len() + 3).sum::<usize>()
        + patch.as_ref().map_or(0, |p| p.len() * 4 / 3 + 4);
    let mut out = Vec::with_capacity(size + 192);
    out.extend_from_slice(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#,
    );
    write_str(&mut out, uid);
    if verdict.allowed {
        out.extend_from_slice(br#","allowed":true,"status":{}"#);
    } else {
        out.extend_from_slice(br#","allowed":false,"status":{"code":403"#);
        if !verdict.message.is_empty() {
            out.extend_from_slice(br#","message":"#);
            write_str(&mut out, &verdict.message);
        }
        out.extend_from_slice(br#","reason":"Forbidden"}"#);
    }
    if patch.is_some() {
        out.extend_from_slice(br#","patchType":"JSONPatch""#);
    }
    if !verdict.warnings.is_empty() {
        out.extend_from_slice(br#","warnings":["#);
        for (i, w) in verdict.warnings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(&mut out, w);
        }
        out.push(b']');
    }
    if let Some(bytes) = patch {
        out.extend_from_slice(br#","patch":""#);
        let at = out.len();
        out.resize(at + base64::encoded_len(bytes.len(), true).unwrap_or(0), 0);
        let written = base64::engine::general_purpose::STANDARD
            .encode_slice(&bytes, &mut out[at..])
            .unwrap_or(0);
        out.truncate(at + written);
        out.push(b'"');
    }
    out.extend_from_slice(b"}}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionResponse;

    #[test]
    fn truncation_keeps_short_texts_and_cuts_at_char_boundaries() {
        let mut s = "short".to_owned();
        truncate_text(&mut s, 5);
        assert_eq!(s, "short");
        // ASCII: cut to exactly the limit, the marker counting what was cut.
        let mut s = "a".repeat(100);
        truncate_text(&mut s, 40);
        assert_eq!(s, format!("{}… (truncated, 91 more bytes)", "a".repeat(9)));
        // Multi-byte text (2-, 3- and 4-byte chars): every limit gives valid UTF-8 within it,
        // the kept part a prefix of the text, and the count right.
        let text: String = "é€😀x".repeat(50);
        for max in 0..text.len() + 2 {
            let mut s = text.clone();
            truncate_text(&mut s, max);
            assert!(s.len() <= max || max >= text.len(), "{max}: {}", s.len());
            if max >= text.len() {
                assert_eq!(s, text);
                continue;
            }
            match s.find('…') {
                Some(at) if s.ends_with(" more bytes)") => {
                    assert!(text.starts_with(&s[..at]), "{max}");
                    assert!(s.ends_with(&format!("(truncated, {} more bytes)", text.len() - at)));
                }
                // Too small for the marker: only cut.
                _ => assert!(text.starts_with(&s) && max < 40, "{max}: {s}"),
            }
        }
    }

    #[test]
    fn warnings_stay_within_what_the_api_server_passes_on() {
        // Few and short: unchanged.
        let mut w = vec!["a".repeat(100), "é".repeat(1000)];
        let before = w.clone();
        cap_warnings(&mut w);
        assert_eq!(w, before);
        // One long warning: cut to the total, still within it with the note's room.
        let mut w = vec!["€".repeat(10_000)];
        cap_warnings(&mut w);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].len() <= MAX_WARNINGS_TOTAL && w[0].len() > 3 * 1024,
            "{}",
            w[0].len()
        );
        assert!(w[0].ends_with(" more bytes)"));
        // Many: as many as fit, each cut, then how many were left out.
        let mut w: Vec<String> = (0..60_000)
            .map(|i| format!("warning {i}: {}", "x".repeat(300)))
            .collect();
        cap_warnings(&mut w);
        let total: usize = w.iter().map(String::len).sum();
        assert!(total <= MAX_WARNINGS_TOTAL, "{total}");
        assert!(
            w[..w.len() - 1]
                .iter()
                .all(|w| w.len() <= MAX_WARNING_CHARS_WHEN_OVER)
        );
        assert!(w[0].starts_with("warning 0: xxx"));
        let kept = w.len() - 1;
        assert_eq!(
            w[kept],
            format!("… and {} more warnings not shown", 60_000 - kept)
        );
        // And a verdict's message.
        let mut v = Verdict {
            message: "ü".repeat(MAX_MESSAGE_BYTES),
            ..Verdict::default()
        };
        v.cap();
        assert!(v.message.len() <= MAX_MESSAGE_BYTES);
        let kept = v.message.find('…').unwrap();
        assert!(v.message.ends_with(&format!(
            "ü… (truncated, {} more bytes)",
            2 * MAX_MESSAGE_BYTES - kept
        )));
    }

    fn review(extra: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u1",
            "kind":{{"group":"apps","version":"v1","kind":"Deployment"}},
            "resource":{{"group":"apps","version":"v1","resource":"deployments"}},
            "namespace":"apps","operation":"CREATE","userInfo":{{"username":"alice"}},
            "object":{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"web","namespace":"apps"}}}}{extra}}}}}"#
        )
    }

    #[test]
    fn reads_a_review() {
        let r = parse_review(review(r#","dryRun":true"#).as_bytes()).unwrap();
        assert_eq!(
            (r.uid.as_str(), r.kind.as_str(), r.name.as_str()),
            ("u1", "Deployment", "web")
        );
        assert!(r.dry_run);
        assert_eq!(r.object["metadata"]["name"], "web");
        assert!(r.old_object().is_null());
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        assert!(matches!(
            parse_review(b"{nope"),
            Err(ReviewError::NotJson(_))
        ));
        assert!(matches!(
            parse_review(b"[1,2]"),
            Err(ReviewError::NotReview(_))
        ));
        // A Latin-1 "é" inside a string: the whole body is refused as not UTF-8, with the offset.
        let latin1 = review("").replace("\"web\"", "\"caf\u{1}\"").into_bytes();
        let latin1: Vec<u8> = latin1
            .iter()
            .map(|&b| if b == 1 { 0xE9 } else { b })
            .collect();
        match parse_review(&latin1) {
            Err(e @ ReviewError::NotJson(_)) => {
                assert!(e.to_string().contains("not UTF-8"), "{e}");
                assert!(e.to_string().contains("index"), "{e}");
            }
            other => panic!("{:?}", other.map(|r| r.uid)),
        }
        let v1beta1 = review("").replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        assert!(matches!(
            parse_review(v1beta1.as_bytes()),
            Err(ReviewError::WrongVersion(_))
        ));
        let no_req = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert_eq!(
            parse_review(no_req.as_bytes()).unwrap_err(),
            ReviewError::NoRequest
        );
    }

    /// The answer as kube-rs's own types serialize it (text, and as a value with the patch in
    /// base64): what [`answer_json`] must equal.
    fn kube_answer(req: &Request, verdict: &Verdict) -> (String, Value) {
        use base64::Engine as _;
        let mut resp = AdmissionResponse::from(&req.review);
        resp.uid = req.uid.clone(); // moved out of `review` when the body was read
        if !verdict.allowed {
            resp = resp.deny(&verdict.message);
            resp.result.code = 403;
            resp.result.reason = "Forbidden".into();
        }
        if !verdict.warnings.is_empty() {
            resp.warnings = Some(verdict.warnings.clone());
        }
        if let Some(p) = verdict.patch.clone().filter(|p| !p.0.is_empty()) {
            resp = resp.with_patch(p).unwrap();
        }
        let text = serde_json::to_string(&resp.into_review()).unwrap();
        let mut v: Value = serde_json::from_str(&text).unwrap();
        // kube-rs writes the patch as an array of bytes; the API documents a base64 string.
        if let Some(bytes) = v["response"].get("patch").cloned() {
            let bytes: Vec<u8> = serde_json::from_value(bytes).unwrap();
            v["response"]["patch"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
        (text, v)
    }

    #[test]
    fn answer_is_what_kube_rs_writes() {
        let r = parse_review(review("").as_bytes()).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/metadata/labels", "value": {"team": "a \"b\""}}
        ]))
        .unwrap();
        let messages = [
            "",
            "denied by fluxadmit: p/r: spec.valuesFrom[0]: Secret a/b not found",
            "quotes \" and \\ and\nnew lines, ünïcödé",
        ];
        let warnings = [vec![], vec!["careful".to_owned(), "tab\there".to_owned()]];
        let patches = [None, Some(json_patch::Patch(vec![])), Some(patch)];
        for allowed in [true, false] {
            for message in messages {
                for w in &warnings {
                    for p in &patches {
                        let verdict = Verdict {
                            allowed,
                            message: message.to_owned(),
                            warnings: w.clone(),
                            patch: p.clone(),
                        };
                        let ours = answer_json(&r, &verdict);
                        let (kube_text, expected) = kube_answer(&r, &verdict);
                        let text = String::from_utf8(ours.clone()).unwrap();
                        let parsed: Value = serde_json::from_slice(&ours).unwrap();
                        assert_eq!(parsed, expected, "{verdict:?}");
                        if expected["response"].get("patch").is_none() {
                            // Without a patch, the very bytes serde_json writes.
                            assert_eq!(text, kube_text, "{verdict:?}");
                        } else {
                            assert_eq!(text.matches("\"patch\"").count(), 1, "{text}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn denial_echoes_uid_with_403() {
        let r = parse_review(review("").as_bytes()).unwrap();
        let out = answer_json(
            &r,
            &Verdict {
                allowed: false,
                message: "no".into(),
                ..Default::default()
            },
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 403);
        assert_eq!(v["response"]["status"]["message"], "no");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    }

    #[test]
    fn patch_is_written_once_as_base64() {
        use base64::Engine as _;
        let r = parse_review(review("").as_bytes()).unwrap();
        let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
            {"op": "add", "path": "/metadata/labels", "value": {"team": "a"}}
        ]))
        .unwrap();
        let body = answer_json(
            &r,
            &Verdict {
                allowed: true,
                warnings: vec!["careful".into()],
                patch: Some(patch.clone()),
                ..Default::default()
            },
        );
        let text = String::from_utf8(body.clone()).unwrap();
        assert_eq!(text.matches("\"patch\"").count(), 1, "{text}");
        assert_eq!(text.matches("\"response\"").count(), 1, "{text}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "u1");
        assert_eq!(v["response"]["allowed"], true);
        assert_eq!(v["response"]["patchType"], "JSONPatch");
        assert_eq!(v["response"]["warnings"][0], "careful");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v["response"]["patch"].as_str().unwrap())
            .unwrap();
        let decoded: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(decoded, patch);
    }

    fn with_objects(operation: &str, objects: &str) -> String {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u2",
            "kind":{{"group":"apps","version":"v1","kind":"Deployment"}},
            "resource":{{"group":"apps","version":"v1","resource":"deployments"}},
            "namespace":"apps","operation":"{operation}","userInfo":{{"username":"alice"}},{objects}}}}}"#
        )
    }

    const NEW: &str = r#"{"metadata":{"name":"web","labels":{"v":"2"}}}"#;
    const OLD: &str = r#"{"metadata":{"name":"web","labels":{"v":"1"}}}"#;

    #[test]
    fn update_reads_both_objects_in_either_order() {
        for objects in [
            format!(r#""object":{NEW},"oldObject":{OLD}"#),
            format!(r#""oldObject":{OLD},"object":{NEW}"#),
        ] {
            let r = parse_review(with_objects("UPDATE", &objects).as_bytes()).unwrap();
            assert_eq!(r.object["metadata"]["labels"]["v"], "2", "{objects}");
            assert_eq!(r.old_object()["metadata"]["labels"]["v"], "1", "{objects}");
            assert_eq!(r.name, "web");
        }
        // Outside parse_review an object is always read whole.
        let o: ReviewObject = serde_json::from_str(OLD).unwrap();
        assert!(o.json.parsed());
        assert_eq!(o.json.get()["metadata"]["labels"]["v"], "1");
    }

    #[test]
    fn delete_takes_its_name_from_the_old_object() {
        for objects in [
            format!(r#""object":null,"oldObject":{OLD}"#),
            format!(r#""oldObject":{OLD}"#),
        ] {
            let r = parse_review(with_objects("DELETE", &objects).as_bytes()).unwrap();
            assert!(r.object.is_null());
            assert_eq!(r.old_object()["metadata"]["labels"]["v"], "1");
            assert_eq!(r.name, "web");
        }
    }

    #[test]
    fn an_old_object_that_is_not_a_map_is_refused() {
        for objects in [
            format!(r#""object":{NEW},"oldObject":[1]"#),
            format!(r#""oldObject":"x","object":{NEW}"#),
            format!(r#""oldObject":{OLD},"object":7"#),
        ] {
            let e = parse_review(with_objects("UPDATE", &objects).as_bytes()).unwrap_err();
            assert!(
                matches!(&e, ReviewError::NotReview(m) if m.contains("object must be a map")),
                "{objects}: {e}"
            );
        }
    }
}
