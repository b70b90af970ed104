//! The tests' identity provider: an HTTP server on loopback serving a JWKS
//! (`/jwks`), an OpenID Connect discovery document
//! (`/.well-known/openid-configuration`) and an introspection endpoint
//! (`/introspect`). Each path's answer can be changed, slowed or broken, and
//! its hits are counted.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use wsauth_core::jwt::{b64url, sign};

use std::time::Instant;

pub use super::common::auth_outcome as auth;
use super::common::{WAIT, now_s};

pub const JWKS: &str = "/jwks";
pub const DISCOVERY: &str = "/.well-known/openid-configuration";
pub const INTROSPECT: &str = "/introspect";

pub fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../core/testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

/// The public JWK of a PEM public key, with `kid`.
pub fn jwk(pem: &str, alg: Algorithm, kid: &str) -> Value {
    let bytes = key_file(pem);
    let key = match alg {
        Algorithm::ES256 => DecodingKey::from_ec_pem(&bytes),
        _ => DecodingKey::from_rsa_pem(&bytes),
    }
    .expect("public key");
    let jwk = jsonwebtoken::jwk::Jwk::from_decoding_key(&key, Some(alg)).expect("jwk");
    let mut jwk = serde_json::to_value(jwk).expect("json");
    jwk["kid"] = json!(kid);
    jwk
}

pub fn ec_jwk(kid: &str) -> Value {
    jwk("p256.pub.pem", Algorithm::ES256, kid)
}

pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// An ES256 token for `sub` with `kid`, signed with the P-256 test key.
pub fn ec_token(kid: &str, sub: &str) -> String {
    let key = EncodingKey::from_ec_pem(&key_file("p256.key")).expect("p256");
    let claims = json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s()});
    sign(&key, Algorithm::ES256, Some(kid), &claims).expect("sign")
}

/// A token with `kid` whose signature is garbage: refused at the key lookup.
pub fn forged(kid: &str) -> String {
    let header = json!({"alg": "ES256", "kid": kid}).to_string();
    let claims = json!({"sub": "mallory", "exp": now_s() + 3600}).to_string();
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes()),
        b64url(&[7u8; 64])
    )
}

/// The value of one series in an exposition (`name{labels}` exactly).
pub fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}

/// Waits until `done`, failing after a while.
pub async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one path answers.
#[derive(Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
    pub cache_control: Option<&'static str>,
    pub delay: Duration,
}

impl Answer {
    fn ok(body: String) -> Answer {
        Answer {
            status: StatusCode::OK,
            body,
            cache_control: None,
            delay: Duration::ZERO,
        }
    }
}

/// The identity provider.
pub struct Idp {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    answers: Mutex<HashMap<String, Answer>>,
    hits: Mutex<HashMap<String, usize>>,
    /// Introspection: the `Authorization` header it requires, and the answer
    /// for each token (`{"active":false}` for any other).
    pub introspection_auth: Mutex<Option<String>>,
    pub introspected: Mutex<HashMap<String, String>>,
}

impl Idp {
    /// A provider serving `jwks` at `/jwks`; returns it and the JWKS URL.
    pub async fn start(jwks: String) -> (Arc<Idp>, String) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let idp = Arc::new(Idp {
            base: base.clone(),
            answers: Mutex::new(HashMap::from([(JWKS.to_owned(), Answer::ok(jwks))])),
            hits: Mutex::new(HashMap::new()),
            introspection_auth: Mutex::new(None),
            introspected: Mutex::new(HashMap::new()),
        });
        let app = Router::new().fallback(serve).with_state(idp.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (idp, format!("{base}{JWKS}"))
    }

    /// Changes what `/jwks` answers.
    pub fn set(&self, change: impl FnOnce(&mut Answer)) {
        self.set_at(JWKS, change);
    }

    /// Changes what `path` answers (200 with an empty body until set).
    pub fn set_at(&self, path: &str, change: impl FnOnce(&mut Answer)) {
        let mut answers = self.answers.lock().expect("answers");
        change(
            answers
                .entry(path.to_owned())
                .or_insert_with(|| Answer::ok(String::new())),
        );
    }

    /// Publishes `body` at `/jwks` with a 200.
    pub fn publish(&self, body: String) {
        self.set(|a| {
            a.status = StatusCode::OK;
            a.body = body;
        });
    }

    /// Serves a discovery document naming `issuer` and this provider's JWKS.
    pub fn discover_as(&self, issuer: &str) {
        let document = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": format!("{}{JWKS}", self.base),
            "introspection_endpoint": format!("{}{INTROSPECT}", self.base),
        });
        self.set_at(DISCOVERY, |a| a.body = document.to_string());
    }

    /// Hits on `/jwks`.
    pub fn hits(&self) -> usize {
        self.hits_at(JWKS)
    }

    /// Hits on `path`.
    pub fn hits_at(&self, path: &str) -> usize {
        *self.hits.lock().expect("hits").get(path).unwrap_or(&0)
    }
}

async fn serve(
    State(idp): State<Arc<Idp>>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_owned();
    *idp.hits
        .lock()
        .expect("hits")
        .entry(path.clone())
        .or_default() += 1;
    let answer = idp.answers.lock().expect("answers").get(&path).cloned();
    let Some(mut answer) = answer else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if path == INTROSPECT && answer.status == StatusCode::OK {
        let required = idp.introspection_auth.lock().expect("auth").clone();
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if required.is_some() && given != required.as_deref() {
            answer.status = StatusCode::UNAUTHORIZED;
        } else {
            let token = form_value(&body, "token").unwrap_or_default();
            answer.body = idp
                .introspected
                .lock()
                .expect("introspected")
                .get(&token)
                .cloned()
                .unwrap_or_else(|| r#"{"active":false}"#.to_owned());
        }
    }
    tokio::time::sleep(answer.delay).await;
    let mut response = (answer.status, answer.body).into_response();
    let content_type = if path == JWKS {
        "application/jwk-set+json"
    } else {
        "application/json"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(cc) = answer.cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    response
}

/// One value of an `application/x-www-form-urlencoded` body.
fn form_value(body: &str, name: &str) -> Option<String> {
    body.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
