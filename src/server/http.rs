//! The HTTP layer: routes, limits and error answers. `app(state)` builds the router without a
//! socket, so tests drive it with `tower::ServiceExt::oneshot`.

use crate::engine::Mode;
use crate::metrics::{BadRequest, Decision, Limit, Metrics, Webhook};
use crate::policy::model::OperationName;
use crate::state::Snapshot;
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Largest review body accepted (the API server's own limit is 3 MiB for objects).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What happens when fluxadmit cannot decide in time or is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Admit, with a warning saying why no decision was made.
    Allow,
    /// Deny, saying why.
    Deny,
}

/// Shared server state. The snapshot is swapped whole; requests only `load` it.
pub struct AppState {
    pub snapshot: ArcSwap<Snapshot>,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
    pub draining: AtomicBool,
    pub budget: Duration,
    pub failure: FailureMode,
    pub max_body: usize,
    /// Confirms missing dependencies against the API server before reporting them.
    pub live: Option<Arc<dyn crate::live::LiveLookup>>,
    /// Slots for evaluations run off the async workers (policies with costly expressions): one
    /// per core, so runaway evaluations cannot take more than the cores, and the async workers
    /// stay free to answer everything else.
    pub evaluations: Arc<tokio::sync::Semaphore>,
    /// Reviews being read or evaluated at once (`--max-requests-in-flight`): past it, 503.
    /// Bounds the memory held in bodies (at most this many × `max_body`).
    pub in_flight: tokio::sync::Semaphore,
    /// Connections the webhook port serves at once (`--max-connections`); more are closed as
    /// they are accepted.
    pub max_connections: usize,
    /// An HTTP/2 connection with no request for this long is closed with GOAWAY
    /// (`--idle-timeout`; HTTP/1.1 keep-alive connections wait 30 s for their next request).
    pub idle_timeout: Duration,
    /// How long a connection may take to send a request's headers, and an HTTP/1.1 keep-alive
    /// connection may wait for its next request (`--header-timeout`; slow-loris).
    pub header_timeout: Duration,
    /// How long a write may wait on a client that does not read (`--write-timeout`): the
    /// connection is closed, with what it held.
    pub write_timeout: Duration,
    /// Time a new connection has to complete its TLS handshake (`--tls-handshake-timeout`).
    pub handshake_timeout: Duration,
    /// Streams one HTTP/2 connection may have open at once (`--h2-max-concurrent-streams`,
    /// SETTINGS_MAX_CONCURRENT_STREAMS); past it a stream is refused.
    pub h2_max_streams: u32,
    /// Largest header list an HTTP/2 request may carry, in bytes as HPACK counts them
    /// (`--h2-max-header-list-size`, SETTINGS_MAX_HEADER_LIST_SIZE); past it, 431.
    pub h2_max_header_list: u32,
}

/// Default of `--h2-max-header-list-size`: 16 KiB, as Go's and hyper's servers allow.
pub const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Default of `--header-timeout`.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `--write-timeout`.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Default of `--max-connections`.
pub const MAX_CONNECTIONS: usize = 4096;
/// Default of `--idle-timeout`.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default of `--max-requests-in-flight`: 128 reviews of at most 3 MiB is under 400 MiB of
/// bodies, and far more than an API server sends one replica at once.
pub const MAX_IN_FLIGHT: usize = 128;

/// How much of a body the server reads and throws away before an early answer (404, 405,
/// 413, 503), and for how long: a client still sending when the answer comes may lose it (an
/// HTTP/1.1 client sees a broken pipe, curl over HTTP/2 a reset stream).
pub const DISCARD_LIMIT: usize = 8 * 1024 * 1024;
pub const DISCARD_TIME: Duration = Duration::from_secs(2);

/// Policy sets whose costliest expression is estimated above this many units (`cel::cost`)
/// are evaluated on the blocking pool, with the review's deadline; the rest on the async
/// worker that read the request. Expressions without loops over the review (native string
/// and list functions only) stay under it, as do the built-in rules (linear in a body of at
/// most 3 MiB); any `all`/`exists`/`map` over a list of the review is over it.
pub const INLINE_COST: f64 = 1e6;

