//! The command line: `serve`, `review`, `certs generate`, `crd`.

use crate::certs::{self, CertOptions};
use crate::cluster::{ClusterView, Tracked, load_dir};
use crate::engine::Mode;
use crate::metrics::Metrics;
use crate::policy::PolicySet;
use crate::server::http::{AppState, FailureMode};
use crate::server::tls::CertFiles;
use crate::server::{self, Options};
use crate::state::Snapshot;
use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "fluxadmit",
    version,
    about = "Admission webhook enforcing deployment policy on Flux CD clusters"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "FLUXADMIT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `fluxadmit=debug`.
    #[arg(long, global = true, env = "FLUXADMIT_LOG", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the webhook server (HTTPS) and the metrics endpoint (HTTP).
    Serve(Box<ServeArgs>),
    /// Evaluate one AdmissionReview from a file or stdin and print the response.
    Review(ReviewArgs),
    /// Certificate tools.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print the DeploymentPolicy CustomResourceDefinition (YAML).
    Crd,
    /// Review every manifest of a GitOps repository offline, as the webhook would; exit 1 on errors.
    Check(CheckArgs),
    /// Print the dependsOn graph of a repository: Mermaid, DOT, or install waves.
    Graph(GraphArgs),
    /// Print the effective policy set: each policy's name, source, action, match and rules.
    Policies(PoliciesArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Policy files or directories (repeatable), replacing the built-in set; `builtin` names
    /// the built-in set (the default policies compiled in), e.g. `--policies builtin
    /// --policies extra.yaml`. `examples/` subdirectories are not loaded unless named directly.
    #[arg(
        long = "policies",
        env = "FLUXADMIT_POLICIES",
        value_delimiter = ',',
        default_value = crate::policy::builtin::KEYWORD
    )]
    pub policies: Vec<PathBuf>,
    /// Most a policy CEL expression may cost, estimated at load on the largest review (units
    /// of ~80 ns of evaluation; nested loops over the object's lists multiply). A policy over
    /// it does not load.
    #[arg(long, env = "FLUXADMIT_MAX_CEL_COST", default_value_t = crate::policy::MAX_EXPRESSION_COST)]
    pub max_cel_cost: f64,
    /// Most one evaluation of a policy CEL expression may spend, counted as it runs (same
    /// units; each loop is charged its body's size per element before it starts). An
    /// evaluation past it stops, and its rule gives an error finding naming the limit.
    #[arg(long, env = "FLUXADMIT_MAX_CEL_RUNTIME_COST", default_value_t = crate::policy::MAX_EXPRESSION_RUNTIME_COST)]
    pub max_cel_runtime_cost: f64,
}

#[derive(Args, Debug, Clone)]
pub struct SourceArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Directories of manifests that make up the offline cluster view (repeatable).
    #[arg(long = "state", env = "FLUXADMIT_STATE", value_delimiter = ',')]
    pub state: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// HTTPS listen address.
    #[arg(long, env = "FLUXADMIT_ADDR", default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// Plain-HTTP metrics listen address (`/metrics`).
    #[arg(long, env = "FLUXADMIT_METRICS_ADDR", default_value = "0.0.0.0:9090")]
    pub metrics_addr: SocketAddr,
    /// Serving certificate (PEM); with --tls-key, overrides --cert-dir.
    #[arg(long, env = "FLUXADMIT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long, env = "FLUXADMIT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory with ca.crt, tls.crt, tls.key; generated there when it holds no certificate.
    #[arg(long, env = "FLUXADMIT_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    #[command(flatten)]
    pub cert: CertArgs,
    /// How often to check the certificate files for a change.
    #[arg(long, env = "FLUXADMIT_CERT_RELOAD_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub cert_reload_interval: Duration,
    /// Time budget for one review (keep it below the webhook's timeoutSeconds).
    #[arg(long, env = "FLUXADMIT_TIMEOUT", default_value = "8s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// How long to keep answering after SIGTERM while clients move away.
    #[arg(long, env = "FLUXADMIT_DRAIN", default_value = "10s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Answer when no decision can be made: not ready, evaluation past --timeout, a rule that
    /// failed.
    #[arg(long, env = "FLUXADMIT_FAILURE_MODE", default_value = "deny")]
    pub failure_mode: FailureMode,
    /// Connections the webhook port serves at once (kept below the file descriptor limit). At
    /// the cap a new connection takes the place of an open one with no request in flight
    /// (silent ones first, then the one idle longest); with a request in flight on every
    /// one, it is closed as accepted. Both counted in `fluxadmit_limits_tripped`.
    #[arg(long, env = "FLUXADMIT_MAX_CONNECTIONS", default_value_t = crate::server::http::MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Reviews read or evaluated at once; more are answered 503 (bounds the memory in bodies:
    /// this many × 3 MiB).
    #[arg(long, env = "FLUXADMIT_MAX_REQUESTS_IN_FLIGHT", default_value_t = crate::server::http::MAX_IN_FLIGHT)]
    pub max_requests_in_flight: usize,
    /// An HTTP/2 connection with no request for this long is closed (GOAWAY), PINGs or not.
    #[arg(long, env = "FLUXADMIT_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Time a connection has to send a request's headers; also how long an HTTP/1.1
    /// keep-alive connection waits for its next request (slow-loris clients are closed).
    #[arg(long, env = "FLUXADMIT_HEADER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// Time a write may wait on a client that does not read its answers; then the connection
    /// is closed.
    #[arg(long, env = "FLUXADMIT_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub write_timeout: Duration,
    /// Time a new connection has to complete its TLS handshake.
    #[arg(long, env = "FLUXADMIT_TLS_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tls_handshake_timeout: Duration,
    /// Streams an HTTP/2 connection may have open at once (announced to the client; a stream
    /// past it is refused, and a client that keeps doing so gets GOAWAY).
    #[arg(long, env = "FLUXADMIT_H2_MAX_CONCURRENT_STREAMS", default_value_t = crate::server::H2_MAX_STREAMS, value_parser = clap::value_parser!(u32).range(1..))]
    pub h2_max_concurrent_streams: u32,
    /// Largest header list of an HTTP/2 request, in bytes (announced to the client; a larger
    /// one is answered 431).
    #[arg(long, env = "FLUXADMIT_H2_MAX_HEADER_LIST_SIZE", default_value_t = crate::server::http::H2_MAX_HEADER_LIST, value_parser = clap::value_parser!(u32).range(1024..))]
    pub h2_max_header_list_size: u32,
    /// Fill the cluster view by watching the API server (in-cluster config or kubeconfig);
    /// `/readyz` stays false until every watched kind is listed.
    #[arg(long, env = "FLUXADMIT_WATCH")]
    pub watch: bool,
    /// With --watch: also watch ConfigMaps, so ConfigMap references are checked.
    #[arg(long, env = "FLUXADMIT_WATCH_CONFIGMAPS")]
    pub watch_configmaps: bool,
    /// With --watch: also load `DeploymentPolicy` resources from the cluster (the CRD must be
    /// installed), compiled together with the --policies files.
    #[arg(long, env = "FLUXADMIT_POLICY_RESOURCES")]
    pub policy_resources: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CertArgs {
    /// Extra DNS names for a generated certificate (repeatable).
    #[arg(long, env = "FLUXADMIT_DNS", value_delimiter = ',')]
    pub dns: Vec<String>,
    /// Extra IP addresses for a generated certificate (repeatable).
    #[arg(long, env = "FLUXADMIT_IP", value_delimiter = ',')]
    pub ip: Vec<IpAddr>,
    /// Namespace of the `fluxadmit` Service (for the in-cluster names).
    #[arg(long, env = "FLUXADMIT_NAMESPACE", default_value = "fluxadmit")]
    pub namespace: String,
    /// Validity of a generated certificate, in days.
    #[arg(long, env = "FLUXADMIT_CERT_DAYS", default_value_t = 365)]
    pub days: u32,
}

