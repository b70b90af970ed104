//! The standalone server's application calls (PROTOCOL §8): each `rpc` a session
//! makes is forwarded to the application's HTTP backend, `app.rpc_url`.
//!
//! # The contract
//! Each call is one `POST rpc_url` with the JSON body
//! `{"method":…,"data":…,"sub":…,"session_id":…,"claims":{…},"node":…}` (the
//! claims as the token carried them, [`Claims::to_wire`]; never the token) and two
//! headers, so the backend can check that the call comes from wsauth and is fresh:
//!
//! - `X-Wsauth-Timestamp: <unix seconds>`
//! - `X-Wsauth-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, keyed
//!   with `app.rpc_secret` ([`signature`]); the body is signed exactly as sent.
//!
//! The backend answers `200` with `{"result":…}` (→ `rpc_result`) or
//! `{"error":{"message":…,"details":{…}}}` (→ `APP_ERROR`), or `404`
//! (→ `METHOD_NOT_FOUND`). Anything else — another status, a `200` body that is
//! neither (or larger than [`MAX_RESPONSE_BYTES`]), a timeout, a refused
//! connection — is `UNAVAILABLE`, with a warning naming the method and the cause
//! (never a body, a secret or the URL's userinfo).
//!
//! # Resources
//! One pooled keep-alive [`reqwest::Client`] per [`Proxy`]; each request may take
//! `app.rpc_timeout_ms`; at most `app.max_backend_calls` requests are in flight
//! per node, and a call past that waits for a slot (the core's own rpc deadline
//! answers `UNAVAILABLE` if it waits too long). Methods outside `app.rpc_methods`
//! are `METHOD_NOT_FOUND` without a request. Redirects are not followed.
//!
//! [`Claims::to_wire`]: wsauth_core::jwt::Claims::to_wire

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;
use wsauth_core::{CallContext, CallResult, Payload};

use crate::config::{AppSettings, MIN_HMAC_SECRET_BYTES, method_allowed, redact_url};

/// The header with the request's Unix time in seconds.
pub const TIMESTAMP_HEADER: &str = "X-Wsauth-Timestamp";
/// The header with `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "X-Wsauth-Signature";
/// The largest backend response read; a larger one is `UNAVAILABLE`.
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// The value of [`SIGNATURE_HEADER`] for a request body sent at `timestamp`:
/// `sha256=` and the lowercase hex HMAC-SHA256 of `"<timestamp>.<body>"` keyed
/// with `secret`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Forwards application calls to the backend at `app.rpc_url`.
pub struct Proxy {
    client: reqwest::Client,
    url: reqwest::Url,
    secret: Vec<u8>,
    node: String,
    timeout_ms: u64,
    methods: Vec<String>,
    slots: Semaphore,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("url", &redact_url(self.url.as_str()))
            .field("secret", &crate::config::REDACTED)
            .field("node", &self.node)
            .field("timeout_ms", &self.timeout_ms)
            .field("rpc_methods", &self.methods)
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

/// The request body, serialized once and signed as sent.
#[derive(Serialize)]
struct CallBody<'a> {
    method: &'a str,
    data: &'a Payload,
    sub: &'a str,
    session_id: &'a str,
    claims: serde_json::Map<String, serde_json::Value>,
    node: &'a str,
}

/// A `200` answer: exactly one of `result` and `error`.
#[derive(Deserialize)]
struct Answer {
    // `Some` even for `"result": null`, which is a result.
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<AnswerError>,
}

