//! Prometheus metrics (`fluxadmit_*`), served on a separate plain-HTTP port. Labels carry
//! webhook names, decisions, and policy and rule names from the loaded policy set: never
//! object contents, never secret values.

use crate::policy::PolicySet;
use crate::rules::Level;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use std::sync::{Mutex, PoisonError};
use tracing_appender::non_blocking::ErrorCounter;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub webhook: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub reason: &'static str,
}

/// The kind of a watched object: one of [`WATCHED_KINDS`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

/// Every kind the watch can read: the view's kinds and `DeploymentPolicy`. The `kind` label
/// of the watch metrics takes only these values (and `other`, never expected).
pub const WATCHED_KINDS: [&str; 9] = [
    "HelmRelease",
    "Kustomization",
    "Namespace",
    "ServiceAccount",
    "Secret",
    "ConfigMap",
    "OCIRepository",
    "HelmChart",
    "DeploymentPolicy",
];

/// A finding's policy and rule (names from the loaded policy set, or fluxadmit's own
/// `fluxadmit/policy-schema`) and its level.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FindingLabels {
    pub policy: String,
    pub rule: String,
    pub level: &'static str,
}

/// The finding levels, in `Level` order.
pub const LEVELS: [&str; 2] = ["error", "warning"];

/// The position of a finding level in [`LEVELS`].
fn level_index(level: Level) -> usize {
    match level {
        Level::Error => 0,
        Level::Warning => 1,
    }
}

/// The label value of a finding level.
pub fn level_name(level: Level) -> &'static str {
    LEVELS[level_index(level)]
}

/// The finding fluxadmit reports itself (a `DeploymentPolicy` that does not compile).
const BUILTIN_RULES: [(&str, &str); 1] = [("fluxadmit", "policy-schema")];

/// Counter handles by policy, then rule, one per level: looked up by `&str` on the request
/// path (no allocation, a read lock); written only the first time a pair is seen.
type FindingHandles = FxHashMap<String, FxHashMap<String, [Counter; 2]>>;

/// The webhook a review came to (the `webhook` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    Validate,
    Mutate,
}

impl Webhook {
    pub const ALL: [Webhook; 2] = [Webhook::Validate, Webhook::Mutate];

    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Validate => "validate",
            Webhook::Mutate => "mutate",
        }
    }
}

/// What a review was answered (the `decision` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Allowed with warnings.
    Warned,
    /// Allowed with a patch.
    Patched,
    Denied,
    /// Answered per the failure mode without evaluation (not ready).
    Unchecked,
}