impl CertArgs {
    fn options(&self) -> CertOptions {
        CertOptions {
            dns: self.dns.clone(),
            ips: self.ip.clone(),
            namespace: self.namespace.clone(),
            days: self.days,
        }
    }
}

#[derive(Args, Debug)]
pub struct ReviewArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Answer as the mutating webhook (with a JSON patch) instead of the validating one.
    #[arg(long)]
    pub mutate: bool,
    /// For a manifest: the operation it is reviewed as.
    #[arg(long, default_value = "create")]
    pub operation: ReviewOperation,
    /// For a manifest: the object as it is before the UPDATE (YAML or JSON file).
    #[arg(long)]
    pub old: Option<PathBuf>,
    /// For a manifest: review it as a dry run (`kubectl apply --dry-run=server`, Flux's dry run).
    #[arg(long)]
    pub dry_run: bool,
    /// An AdmissionReview (JSON), or a plain manifest (YAML or JSON, one object) reviewed as a
    /// person's `kubectl apply`; `-` for stdin. Exit code: 0 allowed, 1 denied, 2 unreadable.
    pub file: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ReviewOperation {
    Create,
    Update,
    Delete,
}

/// How `check` and `graph` find what Flux would apply.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// kustomize binary (or kubectl, run as `kubectl kustomize`); found on PATH when not given.
    #[arg(long, env = "FLUXADMIT_KUSTOMIZE")]
    pub kustomize: Option<PathBuf>,
    /// Render only this cluster directory of the repository (e.g. clusters/production).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// helm binary for rendering the charts of HelmReleases; found on PATH when not given.
    #[arg(long, env = "FLUXADMIT_HELM")]
    pub helm: Option<PathBuf>,
    /// A local chart cache: `.tgz` files or unpacked charts (repeatable). Charts that are
    /// neither there nor in the repository are named in the summary, never fetched.
    #[arg(long)]
    pub charts: Vec<PathBuf>,
}

