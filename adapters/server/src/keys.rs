//! One issuer's keys: the configured ones (HMAC secret, PEM files, a JWKS
//! file), fixed until a reload, and optionally an identity provider's JWKS,
//! at a URL or found by OpenID Connect discovery, fetched in the background.
//! [`crate::verify::KeySource`] routes each token to one of these.
//!
//! A token is checked against the current [`Verifier`] (and its
//! [`VerifyCache`]), read under a lock held only to clone an `Arc`. A
//! background task fetches the JWKS, and each time its keys change builds a
//! new verifier (the configured keys plus the fetched ones) with a new, empty
//! cache and swaps it in, so a retired key's tokens stop verifying at once. A
//! token whose `kid` names no key waits for a refetch when one may start now
//! or is under way ([`UNKNOWN_KID_WAIT`] at most), then is checked once more;
//! otherwise it is refused at once (`AUTH_FAILED`). The task fetches at most
//! once per `jwt.jwks_min_refetch_s`, however many unknown `kid`s arrive. See
//! `docs/identity-providers.md`.
//!
//! [`IssuerKeys::prepare_reload`] re-reads the key files and builds a verifier
//! from them and the JWKS's last fetched keys, which [`IssuerKeys::apply_reload`]
//! swaps in; if a file is refused, the current one stays.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::rustls;
use wsauth_core::jwt::{Claims, KeySet, TokenError, Verifier, VerifierConfig, VerifyCache};

use crate::config::{check_jwks_url, redact_url};
use crate::metrics::JwksMetrics;
use crate::server::StartError;
use crate::state::now_ms;

/// The largest JWKS document read; a larger one is refused (`too_large`).
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// The most keys a JWKS document may hold.
pub const MAX_JWKS_KEYS: usize = 100;
/// The bounds on a response's `Cache-Control: max-age`.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// See [`MIN_MAX_AGE`].
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// The longest one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed fetch, the next one comes at most this late.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);
/// The longest a token with an unknown `kid` waits for a refetch.
pub const UNKNOWN_KID_WAIT: Duration = Duration::from_secs(3);

/// Reads an issuer's configured keys and its verifier's settings (again, at a
/// reload); errors name the file and why, never a key.
pub type LoadKeys = Arc<dyn Fn() -> Result<(KeySet, VerifierConfig), StartError> + Send + Sync>;

/// What one issuer's keys are made of.
pub struct IssuerSpec {
    /// How messages name it: `jwt.` for the `[jwt]` section, `jwt.issuers
    /// entry N: ` for an entry.
    pub label: String,
    /// Reads the configured keys (possibly none) and the settings.
    pub load: LoadKeys,
    /// Whether `load` reads files (a reload has something to re-read).
    pub has_files: bool,
    /// A JWKS URL (checked by the configuration's validation).
    pub jwks_url: Option<String>,
    /// An OpenID Connect issuer, whose discovery document names the JWKS URL.
    pub oidc_issuer: Option<String>,
}

/// What an [`IssuerSpec`] declares, read and checked without the network.
enum Declared {
    /// Fixed keys only: the verifier, built.
    Fixed { verifier: Verifier, keys: usize },
    /// Keys to fetch (a JWKS URL, or the one a discovery document names),
    /// beside the fixed ones.
    Fetched {
        fixed: KeySet,
        verifier_config: VerifierConfig,
        url: Option<reqwest::Url>,
        discovery: Option<(String, reqwest::Url)>,
    },
}

