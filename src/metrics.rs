//! Prometheus metrics (`fluxadmit_*`), served on a separate plain-HTTP port. Labels carry
//! webhook names and decisions only: never object contents, never secret values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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

/// The decisions the admission counter is labelled with.
pub const DECISIONS: [&str; 5] = ["allowed", "warned", "patched", "denied", "unchecked"];
/// The webhooks.
pub const WEBHOOKS: [&str; 2] = ["validate", "mutate"];

pub struct Metrics {
    registry: Registry,
    /// Handles for every (webhook, decision), made once: the request path does no label lookup.
    decision_counters: Vec<Counter>,
    duration_histograms: Vec<Histogram>,
    pub requests: Family<DecisionLabels, Counter>,
    pub duration: Family<WebhookLabels, Histogram>,
    pub bad_requests: Family<ErrorLabels, Counter>,
    pub policies: Gauge,
    pub view_objects: Gauge,
    pub tls_reloads: Counter,
    pub tls_reload_errors: Counter,
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
        let policies = Gauge::default();
        let view_objects = Gauge::default();
        let tls_reloads = Counter::default();
        let tls_reload_errors = Counter::default();
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
        let decision_counters = WEBHOOKS
            .iter()
            .flat_map(|w| DECISIONS.iter().map(move |d| (*w, *d)))
            .map(|(webhook, decision)| {
                requests
                    .get_or_create(&DecisionLabels { webhook, decision })
                    .clone()
            })
            .collect();
        let duration_histograms = WEBHOOKS
            .iter()
            .map(|w| {
                duration
                    .get_or_create(&WebhookLabels { webhook: w })
                    .clone()
            })
            .collect();
        Metrics {
            registry,
            decision_counters,
            duration_histograms,
            requests,
            duration,
            bad_requests,
            policies,
            view_objects,
            tls_reloads,
            tls_reload_errors,
        }
    }

    /// Counts one answered review and its latency.
    pub fn admission(&self, webhook: &str, decision: &str, seconds: Option<f64>) {
        let w = WEBHOOKS.iter().position(|x| *x == webhook).unwrap_or(0);
        let d = DECISIONS.iter().position(|x| *x == decision).unwrap_or(0);
        if let Some(c) = self.decision_counters.get(w * DECISIONS.len() + d) {
            c.inc();
        }
        if let (Some(secs), Some(h)) = (seconds, self.duration_histograms.get(w)) {
            h.observe(secs);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
