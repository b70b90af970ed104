//! Token verification as the server carries out the core's `Verify` requests:
//! the [`TokenVerifier`] trait, and [`KeySource`], the verifier the
//! configuration builds (or that wraps an embedder's own).
//!
//! A verifier answers at once when it can ([`TokenVerifier::verify_now`]: an
//! HMAC token, a cached one, a refusal), so the common case costs no task and
//! no turn of the event loop; only what needs the network (introspection, a
//! JWKS refetch for an unknown `kid`, an embedder's remote check) runs on a
//! task of its own while the connection goes on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use wsauth_core::jwt::{Claims, TokenError, Verifier, looks_like_jwt, unverified_issuer};

use crate::config::{Config, IssuerConfig, JwtConfig};
use crate::introspect::Introspection;
use crate::keys::{IssuerKeys, IssuerSpec, JwksTimings};
use crate::metrics::JwksMetrics;
use crate::server::{StartError, jwt_keys};

/// What [`TokenVerifier::verify`] returns: the claims, or why the token is
/// refused ([`TokenError::code`] is the protocol code the client gets).
pub type VerifyFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Arc<Claims>, TokenError>> + Send + 'a>>;

/// Checks a token and gives its claims. The built-in ones are the configured
/// keys (files, JWKS files, JWKS URLs, OIDC discovery, several issuers) and
/// introspection; an embedder plugs in its own with [`KeySource::custom`].
///
/// Return [`TokenError::Inactive`] for a token your provider refuses
/// (`AUTH_FAILED`) and [`TokenError::Unavailable`] when it cannot answer
/// (`INTERNAL`: fails closed, the client may retry).
pub trait TokenVerifier: Send + Sync + 'static {
    /// The answer, when it needs no waiting (no network); `None` sends the
    /// token to [`TokenVerifier::verify`]. The default always waits.
    fn verify_now(&self, token: &str, now_ms: u64) -> Option<Result<Arc<Claims>, TokenError>> {
        let _ = (token, now_ms);
        None
    }

    /// The answer, at `now_ms` (Unix ms). Runs on a task of its own; the
    /// connection keeps reading meanwhile.
    fn verify<'a>(&'a self, token: &'a str, now_ms: u64) -> VerifyFuture<'a>;

    /// Whether the keys are fresh enough for `/readyz` [true].
    fn ready(&self) -> bool {
        true
    }

    /// Re-reads key files (SIGHUP, `POST /admin/reload`): `Ok(true)` reloaded,
    /// `Ok(false)` nothing to re-read, `Err` refused (the old keys stay).
    fn reload(&self) -> Result<bool, String> {
        Ok(false)
    }
}

/// The verifier the server uses: the configured keys routed by issuer, and
/// introspection, or an embedder's own [`TokenVerifier`]. Cheap to clone.
#[derive(Clone)]
pub struct KeySource(Arc<Sources>);

struct Sources {
    /// The `[jwt]` section's own keys, for tokens no entry of `issuers` takes.
    default: Option<IssuerKeys>,
    /// `[[jwt.issuers]]`, by the `iss` each answers for.
    issuers: HashMap<String, IssuerKeys>,
    max_token_bytes: usize,
    introspection: Option<Introspection>,
    custom: Option<Arc<dyn TokenVerifier>>,
    metrics: JwksMetrics,
}