impl IssuerSpec {
    /// Reads the key files and checks the URLs, as a start does before any
    /// fetch (so with the same messages).
    fn declared(&self) -> Result<Declared, StartError> {
        let (fixed, verifier_config) = (self.load)()?;
        let label = &self.label;
        let url_error =
            |key: &str, problem: String| StartError::Keys(format!("{label}{key} {problem}"));
        let parse = |key: &str, url: &str| {
            check_jwks_url(url).map_err(|problem| url_error(key, problem))?;
            reqwest::Url::parse(url).map_err(|_| url_error(key, "is not a URL".to_owned()))
        };
        let (url, discovery) = match (&self.jwks_url, &self.oidc_issuer) {
            (Some(url), _) => (Some(parse("jwks_url", url)?), None),
            (None, Some(issuer)) => {
                let document = format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                );
                (
                    None,
                    Some((issuer.clone(), parse("oidc_issuer", &document)?)),
                )
            }
            (None, None) => {
                let keys = fixed.len();
                let verifier = Verifier::new(fixed, verifier_config)
                    .map_err(|e| StartError::Keys(e.to_string()))?;
                return Ok(Declared::Fixed { verifier, keys });
            }
        };
        Ok(Declared::Fetched {
            fixed,
            verifier_config,
            url,
            discovery,
        })
    }

    /// What `wsauth-server check-config` reports of this issuer: its files read
    /// and its URLs checked as a start would, nothing fetched.
    pub fn check_offline(&self) -> Result<String, StartError> {
        let label = self.label.trim_end_matches([' ', ':', '.']);
        Ok(match self.declared()? {
            Declared::Fixed { keys, .. } => {
                format!("{label}: {keys} key(s) from the configuration")
            }
            Declared::Fetched { fixed, url, .. } => {
                let what = if url.is_some() {
                    "jwks_url"
                } else {
                    "oidc_issuer"
                };
                format!(
                    "{label}: {} key(s) from the configuration; {what} not fetched (no network)",
                    fixed.len()
                )
            }
        })
    }
}

/// The JWKS timings, from `[jwt]`, shared by every issuer.
#[derive(Clone, Copy, Debug)]
pub struct JwksTimings {
    /// `jwt.jwks_start_without_keys`.
    pub start_without_keys: bool,
    /// `jwt.jwks_refresh_s`.
    pub refresh: Duration,
    /// `jwt.jwks_min_refetch_s`.
    pub min_refetch: Duration,
    /// `jwt.jwks_max_stale_s`.
    pub max_stale: Duration,
    /// `jwt.verify_cache_entries`.
    pub cache_entries: usize,
}

/// A verifier with the cache of the tokens it verified.
struct Current {
    verifier: Verifier,
    cache: Mutex<VerifyCache>,
}

/// One issuer's keys (see the module documentation). Cheap to clone; the
/// background fetches stop when the last clone is dropped.
#[derive(Clone)]
pub struct IssuerKeys(Arc<Inner>);

struct Inner {
    /// `None` while a JWKS URL is the only source and no fetch succeeded yet.
    current: RwLock<Option<Arc<Current>>>,
    cache_entries: usize,
    jwks: Option<Jwks>,
    /// What a reload re-reads the key files with (`None`: built from a
    /// verifier, or no file to re-read).
    reload: Option<LoadKeys>,
}

/// The keys every verifier of a JWKS URL is built from: the configured ones
/// and the last good document. Locked while a new verifier is built and swapped
/// in, so a fetch and a reload never undo each other.
struct JwksKeys {
    fixed: KeySet,
    document: Option<String>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Wakes the fetch task, which then finds nothing to fetch for and ends.
        if let Some(jwks) = &self.jwks {
            jwks.wake.notify_one();
        }
    }
}