impl Decision {
    pub const ALL: [Decision; 5] = [
        Decision::Allowed,
        Decision::Warned,
        Decision::Patched,
        Decision::Denied,
        Decision::Unchecked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Warned => "warned",
            Decision::Patched => "patched",
            Decision::Denied => "denied",
            Decision::Unchecked => "unchecked",
        }
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request was answered with an HTTP error (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRequest {
    /// Over the body limit.
    TooLarge,
    /// The body did not arrive within the budget.
    Timeout,
    /// The body could not be read.
    Read,
    /// The client cancelled the request (reset its HTTP/2 stream) before the body was read:
    /// no answer can reach it. Counted apart, so a rapid-reset flood does not look like
    /// failing reads.
    Cancelled,
    /// Not an AdmissionReview fluxadmit can answer.
    Malformed,
}

/// A limit that stopped work to keep the server answering (the `limit` label of
/// `fluxadmit_limits_tripped`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Policy evaluation ran past the review's budget: answered per the failure mode.
    EvaluationDeadline,
    /// Every evaluation slot was busy until the budget ran out.
    EvaluationBusy,
    /// A rule panicked: that request was answered per the failure mode.
    RulePanic,
    /// Reviews in flight were at their cap: answered 503.
    InFlight,
    /// The webhook port was at its connection cap with a request in flight on every
    /// connection (or no slot came free in time): a new connection was closed at accept.
    Connections,
    /// The webhook port was at its connection cap: an open connection with no request in
    /// flight was closed to make room for a new one.
    Evicted,
    /// A TLS handshake or an HTTP/2 preface did not complete in time, or an HTTP/2
    /// connection had no request for the idle timeout.
    Idle,
    /// A client did not read what was written to it within the write timeout: closed.
    WriteStalled,
    /// A policy expression's loops would have run past `--max-cel-runtime-cost`: its
    /// evaluation stopped, and the rule gave an error finding.
    CelRuntimeCost,
}

impl Limit {
    pub const ALL: [Limit; 9] = [
        Limit::EvaluationDeadline,
        Limit::EvaluationBusy,
        Limit::RulePanic,
        Limit::InFlight,
        Limit::Connections,
        Limit::Evicted,
        Limit::Idle,
        Limit::WriteStalled,
        Limit::CelRuntimeCost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Limit::EvaluationDeadline => "evaluation_deadline",
            Limit::EvaluationBusy => "evaluation_busy",
            Limit::RulePanic => "rule_panic",
            Limit::InFlight => "in_flight",
            Limit::Connections => "connections",
            Limit::Evicted => "evicted",
            Limit::Idle => "idle",
            Limit::WriteStalled => "write_stalled",
            Limit::CelRuntimeCost => "cel_runtime_cost",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    pub limit: &'static str,
}

impl BadRequest {
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::TooLarge => "too_large",
            BadRequest::Timeout => "timeout",
            BadRequest::Read => "read",
            BadRequest::Cancelled => "cancelled",
            BadRequest::Malformed => "malformed",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    /// Handles for every (webhook, decision), made once: the request path does no label lookup.
    decision_counters: Vec<Counter>,
    duration_histograms: Vec<Histogram>,
    pub requests: Family<DecisionLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    pub bad_requests: Family<ErrorLabels, Counter>,
    pub limits: Family<LimitLabels, Counter>,
    pub findings: Family<FindingLabels, Counter>,
    /// Read without a lock on the request path; replaced whole when a rule is first counted.
    finding_handles: arc_swap::ArcSwap<FindingHandles>,
    finding_insert: Mutex<()>,
    /// The engine's count of runtime cost trips as last added to `limits` (at a scrape).
    cel_trips_seen: Mutex<u64>,
    pub policies: Gauge,
    pub view_objects: Gauge,
    pub tls_reloads: Counter,
    pub tls_reload_errors: Counter,
    /// Watched objects left out of the view because they could not be turned into JSON.
    pub watch_reduce_errors: Family<KindLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<DecisionLabels, Counter>::default();
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0,
            ])
        });
        let bad_requests = Family::<ErrorLabels, Counter>::default();
        let limits = Family::<LimitLabels, Counter>::default();
        let findings = Family::<FindingLabels, Counter>::default();
        let policies = Gauge::default();
        let view_objects = Gauge::default();
        let tls_reloads = Counter::default();
        let tls_reload_errors = Counter::default();
        let watch_reduce_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "fluxadmit_admission_requests",
            "Admission reviews answered",
            requests.clone(),
        );
        registry.register(
            "fluxadmit_admission_duration_seconds",
            "Time to answer an admission review, body read to response",
            duration.clone(),
        );
        registry.register(
            "fluxadmit_bad_requests",
            "Requests answered with an HTTP error",
            bad_requests.clone(),
        );
        registry.register(
            "fluxadmit_limits_tripped",
            "Times a limit stopped work to keep the server answering, by limit",
            limits.clone(),
        );
        for limit in Limit::ALL {
            let _ = limits.get_or_create(&LimitLabels {
                limit: limit.as_str(),
            });
        }
        registry.register(
            "fluxadmit_findings",
            "Findings reported in admission answers, by policy, rule and level (error, warning)",
            findings.clone(),
        );
        registry.register_collector(Box::new(LogLinesDropped));
        registry.register(
            "fluxadmit_policies_loaded",
            "Policies in the active set",
            policies.clone(),
        );
        registry.register(
            "fluxadmit_view_objects",
            "Objects in the cluster view",
            view_objects.clone(),
        );
        registry.register(
            "fluxadmit_tls_reloads",
            "Serving certificate reloads",
            tls_reloads.clone(),
        );
        registry.register(
            "fluxadmit_tls_reload_errors",
            "Failed serving certificate reloads",
            tls_reload_errors.clone(),
        );
        registry.register(
            "fluxadmit_watch_reduce_errors",
            "Watched objects left out of the cluster view because they could not be read \
             (serialization failed), by kind",
            watch_reduce_errors.clone(),
        );
        // Every kind's series from the start (0 until an error), so an alert has a baseline.
        for kind in WATCHED_KINDS {
            let _ = watch_reduce_errors.get_or_create(&KindLabels { kind });
        }
        // In `Webhook::ALL` × `Decision::ALL` order: see `admission`.
        let decision_counters = Webhook::ALL
            .iter()
            .flat_map(|w| Decision::ALL.iter().map(move |d| (*w, *d)))
            .map(|(webhook, decision)| {
                requests
                    .get_or_create(&DecisionLabels {
                        webhook: webhook.as_str(),
                        decision: decision.as_str(),
                    })
                    .clone()
            })
            .collect();
        let duration_histograms = Webhook::ALL
            .iter()
            .map(|w| {
                duration
                    .get_or_create(&WebhookLabels {
                        webhook: w.as_str(),
                    })
                    .clone()
            })
            .collect();
        let metrics = Metrics {
            registry,
            decision_counters,
            duration_histograms,
            requests,
            duration,
            bad_requests,
            limits,
            findings,
            finding_handles: arc_swap::ArcSwap::from_pointee(FxHashMap::default()),
            finding_insert: Mutex::new(()),
            cel_trips_seen: Mutex::new(0),
            policies,
            view_objects,
            tls_reloads,
            tls_reload_errors,
            watch_reduce_errors,
        };
        for (policy, rule) in BUILTIN_RULES {
            metrics.finding_counters(policy, rule);
        }
        metrics
    }

    /// Creates the finding series of every rule of `set` at both levels (0 until a finding),
    /// so a rate over them exists before the first finding. Series of policies no longer
    /// loaded stay: the label values are bounded by the policy names ever loaded.
    pub fn register_policies(&self, set: &PolicySet) {
        for p in set.policies.iter() {
            for r in &p.rules {
                self.finding_counters(&p.name, &r.name);
            }
        }
    }

    /// Counts one finding. `policy` and `rule` are the names the engine copied from the
    /// policy set that produced the finding (or fluxadmit's own), never request content.
    pub fn finding(&self, policy: &str, rule: &str, level: Level) {
        self.findings([(policy, rule, level)]);
    }

    /// Counts a request's findings: a run of equal (policy, rule, level), as one rule's
    /// findings come, is one increment.
    pub fn findings<'a>(&self, items: impl IntoIterator<Item = (&'a str, &'a str, Level)>) {
        let handles = self.finding_handles.load();
        let mut run: Option<((&str, &str, Level), u64)> = None;
        for item in items {
            match &mut run {
                Some((key, n)) if *key == item => *n += 1,
                _ => {
                    if let Some((key, n)) = run.replace((item, 1)) {
                        self.count_findings(&handles, key, n);
                    }
                }
            }
        }
        if let Some((key, n)) = run {
            self.count_findings(&handles, key, n);
        }
    }

    fn count_findings(
        &self,
        handles: &FindingHandles,
        (policy, rule, level): (&str, &str, Level),
        n: u64,
    ) {
        let i = level_index(level);
        match handles.get(policy).and_then(|rules| rules.get(rule)) {
            Some(c) => c[i].inc_by(n),
            None => self.finding_counters(policy, rule)[i].inc_by(n),
        };
    }

    fn finding_counters(&self, policy: &str, rule: &str) -> [Counter; 2] {
        let _one_writer = self
            .finding_insert
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let current = self.finding_handles.load_full();
        if let Some(c) = current.get(policy).and_then(|rules| rules.get(rule)) {
            return c.clone();
        }
        let counters = LEVELS.map(|level| {
            self.findings
                .get_or_create(&FindingLabels {
                    policy: policy.to_owned(),
                    rule: rule.to_owned(),
                    level,
                })
                .clone()
        });
        let mut next = (*current).clone();
        next.entry(policy.to_owned())
            .or_default()
            .insert(rule.to_owned(), counters.clone());
        self.finding_handles.store(std::sync::Arc::new(next));
        counters
    }

    /// Counts one watched object left out of the view because it could not be read. `kind` is
    /// counted as given when it is one of [`WATCHED_KINDS`], else as `other`.
    pub fn watch_reduce_error(&self, kind: &str) {
        let kind = WATCHED_KINDS
            .iter()
            .find(|k| **k == kind)
            .copied()
            .unwrap_or("other");
        self.watch_reduce_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// Counts one answered review and its latency.
    pub fn admission(&self, webhook: Webhook, decision: Decision, seconds: Option<f64>) {
        let (w, d) = (webhook as usize, decision as usize);
        if let Some(c) = self.decision_counters.get(w * Decision::ALL.len() + d) {
            c.inc();
        }
        if let (Some(secs), Some(h)) = (seconds, self.duration_histograms.get(w)) {
            h.observe(secs);
        }
    }

    /// Counts a request answered with an HTTP error.
    pub fn limit_tripped(&self, limit: Limit) {
        self.limits
            .get_or_create(&LimitLabels {
                limit: limit.as_str(),
            })
            .inc();
    }

    pub fn bad_request(&self, reason: BadRequest) {
        self.bad_requests
            .get_or_create(&ErrorLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        self.add_cel_trips();
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Metrics {
    /// Adds the engine's runtime cost trips since the last scrape to `limits`: the engine
    /// counts them where evaluation runs, which knows nothing of metrics.
    fn add_cel_trips(&self) {
        let mut seen = self
            .cel_trips_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = crate::policy::expression_runtime_cost_trips();
        if now > *seen {
            self.limits
                .get_or_create(&LimitLabels {
                    limit: Limit::CelRuntimeCost.as_str(),
                })
                .inc_by(now - *seen);
            *seen = now;
        }
    }
}

/// The drop counters of this process's non-blocking log writers. Process-wide, as the
/// tracing subscriber they serve is.
static LOG_WRITERS: Mutex<Vec<ErrorCounter>> = Mutex::new(Vec::new());

/// Counts the lines a non-blocking log writer drops (its buffer full: the output is slower
/// than the logs) in `fluxadmit_log_lines_dropped_total`.
pub fn watch_log_writer(dropped: ErrorCounter) {
    LOG_WRITERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(dropped);
}

/// Log lines dropped so far by every watched writer.
pub fn log_lines_dropped() -> u64 {
    LOG_WRITERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|c| c.dropped_lines() as u64)
        .sum()
}

/// `fluxadmit_log_lines_dropped_total`, read from the writers at each scrape.
#[derive(Debug)]
struct LogLinesDropped;

impl Collector for LogLinesDropped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new(log_lines_dropped());
        let metric = encoder.encode_descriptor(
            "fluxadmit_log_lines_dropped",
            "Log lines dropped because the log output was slower than the logs (the writer's buffer was full)",
            None,
            counter.metric_type(),
        )?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    /// The value of an unlabelled sample, or of `name{labels}` as written.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn findings_are_counted_by_policy_rule_and_level() {
        let m = Metrics::new();
        let set = crate::policy::builtin::load().unwrap();
        m.register_policies(&set);
        m.finding(
            "flux-referenced-secrets",
            "referenced-secrets",
            Level::Error,
        );
        m.finding(
            "flux-referenced-secrets",
            "referenced-secrets",
            Level::Error,
        );
        m.finding("flux-dependencies", "depends-on", Level::Warning);
        m.finding("fluxadmit", "policy-schema", Level::Error);
        let text = m.encode();
        let at = |p: &str, r: &str, l: &str| {
            sample(
                &text,
                &format!("fluxadmit_findings_total{{policy=\"{p}\",rule=\"{r}\",level=\"{l}\"}}"),
            )
        };
        assert_eq!(
            at("flux-referenced-secrets", "referenced-secrets", "error"),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            at("flux-dependencies", "depends-on", "warning"),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            at("fluxadmit", "policy-schema", "error"),
            Some(1.0),
            "{text}"
        );
        // Every loaded rule has both series from the start.
        assert_eq!(
            at("flux-dependencies", "depends-on", "error"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            at(
                "restricted-security-context",
                "security-context-defaults",
                "warning"
            ),
            Some(0.0),
            "{text}"
        );
    }

    /// A writer that takes a while for each write: the log output of a slow consumer.
    struct Slow;
    impl std::io::Write for Slow {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            std::thread::sleep(std::time::Duration::from_millis(20));
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn dropped_log_lines_are_exposed() {
        let m = Metrics::new();
        assert!(
            sample(&m.encode(), "fluxadmit_log_lines_dropped_total").is_some(),
            "{}",
            m.encode()
        );
        let (mut w, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(2)
            .finish(Slow);
        watch_log_writer(w.error_counter());
        for _ in 0..50 {
            let _ = w.write_all(b"a line\n");
        }
        let dropped = w.error_counter().dropped_lines() as f64;
        assert!(dropped >= 40.0, "{dropped}");
        let exposed = sample(&m.encode(), "fluxadmit_log_lines_dropped_total").unwrap();
        assert!(exposed >= dropped, "{exposed} < {dropped}");
        drop(guard);
    }
}