impl AppState {
    pub fn new(snapshot: Snapshot, metrics: Arc<Metrics>) -> AppState {
        metrics.policies.set(snapshot.policies.len() as i64);
        metrics.register_policies(&snapshot.policies);
        metrics.view_objects.set(snapshot.view.len() as i64);
        AppState {
            snapshot: ArcSwap::from_pointee(snapshot),
            metrics,
            ready: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            budget: Duration::from_secs(8),
            failure: FailureMode::Deny,
            max_body: MAX_BODY,
            live: None,
            evaluations: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            max_connections: MAX_CONNECTIONS,
            idle_timeout: IDLE_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
            handshake_timeout: Duration::from_secs(10),
            h2_max_streams: crate::server::H2_MAX_STREAMS,
            h2_max_header_list: H2_MAX_HEADER_LIST,
        }
    }
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/mutate", post(mutate))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), drain_close))
        .with_state(state)
}

/// While draining, every HTTP/1.1 response closes its connection so clients stop reusing it.
/// (HTTP/2 connections get a GOAWAY from the connection layer instead.)
async fn drain_close(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let h1 = req.version() <= Version::HTTP_11;
    let mut resp = next.run(req).await;
    if h1 && s.draining.load(Ordering::Relaxed) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A one-line JSON error body.
pub fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body =
        serde_json::json!({ "code": status.as_u16(), "error": message.to_string() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Reads and drops what is left of a body, at most [`DISCARD_LIMIT`] bytes within
/// [`DISCARD_TIME`], so that an answer given before the body was read reaches a client still
/// sending it. Returns whether the body was read to its end.
async fn discard(mut body: Body) -> bool {
    let mut left = DISCARD_LIMIT;
    let reading = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                if data.len() > left {
                    return false;
                }
                left -= data.len();
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_TIME, reading)
        .await
        .unwrap_or(false)
}

/// An early answer: the body is discarded first; over HTTP/1.1, when it could not be read to
/// its end, the answer says the connection closes (it does).
async fn early(version: Version, body: Body, mut resp: Response) -> Response {
    if !discard(body).await && version <= Version::HTTP_11 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn not_found(req: Request) -> Response {
    let resp = error(
        StatusCode::NOT_FOUND,
        format!(
            "no route for {}; use /validate, /mutate, /healthz or /readyz",
            req.uri().path()
        ),
    );
    early(req.version(), req.into_body(), resp).await
}

async fn method_not_allowed(req: Request) -> Response {
    let allowed = match req.uri().path() {
        "/validate" | "/mutate" => "POST",
        _ => "GET",
    };
    let mut resp = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} not allowed on {}; use {allowed}",
            req.method(),
            req.uri().path()
        ),
    );
    resp.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allowed));
    early(req.version(), req.into_body(), resp).await
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<Arc<AppState>>) -> Response {
    if s.ready.load(Ordering::Relaxed) && !s.draining.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok").into_response()
    } else if s.draining.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn validate(State(s): State<Arc<AppState>>, req: Request) -> Response {
    review(s, Mode::Validate, req).await
}

async fn mutate(State(s): State<Arc<AppState>>, req: Request) -> Response {
    review(s, Mode::Mutate, req).await
}

/// No decision can be made yet (cluster view not synced): answer per the failure mode.
fn not_ready(s: &AppState, mode: Mode, body: &[u8]) -> Response {
    let req = match crate::admission::parse_review(body) {
        Ok(r) => r,
        Err(e) => {
            return bad(
                &s.metrics,
                BadRequest::Malformed,
                StatusCode::BAD_REQUEST,
                e,
            );
        }
    };
    let why = "fluxadmit is not ready (cluster view not synced)";
    let verdict = failure_verdict(s, mode, why);
    let decision = if verdict.allowed {
        Decision::Unchecked
    } else {
        Decision::Denied
    };
    s.metrics.admission(webhook(mode), decision, None);
    tracing::info!(
        uid = %req.uid, kind = %req.kind, namespace = %req.namespace, name = %req.name,
        operation = ?req.operation, dry_run = req.dry_run, webhook = %webhook(mode),
        decision = %decision, reason = %why, "admission"
    );
    json_response(crate::admission::answer_json(&req, &verdict))
}