/// The JWKS URL's state.
struct Jwks {
    /// `None` until discovery found it.
    url: Mutex<Option<reqwest::Url>>,
    /// The OpenID Connect issuer and its discovery document's URL.
    discovery: Option<(String, reqwest::Url)>,
    label: String,
    client: reqwest::Client,
    /// The configured keys and the last good document.
    keys: Mutex<JwksKeys>,
    config: VerifierConfig,
    refresh: Duration,
    min_refetch: Duration,
    max_stale: Duration,
    wake: Arc<Notify>,
    /// When a refetch was last asked for by an unknown `kid`.
    asked: Mutex<Option<Instant>>,
    /// When the last fetch started, and whether one is under way.
    last_fetch: Mutex<Option<Instant>>,
    fetching: AtomicBool,
    /// Counts the fetches done, for those waiting on one.
    fetched: tokio::sync::watch::Sender<u64>,
    /// Keys the last good document had, for the shared gauge.
    keys_counted: std::sync::atomic::AtomicUsize,
    /// The SHA-256 of the last good document.
    last_document: Mutex<Option<[u8; 32]>>,
    /// Unix ms of the last good fetch; 0 before the first.
    last_ok_ms: std::sync::atomic::AtomicU64,
    /// The same, from the start on, for the metrics' age.
    age_clock: Arc<std::sync::atomic::AtomicU64>,
    failing: AtomicBool,
    metrics: JwksMetrics,
}

/// Why one fetch failed, as `wsauth_jwks_fetch_total` counts it. Never holds a
/// key or the document.
#[derive(Debug)]
enum FetchError {
    Http(StatusCode),
    Network(String),
    Invalid(String),
    TooLarge,
}

impl FetchError {
    fn outcome(&self) -> &'static str {
        match self {
            FetchError::Http(_) => "http_error",
            FetchError::Network(_) => "network",
            FetchError::Invalid(_) => "invalid",
            FetchError::TooLarge => "too_large",
        }
    }
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Http(status) => write!(f, "HTTP status {}", status.as_u16()),
            FetchError::Network(cause) => write!(f, "request failed: {cause}"),
            FetchError::Invalid(cause) => write!(f, "document refused: {cause}"),
            FetchError::TooLarge => write!(f, "document over {MAX_JWKS_BYTES} bytes"),
        }
    }
}

/// The wait before the next scheduled fetch: the response's `max-age` bounded to
/// [`MIN_MAX_AGE`]..=[`MAX_MAX_AGE`], else `jwt.jwks_refresh_s`.
pub fn refresh_interval(max_age: Option<Duration>, refresh: Duration) -> Duration {
    match max_age {
        Some(age) => age.clamp(MIN_MAX_AGE, MAX_MAX_AGE),
        None => refresh,
    }
}

/// The `max-age` of a `Cache-Control` value, if any (`no-store`, `no-cache`:
/// none, so `jwt.jwks_refresh_s` applies).
pub fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("max-age") {
            return None;
        }
        value
            .trim()
            .trim_matches('"')
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    })
}

impl IssuerKeys {
    /// Fixed keys: `verifier`, with a cache of `cache_entries` tokens.
    pub fn fixed(verifier: Verifier, cache_entries: usize) -> IssuerKeys {
        IssuerKeys::new(verifier, cache_entries, None)
    }

    /// [`IssuerKeys::fixed`], which `reload` re-reads the key files with.
    fn new(verifier: Verifier, cache_entries: usize, reload: Option<LoadKeys>) -> IssuerKeys {
        IssuerKeys(Arc::new(Inner {
            current: RwLock::new(Some(Arc::new(Current {
                verifier,
                cache: Mutex::new(VerifyCache::new(cache_entries)),
            }))),
            cache_entries,
            jwks: None,
            reload,
        }))
    }