impl RenderArgs {
    fn options(&self) -> crate::render::Options {
        crate::render::Options {
            kustomize: self.kustomize.clone(),
            cluster: self.cluster.clone(),
            helm: self.helm.clone(),
            charts: self.charts.clone(),
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    #[command(flatten)]
    pub render: RenderArgs,
    /// A Secret made outside Git (at bootstrap) that counts as existing:
    /// NAMESPACE/NAME, or NAMESPACE/NAME:key,key to name its keys (repeatable).
    #[arg(long = "assume-secret", value_name = "NAMESPACE/NAME[:KEYS]")]
    pub assume_secret: Vec<String>,
    /// List the files skipped as not Kubernetes manifests.
    #[arg(long, short)]
    pub verbose: bool,
    /// `text`: findings grouped by file; `json`: for scripts; `sarif`: for GitHub code scanning.
    #[arg(long, default_value = "text")]
    pub format: crate::report::CheckFormat,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// In a git work tree: report only findings that are new against this revision (as a
    /// pull-request check wants them); the revision is checked the same way in a temporary
    /// worktree.
    #[arg(long, value_name = "REV")]
    pub base: Option<String>,
    /// Repository directories or files (e.g. . or ./clusters/production); `-` reads a YAML
    /// stream from stdin (`kustomize build overlays/prod | fluxadmit check -`).
    #[arg(required_unless_present = "cluster")]
    pub paths: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PoliciesArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// `text`: a summary of each policy; `yaml`: the policy documents themselves.
    #[arg(long, short, default_value = "text")]
    pub output: PoliciesFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum PoliciesFormat {
    Text,
    Yaml,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
    Waves,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Which Flux kind's graph.
    #[arg(long, default_value = "helm-release")]
    pub kind: GraphKind,
    /// `waves`: the install order, objects that can install together on one line; `mermaid`
    /// or `dot`: the graph, for a diagram.
    #[arg(long, default_value = "waves")]
    pub format: GraphFormat,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Repository directories or files; `-` for stdin.
    #[arg(required_unless_present = "cluster")]
    pub paths: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum GraphKind {
    HelmRelease,
    Kustomization,
}

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Generate a CA and a serving certificate into a directory.
    Generate {
        /// Directory to write ca.crt, ca.key, tls.crt and tls.key into (created if absent).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        cert: CertArgs,
    },
}

/// `500ms`, `5s`, `2m`, or a number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: use e.g. 500ms, 5s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in {s:?}: use ms, s or m")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("bad duration {s:?}: {e}"))
}

/// Process entry point.
pub fn main() -> ExitCode {
    // One TLS crypto provider for the process, chosen here: the server's config names it too,
    // and kube-rs's client uses the process default (with two providers compiled in and none
    // installed, building a client would fail at run time).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // Held to the end of the process: dropping it writes out the lines still buffered.
    let _log = init_logging(cli.log_format, &cli.log_level);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Lines the log writer holds while its output is slower than the logs (a few MB at most);
/// past that, lines are dropped, never waited for, and counted in
/// `fluxadmit_log_lines_dropped_total`.
pub const LOG_BUFFER_LINES: usize = 8192;

/// Installs the process's subscriber: logs go to stderr through a non-blocking writer, with
/// ANSI colours only when stderr is a terminal (and `NO_COLOR` is unset). The guard flushes
/// the buffered lines when dropped: keep it until the process ends.
/// Logs to stderr as `fluxadmit` does (colour on a terminal only); keep the guard to the end.
pub fn init_logging(
    format: LogFormat,
    filter: &str,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use std::io::IsTerminal as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let stderr = std::io::stderr();
    let ansi = stderr.is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (dispatch, guard) = log_dispatch(
        format,
        filter,
        ansi,
        std::io::BufWriter::with_capacity(64 * 1024, stderr),
    );
    dispatch.try_init().ok()?;
    Some(guard)
}

/// How long the log writer's thread rests after writing out what was queued.
pub const LOG_BATCH_PAUSE: Duration = Duration::from_millis(10);

/// A subscriber as `serve` logs: `filter` (env-filter syntax, `info` if it does not parse),
/// `format`, written to `out` by a background thread. A line costs the caller its formatting
/// and a channel send; when `out` falls [`LOG_BUFFER_LINES`] behind, lines are dropped and
/// counted, so a slow log consumer never blocks an admission answer. The thread writes out
/// what is queued (one `write` for many lines), then rests [`LOG_BATCH_PAUSE`]: lines gather
/// meanwhile, and a request thread never has to wake it for each line. A line reaches `out`
/// within that pause; all of them when the guard is dropped.
pub fn log_dispatch<W: std::io::Write + Send + 'static>(
    format: LogFormat,
    filter: &str,
    ansi: bool,
    out: W,
) -> (
    tracing::Dispatch,
    tracing_appender::non_blocking::WorkerGuard,
) {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("fluxadmit-log")
        .finish(Batching(out));
    crate::metrics::watch_log_writer(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_timer(LogTime);
    let dispatch = match format {
        LogFormat::Text => tracing::Dispatch::new(b.with_ansi(ansi).finish()),
        LogFormat::Json => tracing::Dispatch::new(
            b.with_ansi(false)
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(JsonLine)
                .finish(),
        ),
    };
    (dispatch, guard)
}

/// Log timestamps as tracing-subscriber's `SystemTime` writes them (`2026-11-30T16:08:39.123456Z`,
/// UTC, microseconds), with the date and time up to the second formatted once per second on
/// each thread instead of on every line: on a busy webhook, every decision line pays for its
/// timestamp, and the full formatting cost a sixth of a line.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTime;

thread_local! {
    /// The last second formatted on this thread, and its text up to and including the `.`.
    static LOG_SECOND: std::cell::RefCell<(u64, String)> =
        const { std::cell::RefCell::new((u64::MAX, String::new())) };
}

impl LogTime {
    /// `YYYY-MM-DDTHH:MM:SS.` for a time in seconds since the epoch (years 0–9999, which is
    /// what `SystemTime` gives after 1970; anything else is left to tracing-subscriber).
    fn second_prefix(secs: u64) -> Option<String> {
        let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).ok()?).ok()?;
        if !(0..=9999).contains(&t.year()) {
            return None;
        }
        Some(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ))
    }
}

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        let Ok(since) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) else {
            return tracing_subscriber::fmt::time::SystemTime.format_time(w);
        };
        let secs = since.as_secs();
        let written = LOG_SECOND.with(|cell| {
            let mut cached = cell.try_borrow_mut().ok()?;
            if cached.0 != secs {
                *cached = (secs, LogTime::second_prefix(secs)?);
            }
            let mut digits = itoa::Buffer::new();
            let micros = digits.format(since.subsec_micros());
            Some(
                w.write_str(&cached.1)
                    .and_then(|()| w.write_str(&"000000"[micros.len()..]))
                    .and_then(|()| w.write_str(micros))
                    .and_then(|()| w.write_char('Z')),
            )
        });
        match written {
            Some(r) => r,
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// The log thread's output. tracing-appender's worker writes each queued line, then flushes
/// once its queue is empty (and once more when shut down): the flush is where it rests.
struct Batching<W>(W);

impl<W: std::io::Write> std::io::Write for Batching<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.0.flush();
        std::thread::sleep(LOG_BATCH_PAUSE);
        r
    }
}