/// The review was read but evaluation stopped (a deadline, no free slot, a panic): answer it
/// per the failure mode, counted under its limit.
fn unfinished(s: &AppState, mode: Mode, uid: &str, limit: Limit, start: Instant) -> Response {
    let why = match limit {
        Limit::RulePanic => "fluxadmit failed evaluating this object (a rule panicked)",
        Limit::EvaluationBusy => "fluxadmit had no free evaluation slot within the review's budget",
        _ => "fluxadmit's policy evaluation ran past the review's budget",
    };
    s.metrics.limit_tripped(limit);
    let verdict = failure_verdict(s, mode, why);
    let decision = if verdict.allowed {
        Decision::Unchecked
    } else {
        Decision::Denied
    };
    s.metrics
        .admission(webhook(mode), decision, Some(start.elapsed().as_secs_f64()));
    tracing::warn!(uid = %uid, webhook = %webhook(mode), decision = %decision, limit = limit.as_str(), reason = %why, "admission");
    json_response(crate::admission::answer_json_for(uid, &verdict))
}

fn json_response(body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The verdict when no decision could be made, per the failure mode.
fn failure_verdict(s: &AppState, mode: Mode, why: &str) -> crate::admission::Verdict {
    match (mode, s.failure) {
        // The workload mutation is a default, never a gate: unready, admit unchanged. A
        // denial here would stop every pod in scope from being created.
        (Mode::Mutate, _) => crate::admission::Verdict {
            allowed: true,
            warnings: vec![format!("{why}: admitted without fluxadmit's defaults")],
            ..Default::default()
        },
        (_, FailureMode::Allow) => crate::admission::Verdict {
            allowed: true,
            warnings: vec![format!("{why}: admitted unchecked")],
            ..Default::default()
        },
        (_, FailureMode::Deny) => crate::admission::Verdict {
            allowed: false,
            message: format!("{why}: retry shortly"),
            ..Default::default()
        },
    }
}

fn webhook(mode: Mode) -> Webhook {
    match mode {
        Mode::Validate => Webhook::Validate,
        Mode::Mutate => Webhook::Mutate,
    }
}

/// Whether a body read failed because the client reset its HTTP/2 stream.
fn reset_by_client(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.downcast_ref::<h2::Error>()
            .is_some_and(|h2| h2.is_remote() && h2.is_reset())
    })
}

fn bad(
    metrics: &Metrics,
    reason: BadRequest,
    status: StatusCode,
    message: impl std::fmt::Display,
) -> Response {
    metrics.bad_request(reason);
    error(status, message)
}