    /// The keys `spec` declares. With a JWKS URL (or discovery), fetches it
    /// once (failing the start if that fails, unless
    /// `jwt.jwks_start_without_keys`) and starts the background fetches, on the
    /// current tokio runtime, counting into `metrics`.
    pub async fn start(
        spec: IssuerSpec,
        timings: JwksTimings,
        metrics: &JwksMetrics,
    ) -> Result<IssuerKeys, StartError> {
        let reload = spec.has_files.then(|| spec.load.clone());
        let label = spec.label.clone();
        let (fixed, verifier_config, url, discovery) = match spec.declared()? {
            Declared::Fixed { verifier, .. } => {
                return Ok(IssuerKeys::new(verifier, timings.cache_entries, reload));
            }
            Declared::Fetched {
                fixed,
                verifier_config,
                url,
                discovery,
            } => (fixed, verifier_config, url, discovery),
        };
        let client = client().map_err(StartError::Keys)?;
        let age_clock = metrics.source(now_ms());
        let current = Verifier::new(fixed.clone(), verifier_config.clone())
            .ok()
            .map(|verifier| {
                Arc::new(Current {
                    verifier,
                    cache: Mutex::new(VerifyCache::new(timings.cache_entries)),
                })
            });
        let source = IssuerKeys(Arc::new(Inner {
            current: RwLock::new(current),
            cache_entries: timings.cache_entries,
            reload,
            jwks: Some(Jwks {
                url: Mutex::new(url),
                discovery,
                label: label.clone(),
                client,
                keys: Mutex::new(JwksKeys {
                    fixed,
                    document: None,
                }),
                config: verifier_config,
                refresh: timings.refresh,
                min_refetch: timings.min_refetch,
                max_stale: timings.max_stale,
                wake: Arc::new(Notify::new()),
                asked: Mutex::new(None),
                last_fetch: Mutex::new(Some(Instant::now())),
                fetching: AtomicBool::new(false),
                fetched: tokio::sync::watch::Sender::new(0),
                keys_counted: Default::default(),
                last_document: Mutex::new(None),
                last_ok_ms: Default::default(),
                age_clock,
                failing: AtomicBool::new(false),
                metrics: metrics.clone(),
            }),
        }));
        let what = source.jwks().map_or("jwks_url", Jwks::what);
        let next = match source.fetch_once().await {
            Ok(max_age) => refresh_interval(max_age, timings.refresh),
            Err(e) if timings.start_without_keys => {
                tracing::warn!(
                    cause = %e,
                    "{label}{what}: the first fetch failed; starting without its keys \
                     (jwt.jwks_start_without_keys)"
                );
                source.retry_delay()
            }
            Err(e) => {
                return Err(StartError::Keys(format!(
                    "{label}{what}: the first fetch failed ({e}); set \
                     jwt.jwks_start_without_keys = true to start anyway"
                )));
            }
        };
        let wake = source.jwks().map(|j| j.wake.clone());
        if let Some(wake) = wake {
            tokio::spawn(refresh_loop(Arc::downgrade(&source.0), wake, next));
        }
        Ok(source)
    }

    fn jwks(&self) -> Option<&Jwks> {
        self.0.jwks.as_ref()
    }

    /// The current verifier (`None`: only a JWKS URL, never fetched yet).
    fn current(&self) -> Option<Arc<Current>> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Checks `token` at `now_ms` against the current keys, from the cache when
    /// it can ([`Verifier::verify_cached`]).
    fn check(&self, token: &str, now_ms: u64) -> Result<Arc<Claims>, TokenError> {
        match self.current() {
            Some(current) => current
                .verifier
                .verify_cached(token, now_ms, &current.cache),
            None => Err(TokenError::UnknownKid),
        }
    }

    /// The answer when it needs no waiting: `None` only for a token whose `kid`
    /// names no key while a refetch may start now or is under way (then
    /// [`IssuerKeys::verify`] waits for it).
    pub fn verify_now(&self, token: &str, now_ms: u64) -> Option<Result<Arc<Claims>, TokenError>> {
        let verified = self.check(token, now_ms);
        if let Err(TokenError::UnknownKid | TokenError::NoMatchingKey) = &verified
            && let Some(jwks) = self.jwks()
        {
            if jwks.may_refetch() {
                return None;
            }
            jwks.ask_refetch();
        }
        Some(verified)
    }

    /// Verifies `token` at `now_ms`; a token with an unknown `kid` waits for a
    /// refetch when one may start now or is under way (at most
    /// [`UNKNOWN_KID_WAIT`]), then is checked once more.
    pub async fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<Claims>, TokenError> {
        if let Some(answer) = self.verify_now(token, now_ms) {
            return answer;
        }
        let Some(jwks) = self.jwks() else {
            return self.check(token, now_ms);
        };
        let mut fetched = jwks.fetched.subscribe();
        jwks.ask_refetch();
        let _ = tokio::time::timeout(UNKNOWN_KID_WAIT, fetched.changed()).await;
        self.check(token, crate::state::now_ms().max(now_ms))
    }

