//! Where the verifier's keys come from: the configured keys (HMAC secret, PEM
//! files, a JWKS file), fixed for the process, and optionally an identity
//! provider's JWKS at `jwt.jwks_url`, fetched in the background.
//!
//! Verification stays synchronous: [`KeySource::verify`] checks a token against
//! the current [`Verifier`] (and its [`VerifyCache`]), read under a lock held
//! only to clone an `Arc`. A background task fetches the JWKS, and each time its
//! keys change builds a new verifier (the configured keys plus the fetched ones)
//! with a new, empty cache and swaps it in, so a retired key's tokens stop
//! verifying at once. A token whose `kid` names no key is refused at once
//! (`AUTH_FAILED`) and wakes the task, which fetches at most once per
//! `jwt.jwks_min_refetch_s`, so the client's retry after a key rotation succeeds
//! however many unknown `kid`s arrive. See `docs/identity-providers.md`.
//!
//! [`KeySource::reload`] re-reads the configured key files (SIGHUP,
//! `POST /admin/reload`) and swaps in a verifier built from them and the JWKS
//! URL's last fetched keys, or, if a file is refused, keeps the current one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use reqwest::StatusCode;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::rustls;
use wsauth_core::jwt::{Claims, KeySet, TokenError, Verifier, VerifierConfig, VerifyCache};

use crate::config::{Config, redact_url};
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

/// A verifier with the cache of the tokens it verified.
struct Current {
    verifier: Verifier,
    cache: Mutex<VerifyCache>,
}

/// The keys tokens are checked against (see the module documentation). Cheap to
/// clone; the background fetches stop when the last clone is dropped.
#[derive(Clone)]
pub struct KeySource(Arc<Inner>);

struct Inner {
    /// `None` while a JWKS URL is the only source and no fetch succeeded yet.
    current: RwLock<Option<Arc<Current>>>,
    cache_entries: usize,
    jwks: Option<Jwks>,
    /// What a reload re-reads the key files from (`None`: built from a
    /// verifier, nothing to re-read).
    reload: Option<Reloadable>,
}

/// The configuration the key files are named in, and the development secret.
struct Reloadable {
    config: Box<Config>,
    dev_secret: Option<Vec<u8>>,
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
    url: reqwest::Url,
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
    /// The SHA-256 of the last good document.
    last_document: Mutex<Option<[u8; 32]>>,
    /// Unix ms of the last good fetch; 0 before the first.
    last_ok_ms: std::sync::atomic::AtomicU64,
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

impl KeySource {
    /// Fixed keys: `verifier`, with a cache of `cache_entries` tokens.
    pub fn fixed(verifier: Verifier, cache_entries: usize) -> KeySource {
        KeySource::new(verifier, cache_entries, None)
    }

    /// [`KeySource::fixed`], which `reload` re-reads the key files of.
    fn new(verifier: Verifier, cache_entries: usize, reload: Option<Reloadable>) -> KeySource {
        KeySource(Arc::new(Inner {
            current: RwLock::new(Some(Arc::new(Current {
                verifier,
                cache: Mutex::new(VerifyCache::new(cache_entries)),
            }))),
            cache_entries,
            jwks: None,
            reload,
        }))
    }

