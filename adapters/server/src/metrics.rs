//! What the server counts: Prometheus series for `/metrics`, and the percentiles
//! and totals `/api/stats` (and so the dashboard) shows. Labels are codes, kinds
//! and operations only — never a user, a session or a token: the users and `jti`s
//! refused most often are kept apart, for `/admin/refusals`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use wsauth_core::{AuthMethod, CallOutcome, ErrorCode, Event};

/// The outcomes `wsauth_rpc_total` counts (a timeout counts as `unavailable`).
const RPC_OUTCOMES: [&str; 5] = ["ok", "app_error", "not_found", "unavailable", "busy"];

/// The server API's routes, as `wsauth_api_requests_total` labels them.
pub const API_ROUTES: [&str; 2] = ["/api/publish", "/api/send"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    method: &'static str,
    outcome: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The reasons of `wsauth_store_notices_lost_total`.
pub const NOTICE_LOSS_REASONS: [&str; 3] = ["trimmed", "stream_gone", "lag"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    close_code: u16,
    error_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabel {
    outcome: &'static str,
}

/// The outcomes `wsauth_introspection_requests_total` counts.
pub const INTROSPECTION_OUTCOMES: [&str; 3] = ["active", "inactive", "error"];
/// The outcomes `wsauth_jwks_fetch_total` counts.
pub const JWKS_OUTCOMES: [&str; 5] = ["ok", "http_error", "network", "invalid", "too_large"];

/// The outcomes `wsauth_config_reloads_total` counts: every part reloaded, or
/// at least one refused (its old keys or certificate kept).
pub const RELOAD_OUTCOMES: [&str; 2] = ["ok", "failed"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JwksLabel {
    outcome: &'static str,
}

/// The series of the key sources (JWKS URLs, introspection): the key source
/// owns a clone and counts into it, [`Metrics`] registers and renders them.
#[derive(Clone, Default)]
pub struct JwksMetrics {
    fetches: Family<JwksLabel, Counter>,
    keys: Gauge,
    age: Gauge,
    introspections: Family<JwksLabel, Counter>,
    /// Unix ms of each JWKS's last good fetch (of the start while there was
    /// none); the age shown is the oldest's.
    sources: Arc<std::sync::Mutex<Vec<Arc<AtomicU64>>>>,
}

impl JwksMetrics {
    /// Counts one fetch by its outcome (one of [`JWKS_OUTCOMES`]).
    pub fn fetched(&self, outcome: &'static str) {
        self.fetches.get_or_create(&JwksLabel { outcome }).inc();
    }

    /// The keys of the last good documents changed by `delta`.
    pub fn add_keys(&self, delta: i64) {
        self.keys.inc_by(delta);
    }

    /// A new JWKS source, as fresh as `now_ms` (Unix ms) until its first good
    /// fetch: the clock it sets after each good fetch.
    pub fn source(&self, now_ms: u64) -> Arc<AtomicU64> {
        let clock = Arc::new(AtomicU64::new(now_ms));
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(clock.clone());
        clock
    }

    /// Counts one introspection request by its outcome (`active`,
    /// `inactive`, `error`).
    pub fn introspected(&self, outcome: &'static str) {
        self.introspections
            .get_or_create(&JwksLabel { outcome })
            .inc();
    }

    /// How many fetches had `outcome`.
    pub fn count(&self, outcome: &'static str) -> u64 {
        self.fetches.get_or_create(&JwksLabel { outcome }).get()
    }

    fn update_age(&self, now_ms: u64) {
        let oldest = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|since| since.load(Ordering::Relaxed))
            .min();
        let age_s = oldest.map_or(0, |since| now_ms.saturating_sub(since) / 1000);
        self.age.set(age_s as i64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Buckets from 50 µs to about 27 s: authentication is sub-millisecond when all is
/// well, and seconds when a store or verifier struggles.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
}

/// Buckets from 1 s to about 18 h, for the time left on a token.
fn time_left_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 17))
}

/// Percentiles for `/api/stats`, in microseconds (1 µs to 60 s, 3 digits): since
/// start, and over a recent window (the last 10 to 20 s), which is what a chart of
/// "now" should show.
struct Percentiles(Mutex<Windows>);

struct Windows {
    total: hdrhistogram::Histogram<u64>,
    current: hdrhistogram::Histogram<u64>,
    previous: hdrhistogram::Histogram<u64>,
    current_since: Instant,
}

/// Length of one recent window.
const WINDOW: Duration = Duration::from_secs(10);

fn empty_histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
        .expect("static histogram bounds are valid")
}