    /// Whether the keys are fresh enough to serve: always without a JWKS URL;
    /// with one, a fetch succeeded less than `jwt.jwks_max_stale_s` ago.
    pub fn fresh(&self) -> bool {
        let Some(jwks) = self.jwks() else {
            return true;
        };
        let last = jwks.last_ok_ms.load(Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) < jwks.max_stale.as_millis() as u64
    }

    /// Re-reads the key files (an inline secret stays as configured, the JWKS's
    /// fetched keys are kept, not refetched) and checks them: `Ok(None)`: no key
    /// file to re-read. `Err`: a file was refused (the message names it and
    /// why, never its content). Nothing is put in use yet
    /// ([`IssuerKeys::apply_reload`]).
    pub fn prepare_reload(&self) -> Result<Option<Reloaded>, String> {
        let Some(load) = &self.0.reload else {
            return Ok(None);
        };
        let (fixed, verifier_config) = load().map_err(|e| e.to_string())?;
        let mut all = fixed.clone();
        if let Some(jwks) = self.jwks()
            && let Some(document) = &jwks.keys.lock().unwrap_or_else(|e| e.into_inner()).document
        {
            all.add_published_jwks_json(document, MAX_JWKS_KEYS)
                .map_err(|e| format!("{}jwks: the last document: {e}", jwks.label))?;
        }
        let verifier = Verifier::new(all, verifier_config).map_err(|e| format!("jwt: {e}"))?;
        Ok(Some(Reloaded { fixed, verifier }))
    }

    /// Puts reloaded keys in use, with an empty cache.
    pub fn apply_reload(&self, reloaded: Reloaded) {
        match self.jwks() {
            Some(jwks) => {
                let mut keys = jwks.keys.lock().unwrap_or_else(|e| e.into_inner());
                self.install(reloaded.verifier);
                keys.fixed = reloaded.fixed;
            }
            None => self.install(reloaded.verifier),
        }
    }

    /// Puts `verifier` in use, with an empty cache, so that a token verified by a
    /// retired key is not answered from the cache.
    fn install(&self, verifier: Verifier) {
        let next = Arc::new(Current {
            verifier,
            cache: Mutex::new(VerifyCache::new(self.0.cache_entries)),
        });
        *self.0.current.write().unwrap_or_else(|e| e.into_inner()) = Some(next);
    }

    fn retry_delay(&self) -> Duration {
        match self.jwks() {
            Some(j) => j.refresh.min(RETRY_AFTER_FAILURE).max(j.min_refetch),
            None => RETRY_AFTER_FAILURE,
        }
    }