    /// The keys `config` (already validated) declares, with the development secret
    /// if any. With `jwt.jwks_url`, fetches it once (failing the start if that
    /// fails, unless `jwt.jwks_start_without_keys`) and starts the background
    /// fetches, on the current tokio runtime.
    pub async fn from_config(
        config: &Config,
        dev_secret: Option<&[u8]>,
    ) -> Result<KeySource, StartError> {
        let (fixed, verifier_config) = crate::server::configured_keys(config, dev_secret)?;
        let jwt = &config.jwt;
        let reload = Some(Reloadable {
            config: Box::new(config.clone()),
            dev_secret: dev_secret.map(<[u8]>::to_vec),
        });
        let Some(url) = &jwt.jwks_url else {
            let verifier = Verifier::new(fixed, verifier_config)
                .map_err(|e| StartError::Keys(e.to_string()))?;
            return Ok(KeySource::new(verifier, jwt.verify_cache_entries, reload));
        };
        crate::config::check_jwks_url(url)
            .map_err(|problem| StartError::Keys(format!("jwks_url {problem}")))?;
        let url = reqwest::Url::parse(url)
            .map_err(|_| StartError::Keys("jwks_url is not a URL".to_owned()))?;
        let client = client().map_err(StartError::Keys)?;
        let metrics = JwksMetrics::default();
        metrics.set_fresh_since(now_ms());
        let current = Verifier::new(fixed.clone(), verifier_config.clone())
            .ok()
            .map(|verifier| {
                Arc::new(Current {
                    verifier,
                    cache: Mutex::new(VerifyCache::new(jwt.verify_cache_entries)),
                })
            });
        let source = KeySource(Arc::new(Inner {
            current: RwLock::new(current),
            cache_entries: jwt.verify_cache_entries,
            reload,
            jwks: Some(Jwks {
                url,
                client,
                keys: Mutex::new(JwksKeys {
                    fixed,
                    document: None,
                }),
                config: verifier_config,
                refresh: Duration::from_secs(jwt.jwks_refresh_s),
                min_refetch: Duration::from_secs(jwt.jwks_min_refetch_s),
                max_stale: Duration::from_secs(jwt.jwks_max_stale_s),
                wake: Arc::new(Notify::new()),
                asked: Mutex::new(None),
                last_document: Mutex::new(None),
                last_ok_ms: Default::default(),
                failing: AtomicBool::new(false),
                metrics,
            }),
        }));
        let first = source.fetch_once().await;
        let next = match first {
            Ok(max_age) => refresh_interval(max_age, Duration::from_secs(jwt.jwks_refresh_s)),
            Err(e) if jwt.jwks_start_without_keys => {
                tracing::warn!(
                    cause = %e,
                    "jwt.jwks_url: the first fetch failed; starting without its keys \
                     (jwt.jwks_start_without_keys)"
                );
                source.retry_delay()
            }
            Err(e) => {
                return Err(StartError::Keys(format!(
                    "jwks_url: the first fetch failed ({e}); set jwt.jwks_start_without_keys \
                     = true to start anyway"
                )));
            }
        };
        let wake = source.jwks().map(|j| j.wake.clone());
        if let Some(wake) = wake {
            tokio::spawn(refresh_loop(
                Arc::downgrade(&source.0),
                wake,
                Duration::from_secs(jwt.jwks_min_refetch_s),
                next,
            ));
        }
        Ok(source)
    }

    fn jwks(&self) -> Option<&Jwks> {
        self.0.jwks.as_ref()
    }

    /// The series the JWKS fetches count into (never counted into without a
    /// `jwt.jwks_url`).
    pub fn jwks_metrics(&self) -> JwksMetrics {
        self.jwks().map(|j| j.metrics.clone()).unwrap_or_default()
    }