/// `--log-format json`: one object per line, `{"timestamp", "level", "message", fields…,
/// "target"}` with the fields flattened (as tracing-subscriber's JSON format with
/// `flatten_event`), plus `"spans"` when inside spans. A field named `findings` holds JSON
/// already (`server::http::FindingsJson`) and is embedded as such, not as a string.
pub struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use tracing_subscriber::fmt::time::FormatTime as _;
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        LogTime.format_time(&mut w)?;
        write!(w, "\",\"level\":\"{}\"", meta.level())?;
        let mut fields = JsonFieldsVisitor {
            out: String::with_capacity(256),
            target: None,
        };
        event.record(&mut fields);
        w.write_str(&fields.out)?;
        if let Some(scope) = ctx.event_scope() {
            w.write_str(",\"spans\":[")?;
            for (i, span) in scope.from_root().enumerate() {
                if i > 0 {
                    w.write_char(',')?;
                }
                write!(w, "{{\"name\":{}", json_str(span.name()))?;
                let ext = span.extensions();
                if let Some(f) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>() {
                    // JsonFields stores a span's fields as a JSON object.
                    let inner = f.fields.trim();
                    let inner = inner.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                    if let Some(inner) = inner.filter(|s| !s.trim().is_empty()) {
                        write!(w, ",{inner}")?;
                    }
                }
                w.write_char('}')?;
            }
            w.write_char(']')?;
        }
        let target = fields.target.as_deref().unwrap_or(meta.target());
        writeln!(w, ",\"target\":{}}}", json_str(target))
    }
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Writes each field as `,"name":value`: numbers and booleans as such, `findings` as the JSON
/// it is, everything else as a string. Records bridged from the `log` crate name their
/// target in `log.target`; their other `log.*` fields are left out.
struct JsonFieldsVisitor {
    out: String,
    target: Option<String>,
}

impl JsonFieldsVisitor {
    fn key(&mut self, field: &tracing::field::Field) -> bool {
        use std::fmt::Write as _;
        let name = field.name();
        if name.starts_with("log.") {
            return false;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        let _ = write!(self.out, ",{}:", json_str(name));
        true
    }
}

impl tracing::field::Visit for JsonFieldsVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "log.target" {
            self.target = Some(value.to_owned());
        }
        if self.key(field) {
            self.out.push_str(&json_str(value));
        }
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        if self.key(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        use std::fmt::Write as _;
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        use std::fmt::Write as _;
        if self.key(field) {
            let _ = write!(self.out, "{value}");
        }
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        use std::fmt::Write as _;
        if self.key(field) {
            if value.is_finite() {
                let _ = write!(self.out, "{value}");
            } else {
                self.out.push_str("null");
            }
        }
    }

    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        if self.key(field) {
            self.out.push_str(&json_str(&value.to_string()));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if !self.key(field) {
            return;
        }
        if field.name() == "findings" {
            let _ = write!(self.out, "{value:?}");
        } else {
            self.out.push_str(&json_str(&format!("{value:?}")));
        }
    }
}

/// A `--policies` path that does not exist, named as given with the working directory:
/// `--policies ./polcies: no such file or directory (working directory /x); use --policies
/// builtin for the built-in set`.
/// Checks the policy paths exist, and sets the limits policies are compiled under.
fn check_policy_paths(policies: &PolicyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        policies.max_cel_cost > 0.0,
        "--max-cel-cost must be positive"
    );
    crate::policy::set_expression_cost_limit(policies.max_cel_cost);
    anyhow::ensure!(
        policies.max_cel_runtime_cost >= 1.0,
        "--max-cel-runtime-cost must be at least 1"
    );
    crate::policy::set_expression_runtime_cost_limit(policies.max_cel_runtime_cost as u64);
    match crate::policy::load::first_missing(&policies.policies) {
        Some(e) => Err(anyhow::anyhow!(
            "--policies {e}; use --policies {} for the built-in set",
            crate::policy::builtin::KEYWORD
        )),
        None => Ok(()),
    }
}

/// Loads policies and state. A policy error is a usage error: exit code 2.
pub fn load_snapshot(sources: &SourceArgs) -> Result<Snapshot, (ExitCode, anyhow::Error)> {
    load_snapshot_and_policy_files(sources).map(|(snap, _)| snap)
}

/// Policy documents as read from files: (source, document).
type PolicyFiles = Vec<(String, serde_json::Value)>;