    /// One fetch: on success the new keys are in use (when they changed) and
    /// the `max-age` is returned; on failure the keys in use stay. Counted,
    /// and logged when the state changes (ok → failing, failing → ok); those
    /// waiting on a refetch are woken either way.
    async fn fetch_once(&self) -> Result<Option<Duration>, FetchError> {
        let Some(jwks) = self.jwks() else {
            return Ok(None);
        };
        jwks.fetching.store(true, Ordering::Relaxed);
        *jwks.last_fetch.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let result = self.fetch_and_apply(jwks).await;
        let (label, what) = (&jwks.label, jwks.what());
        match &result {
            Ok(_) => {
                jwks.metrics.fetched("ok");
                let now = now_ms();
                jwks.last_ok_ms.store(now, Ordering::Relaxed);
                jwks.age_clock.store(now, Ordering::Relaxed);
                if jwks.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        url = %jwks.shown_url(),
                        "{label}{what}: fetching works again"
                    );
                }
            }
            Err(e) => {
                jwks.metrics.fetched(e.outcome());
                if jwks.discovery.is_some() {
                    // The provider may have moved its keys: discover again.
                    *jwks.url.lock().unwrap_or_else(|e| e.into_inner()) = None;
                }
                if !jwks.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %jwks.shown_url(),
                        cause = %e,
                        "{label}{what}: fetch failed; keeping the last good keys"
                    );
                }
            }
        }
        jwks.fetching.store(false, Ordering::Relaxed);
        jwks.fetched.send_modify(|n| *n += 1);
        result
    }

    async fn fetch_and_apply(&self, jwks: &Jwks) -> Result<Option<Duration>, FetchError> {
        let url = jwks.jwks_url().await?;
        let (body, max_age) = jwks
            .get(url, "application/jwk-set+json, application/json")
            .await?;
        let digest: [u8; 32] = Sha256::digest(&body).into();
        let unchanged =
            *jwks.last_document.lock().unwrap_or_else(|e| e.into_inner()) == Some(digest);
        if unchanged {
            return Ok(max_age);
        }
        let text =
            std::str::from_utf8(&body).map_err(|_| FetchError::Invalid("not UTF-8".to_owned()))?;
        let mut current = jwks.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut keys = current.fixed.clone();
        let added = keys
            .add_published_jwks_json(text, MAX_JWKS_KEYS)
            .map_err(|e| FetchError::Invalid(e.to_string()))?;
        let verifier = Verifier::new(keys, jwks.config.clone())
            .map_err(|e| FetchError::Invalid(e.to_string()))?;
        self.install(verifier);
        current.document = Some(text.to_owned());
        drop(current);
        *jwks.last_document.lock().unwrap_or_else(|e| e.into_inner()) = Some(digest);
        let before = jwks.keys_counted.swap(added, Ordering::Relaxed);
        jwks.metrics.add_keys(added as i64 - before as i64);
        tracing::info!(keys = added, "{}{}: keys loaded", jwks.label, jwks.what());
        Ok(max_age)
    }
}

/// Key files read again and checked, ready to be put in use.
pub struct Reloaded {
    fixed: KeySet,
    verifier: Verifier,
}

/// The part of an OpenID Connect discovery document wsauth reads.
#[derive(serde::Deserialize)]
struct Discovered {
    issuer: String,
    jwks_uri: String,
}

impl Jwks {
    /// What the messages call this source.
    fn what(&self) -> &'static str {
        if self.discovery.is_some() {
            "oidc_issuer"
        } else {
            "jwks_url"
        }
    }

    /// The URL fetched (the discovery document's until the JWKS URL is
    /// known), as logs may show it.
    fn shown_url(&self) -> String {
        let url = self.url.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (url, &self.discovery) {
            (Some(url), _) => redact_url(url.as_str()),
            (None, Some((_, document))) => redact_url(document.as_str()),
            (None, None) => String::new(),
        }
    }

    /// Whether a token with an unknown `kid` may wait for a refetch: one is
    /// under way, or none started within `min_refetch`.
    fn may_refetch(&self) -> bool {
        self.fetching.load(Ordering::Relaxed)
            || self
                .last_fetch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none_or(|at| at.elapsed() >= self.min_refetch)
    }

    /// Wakes the fetch task, at most once per `min_refetch` (the task itself
    /// also waits that long after its last fetch).
    fn ask_refetch(&self) {
        let now = Instant::now();
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        if asked.is_some_and(|at| now.duration_since(at) < self.min_refetch) {
            return;
        }
        *asked = Some(now);
        drop(asked);
        self.wake.notify_one();
    }

    /// The JWKS URL: configured, or read from the discovery document, whose
    /// `issuer` must equal the configured one exactly.
    async fn jwks_url(&self) -> Result<reqwest::Url, FetchError> {
        if let Some(url) = self.url.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(url);
        }
        let Some((issuer, document)) = &self.discovery else {
            return Err(FetchError::Invalid("no JWKS URL".to_owned()));
        };
        let (body, _) = self.get(document.clone(), "application/json").await?;
        let found: Discovered = serde_json::from_slice(&body).map_err(|_| {
            FetchError::Invalid(
                "the discovery document is not JSON with string issuer and jwks_uri".to_owned(),
            )
        })?;
        if found.issuer != *issuer {
            return Err(FetchError::Invalid(format!(
                "the discovery document's issuer {:?} is not the configured {issuer:?} (they \
                 must be equal, trailing slash included)",
                found.issuer
            )));
        }
        check_jwks_url(&found.jwks_uri)
            .map_err(|problem| FetchError::Invalid(format!("its jwks_uri {problem}")))?;
        let url = reqwest::Url::parse(&found.jwks_uri)
            .map_err(|_| FetchError::Invalid("its jwks_uri is not a URL".to_owned()))?;
        *self.url.lock().unwrap_or_else(|e| e.into_inner()) = Some(url.clone());
        Ok(url)
    }

    /// A document's bytes (at most [`MAX_JWKS_BYTES`]) and its `max-age`.
    async fn get(
        &self,
        url: reqwest::Url,
        accept: &'static str,
    ) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, accept)
            .send()
            .await
            .map_err(|e| FetchError::Network(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Http(status));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::Network(describe(&e)))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, max_age))
    }
}