    /// The current verifier (`None`: only a JWKS URL, never fetched yet).
    fn current(&self) -> Option<Arc<Current>> {
        self.0
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Verifies `token` at `now_ms` against the current keys, answering from the
    /// cache when it can ([`Verifier::verify_cached`]). An unknown `kid` is refused
    /// and asks for a refetch of the JWKS (rate-limited).
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<Claims>, TokenError> {
        let verified = match self.current() {
            Some(current) => current
                .verifier
                .verify_cached(token, now_ms, &current.cache),
            None => Err(TokenError::UnknownKid),
        };
        if let Err(TokenError::UnknownKid | TokenError::NoMatchingKey) = &verified
            && let Some(jwks) = self.jwks()
        {
            jwks.ask_refetch();
        }
        verified
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

    /// Re-reads the key files the configuration names (`jwt.hs256_secret_file`,
    /// `jwt.public_key_files`, `jwt.jwks_file`; an inline secret stays as
    /// configured, the JWKS URL's fetched keys are kept, not refetched) and puts
    /// them in use, with an empty cache. `Ok(false)`: no key file to re-read.
    /// `Err`: a file was refused (the message names it and why, never its
    /// content) and the keys in use stay.
    pub fn reload(&self) -> Result<bool, String> {
        let Some(reload) = &self.0.reload else {
            return Ok(false);
        };
        let jwt = &reload.config.jwt;
        if jwt.hs256_secret_file.is_none()
            && jwt.public_key_files.is_empty()
            && jwt.jwks_file.is_none()
        {
            return Ok(false);
        }
        let (fixed, verifier_config) =
            crate::server::configured_keys(&reload.config, reload.dev_secret.as_deref())
                .map_err(|e| e.to_string())?;
        let Some(jwks) = self.jwks() else {
            let verifier =
                Verifier::new(fixed, verifier_config).map_err(|e| format!("jwt: {e}"))?;
            self.install(verifier);
            return Ok(true);
        };
        let mut keys = jwks.keys.lock().unwrap_or_else(|e| e.into_inner());
        let mut all = fixed.clone();
        if let Some(document) = &keys.document {
            all.add_published_jwks_json(document, MAX_JWKS_KEYS)
                .map_err(|e| format!("jwt: jwks_url's last document: {e}"))?;
        }
        let verifier = Verifier::new(all, jwks.config.clone()).map_err(|e| format!("jwt: {e}"))?;
        self.install(verifier);
        keys.fixed = fixed;
        Ok(true)
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
    /// and logged when the state changes (ok → failing, failing → ok).
    async fn fetch_once(&self) -> Result<Option<Duration>, FetchError> {
        let Some(jwks) = self.jwks() else {
            return Ok(None);
        };
        let result = self.fetch_and_apply(jwks).await;
        match &result {
            Ok(_) => {
                jwks.metrics.fetched("ok");
                let now = now_ms();
                jwks.last_ok_ms.store(now, Ordering::Relaxed);
                jwks.metrics.set_fresh_since(now);
                if jwks.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        url = %redact_url(jwks.url.as_str()),
                        "jwt.jwks_url: fetching works again"
                    );
                }
            }
            Err(e) => {
                jwks.metrics.fetched(e.outcome());
                if !jwks.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %redact_url(jwks.url.as_str()),
                        cause = %e,
                        "jwt.jwks_url: fetch failed; keeping the last good keys"
                    );
                }
            }
        }
        result
    }

    async fn fetch_and_apply(&self, jwks: &Jwks) -> Result<Option<Duration>, FetchError> {
        let (body, max_age) = jwks.fetch().await?;
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
        jwks.metrics.set_keys(added);
        tracing::info!(keys = added, "jwt.jwks_url: keys loaded");
        Ok(max_age)
    }
}

impl Jwks {
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

    /// The document's bytes and its `max-age`.
    async fn fetch(&self) -> Result<(Vec<u8>, Option<Duration>), FetchError> {
        let mut response = self
            .client
            .get(self.url.clone())
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
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
fn describe(e: &reqwest::Error) -> String {
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("jwks_url: TLS setup failed: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(
            rustls_platform_verifier::Verifier::new(provider)
                .map_err(|e| format!("jwks_url: TLS setup failed: {e}"))?,
        ))
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("wsauth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("jwks_url: the HTTP client cannot be built: {e}"))
}

/// Fetches on schedule and when woken, never twice within `min_refetch`; ends
/// when the key source is dropped (its drop wakes this task).
async fn refresh_loop(
    source: Weak<Inner>,
    wake: Arc<Notify>,
    min_refetch: Duration,
    first_wait: Duration,
) {
    let mut wait = first_wait;
    let mut last_fetch = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = wake.notified() => {}
        }
        // However often woken, one fetch per `min_refetch` at most.
        let since = last_fetch.elapsed();
        if since < min_refetch {
            tokio::time::sleep(min_refetch - since).await;
        }
        let Some(inner) = source.upgrade() else {
            return;
        };
        let source = KeySource(inner);
        last_fetch = Instant::now();
        wait = match source.fetch_once().await {
            Ok(max_age) => refresh_interval(
                max_age,
                source.jwks().map_or(RETRY_AFTER_FAILURE, |j| j.refresh),
            ),
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