impl Windows {
    /// Moves the windows on so that `current` started less than WINDOW ago.
    fn rotate(&mut self) {
        let age = self.current_since.elapsed();
        if age < WINDOW {
            return;
        }
        if age < WINDOW * 2 {
            std::mem::swap(&mut self.previous, &mut self.current);
        } else {
            self.previous.reset();
        }
        self.current.reset();
        self.current_since = Instant::now();
    }
}

fn percentiles_ms(h: &hdrhistogram::Histogram<u64>) -> Value {
    let count = h.len();
    let at = |q: f64| {
        if count == 0 {
            Value::Null
        } else {
            json!(h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    json!({
        "count": count,
        "p50": at(0.5),
        "p90": at(0.9),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": if count == 0 { Value::Null } else { json!(h.max() as f64 / 1000.0) },
    })
}

impl Percentiles {
    fn new() -> Self {
        Percentiles(Mutex::new(Windows {
            total: empty_histogram(),
            current: empty_histogram(),
            previous: empty_histogram(),
            current_since: Instant::now(),
        }))
    }

    fn record(&self, took: Duration) {
        let micros = (took.as_micros() as u64).clamp(1, 60_000_000);
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.rotate();
        let _ = w.total.record(micros);
        let _ = w.current.record(micros);
    }

    /// `{"count", "p50", "p90", "p99", "p999", "max"}` in milliseconds (`null` when
    /// empty): since start, and over the recent window.
    fn snapshot_ms(&self) -> (Value, Value) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        w.rotate();
        let mut recent = w.previous.clone();
        let _ = recent.add(&w.current);
        (percentiles_ms(&w.total), percentiles_ms(&recent))
    }
}

/// Counts per key, bounded: when full, the less frequent half is forgotten, so
/// the most frequent keys stay while memory stays fixed.
struct TopCounts {
    counts: HashMap<String, u64>,
    capacity: usize,
}

impl TopCounts {
    fn new(capacity: usize) -> Self {
        TopCounts {
            counts: HashMap::new(),
            capacity,
        }
    }

    fn add(&mut self, key: &str) {
        if let Some(n) = self.counts.get_mut(key) {
            *n += 1;
            return;
        }
        if self.counts.len() >= self.capacity {
            let mut values: Vec<u64> = self.counts.values().copied().collect();
            values.sort_unstable();
            let median = values[(values.len() - 1) / 2];
            self.counts.retain(|_, n| *n > median);
        }
        self.counts.insert(key.to_owned(), 1);
    }

    fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut all: Vec<(String, u64)> =
            self.counts.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// `wsauth_build_info`'s labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The one `wsauth_build_info` series, at 1.
fn build_info() -> Family<BuildLabels, Gauge> {
    let family = Family::<BuildLabels, Gauge>::default();
    family
        .get_or_create(&BuildLabels {
            version: env!("CARGO_PKG_VERSION"),
            commit: env!("WSAUTH_COMMIT"),
        })
        .set(1);
    family
}

/// The standard `process_*` series (CPU, memory, file descriptors, threads,
/// start time), read from the operating system at each scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = metrics_process::collector::collect();
        if let Some(seconds) = now.cpu_seconds_total {
            let cpu = ConstCounter::new(seconds);
            let help = "Total user and system CPU time spent in seconds";
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                help,
                None,
                cpu.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                now.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                now.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                now.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors (0: unlimited)",
                now.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process",
                now.threads,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                now.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value.and_then(|v| i64::try_from(v).ok()) {
                let gauge = ConstGauge::new(value);
                gauge.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    gauge.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

/// Keys with their counts, most frequent first.
pub type Ranking = Vec<(String, u64)>;

/// The server's measurements.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    connections_open: Gauge,
    sessions_live: Gauge,
    store_up: Gauge,
    notices_lost: Family<ReasonLabel, Counter>,
    notice_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    upgrades_refused: Family<CodeLabel, Counter>,
    auth: Family<AuthLabels, Counter>,
    refresh: Family<OutcomeLabels, Counter>,
    resume: Family<OutcomeLabels, Counter>,
    resume_replayed: Counter,
    resume_gaps: Counter,
    expired: Counter,
    replaced: Counter,
    evictions: Counter,
    expiring_sent: Counter,
    revocations: Family<KindLabel, Counter>,
    revocation_closes: Counter,
    rate_limited: Counter,
    slow_consumer: Counter,
    messages_in: Counter,
    messages_out: Counter,
    closes: Family<CloseLabels, Counter>,
    store_errors: Family<OpLabel, Counter>,
    auth_duration: Histogram,
    verify_duration: Histogram,
    refresh_duration: Histogram,
    refresh_time_left: Histogram,
    revocation_propagation: Histogram,
    store_duration: Family<OpLabel, Histogram, fn() -> Histogram>,
    rpc: Family<RpcLabel, Counter>,
    rpc_duration: Histogram,
    api_requests: Family<ApiLabels, Counter>,
    jwks: JwksMetrics,
    config_reloads: Family<JwksLabel, Counter>,
    auth_percentiles: Percentiles,
    rpc_percentiles: Percentiles,
    verify_percentiles: Percentiles,
    store_percentiles: Percentiles,
    close_counts: Mutex<BTreeMap<(u16, &'static str), u64>>,
    refused_users: Mutex<TopCounts>,
    refused_jtis: Mutex<TopCounts>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! register {
    ($registry:ident, $($name:literal => $field:expr, $help:literal;)*) => {
        $( $registry.register($name, $help, $field.clone()); )*
    };
}

impl Metrics {
    /// Every series registered, all at zero.
    pub fn new() -> Self {
        Self::with_jwks(JwksMetrics::default())
    }

    /// [`Metrics::new`], with the JWKS series the key source counts into.
    pub fn with_jwks(jwks: JwksMetrics) -> Self {
        let mut m = Metrics {
            registry: Registry::default(),
            started: Instant::now(),
            connections_open: Gauge::default(),
            sessions_live: Gauge::default(),
            store_up: Gauge::default(),
            notices_lost: Family::default(),
            notice_lag: Gauge::default(),
            upgrades_refused: Family::default(),
            auth: Family::default(),
            refresh: Family::default(),
            resume: Family::default(),
            resume_replayed: Counter::default(),
            resume_gaps: Counter::default(),
            expired: Counter::default(),
            replaced: Counter::default(),
            evictions: Counter::default(),
            expiring_sent: Counter::default(),
            revocations: Family::default(),
            revocation_closes: Counter::default(),
            rate_limited: Counter::default(),
            slow_consumer: Counter::default(),
            messages_in: Counter::default(),
            messages_out: Counter::default(),
            closes: Family::default(),
            store_errors: Family::default(),
            auth_duration: latency_histogram(),
            verify_duration: latency_histogram(),
            refresh_duration: latency_histogram(),
            refresh_time_left: time_left_histogram(),
            revocation_propagation: latency_histogram(),
            store_duration: Family::new_with_constructor(latency_histogram),
            rpc: Family::default(),
            rpc_duration: latency_histogram(),
            api_requests: Family::default(),
            jwks,
            config_reloads: Family::default(),
            auth_percentiles: Percentiles::new(),
            rpc_percentiles: Percentiles::new(),
            verify_percentiles: Percentiles::new(),
            store_percentiles: Percentiles::new(),
            close_counts: Mutex::default(),
            refused_users: Mutex::new(TopCounts::new(10_000)),
            refused_jtis: Mutex::new(TopCounts::new(10_000)),
        };
        m.create_known_series();
        m.registry.register(
            "wsauth_build_info",
            "Always 1; the version and the commit of the running binary in its labels",
            build_info(),
        );
        m.registry.register_collector(Box::new(ProcessCollector));
        let r = &mut m.registry;
        register! { r,
            "wsauth_connections_open" => m.connections_open, "Sockets open on this node (upgraded or not)";
            "wsauth_sessions_live" => m.sessions_live, "Sessions with a live connection on this node";
            "wsauth_store_up" => m.store_up, "1 when the store answered the last check, else 0";
            "wsauth_store_notices_lost" => m.notices_lost, "Times this node closed every connection (1011, resumable) because notices for it may have been lost, by reason (trimmed: trimmed from its stream before it read them; stream_gone: its stream lost across a reconnect; lag: unread for longer than store.max_notice_lag_ms)";
            "wsauth_store_notice_lag_seconds" => m.notice_lag, "How long since this node last read its notice stream up to date (Redis store; 0 for the in-memory one)";
            "wsauth_upgrades_refused" => m.upgrades_refused, "Upgrade requests refused with an HTTP status, by error code";
            "wsauth_auth" => m.auth, "Authentications (auth message, header or query token) by method, outcome and error code";
            "wsauth_refresh" => m.refresh, "Token refreshes by outcome and error code";
            "wsauth_resume" => m.resume, "Resumes by outcome and error code";
            "wsauth_resume_replayed_messages" => m.resume_replayed, "Messages replayed by successful resumes";
            "wsauth_resume_gaps" => m.resume_gaps, "Resumes whose replay had a gap (messages no longer buffered)";
            "wsauth_sessions_expired" => m.expired, "Sessions closed at their token's expiry for want of a refresh (SESSION_EXPIRED)";
            "wsauth_sessions_replaced" => m.replaced, "Connections closed because their session was taken over or evicted (SESSION_REPLACED)";
            "wsauth_evictions" => m.evictions, "Older sessions removed by the per-user limit (evict_oldest) when a user authenticated again";
            "wsauth_expiring_sent" => m.expiring_sent, "`expiring` notices sent";
            "wsauth_revocations" => m.revocations, "Revocations issued through this node's admin API, by kind";
            "wsauth_revocation_closes" => m.revocation_closes, "Connections on this node closed by a revocation (wherever it was issued)";
            "wsauth_rate_limited" => m.rate_limited, "Connections closed for exceeding the message rate (RATE_LIMITED)";
            "wsauth_slow_consumer_closes" => m.slow_consumer, "Connections closed because they did not read fast enough (SLOW_CONSUMER)";
            "wsauth_messages_in" => m.messages_in, "Data frames received from clients";
            "wsauth_messages_out" => m.messages_out, "Messages sent to clients";
            "wsauth_closes" => m.closes, "Connections closed, by close code (0: socket lost) and error code (none: no error)";
            "wsauth_store_errors" => m.store_errors, "Store calls that failed or timed out, by operation";
            "wsauth_auth_duration_seconds" => m.auth_duration, "From accepting the socket to `authenticated`";
            "wsauth_token_verify_duration_seconds" => m.verify_duration, "Token verification alone";
            "wsauth_refresh_duration_seconds" => m.refresh_duration, "From a refresh's verification to its answer";
            "wsauth_refresh_time_left_seconds" => m.refresh_time_left, "Time left on the old token when a refresh succeeded";
            "wsauth_revocation_propagation_seconds" => m.revocation_propagation, "From the admin call to the connection's close, on the node holding it";
            "wsauth_store_duration_seconds" => m.store_duration, "Store calls, by operation";
            "wsauth_rpc" => m.rpc, "Application calls by outcome (ok, app_error, not_found, unavailable: the backend failed or the call timed out, busy)";
            "wsauth_rpc_duration_seconds" => m.rpc_duration, "Application calls, from the handler's start to its answer";
            "wsauth_api_requests" => m.api_requests, "Server API requests (/api/publish, /api/send) by route and HTTP status";
            "wsauth_jwks_fetch" => m.jwks.fetches, "Fetches of jwt.jwks_url by outcome (ok, http_error, network, invalid, too_large)";
            "wsauth_jwks_keys" => m.jwks.keys, "Keys in the last good document of jwt.jwks_url";
            "wsauth_jwks_age_seconds" => m.jwks.age, "Age of the oldest last good fetch of the JWKS URLs (0 without one configured)";
            "wsauth_introspection_requests" => m.jwks.introspections, "Token introspection requests (jwt.introspection_url) by outcome (active, inactive, error)";
            "wsauth_config_reloads" => m.config_reloads, "Reloads of the key and certificate files (SIGHUP, POST /admin/reload) by outcome (ok, failed: a part was refused and kept its old files)";
        }
        m
    }

    /// Creates every labelled series whose labels are known in advance, at zero, so
    /// that a query sees 0 rather than no data before the first event.
    fn create_known_series(&self) {
        for reason in NOTICE_LOSS_REASONS {
            let _ = self.notices_lost.get_or_create(&ReasonLabel { reason });
        }
        let codes = ErrorCode::ALL.iter().map(|c| c.as_str());
        for code in codes.clone() {
            let _ = self.upgrades_refused.get_or_create(&CodeLabel { code });
            for family in [&self.refresh, &self.resume] {
                let _ = family.get_or_create(&OutcomeLabels {
                    outcome: "refused",
                    code,
                });
            }
        }
        for family in [&self.refresh, &self.resume] {
            let _ = family.get_or_create(&OutcomeLabels {
                outcome: "ok",
                code: "none",
            });
        }
        for method in ["message", "header", "query"] {
            let _ = self.auth.get_or_create(&AuthLabels {
                method,
                outcome: "ok",
                code: "none",
            });
            for code in codes.clone() {
                let _ = self.auth.get_or_create(&AuthLabels {
                    method,
                    outcome: "refused",
                    code,
                });
            }
        }
        for kind in ["jti", "sub", "session"] {
            let _ = self.revocations.get_or_create(&KindLabel { kind });
        }
        for outcome in RPC_OUTCOMES {
            let _ = self.rpc.get_or_create(&RpcLabel { outcome });
        }
        for outcome in JWKS_OUTCOMES {
            let _ = self.jwks.fetches.get_or_create(&JwksLabel { outcome });
        }
        for outcome in RELOAD_OUTCOMES {
            let _ = self.config_reloads.get_or_create(&JwksLabel { outcome });
        }
        for outcome in INTROSPECTION_OUTCOMES {
            let _ = self
                .jwks
                .introspections
                .get_or_create(&JwksLabel { outcome });
        }
        for route in API_ROUTES {
            for status in [200, 400, 401, 503] {
                let _ = self
                    .api_requests
                    .get_or_create(&ApiLabels { route, status });
            }
        }
        for op in STORE_OPS {
            let _ = self.store_errors.get_or_create(&OpLabel { op });
            let _ = self.store_duration.get_or_create(&OpLabel { op });
        }
        // Every error's own close, and the closes without an error.
        for code in ErrorCode::ALL {
            if let Some(close) = code.spec().close {
                let _ = self.closes.get_or_create(&CloseLabels {
                    close_code: close.0,
                    error_code: code.as_str(),
                });
            }
        }
        for close_code in [0, 1000, 1001] {
            let _ = self.closes.get_or_create(&CloseLabels {
                close_code,
                error_code: "none",
            });
        }
    }

    /// The Prometheus text exposition (OpenMetrics).
    pub fn render(&self, sessions_live: usize) -> String {
        self.sessions_live.set(sessions_live as i64);
        self.jwks.update_age(crate::state::now_ms());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A socket was accepted; the guard counts it until dropped.
    pub fn connection_opened(&self) -> ConnectionGuard<'_> {
        self.connections_open.inc();
        ConnectionGuard(&self.connections_open)
    }

    /// An upgrade was refused before any WebSocket.
    pub fn upgrade_refused(&self, code: ErrorCode) {
        self.upgrades_refused
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// A token was verified.
    pub fn verified(&self, took: Duration) {
        self.verify_duration.observe(took.as_secs_f64());
        self.verify_percentiles.record(took);
    }

    /// A store call finished.
    pub fn store_call(&self, op: &'static str, took: Duration, ok: bool) {
        self.store_duration
            .get_or_create(&OpLabel { op })
            .observe(took.as_secs_f64());
        self.store_percentiles.record(took);
        if !ok {
            self.store_errors.get_or_create(&OpLabel { op }).inc();
        }
    }

    /// An application call's handler answered (or failed) after `took`.
    pub fn call_answered(&self, took: Duration) {
        self.rpc_duration.observe(took.as_secs_f64());
        self.rpc_percentiles.record(took);
    }

    /// Counts one reload by its outcome (one of [`RELOAD_OUTCOMES`]).
    pub fn config_reloaded(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&JwksLabel { outcome })
            .inc();
    }

    /// A server API request on `route` was answered with `status`.
    pub fn api_request(&self, route: &'static str, status: u16) {
        self.api_requests
            .get_or_create(&ApiLabels { route, status })
            .inc();
    }

    /// What the store reports of this node's notice stream (read before each
    /// exposition).
    pub fn set_notice_stream(&self, stats: wsauth_store::NoticeStreamStats) {
        let counts = [stats.lost_trimmed, stats.lost_gone, stats.lost_lag];
        for (reason, count) in NOTICE_LOSS_REASONS.into_iter().zip(counts) {
            let counter = self.notices_lost.get_or_create(&ReasonLabel { reason });
            let seen = counter.get();
            if count > seen {
                counter.inc_by(count - seen);
            }
        }
        self.notice_lag.set(stats.lag_ms as f64 / 1000.0);
    }

    /// Whether the store answered its last check.
    pub fn set_store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// A new session pushed `n` older ones of its user out (per-user limit).
    pub fn evicted(&self, n: usize) {
        self.evictions.inc_by(n as u64);
    }

    /// A data frame arrived.
    pub fn message_in(&self) {
        self.messages_in.inc();
    }

    /// A message was queued for a client.
    pub fn message_out(&self) {
        self.messages_out.inc();
    }

    /// An admin call issued a revocation of `kind` (`jti`, `sub`, `session`).
    pub fn revocation_issued(&self, kind: &'static str) {
        self.revocations.get_or_create(&KindLabel { kind }).inc();
    }

    /// A revocation issued at `issued_at_ms` closed a connection at `now_ms`.
    pub fn revocation_closed(&self, issued_at_ms: u64, now_ms: u64) {
        self.revocation_closes.inc();
        let took = now_ms.saturating_sub(issued_at_ms) as f64 / 1000.0;
        self.revocation_propagation.observe(took);
    }

    /// A refresh, from its verification to its answer.
    pub fn refresh_answered(&self, took: Duration) {
        self.refresh_duration.observe(took.as_secs_f64());
    }

    /// A token whose signature checked out was refused (revoked, over the session
    /// limit): its user and `jti`, for `/admin/refusals`.
    pub fn refused(&self, sub: &str, jti: Option<&str>) {
        self.refused_users
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(sub);
        if let Some(jti) = jti {
            self.refused_jtis
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(jti);
        }
    }

    /// The users and `jti`s refused most often, `n` of each.
    pub fn refusals(&self, n: usize) -> (Ranking, Ranking) {
        let users = self.refused_users.lock().unwrap_or_else(|e| e.into_inner());
        let jtis = self.refused_jtis.lock().unwrap_or_else(|e| e.into_inner());
        (users.top(n), jtis.top(n))
    }

    /// Counts a core event; `since_accept` is the connection's age.
    pub fn event(&self, event: &Event, since_accept: Duration) {
        match event {
            Event::Authenticated { method, .. } => {
                self.auth
                    .get_or_create(&AuthLabels {
                        method: method_name(*method),
                        outcome: "ok",
                        code: "none",
                    })
                    .inc();
                self.auth_duration.observe(since_accept.as_secs_f64());
                self.auth_percentiles.record(since_accept);
            }
            Event::Resumed { replayed, gap } => {
                self.resume
                    .get_or_create(&OutcomeLabels {
                        outcome: "ok",
                        code: "none",
                    })
                    .inc();
                self.resume_replayed.inc_by(*replayed);
                if *gap {
                    self.resume_gaps.inc();
                }
            }
            Event::CallEnded { outcome } => {
                let outcome = match outcome {
                    CallOutcome::TimedOut => "unavailable",
                    other => other.as_str(),
                };
                self.rpc.get_or_create(&RpcLabel { outcome }).inc();
            }
            Event::Refreshed { remaining_ms } => {
                self.refresh
                    .get_or_create(&OutcomeLabels {
                        outcome: "ok",
                        code: "none",
                    })
                    .inc();
                self.refresh_time_left
                    .observe(*remaining_ms as f64 / 1000.0);
            }
            Event::AuthFailed {
                method: AuthMethod::Resume,
                code,
            } => {
                self.resume
                    .get_or_create(&OutcomeLabels {
                        outcome: "refused",
                        code: code.as_str(),
                    })
                    .inc();
            }
            Event::AuthFailed { method, code } => {
                self.auth
                    .get_or_create(&AuthLabels {
                        method: method_name(*method),
                        outcome: "refused",
                        code: code.as_str(),
                    })
                    .inc();
            }
            Event::RefreshFailed { code } => {
                self.refresh
                    .get_or_create(&OutcomeLabels {
                        outcome: "refused",
                        code: code.as_str(),
                    })
                    .inc();
            }
            Event::ExpiringSent => {
                self.expiring_sent.inc();
            }
            Event::Refused { user, jti } => self.refused(user, jti.as_deref()),
            Event::Evicted { sessions } => self.evicted(*sessions),
            Event::RevocationApplied { issued_at_ms } => {
                self.revocation_closed(*issued_at_ms, crate::state::now_ms());
            }
            Event::RateLimited => {
                self.rate_limited.inc();
            }
            Event::Closed { code, error, .. } => {
                let close_code = code.map_or(0, |c| c.0);
                let error_code = error.map_or("none", ErrorCode::as_str);
                self.closes
                    .get_or_create(&CloseLabels {
                        close_code,
                        error_code,
                    })
                    .inc();
                match error {
                    Some(ErrorCode::SessionExpired) => {
                        self.expired.inc();
                    }
                    Some(ErrorCode::SessionReplaced) => {
                        self.replaced.inc();
                    }
                    Some(ErrorCode::SlowConsumer) => {
                        self.slow_consumer.inc();
                    }
                    _ => {}
                }
                let mut closes = self.close_counts.lock().unwrap_or_else(|e| e.into_inner());
                *closes.entry((close_code, error_code)).or_default() += 1;
            }
        }
    }

    /// Closes by close code (0: no close frame) and error code (`none`: no error).
    pub fn closes(&self) -> BTreeMap<(u16, &'static str), u64> {
        self.close_counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The figures of `/api/stats` this module keeps.
    pub fn snapshot(&self) -> Value {
        let sum = |family: &Family<OutcomeLabels, Counter>, outcome: &str| -> u64 {
            // Only the label sets seen so far exist; the codes are a closed set.
            ErrorCode::ALL
                .iter()
                .map(|c| c.as_str())
                .chain(["none"])
                .map(|code| {
                    let labels = OutcomeLabels {
                        outcome: if outcome == "ok" { "ok" } else { "refused" },
                        code,
                    };
                    family.get(&labels).map_or(0, |c| c.get())
                })
                .sum()
        };
        let mut auth_ok = 0;
        let mut auth_refused = 0;
        let mut refused_by_code = serde_json::Map::new();
        for method in ["message", "header", "query"] {
            auth_ok += self
                .auth
                .get(&AuthLabels {
                    method,
                    outcome: "ok",
                    code: "none",
                })
                .map_or(0, |c| c.get());
            for code in ErrorCode::ALL {
                let n = self
                    .auth
                    .get(&AuthLabels {
                        method,
                        outcome: "refused",
                        code: code.as_str(),
                    })
                    .map_or(0, |c| c.get());
                if n > 0 {
                    auth_refused += n;
                    let entry = refused_by_code
                        .entry(code.as_str().to_owned())
                        .or_insert(json!(0));
                    *entry = json!(entry.as_u64().unwrap_or(0) + n);
                }
            }
        }
        let closes: Vec<Value> = self
            .closes()
            .into_iter()
            .map(|((close, error), count)| {
                json!({"close_code": close, "error_code": error, "count": count})
            })
            .collect();
        let revocations_issued: u64 = ["jti", "sub", "session"]
            .iter()
            .map(|kind| {
                self.revocations
                    .get(&KindLabel { kind })
                    .map_or(0, |c| c.get())
            })
            .sum();
        let store_errors: u64 = STORE_OPS
            .iter()
            .map(|op| {
                self.store_errors
                    .get(&OpLabel { op })
                    .map_or(0, |c| c.get())
            })
            .sum();
        let (auth_total, auth_recent) = self.auth_percentiles.snapshot_ms();
        let (verify_total, verify_recent) = self.verify_percentiles.snapshot_ms();
        let mut rpc = serde_json::Map::new();
        for outcome in RPC_OUTCOMES {
            let n = self.rpc.get(&RpcLabel { outcome }).map_or(0, |c| c.get());
            rpc.insert(outcome.to_owned(), json!(n));
        }
        let (rpc_total, rpc_recent) = self.rpc_percentiles.snapshot_ms();
        rpc.insert("latency_ms".into(), rpc_total);
        rpc.insert("latency_recent_ms".into(), rpc_recent);
        let mut api = serde_json::Map::new();
        for route in API_ROUTES {
            let (mut ok, mut refused) = (0, 0);
            for status in [200, 400, 401, 503] {
                let n = self
                    .api_requests
                    .get(&ApiLabels { route, status })
                    .map_or(0, |c| c.get());
                if status == 200 { ok += n } else { refused += n }
            }
            let name = route.trim_start_matches("/api/");
            api.insert(name.to_owned(), json!({"ok": ok, "refused": refused}));
        }
        json!({
            "uptime_s": self.started.elapsed().as_secs(),
            "connections": {"open": self.connections_open.get()},
            "auth": {"ok": auth_ok, "refused": auth_refused, "refused_by_code": refused_by_code},
            "auth_latency_ms": auth_total,
            "auth_latency_recent_ms": auth_recent,
            "verify_latency_ms": verify_total,
            "verify_latency_recent_ms": verify_recent,
            "store_latency_ms": self.store_percentiles.snapshot_ms().0,
            "store_errors": store_errors,
            "refresh": {"ok": sum(&self.refresh, "ok"), "refused": sum(&self.refresh, "refused")},
            "resume": {
                "ok": sum(&self.resume, "ok"),
                "refused": sum(&self.resume, "refused"),
                "replayed": self.resume_replayed.get(),
                "gaps": self.resume_gaps.get(),
            },
            "revocations": {"issued": revocations_issued, "closed": self.revocation_closes.get()},
            "expired": self.expired.get(),
            "replaced": self.replaced.get(),
            "evictions": self.evictions.get(),
            "rate_limited": self.rate_limited.get(),
            "slow_consumer": self.slow_consumer.get(),
            "messages": {"in": self.messages_in.get(), "out": self.messages_out.get()},
            "rpc": rpc,
            "api": api,
            "closes": closes,
        })
    }
}

/// The store operations the driver times.
pub const STORE_OPS: &[&str] = &[
    "create", "resume", "refresh", "expiring", "join", "leave", "publish", "detach", "end",
    "revoke", "sessions", "ping",
];

fn method_name(method: AuthMethod) -> &'static str {
    match method {
        AuthMethod::Header => "header",
        AuthMethod::Query => "query",
        _ => "message",
    }
}

/// Counts an open socket until dropped.
pub struct ConnectionGuard<'a>(&'a Gauge);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_frequent_keys_survive_a_full_table() {
        let mut top = TopCounts::new(4);
        for _ in 0..5 {
            top.add("mallory");
        }
        for _ in 0..3 {
            top.add("eve");
        }
        for name in ["a", "b", "c", "d", "e", "f"] {
            top.add(name);
        }
        let kept = top.top(2);
        assert_eq!(kept, vec![("mallory".into(), 5), ("eve".into(), 3)]);
        assert!(top.counts.len() <= 4, "bounded: {}", top.counts.len());
    }

    #[test]
    fn the_exposition_names_every_series_and_no_user() {
        let m = Metrics::new();
        m.refused("alice", Some("jti-1"));
        m.upgrade_refused(ErrorCode::InvalidToken);
        let text = m.render(3);
        for name in [
            "wsauth_connections_open",
            "wsauth_sessions_live 3",
            "wsauth_upgrades_refused_total{code=\"INVALID_TOKEN\"} 1",
            "wsauth_auth_duration_seconds_bucket",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(!text.contains("alice") && !text.contains("jti-1"));
    }
}