/// As [`load_snapshot`], and the policy documents it compiled, for `serve --policy-resources`
/// to compile again with the cluster's resources (the files are read once).
fn load_snapshot_and_policy_files(
    sources: &SourceArgs,
) -> Result<(Snapshot, PolicyFiles), (ExitCode, anyhow::Error)> {
    check_policy_paths(&sources.policy).map_err(|e| (ExitCode::from(2), e))?;
    let usage = |e: crate::policy::PolicyError| (ExitCode::from(2), anyhow::Error::new(e));
    let files = crate::policy::load::read_documents(&sources.policy.policies).map_err(usage)?;
    let policies: PolicySet =
        crate::policy::load::compile_documents(files.clone()).map_err(usage)?;
    warn_policies(&policies);
    let view = if sources.state.is_empty() {
        ClusterView::default()
    } else {
        load_dir(&sources.state).map_err(|e| (ExitCode::from(2), anyhow::Error::new(e)))?
    };
    Ok((Snapshot { policies, view }, files))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(serve(*args));
            // An evaluation past its deadline may still be running on the blocking pool: it
            // has been answered for, so it does not hold the exit up.
            rt.shutdown_timeout(Duration::from_millis(100));
            code
        }
        Command::Review(args) => review(args),
        Command::Certs(CertsCommand::Generate { out, cert }) => {
            certs::write(&out, &certs::generate(&cert.options())?)?;
            println!(
                "wrote ca.crt, ca.key, tls.crt, tls.key to {}",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => check(args),
        Command::Policies(args) => policies(args),
        Command::Graph(args) => {
            let rendered = match crate::render::render(&args.paths, &args.render.options()) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let kind = match args.kind {
                GraphKind::HelmRelease => crate::cluster::FluxKind::HelmRelease,
                GraphKind::Kustomization => crate::cluster::FluxKind::Kustomization,
            };
            let many = rendered.worlds.len() > 1;
            for w in &rendered.worlds {
                let g = crate::check::graph(&w.docs, kind);
                let name = w.name.as_deref().unwrap_or("");
                match args.format {
                    GraphFormat::Mermaid if many => print!("%% {name}\n{}", g.to_mermaid()),
                    GraphFormat::Dot if many => print!("// {name}\n{}", g.to_dot()),
                    GraphFormat::Waves if many => {
                        print!("# {name}\n{}", crate::check::waves_text(&g))
                    }
                    GraphFormat::Mermaid => print!("{}", g.to_mermaid()),
                    GraphFormat::Dot => print!("{}", g.to_dot()),
                    GraphFormat::Waves => print!("{}", crate::check::waves_text(&g)),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd => {
            use kube::CustomResourceExt;
            print!(
                "{}",
                serde_saphyr::to_string(&crate::policy::model::DeploymentPolicy::crd())?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `fluxadmit policies`: the effective set, as a summary or as YAML. A policy error: exit 2.
fn policies(args: PoliciesArgs) -> anyhow::Result<ExitCode> {
    let loaded = check_policy_paths(&args.policy).and_then(|()| {
        crate::policy::Effective::load(&args.policy.policies).map_err(anyhow::Error::new)
    });
    let effective = match loaded {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    warn_policies(&effective.set);
    match args.output {
        PoliciesFormat::Text => print!("{}", effective.text()),
        PoliciesFormat::Yaml => print!("{}", effective.yaml()?),
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let snap = match load_snapshot(&args.sources) {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("error: {e:#}");
            return Ok(code);
        }
    };
    let mut assumed = Vec::new();
    for a in &args.assume_secret {
        match crate::check::provided::parse_assume_secret(a) {
            Ok(s) => assumed.push(s),
            Err(e) => {
                eprintln!("error: --assume-secret {a}: {e}");
                return Ok(ExitCode::from(2));
            }
        }
    }
    let mut view = snap.view;
    crate::check::assume_secrets(&mut view, &assumed);
    let (mut report, skipped) = match check_paths(&args.paths, &args.render, &snap.policies, &view)
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if args.verbose {
        for s in &skipped {
            eprintln!("skipped: {s}");
        }
    }
    if let Some(rev) = &args.base {
        let base = match base_findings(rev, &args.paths, &args.render, &snap.policies, &view) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: --base {rev}: {e:#}");
                return Ok(ExitCode::from(2));
            }
        };
        let before = report.findings.len();
        report.findings = new_findings(report.findings, &base);
        report.notes.push(format!(
            "--base {rev}: {} finding{} already there left out",
            before - report.findings.len(),
            if before - report.findings.len() == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    let color =
        matches!(args.format, crate::report::CheckFormat::Text) && crate::report::stdout_color();
    crate::report::write_report(
        &mut std::io::stdout().lock(),
        &report,
        &snap.policies,
        args.format,
        color,
    )?;
    Ok(ExitCode::from(crate::report::exit_code(
        &report,
        args.strict,
    )))
}

/// Renders the paths and checks every world: the report, and the files skipped as not
/// Kubernetes manifests.
fn check_paths(
    paths: &[PathBuf],
    render: &RenderArgs,
    policies: &PolicySet,
    view: &ClusterView,
) -> Result<(crate::check::Report, Vec<String>), crate::render::RenderError> {
    let rendered = crate::render::render(paths, &render.options())?;
    let mut report = crate::check::Report {
        notes: rendered.notes,
        ..Default::default()
    };
    for world in rendered.worlds {
        let part = crate::check::check(policies.clone(), view.clone(), &world.docs);
        report.objects += part.objects;
        report.notes.extend(part.notes);
        report
            .findings
            .extend(part.findings.into_iter().map(|mut f| {
                f.world = world.name.clone();
                f
            }));
    }
    Ok((report, rendered.skipped))
}

fn git(args: &[&std::ffi::OsStr]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {}: {}",
        args.iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The findings of the same check at `rev`: the revision is put in a temporary git worktree
/// and checked from the same place in it, so files are named alike.
fn base_findings(
    rev: &str,
    paths: &[PathBuf],
    render: &RenderArgs,
    policies: &PolicySet,
    view: &ClusterView,
) -> anyhow::Result<Vec<crate::check::CheckFinding>> {
    use std::ffi::OsStr;
    anyhow::ensure!(
        !paths.iter().any(|p| p.as_os_str() == "-"),
        "stdin has no revision to compare with"
    );
    let top = PathBuf::from(git(&[
        OsStr::new("rev-parse"),
        OsStr::new("--show-toplevel"),
    ])?);
    let top = std::fs::canonicalize(&top)?;
    let cwd = std::env::current_dir()?;
    let here = std::fs::canonicalize(&cwd)?;
    let rel = here
        .strip_prefix(&top)
        .map(Path::to_path_buf)
        .map_err(|_| anyhow::anyhow!("the working directory is not in the git work tree"))?;
    let tmp = tempfile::tempdir()?;
    let tree = tmp.path().join("base");
    git(&[
        OsStr::new("worktree"),
        OsStr::new("add"),
        OsStr::new("--detach"),
        OsStr::new("--quiet"),
        tree.as_os_str(),
        OsStr::new(rev),
    ])?;
    /// Removes the worktree however the check ends.
    struct Remove<'a>(&'a Path, PathBuf);
    impl Drop for Remove<'_> {
        fn drop(&mut self) {
            let _ = std::env::set_current_dir(&self.1);
            let _ = std::process::Command::new("git")
                .args(["worktree", "remove", "--force"])
                .arg(self.0)
                .output();
        }
    }
    let _remove = Remove(&tree, cwd.clone());
    // Absolute paths inside the work tree point into the base tree instead.
    let paths: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            match std::fs::canonicalize(p)
                .ok()
                .and_then(|a| a.strip_prefix(&top).ok().map(Path::to_path_buf))
            {
                Some(inside) if p.is_absolute() => tree.join(inside),
                _ => p.clone(),
            }
        })
        .collect();
    std::env::set_current_dir(tree.join(&rel))?;
    let (report, _) = check_paths(&paths, render, policies, view)?;
    Ok(report.findings)
}

/// The findings not in `base`, matched on world, file, object, level and text (lines move).
fn new_findings(
    findings: Vec<crate::check::CheckFinding>,
    base: &[crate::check::CheckFinding],
) -> Vec<crate::check::CheckFinding> {
    let key = |f: &crate::check::CheckFinding| -> (Option<String>, String, String, bool, String) {
        (
            f.world.clone(),
            f.file.clone(),
            f.object.clone(),
            f.level == crate::rules::Level::Error,
            f.text.clone(),
        )
    };
    let mut old: std::collections::HashMap<_, usize> = std::collections::HashMap::new();
    for f in base {
        *old.entry(key(f)).or_default() += 1;
    }
    findings
        .into_iter()
        .filter(|f| match old.get_mut(&key(f)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .collect()
}

fn review(args: ReviewArgs) -> anyhow::Result<ExitCode> {
    let snap = match load_snapshot(&args.sources) {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("error: {e:#}");
            return Ok(code);
        }
    };
    let mut body = Vec::new();
    let read = if args.file == "-" {
        std::io::stdin().read_to_end(&mut body).map(|_| ())
    } else {
        std::fs::read(&args.file).map(|b| body = b)
    };
    if let Err(e) = read {
        eprintln!("error: reading {}: {e}", args.file);
        return Ok(ExitCode::from(2));
    }
    let mode = if args.mutate {
        Mode::Mutate
    } else {
        Mode::Validate
    };
    let body = match review_input(&args, body) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match snap.review(mode, &body) {
        Ok(answer) => {
            println!("{}", String::from_utf8_lossy(&answer.body));
            Ok(if answer.outcome.verdict.allowed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Err(e) => {
            eprintln!("error: {}: {e}", args.file);
            Ok(ExitCode::from(2))
        }
    }
}

/// What loads but looks wrong (a kind no known API group serves) is said on stderr, naming the
/// file, the policy and the field; it does not stop anything.
fn warn_policies(set: &PolicySet) {
    for p in set.policies.iter() {
        for (field, text) in &p.warnings {
            eprintln!(
                "warning: {}: policy {:?}: {field}: {text}",
                p.source, p.name
            );
        }
    }
}

/// `1 error`, `2 errors`.
/// The review body for `fluxadmit review`: an AdmissionReview as given, or one built around a
/// plain manifest (with `--operation`, `--old`, `--dry-run`).
fn review_input(args: &ReviewArgs, body: Vec<u8>) -> Result<Vec<u8>, String> {
    let what = if args.file == "-" {
        "stdin"
    } else {
        &args.file
    };
    let manifest = |text: &[u8], name: &str| -> Result<serde_json::Value, String> {
        let text = String::from_utf8_lossy(text);
        let mut docs = crate::cluster::load::parse_manifests(std::path::Path::new(name), &text)
            .map_err(|e| e.to_string())?;
        match docs.len() {
            1 => Ok(docs.remove(0)),
            0 => Err(format!("{name}: no object in it")),
            n => Err(format!("{name}: {n} objects; review takes one")),
        }
    };
    let object = manifest(&body, what)?;
    if object.get("kind").and_then(serde_json::Value::as_str) == Some("AdmissionReview") {
        return Ok(body);
    }
    let old = match &args.old {
        Some(p) => {
            let text = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(manifest(&text, &p.display().to_string())?)
        }
        None => None,
    };
    let (operation, object, old) = match args.operation {
        ReviewOperation::Create => ("CREATE", Some(&object), None),
        ReviewOperation::Update => {
            let Some(old) = old.as_ref() else {
                return Err(
                    "--operation update needs --old FILE (the object before the update)".into(),
                );
            };
            ("UPDATE", Some(&object), Some(old))
        }
        ReviewOperation::Delete => ("DELETE", None, Some(&object)),
    };
    crate::check::admission_review(
        "fluxadmit-review",
        operation,
        object,
        old,
        args.dry_run,
        "fluxadmit-review",
    )
    .ok_or_else(|| {
        format!("{what}: not a Kubernetes object (apiVersion, kind and metadata.name are needed)")
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    // Before the listener is bound: a signal that comes once the port accepts connections
    // must reach the handler, not the default action (which kills the process).
    let signals = Signals::install()?;
    let (snap, policy_files) = match load_snapshot_and_policy_files(&args.sources) {
        Ok(s) => s,
        Err((code, e)) => {
            eprintln!("error: {e:#}");
            return Ok(code);
        }
    };
    let (cert, key) = match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            if certs::ensure(&args.cert_dir, &args.cert.options())? {
                tracing::info!(dir = %args.cert_dir.display(), "generated a CA and serving certificate");
            }
            (args.cert_dir.join("tls.crt"), args.cert_dir.join("tls.key"))
        }
    };
    let files = Arc::new(CertFiles::load(cert, key)?);
    let tls = files.server_config()?;
    let metrics = Arc::new(Metrics::new());
    tracing::info!(
        policies = snap.policies.len(),
        rules = snap.policies.rule_count(),
        objects = snap.view.len(),
        "loaded"
    );
    let client = if args.watch {
        let client = kube::Client::try_default()
            .await
            .context("connecting to the API server for --watch")?;
        Some(client)
    } else {
        None
    };
    let state = Arc::new(serve_state(snap, metrics.clone(), &args, client.as_ref()));
    let _watch_task = if let Some(client) = client {
        let mut kinds: Vec<Tracked> = Tracked::ALL
            .into_iter()
            .filter(|k| *k != Tracked::ConfigMap)
            .collect();
        if args.watch_configmaps {
            kinds.push(Tracked::ConfigMap);
        }
        let files = if args.policy_resources {
            Some(policy_files)
        } else {
            None
        };
        Some(tokio::spawn(crate::watch::run_all(
            client,
            kinds,
            files,
            Duration::from_millis(250),
            metrics.clone(),
            publisher(state.clone()),
        )))
    } else {
        None
    };
    let running = server::start(
        args.addr,
        Some(args.metrics_addr),
        tls,
        state,
        Options {
            drain: args.drain,
            close_timeout: args.timeout + Duration::from_secs(2),
        },
    )
    .await?;
    let _watch = files
        .clone()
        .spawn_watch(args.cert_reload_interval, metrics);
    tracing::info!(addr = %running.addr, metrics = ?running.metrics_addr, startup_ms = started.elapsed().as_millis() as u64, "serving");
    if signals.next().await == Signal::Interrupt {
        running.interrupt().await?;
    } else {
        running.shutdown().await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The server's state for `serve`. With a client (`--watch`): not ready until the watch has
/// listed every kind, and a dependency missing from the watch-fed view is confirmed with a
/// live read through the client before it is reported (the view may lag behind a `kubectl
/// apply` of both objects).
fn serve_state(
    snap: Snapshot,
    metrics: Arc<Metrics>,
    args: &ServeArgs,
    client: Option<&kube::Client>,
) -> AppState {
    let mut state = AppState::new(snap, metrics);
    state.budget = args.timeout;
    state.failure = args.failure_mode;
    state.max_connections = args.max_connections.max(1);
    state.in_flight = tokio::sync::Semaphore::new(args.max_requests_in_flight.max(1));
    state.idle_timeout = args.idle_timeout;
    state.header_timeout = args.header_timeout;
    state.write_timeout = args.write_timeout;
    state.handshake_timeout = args.tls_handshake_timeout;
    state.h2_max_streams = args.h2_max_concurrent_streams;
    state.h2_max_header_list = args.h2_max_header_list_size;
    if let Some(client) = client {
        state.ready = std::sync::atomic::AtomicBool::new(false);
        state.live = Some(Arc::new(crate::live::KubeLookup(client.clone())));
    }
    state
}

/// What the watch calls with each new view (and, with `--policy-resources`, a new policy
/// set): swaps the server's snapshot and turns it ready.
fn publisher(st: Arc<AppState>) -> impl Fn(ClusterView, Option<PolicySet>) + Send + 'static {
    move |view: ClusterView, policies: Option<PolicySet>| {
        let policies = policies.unwrap_or_else(|| st.snapshot.load().policies.clone());
        st.metrics.view_objects.set(view.len() as i64);
        st.metrics.policies.set(policies.len() as i64);
        st.snapshot.store(Arc::new(Snapshot { policies, view }));
        if !st.ready.swap(true, std::sync::atomic::Ordering::SeqCst) {
            tracing::info!("cluster view synced: ready");
        }
    }
}

#[derive(PartialEq, Eq)]
enum Signal {
    /// SIGTERM, as the kubelet sends: drain first.
    Terminate,
    /// SIGINT, Ctrl-C at a terminal: stop now (requests in flight still finish).
    Interrupt,
}

/// SIGTERM and SIGINT, caught from the moment `install` returns.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Terminate,
            _ = self.int.recv() => Signal::Interrupt,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_time_is_tracing_subscribers_format() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_796_000_000, "2026-11-30T00:53:20."),
            (4_102_444_799, "2099-12-31T23:59:59."),
        ] {
            assert_eq!(LogTime::second_prefix(secs).as_deref(), Some(text));
        }
        let format = |t: &dyn tracing_subscriber::fmt::time::FormatTime| {
            let mut out = String::new();
            t.format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut out))
                .unwrap();
            out
        };
        // Now, against tracing-subscriber's own: equal up to the second (retried if a second
        // boundary falls between the two), the same shape after it.
        let (ours, theirs) = (0..10)
            .map(|_| {
                (
                    format(&LogTime),
                    format(&tracing_subscriber::fmt::time::SystemTime),
                )
            })
            .find(|(a, b)| a[..20] == b[..20])
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{ours} vs {theirs}");
        assert_eq!(ours.len(), 27, "{ours}");
        assert!(ours.ends_with('Z'), "{ours}");
        assert!(ours[20..26].bytes().all(|b| b.is_ascii_digit()), "{ours}");
        // The cached second is reused, and the microseconds are zero-padded.
        let again = format(&LogTime);
        assert!(again >= ours, "{again} after {ours}");
    }

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("8s").unwrap(), Duration::from_secs(8));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    type Mock = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    const LOKI: &str = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/monitoring/helmreleases/loki";
    const TEMPO: &str = "/apis/helm.toolkit.fluxcd.io/v2/namespaces/monitoring/helmreleases/tempo";

    /// The API server as the live read sees it: HelmRelease `monitoring/loki` exists; anything
    /// else is a 404 with a `Status` body, as the API server answers for an absent object.
    /// Ends when the client is dropped (every handle to the mock service gone) and returns
    /// the requests it answered.
    async fn api_server(mut handle: Mock) -> Vec<String> {
        let mut asked = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let path = req.uri().path().to_owned();
            asked.push(format!("{} {path}", req.method()));
            let (status, body) = if req.method() == http::Method::GET && path == LOKI {
                let hr = serde_json::json!({"apiVersion": "helm.toolkit.fluxcd.io/v2",
                    "kind": "HelmRelease", "metadata": {"name": "loki", "namespace": "monitoring",
                    "resourceVersion": "42"}, "spec": {"interval": "1h"}});
                (200, hr)
            } else {
                let name = path.rsplit('/').next().unwrap_or_default();
                let status = serde_json::json!({"kind": "Status", "apiVersion": "v1",
                    "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404,
                    "message": format!("helmreleases.helm.toolkit.fluxcd.io \"{name}\" not found"),
                    "details": {"name": name, "group": "helm.toolkit.fluxcd.io", "kind": "helmreleases"}});
                (404, status)
            };
            let resp = http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(kube::client::Body::from(body.to_string().into_bytes()))
                .unwrap();
            send.send_response(resp);
        }
        asked
    }

    /// A HelmRelease `monitoring/grafana` created with the given `spec.dependsOn` names.
    fn review_body(deps: &[&str]) -> String {
        let deps: Vec<serde_json::Value> = deps
            .iter()
            .map(|d| serde_json::json!({"name": d}))
            .collect();
        serde_json::json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-live", "kind": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "kind": "HelmRelease"},
            "resource": {"group": "helm.toolkit.fluxcd.io", "version": "v2", "resource": "helmreleases"},
            "name": "grafana", "namespace": "monitoring", "operation": "CREATE", "userInfo": {"username": "flux"},
            "object": {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
                "metadata": {"name": "grafana", "namespace": "monitoring"},
                "spec": {"interval": "1h", "chart": {"spec": {"chart": "grafana"}}, "dependsOn": deps}}}})
        .to_string()
    }

    /// POSTs a review to the server's router, as the API server does.
    async fn validate(state: &Arc<AppState>, deps: &[&str]) -> serde_json::Value {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let req = http::Request::post("/validate")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(review_body(deps)))
            .unwrap();
        let resp = crate::server::http::app(state.clone())
            .oneshot(req)
            .await
            .unwrap();
        assert_eq!(resp.status(), http::StatusCode::OK);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn warnings(v: &serde_json::Value) -> Vec<String> {
        v["response"]["warnings"]
            .as_array()
            .map(|w| {
                w.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `serve --watch` with the built-in policies (a missing dependency is a warning): a
    /// dependency the watch-fed view lacks is read from the API server before it is reported.
    #[tokio::test]
    async fn serve_watch_confirms_a_missing_dependency_with_a_live_read() {
        let test = async {
            let Command::Serve(args) = Cli::try_parse_from(["fluxadmit", "serve", "--watch"])
                .unwrap()
                .command
            else {
                panic!("not serve");
            };
            let snap = load_snapshot(&args.sources).unwrap();
            let plain = serve_state(Snapshot::default(), Arc::new(Metrics::new()), &args, None);
            assert!(plain.live.is_none(), "no client (no --watch): no live read");

            let (svc, handle) = tower_test::mock::pair::<
                http::Request<kube::client::Body>,
                http::Response<kube::client::Body>,
            >();
            let api = tokio::spawn(api_server(handle));
            let client = kube::Client::new(svc, "default");
            let state = Arc::new(serve_state(
                snap,
                Arc::new(Metrics::new()),
                &args,
                Some(&client),
            ));
            drop(client);
            assert!(!state.ready.load(std::sync::atomic::Ordering::SeqCst));

            // The watch publishes its view: it holds redis, not loki (created a moment ago)
            // nor tempo (created nowhere).
            let mut view = ClusterView::default();
            view.add_manifest(
                &serde_json::json!({"apiVersion": "helm.toolkit.fluxcd.io/v2",
                "kind": "HelmRelease", "metadata": {"name": "redis", "namespace": "monitoring"}}),
            );
            publisher(state.clone())(view, None);
            assert!(state.ready.load(std::sync::atomic::Ordering::SeqCst));

            // In the view: no live read, no finding.
            let v = validate(&state, &["redis"]).await;
            assert_eq!(v["response"]["allowed"], true, "{v}");
            assert!(warnings(&v).is_empty(), "{v}");

            // Not in the view, but the API server has it: no finding.
            let v = validate(&state, &["redis", "loki"]).await;
            assert_eq!(v["response"]["allowed"], true, "{v}");
            assert!(warnings(&v).is_empty(), "{v}");

            // Not in the view, and the API server answers 404: reported (a warning, as the
            // built-in flux-dependencies policy says), naming only tempo.
            let v = validate(&state, &["loki", "tempo"]).await;
            assert_eq!(v["response"]["allowed"], true, "{v}");
            let w = warnings(&v);
            assert_eq!(w.len(), 1, "{v}");
            assert!(
                w[0].contains("HelmRelease monitoring/tempo not found"),
                "{v}"
            );

            // The client goes with the server state; the mock API server then ends by itself.
            drop(state);
            api.await.unwrap()
        };
        let asked = tokio::time::timeout(Duration::from_secs(20), test)
            .await
            .expect("the test finishes within 20 s");
        let want = [
            format!("GET {LOKI}"),
            format!("GET {LOKI}"),
            format!("GET {TEMPO}"),
        ];
        let mut asked = asked;
        asked.sort();
        assert_eq!(asked, want);
    }
}
