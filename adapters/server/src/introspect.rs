//! Opaque tokens checked by OAuth 2.0 token introspection (RFC 7662) at
//! `jwt.introspection_url`. The answer's members are checked by the rules of a
//! token's claims ([`VerifierConfig::check_claims_json`]); active answers are
//! cached by the token's SHA-256 until its `exp`. An endpoint that cannot
//! answer fails closed ([`TokenError::Unavailable`], `INTERNAL`). The token is
//! sent only in the request body, never logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wsauth_core::jwt::{Claims, TokenError, VerifierConfig, VerifyCache};

use crate::metrics::JwksMetrics;
use crate::server::StartError;

/// The largest introspection answer read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The introspection endpoint and its cache. Cheap to clone.
#[derive(Clone)]
pub struct Introspection(Arc<Inner>);

struct Inner {
    url: reqwest::Url,
    client: reqwest::Client,
    client_id: String,
    client_secret: Option<String>,
    /// The issuer and audience required, and the leeway.
    rules: VerifierConfig,
    cache: Mutex<VerifyCache>,
    metrics: JwksMetrics,
}

impl Introspection {
    /// The endpoint `jwt.introspection_url` names (already validated), with
    /// the client credentials, or `None` without one.
    pub fn from_config(
        jwt: &crate::config::JwtConfig,
        max_token_lifetime_s: u64,
        metrics: &JwksMetrics,
    ) -> Result<Option<Introspection>, StartError> {
        let Some(url) = &jwt.introspection_url else {
            return Ok(None);
        };
        let key_error = |e: &dyn std::fmt::Display| StartError::Keys(e.to_string());
        let url = reqwest::Url::parse(url)
            .map_err(|_| key_error(&"jwt.introspection_url is not a URL"))?;
        let client_secret = jwt.introspection_secret().map_err(|e| key_error(&e))?;
        let client = crate::keys::http_client(Duration::from_millis(jwt.introspection_timeout_ms))
            .map_err(StartError::Keys)?;
        Ok(Some(Introspection(Arc::new(Inner {
            url,
            client,
            client_id: jwt.introspection_client_id.clone().unwrap_or_default(),
            client_secret,
            rules: VerifierConfig {
                issuer: jwt.issuer.clone(),
                audience: jwt.audience.clone(),
                leeway_s: jwt.leeway_s,
                max_token_bytes: jwt.max_token_bytes,
                algorithms: None,
                // An answer whose `exp` outlives the revocations is refused as a
                // JWT would be; there is no header, hence no `typ`.
                max_lifetime_s: Some(max_token_lifetime_s),
                required_typ: None,
            },
            cache: Mutex::new(VerifyCache::new(jwt.introspection_cache_entries)),
            metrics: metrics.clone(),
        }))))
    }

    /// The cached answer for `token`, if any.
    pub fn cached(&self, token: &str, now_ms: u64) -> Option<Arc<Claims>> {
        let key = VerifyCache::key(token);
        self.0
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key, now_ms)
    }

    /// Asks the endpoint about `token` (or answers from the cache).
    pub async fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<Claims>, TokenError> {
        let inner = &self.0;
        if token.len() > inner.rules.max_token_bytes {
            return Err(TokenError::TooLarge {
                max: inner.rules.max_token_bytes,
            });
        }
        if let Some(claims) = self.cached(token, now_ms) {
            return Ok(claims);
        }
        let answer = match self.ask(token).await {
            Ok(answer) => answer,
            Err(cause) => {
                inner.metrics.introspected("error");
                tracing::warn!(%cause, "jwt.introspection_url: no usable answer; the token is refused (INTERNAL)");
                return Err(TokenError::Unavailable);
            }
        };
        if answer.get("active") != Some(&serde_json::Value::Bool(true)) {
            inner.metrics.introspected("inactive");
            return Err(TokenError::Inactive);
        }
        inner.metrics.introspected("active");
        let json = serde_json::to_vec(&answer).map_err(|_| TokenError::Unavailable)?;
        let claims = Arc::new(inner.rules.check_claims_json(&json, now_ms)?);
        let leeway_ms = inner.rules.leeway_s.saturating_mul(1000);
        let until = wsauth_core::rules::token_ends_at(claims.exp_ms, leeway_ms);
        inner
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(VerifyCache::key(token), claims.clone(), until, now_ms);
        Ok(claims)
    }

    /// One request: the answer as a JSON object, or why there is none (never
    /// holding the token).
    async fn ask(&self, token: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
        let inner = &self.0;
        let mut request = inner
            .client
            .post(inner.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        request = request.basic_auth(&inner.client_id, inner.client_secret.as_deref());
        let mut response = request
            .send()
            .await
            .map_err(|e| crate::keys::describe(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {}", status.as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| crate::keys::describe(&e))?
        {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer over {MAX_ANSWER_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&body) {
            Ok(serde_json::Value::Object(answer)) => Ok(answer),
            _ => Err("the answer is not a JSON object".to_owned()),
        }
    }
}