async fn review(s: Arc<AppState>, mode: Mode, req: Request) -> Response {
    let start = Instant::now();
    let m = &s.metrics;
    let version = req.version();
    let Ok(_slot) = s.in_flight.try_acquire() else {
        m.limit_tripped(Limit::InFlight);
        let resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many reviews in flight; retry (the API server's failurePolicy applies)",
        );
        return early(version, req.into_body(), resp).await;
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        bad(
            m,
            BadRequest::TooLarge,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over the {} byte limit", s.max_body),
        )
    };
    if declared.is_some_and(|n| n > s.max_body) {
        return early(version, req.into_body(), too_large()).await;
    }
    // Limited over a borrow: past the limit, the rest of the body is still here to discard.
    let mut body = req.into_body();
    let limited = Limited::new(&mut body, s.max_body);
    let bytes = match tokio::time::timeout(s.budget, limited.collect()).await {
        Err(_) => {
            return bad(
                m,
                BadRequest::Timeout,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?}; the API server's failurePolicy applies",
                    s.budget
                ),
            );
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return early(version, body, too_large()).await;
        }
        Ok(Err(e)) => {
            let reason = if reset_by_client(&*e) {
                BadRequest::Cancelled
            } else {
                BadRequest::Read
            };
            return bad(
                m,
                reason,
                StatusCode::BAD_REQUEST,
                format!("cannot read body: {e}"),
            );
        }
        Ok(Ok(c)) => c.to_bytes(),
    };
    let snap = s.snapshot.load();
    if !s.ready.load(Ordering::Relaxed) {
        return not_ready(&s, mode, &bytes);
    }
    let request = match crate::admission::parse_review(&bytes) {
        Ok(r) => r,
        Err(e) => return bad(m, BadRequest::Malformed, StatusCode::BAD_REQUEST, e),
    };
    // A dependency the view has not seen may be brand new: confirm with a live read.
    let mut extra = None;
    if let Some(live) = &s.live {
        let missing = crate::live::missing_dependencies(&request, &snap.view);
        if !missing.is_empty() {
            let left = s
                .budget
                .saturating_sub(start.elapsed())
                .min(Duration::from_secs(2));
            extra = crate::live::confirm(live.as_ref(), &missing, left).await;
        }
    }
    // The uid answers the review if evaluation does not: a panic or a deadline takes the
    // request with it.
    let uid = request.uid.clone();
    let costly = crate::engine::costly_match(&request, &snap.policies, &snap.view, INLINE_COST);
    let answer = if costly {
        let left = s.budget.saturating_sub(start.elapsed());
        let snap = arc_swap::Guard::into_inner(snap);
        match off_runtime(&s, snap, mode, request, extra, left).await {
            Ok(a) => a,
            Err(limit) => return unfinished(&s, mode, &uid, limit, start),
        }
    } else {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            snap.answer(mode, request, extra.as_ref())
        })) {
            Ok(a) => a,
            Err(_) => return unfinished(&s, mode, &uid, Limit::RulePanic, start),
        }
    };
    let elapsed = start.elapsed();
    let r = &answer.request;
    let v = &answer.outcome.verdict;
    let decision = if !v.allowed {
        Decision::Denied
    } else if v.patch.as_ref().is_some_and(|p| !p.0.is_empty()) {
        Decision::Patched
    } else if !v.warnings.is_empty() {
        Decision::Warned
    } else {
        Decision::Allowed
    };
    m.admission(webhook(mode), decision, Some(elapsed.as_secs_f64()));
    let findings = &answer.outcome.findings;
    m.findings(
        findings
            .iter()
            .map(|f| (&*f.policy, &*f.rule, f.finding.level)),
    );
    // One line per decision: denials and warnings at info, the rest at debug. The line goes
    // to the non-blocking writer (`cli::log_dispatch`): formatting it is all the request pays.
    // In the text format the fields are written in one pass, byte for byte what the subscriber
    // would write for them (it visits and writes them one by one, several times slower); the
    // JSON format gets the fields as such.
    let info = !v.allowed || !v.warnings.is_empty() || !findings.is_empty();
    let wanted = if info {
        tracing::enabled!(tracing::Level::INFO)
    } else {
        tracing::enabled!(tracing::Level::DEBUG)
    };
    if wanted {
        let line = DecisionLine {
            request: r,
            webhook: webhook(mode),
            decision,
            latency_us: elapsed.as_micros() as u64,
            findings,
        };
        let json = tracing::dispatcher::get_default(|d| {
            d.downcast_ref::<crate::cli::JsonLine>().is_some()
        });
        macro_rules! decision_line {
            ($level:ident) => {
                if json {
                    tracing::$level!(
                        uid = %r.uid, kind = %r.kind, namespace = %r.namespace, name = %r.name,
                        operation = ?r.operation, dry_run = r.dry_run, webhook = %line.webhook,
                        decision = %decision, latency_us = line.latency_us,
                        findings = %FindingsJson(findings), "admission"
                    )
                } else {
                    // The message stays "admission"; the rest of the line rides in `uid`.
                    tracing::$level!(uid = %line.text_from_uid(), "admission")
                }
            };
        }
        if info {
            decision_line!(info);
        } else {
            decision_line!(debug);
        }
    }
    json_response(answer.body)
}