#[derive(Deserialize)]
struct AnswerError {
    message: String,
    #[serde(default)]
    details: Option<Box<RawValue>>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

impl Proxy {
    /// The proxy of `settings` for the node named `node`; `None` when
    /// `app.rpc_url` is unset. Reads `app.rpc_secret_file`. An error says what is
    /// wrong without quoting the secret or the URL.
    pub fn new(settings: &AppSettings, node: &str) -> Result<Option<Proxy>, String> {
        let Some(url) = &settings.rpc_url else {
            return Ok(None);
        };
        let url =
            reqwest::Url::parse(url).map_err(|e| format!("app.rpc_url is not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err("app.rpc_url must be an http:// or https:// URL with a host".to_owned());
        }
        let secret = settings
            .rpc_secret_bytes()
            .map_err(|e| e.to_string())?
            .ok_or("app.rpc_secret is required when app.rpc_url is set")?;
        if secret.len() < MIN_HMAC_SECRET_BYTES {
            return Err(format!(
                "app.rpc_secret must be at least {MIN_HMAC_SECRET_BYTES} bytes"
            ));
        }
        if settings.max_backend_calls == 0 || settings.rpc_timeout_ms == 0 {
            return Err(
                "app.max_backend_calls and app.rpc_timeout_ms must be greater than 0".to_owned(),
            );
        }

        // The ring provider the rest of the server uses, passed explicitly: no
        // process-wide default is installed or needed.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("app.rpc_url: TLS setup failed: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| format!("app.rpc_url: TLS setup failed: {e}"))?,
            ))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];

        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_millis(settings.rpc_timeout_ms))
            .connect_timeout(Duration::from_millis(settings.rpc_timeout_ms))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wsauth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("app.rpc_url: the HTTP client cannot be built: {e}"))?;

        Ok(Some(Proxy {
            client,
            url,
            secret,
            node: node.to_owned(),
            timeout_ms: settings.rpc_timeout_ms,
            methods: settings.rpc_methods.clone(),
            slots: Semaphore::new(settings.max_backend_calls),
        }))
    }

    /// Forwards one call and maps the backend's answer to a [`CallResult`]
    /// (see the module documentation). Never fails otherwise: every problem is
    /// [`CallResult::Unavailable`], logged with the method and the cause.
    pub async fn call(&self, method: &str, data: &Payload, context: &CallContext) -> CallResult {
        if !method_allowed(&self.methods, method) {
            tracing::debug!(method, "rpc method not in app.rpc_methods");
            return CallResult::NotFound;
        }
        let body = CallBody {
            method,
            data,
            sub: &context.sub,
            session_id: &context.session_id,
            claims: context.claims.to_wire(),
            node: &self.node,
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => body,
            Err(e) => {
                tracing::warn!(method, cause = %e, "rpc backend call not made: body not serializable");
                return CallResult::Unavailable;
            }
        };

        // The semaphore is never closed, so this waits for a slot and gets one.
        let Ok(_slot) = self.slots.acquire().await else {
            return CallResult::Unavailable;
        };
        // Signed when sent, not when queued, so a wait does not age the timestamp.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let sig = signature(&self.secret, timestamp, &body);
        let sent = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp)
            .header(SIGNATURE_HEADER, sig)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                tracing::warn!(method, cause = %self.describe(e), "rpc backend unavailable");
                return CallResult::Unavailable;
            }
        };

        let status = response.status();
        let bytes = match read_bounded(response).await {
            Ok(bytes) => bytes,
            Err(BodyError::TooLarge) => {
                tracing::warn!(
                    method,
                    status = status.as_u16(),
                    cause = %format!("response body over {MAX_RESPONSE_BYTES} bytes"),
                    "rpc backend unavailable"
                );
                return CallResult::Unavailable;
            }
            Err(BodyError::Http(e)) => {
                tracing::warn!(
                    method,
                    status = status.as_u16(),
                    cause = %self.describe(e),
                    "rpc backend unavailable"
                );
                return CallResult::Unavailable;
            }
        };
        match status {
            StatusCode::OK => answer(method, &bytes),
            StatusCode::NOT_FOUND => CallResult::NotFound,
            status => {
                tracing::warn!(
                    method,
                    status = status.as_u16(),
                    cause = "unexpected status",
                    "rpc backend unavailable"
                );
                CallResult::Unavailable
            }
        }
    }

    /// A client error's cause, without the URL (it may hold userinfo).
    fn describe(&self, error: reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("timed out after {} ms", self.timeout_ms);
        }
        let kind = if error.is_connect() {
            "connection failed"
        } else if error.is_redirect() {
            "redirect"
        } else if error.is_body() || error.is_decode() {
            "response body"
        } else {
            "request failed"
        };
        let error = error.without_url();
        let mut cause = format!("{kind}: {error}");
        let mut source = std::error::Error::source(&error);
        while let Some(inner) = source {
            cause.push_str(": ");
            cause.push_str(&inner.to_string());
            source = inner.source();
        }
        cause
    }
}