/// Where one token goes.
enum Route<'a> {
    Keys(&'a IssuerKeys),
    Introspection(&'a Introspection),
    Custom(&'a dyn TokenVerifier),
    Refused(TokenError),
}

impl KeySource {
    fn with(sources: Sources) -> KeySource {
        KeySource(Arc::new(sources))
    }

    /// Fixed keys: `verifier`, with a cache of `cache_entries` tokens.
    pub fn fixed(verifier: Verifier, cache_entries: usize) -> KeySource {
        KeySource::with(Sources {
            default: Some(IssuerKeys::fixed(verifier, cache_entries)),
            issuers: HashMap::new(),
            max_token_bytes: usize::MAX,
            introspection: None,
            custom: None,
            metrics: JwksMetrics::default(),
        })
    }

    /// An embedder's own verifier, used for every token.
    pub fn custom(verifier: impl TokenVerifier) -> KeySource {
        KeySource::with(Sources {
            default: None,
            issuers: HashMap::new(),
            max_token_bytes: usize::MAX,
            introspection: None,
            custom: Some(Arc::new(verifier)),
            metrics: JwksMetrics::default(),
        })
    }

    /// The verifiers `config` (already validated) declares, with the
    /// development secret if any: the `[jwt]` keys, each `[[jwt.issuers]]`
    /// entry's, introspection. JWKS URLs and discovery documents are fetched
    /// once (failing the start if that fails, unless
    /// `jwt.jwks_start_without_keys`), then in the background on the current
    /// tokio runtime.
    pub async fn from_config(
        config: &Config,
        dev_secret: Option<&[u8]>,
    ) -> Result<KeySource, StartError> {
        let jwt = &config.jwt;
        let max_lifetime_s = config.session.max_token_lifetime_s;
        let metrics = JwksMetrics::default();
        let timings = JwksTimings {
            start_without_keys: jwt.jwks_start_without_keys,
            refresh: Duration::from_secs(jwt.jwks_refresh_s),
            min_refetch: Duration::from_secs(jwt.jwks_min_refetch_s),
            max_stale: Duration::from_secs(jwt.jwks_max_stale_s),
            cache_entries: jwt.verify_cache_entries,
        };
        let (default, entries) = issuer_specs(config, dev_secret)?;
        let default = match default {
            Some(spec) => Some(IssuerKeys::start(spec, timings, &metrics).await?),
            None => None,
        };
        let mut issuers = HashMap::new();
        for (issuer, spec) in entries {
            issuers.insert(issuer, IssuerKeys::start(spec, timings, &metrics).await?);
        }
        Ok(KeySource::with(Sources {
            default,
            issuers,
            max_token_bytes: jwt.max_token_bytes,
            introspection: Introspection::from_config(jwt, max_lifetime_s, &metrics)?,
            custom: None,
            metrics,
        }))
    }

    /// The series the key sources count into.
    pub fn jwks_metrics(&self) -> JwksMetrics {
        self.0.metrics.clone()
    }

    /// Where `token` goes: an embedder's verifier; introspection for what is
    /// not a JWT (or for everything, without JWT keys); else the one issuer
    /// its `iss` names, or the `[jwt]` keys.
    fn route(&self, token: &str) -> Route<'_> {
        let s = &*self.0;
        if let Some(custom) = &s.custom {
            return Route::Custom(custom.as_ref());
        }
        let has_jwt_keys = s.default.is_some() || !s.issuers.is_empty();
        if let Some(introspection) = &s.introspection
            && (!has_jwt_keys || !looks_like_jwt(token))
        {
            return Route::Introspection(introspection);
        }
        if s.issuers.is_empty() {
            return match &s.default {
                Some(keys) => Route::Keys(keys),
                None => Route::Refused(TokenError::NoMatchingKey),
            };
        }
        let issuer = match unverified_issuer(token, s.max_token_bytes) {
            Ok(issuer) => issuer,
            Err(e) => return Route::Refused(e),
        };
        match (issuer.and_then(|i| s.issuers.get(&i)), &s.default) {
            (Some(keys), _) | (None, Some(keys)) => Route::Keys(keys),
            (None, None) => Route::Refused(TokenError::WrongIssuer),
        }
    }

    /// Verifies `token` at `now_ms`, waiting if it must ([`TokenVerifier::verify`]).
    pub async fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<Claims>, TokenError> {
        match self.route(token) {
            Route::Keys(keys) => keys.verify(token, now_ms).await,
            Route::Introspection(introspection) => introspection.verify(token, now_ms).await,
            Route::Custom(custom) => match custom.verify_now(token, now_ms) {
                Some(answer) => answer,
                None => custom.verify(token, now_ms).await,
            },
            Route::Refused(e) => Err(e),
        }
    }
}

impl TokenVerifier for KeySource {
    fn verify_now(&self, token: &str, now_ms: u64) -> Option<Result<Arc<Claims>, TokenError>> {
        match self.route(token) {
            Route::Keys(keys) => keys.verify_now(token, now_ms),
            Route::Introspection(introspection) => introspection.cached(token, now_ms).map(Ok),
            Route::Custom(custom) => custom.verify_now(token, now_ms),
            Route::Refused(e) => Some(Err(e)),
        }
    }

    fn verify<'a>(&'a self, token: &'a str, now_ms: u64) -> VerifyFuture<'a> {
        Box::pin(KeySource::verify(self, token, now_ms))
    }

    fn ready(&self) -> bool {
        let s = &*self.0;
        s.default
            .iter()
            .chain(s.issuers.values())
            .all(IssuerKeys::fresh)
            && s.custom.as_ref().is_none_or(|c| c.ready())
    }

    /// Re-reads every issuer's key files, all or nothing: if one is refused,
    /// none is put in use.
    fn reload(&self) -> Result<bool, String> {
        let s = &*self.0;
        if let Some(custom) = &s.custom {
            return custom.reload();
        }
        // Everything is read and checked first, so that a refused file changes nothing.
        let mut ready = Vec::new();
        for keys in s.default.iter().chain(s.issuers.values()) {
            if let Some(reloaded) = keys.prepare_reload()? {
                ready.push((keys, reloaded));
            }
        }
        let reloaded = !ready.is_empty();
        for (keys, keys_read) in ready {
            keys.apply_reload(keys_read);
        }
        Ok(reloaded)
    }
}

/// The `[jwt]` settings as an entry of `[[jwt.issuers]]` sees them: its own
/// keys, issuer, audience and algorithms, the section's leeway and limits.
/// The key sources a configuration declares: the `[jwt]` section's, and each
/// `[[jwt.issuers]]` entry's with its issuer.
type IssuerSpecs = (Option<IssuerSpec>, Vec<(String, IssuerSpec)>);

/// The key sources the configuration declares (the `[jwt]` one with a
/// development secret, if any).
fn issuer_specs(config: &Config, dev_secret: Option<&[u8]>) -> Result<IssuerSpecs, StartError> {
    let jwt = &config.jwt;
    let max_lifetime_s = config.session.max_token_lifetime_s;
    let default = (jwt.has_key() || dev_secret.is_some()).then(|| {
        let mut own = jwt.clone();
        if own.issuer.is_none() {
            own.issuer = jwt.oidc_issuer.clone();
        }
        let dev_secret = dev_secret.map(<[u8]>::to_vec);
        IssuerSpec {
            label: "jwt.".to_owned(),
            has_files: jwt.hs256_secret_file.is_some()
                || !jwt.public_key_files.is_empty()
                || jwt.jwks_file.is_some(),
            jwks_url: jwt.jwks_url.clone(),
            oidc_issuer: jwt.oidc_issuer.clone(),
            load: Arc::new(move || jwt_keys(&own, max_lifetime_s, dev_secret.as_deref())),
        }
    });
    let mut entries = Vec::new();
    for (i, entry) in jwt.issuers.iter().enumerate() {
        let Some(issuer) = entry.effective_issuer() else {
            return Err(StartError::Keys(format!(
                "jwt.issuers entry {} has no issuer",
                i + 1
            )));
        };
        let label = format!("jwt.issuers entry {} ({issuer}): ", i + 1);
        let own = entry_jwt(jwt, entry);
        let load_label = label.clone();
        let spec = IssuerSpec {
            label,
            has_files: !entry.public_key_files.is_empty() || entry.jwks_file.is_some(),
            jwks_url: entry.jwks_url.clone(),
            oidc_issuer: entry.oidc_issuer.clone(),
            load: Arc::new(move || {
                jwt_keys(&own, max_lifetime_s, None)
                    .map_err(|e| StartError::Keys(format!("{load_label}{}", key_cause(&e))))
            }),
        };
        entries.push((issuer.to_owned(), spec));
    }
    Ok((default, entries))
}

/// `wsauth-server check-config`'s look at the keys: every key file read and
/// every URL checked as a start would (the same errors), nothing fetched; one
/// line per key source.
pub fn check_offline(config: &Config) -> Result<Vec<String>, StartError> {
    let (default, entries) = issuer_specs(config, None)?;
    let mut lines = Vec::new();
    for spec in default.iter().chain(entries.iter().map(|(_, spec)| spec)) {
        lines.push(spec.check_offline()?);
    }
    let metrics = JwksMetrics::default();
    let max_lifetime_s = config.session.max_token_lifetime_s;
    if Introspection::from_config(&config.jwt, max_lifetime_s, &metrics)?.is_some() {
        lines.push("jwt.introspection_url: not called (no network)".to_owned());
    }
    Ok(lines)
}

fn entry_jwt(jwt: &JwtConfig, entry: &IssuerConfig) -> JwtConfig {
    JwtConfig {
        hs256_secret: None,
        hs256_secret_file: None,
        public_key_files: entry.public_key_files.clone(),
        jwks_file: entry.jwks_file.clone(),
        jwks_url: None,
        oidc_issuer: None,
        issuers: Vec::new(),
        introspection_url: None,
        introspection_client_secret: None,
        introspection_client_secret_file: None,
        algorithms: entry.algorithms.clone(),
        issuer: entry.effective_issuer().map(str::to_owned),
        audience: entry.audience.clone(),
        ..jwt.clone()
    }
}

/// A key error's message without the `StartError` framing.
fn key_cause(e: &StartError) -> String {
    match e {
        StartError::Keys(cause) => cause.clone(),
        other => other.to_string(),
    }
}