/// Evaluates on the blocking pool, in one of the evaluation slots, within `left`. When time
/// runs out the review is answered without waiting: the evaluation finishes on its thread
/// (its cost was bounded at load, `cel::cost`) and keeps its slot until then.
async fn off_runtime(
    s: &AppState,
    snap: Arc<Snapshot>,
    mode: Mode,
    request: crate::admission::Request,
    extra: Option<crate::cluster::ClusterView>,
    left: Duration,
) -> Result<crate::state::Answer, Limit> {
    let deadline = tokio::time::Instant::now() + left;
    let permit =
        match tokio::time::timeout_at(deadline, s.evaluations.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(Limit::EvaluationBusy),
        };
    let task = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            snap.answer(mode, request, extra.as_ref())
        }))
    });
    match tokio::time::timeout_at(deadline, task).await {
        Err(_) => Err(Limit::EvaluationDeadline),
        Ok(Ok(Ok(answer))) => Ok(answer),
        Ok(_) => Err(Limit::RulePanic),
    }
}

/// One decision, as its log line shows it.
struct DecisionLine<'a> {
    request: &'a crate::admission::Request,
    webhook: Webhook,
    decision: Decision,
    latency_us: u64,
    findings: &'a [crate::engine::Reported],
}

impl DecisionLine<'_> {
    /// `u-1 kind=… namespace=… name=… operation=… dry_run=… webhook=… decision=… latency_us=…
    /// findings=[…]`: the text format's fields from the value of `uid` on. Written as the value
    /// of `uid`, it makes the line the subscriber writes for the fields one by one.
    fn text_from_uid(&self) -> String {
        let r = self.request;
        let mut out = Vec::with_capacity(160 + r.uid.len() + r.kind.len() + r.name.len());
        let mut digits = itoa::Buffer::new();
        // As `{:?}` writes it (the JSON format's `operation = ?…`).
        let operation = match r.operation {
            OperationName::Create => "Create",
            OperationName::Update => "Update",
            OperationName::Delete => "Delete",
            OperationName::Connect => "Connect",
        };
        for (key, value) in [
            ("", r.uid.as_str()),
            (" kind=", &r.kind),
            (" namespace=", &r.namespace),
            (" name=", &r.name),
            (" operation=", operation),
            (" dry_run=", if r.dry_run { "true" } else { "false" }),
            (" webhook=", self.webhook.as_str()),
            (" decision=", self.decision.as_str()),
            (" latency_us=", digits.format(self.latency_us)),
            (" findings=", ""),
        ] {
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        FindingsJson(self.findings).write_into(&mut out);
        // Every piece is a `str`: the bytes are UTF-8.
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A decision's findings as a compact JSON array of `{policy, rule, level, path, message}`,
/// written straight into the log line (only if the line is written). The JSON log format
/// (`cli::JsonLine`) embeds a `findings` field as JSON, not as a string.
pub struct FindingsJson<'a>(pub &'a [crate::engine::Reported]);

impl FindingsJson<'_> {
    /// Appends the array to `out`.
    fn write_into(&self, out: &mut Vec<u8>) {
        let size: usize = self
            .0
            .iter()
            .map(|r| r.policy.len() + r.rule.len() + r.finding.path.len() + r.finding.message.len())
            .sum();
        out.reserve(size + 72 * self.0.len() + 2);
        out.push(b'[');
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"policy\":");
            crate::admission::write_json_str(out, &r.policy);
            out.extend_from_slice(b",\"rule\":");
            crate::admission::write_json_str(out, &r.rule);
            out.extend_from_slice(b",\"level\":\"");
            out.extend_from_slice(crate::metrics::level_name(r.finding.level).as_bytes());
            out.extend_from_slice(b"\",\"path\":");
            crate::admission::write_json_str(out, &r.finding.path);
            out.extend_from_slice(b",\"message\":");
            crate::admission::write_json_str(out, &r.finding.message);
            out.push(b'}');
        }
        out.push(b']');
    }
}