/// A reqwest error's kind, without the URL (which it would otherwise repeat).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "error"
    };
    let mut cause = kind.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = format!("{cause}: {s}");
        source = s.source();
    }
    cause
}

/// The HTTP client of the fetches: rustls with the ring provider the rest of the
/// server uses, the platform's roots, no redirects, [`FETCH_TIMEOUT`].
fn client() -> Result<reqwest::Client, String> {
    http_client(FETCH_TIMEOUT)
}

/// An HTTP client for an identity provider: rustls with the ring provider the
/// rest of the server uses, the platform's roots, no redirects, `timeout`.
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("identity provider client: TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("identity provider client: TLS setup failed: {e}"))?,
        ))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wsauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("identity provider client: the HTTP client cannot be built: {e}"))
}

/// Fetches on schedule and when woken, never twice within `min_refetch`; ends
/// when the key source is dropped (its drop wakes this task).
async fn refresh_loop(source: Weak<Inner>, wake: Arc<Notify>, first_wait: Duration) {
    let mut wait = first_wait;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
        let Some(inner) = source.upgrade() else {
            return;
        };
        let source = IssuerKeys(inner);
        let Some(jwks) = source.jwks() else {
            return;
        };
        // However often woken, one fetch per `min_refetch` at most.
        let last_fetch = *jwks.last_fetch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(since) = last_fetch.map(|at| at.elapsed())
            && since < jwks.min_refetch
        {
            let pause = jwks.min_refetch - since;
            drop(source);
            tokio::time::sleep(pause).await;
            wait = Duration::ZERO;
            continue;
        }
        wait = match source.fetch_once().await {
            Ok(max_age) => refresh_interval(max_age, jwks.refresh),
            Err(_) => source.retry_delay(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(max_age("max-age=300"), s(300));
        assert_eq!(max_age("public, MAX-AGE = 7200, must-revalidate"), s(7200));
        assert_eq!(max_age("max-age=\"60\""), s(60));
        assert_eq!(max_age("s-maxage=10, max-age=20"), s(20));
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=-1"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn max_age_wins_within_60_s_to_24_h_and_refresh_applies_without_it() {
        let refresh = Duration::from_secs(300);
        let s = Duration::from_secs;
        assert_eq!(refresh_interval(None, refresh), refresh);
        assert_eq!(refresh_interval(Some(s(0)), refresh), s(60));
        assert_eq!(refresh_interval(Some(s(59)), refresh), s(60));
        assert_eq!(refresh_interval(Some(s(3600)), refresh), s(3600));
        assert_eq!(refresh_interval(Some(s(86_401)), refresh), s(86_400));
        assert_eq!(refresh_interval(Some(s(u64::MAX / 2)), refresh), s(86_400));
    }
}