/// A `200` body as a result: `{"result":…}` or `{"error":{"message":…}}`.
fn answer(method: &str, bytes: &[u8]) -> CallResult {
    let bad = |why: &str| {
        // The body itself is never logged: it is the application's data.
        tracing::warn!(
            method,
            status = 200u16,
            cause = why,
            "rpc backend unavailable"
        );
        CallResult::Unavailable
    };
    let answer: Answer = match serde_json::from_slice(bytes) {
        Ok(answer) => answer,
        Err(_) => return bad("the 200 body is not a JSON object with result or error.message"),
    };
    match (answer.result, answer.error) {
        (Some(result), None) => CallResult::Ok(payload(&result)),
        (None, Some(error)) => CallResult::AppError {
            message: error.message,
            details: error
                .details
                .filter(|d| d.get() != "null")
                .map(|d| payload(&d)),
        },
        (Some(_), Some(_)) => bad("the 200 body has both result and error"),
        (None, None) => bad("the 200 body has neither result nor error"),
    }
}

fn payload(raw: &RawValue) -> Payload {
    // Raw JSON from serde_json is one JSON value already.
    Payload::from_json(raw.get()).unwrap_or_else(|_| Payload::null())
}

enum BodyError {
    TooLarge,
    Http(reqwest::Error),
}

/// The response body, refusing more than [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, BodyError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(BodyError::TooLarge);
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Http)? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently with
        //   printf '%s' '1767225600.{"method":"chat.send","data":{"text":"hi"}}' \
        //     | openssl dgst -sha256 -hmac 'proxy-test-secret-0123456789abcdef'
        let expected = "sha256=e27b093f0234a889e3a211da18df894e479f94100a141430067ecf61a440b86e";
        let body = br#"{"method":"chat.send","data":{"text":"hi"}}"#;
        assert_eq!(
            signature(b"proxy-test-secret-0123456789abcdef", 1_767_225_600, body),
            expected
        );
        // Any change to the key, the time or the body changes it.
        assert_ne!(
            signature(b"proxy-test-secret-0123456789abcdeF", 1_767_225_600, body),
            expected
        );
        assert_ne!(
            signature(b"proxy-test-secret-0123456789abcdef", 1_767_225_601, body),
            expected
        );
        assert_ne!(
            signature(b"proxy-test-secret-0123456789abcdef", 1_767_225_600, b"{}"),
            expected
        );
    }

    #[test]
    fn debug_never_shows_the_secret_or_url_userinfo() {
        let settings = AppSettings {
            rpc_url: Some("http://user:hunter2@127.0.0.1:9/rpc".into()),
            rpc_secret: Some("proxy-test-secret-0123456789abcdef".into()),
            ..AppSettings::default()
        };
        let proxy = Proxy::new(&settings, "node-1").unwrap().unwrap();
        let shown = format!("{proxy:?} {proxy:#?} {settings:?}");
        assert!(!shown.contains("proxy-test-secret"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn no_url_is_no_proxy_and_a_bad_setting_is_an_error() {
        assert!(Proxy::new(&AppSettings::default(), "n").unwrap().is_none());
        let no_secret = AppSettings {
            rpc_url: Some("http://127.0.0.1:9/rpc".into()),
            ..AppSettings::default()
        };
        let err = Proxy::new(&no_secret, "n").unwrap_err();
        assert!(err.contains("app.rpc_secret"), "{err}");
        let ftp = AppSettings {
            rpc_url: Some("ftp://127.0.0.1/rpc".into()),
            rpc_secret: Some("x".repeat(32)),
            ..AppSettings::default()
        };
        let err = Proxy::new(&ftp, "n").unwrap_err();
        assert!(err.contains("app.rpc_url"), "{err}");
    }
}