impl std::fmt::Display for FindingsJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Written into one buffer, then handed over once (the formatter behind a log line is
        // reached through `dyn Write`).
        let mut out = Vec::new();
        self.write_into(&mut out);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for FindingsJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    /// A writer into shared memory, for reading log lines back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_decision_line_is_what_the_subscriber_writes_for_its_fields() {
        use fluxadmit_core::rules::Finding;
        let body = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-9",
            "kind":{"group":"helm.toolkit.fluxcd.io","version":"v2","kind":"HelmRelease"},
            "resource":{"group":"helm.toolkit.fluxcd.io","version":"v2","resource":"helmreleases"},
            "namespace":"apps","name":"shop","operation":"UPDATE","dryRun":true,"userInfo":{},
            "object":{"metadata":{"name":"shop","namespace":"apps"}},"oldObject":{"metadata":{"name":"shop"}}}}"#;
        let request = crate::admission::parse_review(body).unwrap();
        let findings = vec![crate::engine::Reported {
            policy: "flux-referenced-secrets".into(),
            rule: "referenced-secrets".into(),
            finding: Finding::error(
                "spec.valuesFrom[0]",
                "Secret apps/v not found; \"quoted\" \u{1b}[31mred",
            ),
        }];
        let line = DecisionLine {
            request: &request,
            webhook: Webhook::Mutate,
            decision: Decision::Denied,
            latency_us: 1234,
            findings: &findings,
        };
        let out = Captured::default();
        let (dispatch, guard) =
            crate::cli::log_dispatch(crate::cli::LogFormat::Text, "info", false, out.clone());
        let r = &request;
        tracing::dispatcher::with_default(&dispatch, || {
            assert!(
                tracing::dispatcher::get_default(|d| d
                    .downcast_ref::<crate::cli::JsonLine>()
                    .is_none()),
                "the text format is told apart from the JSON one"
            );
            tracing::info!(
                uid = %r.uid, kind = %r.kind, namespace = %r.namespace, name = %r.name,
                operation = ?r.operation, dry_run = r.dry_run, webhook = %line.webhook,
                decision = %line.decision, latency_us = line.latency_us,
                findings = %FindingsJson(&findings), "admission"
            );
            tracing::info!(uid = %line.text_from_uid(), "admission");
        });
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        // After the timestamp, the two lines are the same bytes.
        let tail = |l: &str| l.split_once(' ').unwrap().1.to_owned();
        assert_eq!(tail(lines[0]), tail(lines[1]));
        assert!(lines[1].contains(" decision=denied "), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "control characters are escaped: {text}"
        );

        let (json, guard) =
            crate::cli::log_dispatch(crate::cli::LogFormat::Json, "info", false, std::io::sink());
        tracing::dispatcher::with_default(&json, || {
            assert!(tracing::dispatcher::get_default(|d| d
                .downcast_ref::<crate::cli::JsonLine>()
                .is_some()));
        });
        drop(guard);
    }

    #[test]
    fn findings_json_is_what_serde_json_writes() {
        use fluxadmit_core::rules::{Finding, Level};
        let tricky = [
            "plain",
            "",
            "Secret \"a\" in ns \\ back",
            "tab\tnew\nline\u{1}\u{1f}",
            "ünïcödé → ✓ \u{7f}",
        ];
        let findings: Vec<crate::engine::Reported> = tricky
            .iter()
            .enumerate()
            .map(|(i, t)| crate::engine::Reported {
                policy: (*t).into(),
                rule: format!("rule-{i}").into(),
                finding: Finding {
                    level: if i % 2 == 0 {
                        Level::Error
                    } else {
                        Level::Warning
                    },
                    ..Finding::error(*t, *t)
                },
            })
            .collect();
        let expected: Vec<serde_json::Value> = findings
            .iter()
            .map(|r| {
                serde_json::json!({
                    "policy": &*r.policy, "rule": &*r.rule,
                    "level": crate::metrics::level_name(r.finding.level),
                    "path": r.finding.path, "message": r.finding.message,
                })
            })
            .collect();
        let written = FindingsJson(&findings).to_string();
        let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(parsed, serde_json::Value::Array(expected));
        // Byte for byte as serde_json writes the same strings.
        for t in tricky {
            let mut out = Vec::new();
            crate::admission::write_json_str(&mut out, t);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(t).unwrap()
            );
        }
        assert_eq!(FindingsJson(&[]).to_string(), "[]");
    }

    const REVIEW: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-7",
        "kind":{"group":"","version":"v1","kind":"ConfigMap"},"resource":{"group":"","version":"v1","resource":"configmaps"},
        "namespace":"apps","operation":"CREATE","userInfo":{},"object":{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}}}"#;

    async fn post(
        state: Arc<AppState>,
        path: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::post(path).body(body.into()).unwrap();
        let resp = app(state).oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    /// A rule that panics on one object name, as a bug in a rule would. Its cost decides
    /// where it runs: inline, or on the blocking pool (over [`INLINE_COST`]).
    #[derive(Debug)]
    struct Panics(f64);

    impl crate::rules::Rule for Panics {
        fn estimated_cost(&self) -> f64 {
            self.0
        }

        fn validate(&self, ctx: &crate::rules::Ctx<'_>, _out: &mut Vec<crate::rules::Finding>) {
            if ctx.req.name == "boom" {
                panic!("a bug in a rule");
            }
        }
    }

    /// A policy on Deployments whose one rule is `rule`.
    fn state_with_rule(rule: Box<dyn crate::rules::Rule>, failure: FailureMode) -> Arc<AppState> {
        let mut set = crate::policy::load::compile_yaml(
            "p.yaml",
            "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {name: p}\n\
             spec:\n  match: {resources: [{apiGroups: [apps], kinds: [Deployment]}]}\n  \
             rules: [{name: r, expression: {expression: 'true', message: m}}]\n",
        )
        .unwrap();
        let policies = std::sync::Arc::get_mut(&mut set.policies).unwrap();
        policies[0].rules = vec![crate::rules::CompiledRule::custom("r", "test", rule)];
        let snap = Snapshot {
            policies: set,
            view: Default::default(),
        };
        let mut st = AppState::new(snap, Arc::new(Metrics::new()));
        st.failure = failure;
        Arc::new(st)
    }

    fn deployment_review(uid: &str, name: &str) -> String {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": uid, "operation": "CREATE", "userInfo": {"username": "someone"},
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
                "namespace": "apps", "name": name,
                "object": {"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": name, "namespace": "apps"}}
            }
        })
        .to_string()
    }

    fn expression_policy(expression: &str) -> crate::policy::PolicySet {
        crate::policy::load::compile_yaml(
            "p.yaml",
            &format!(
                "apiVersion: fluxadmit.io/v1alpha1\nkind: DeploymentPolicy\nmetadata: {{name: p}}\n\
                 spec:\n  match: {{resources: [{{apiGroups: [apps], kinds: [Deployment]}}]}}\n  \
                 rules: [{{name: r, expression: {{expression: \"{expression}\", message: m}}}}]\n"
            ),
        )
        .unwrap()
    }

    /// Expressions without a loop over the review are evaluated where the request was read
    /// (no hand-off per review); one with such a loop goes to the blocking pool.
    #[test]
    fn only_policies_with_loops_over_the_review_leave_the_async_workers() {
        for inline in [
            "object.metadata.name.size() < 64 && has(object.spec.template)",
            "object.metadata.name.matches('^[a-z-]+$') && !object.metadata.name.contains('x')",
        ] {
            let cost = expression_policy(inline).max_estimated_cost();
            assert!(cost <= INLINE_COST, "{inline}: {cost:e}");
        }
        let looped = "object.spec.template.spec.containers.all(c, c.name != '')";
        let cost = expression_policy(looped).max_estimated_cost();
        assert!(cost > INLINE_COST, "{looped}: {cost:e}");
        assert_eq!(
            crate::policy::load::compile_yaml("b", "").map(|p| p.max_estimated_cost()),
            Ok(0.0)
        );
    }

    /// A panic in a rule answers that one review per the failure mode, is counted, and the
    /// next review is judged as usual.
    #[tokio::test]
    async fn a_panicking_rule_answers_its_review_per_the_failure_mode() {
        for (failure, cost) in [
            (FailureMode::Deny, 0.0),
            (FailureMode::Allow, 0.0),
            (FailureMode::Deny, INLINE_COST * 10.0),
            (FailureMode::Allow, INLINE_COST * 10.0),
        ] {
            let st = state_with_rule(Box::new(Panics(cost)), failure);
            let (code, v) =
                post(st.clone(), "/validate", deployment_review("u-boom", "boom")).await;
            assert_eq!(code, StatusCode::OK);
            assert_eq!(v["response"]["uid"], "u-boom");
            let r = &v["response"];
            match failure {
                FailureMode::Deny => {
                    assert_eq!(r["allowed"], false, "{v}");
                    let msg = r["status"]["message"].as_str().unwrap();
                    assert!(msg.contains("a rule panicked"), "{msg}");
                }
                FailureMode::Allow => {
                    assert_eq!(r["allowed"], true, "{v}");
                    let w = r["warnings"][0].as_str().unwrap();
                    assert!(w.contains("a rule panicked"), "{w}");
                }
            }
            let text = st.metrics.encode();
            assert!(
                text.contains("fluxadmit_limits_tripped_total{limit=\"rule_panic\"} 1"),
                "{text}"
            );
            let (code, v) =
                post(st.clone(), "/validate", deployment_review("u-fine", "fine")).await;
            assert_eq!(code, StatusCode::OK);
            assert_eq!(v["response"]["uid"], "u-fine");
            assert_eq!(v["response"]["allowed"], true, "{v}");
        }
    }

    #[tokio::test]
    async fn not_ready_answers_per_failure_mode() {
        let mut st = AppState::new(Snapshot::default(), Arc::new(Metrics::new()));
        st.ready = AtomicBool::new(false);
        let st = Arc::new(st);
        let (code, v) = post(st.clone(), "/validate", REVIEW).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["response"]["uid"], "u-7");
        assert_eq!(v["response"]["allowed"], false);
        assert!(
            v["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .contains("not ready")
        );

        // /mutate never denies for being unready, whatever the failure mode: no patch, a warning.
        let (code, v) = post(st.clone(), "/mutate", REVIEW).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["response"]["allowed"], true);
        assert!(v["response"].get("patch").is_none(), "{v}");
        assert!(
            v["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("not ready")
        );

        let mut st = AppState::new(Snapshot::default(), Arc::new(Metrics::new()));
        st.ready = AtomicBool::new(false);
        st.failure = FailureMode::Allow;
        let (_, v) = post(Arc::new(st), "/validate", REVIEW).await;
        assert_eq!(v["response"]["allowed"], true);
        assert!(
            v["response"]["warnings"][0]
                .as_str()
                .unwrap()
                .contains("admitted unchecked")
        );
    }

    #[tokio::test]
    async fn malformed_review_is_a_400_with_a_message() {
        let st = Arc::new(AppState::new(Snapshot::default(), Arc::new(Metrics::new())));
        let (code, v) = post(st, "/mutate", "{\"kind\": 3}").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert_eq!(v["code"], 400);
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("not an AdmissionReview"),
            "{v}"
        );
    }
}
