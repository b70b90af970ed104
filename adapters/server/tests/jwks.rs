//! `jwt.jwks_url`: keys fetched from an identity provider's JWKS, refreshed in the
//! background, refetched (rate-limited) on an unknown `kid`, hostile documents
//! refused with the old keys kept, and the start and `/readyz` rules.
//!
//! A small JWKS server in the test plays the identity provider: it can rotate
//! keys, answer slowly or with an error, serve hostile documents, and counts
//! its hits. Keys are the verifier tests' (`core/testdata/keys`).

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{Client, WAIT, http, now_s};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use serde_json::{Value, json};
use wsauth_core::jwt::{TokenError, b64url, sign};
use wsauth_server::config::Config;
use wsauth_server::{KeySource, StartError};

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../../core/testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

/// The public JWK of a PEM public key, with `kid`.
fn jwk(pem: &str, alg: Algorithm, kid: &str) -> Value {
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

fn ec_jwk(kid: &str) -> Value {
    jwk("p256.pub.pem", Algorithm::ES256, kid)
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// An ES256 token for `sub` with `kid`, signed with the P-256 test key.
fn ec_token(kid: &str, sub: &str) -> String {
    let key = EncodingKey::from_ec_pem(&key_file("p256.key")).expect("p256");
    let claims = json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s()});
    sign(&key, Algorithm::ES256, Some(kid), &claims).expect("sign")
}

/// A token with `kid` whose signature is garbage: refused at the key lookup.
fn forged(kid: &str) -> String {
    let header = json!({"alg": "ES256", "kid": kid}).to_string();
    let claims = json!({"sub": "mallory", "exp": now_s() + 3600}).to_string();
    format!(
        "{}.{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes()),
        b64url(&[7u8; 64])
    )
}

/// What the identity provider answers.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    body: String,
    cache_control: Option<&'static str>,
    delay: Duration,
}

/// The test's identity provider.
struct Idp {
    answer: Mutex<Answer>,
    hits: AtomicUsize,
}

impl Idp {
    async fn start(body: String) -> (Arc<Idp>, String) {
        let idp = Arc::new(Idp {
            answer: Mutex::new(Answer {
                status: StatusCode::OK,
                body,
                cache_control: None,
                delay: Duration::ZERO,
            }),
            hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/jwks", get(serve))
            .with_state(idp.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (idp, url)
    }

    fn set(&self, change: impl FnOnce(&mut Answer)) {
        change(&mut self.answer.lock().expect("answer"));
    }

    fn publish(&self, body: String) {
        self.set(|a| {
            a.status = StatusCode::OK;
            a.body = body;
        });
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(State(idp): State<Arc<Idp>>) -> Response {
    idp.hits.fetch_add(1, Ordering::SeqCst);
    let answer = idp.answer.lock().expect("answer").clone();
    tokio::time::sleep(answer.delay).await;
    let mut response = (answer.status, answer.body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    if let Some(cc) = answer.cache_control {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    response
}

/// A server configuration with the JWKS URL as its only key source.
fn config(url: &str) -> Config {
    let mut c = common::test_config();
    c.jwt.hs256_secret = None;
    c.jwt.jwks_url = Some(url.to_owned());
    c.jwt.jwks_min_refetch_s = 1;
    c
}

/// Authenticates with `token`: `Ok(sub)` or `Err(code)`.
async fn auth(addr: std::net::SocketAddr, token: &str) -> Result<String, String> {
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": token}))
        .await;
    let reply = c.recv().await;
    if reply["type"] == "authenticated" {
        c.close(1000).await;
        Ok(reply["user_id"].as_str().unwrap_or_default().to_owned())
    } else {
        Err(reply["code"].as_str().unwrap_or("?").to_owned())
    }
}

/// Retries `token` (each refusal may ask for a refetch) until it authenticates.
async fn auth_eventually(addr: std::net::SocketAddr, token: &str) -> String {
    let deadline = Instant::now() + WAIT * 2;
    loop {
        match auth(addr, token).await {
            Ok(sub) => return sub,
            Err(code) if Instant::now() < deadline => {
                assert_eq!(code, "AUTH_FAILED");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(code) => panic!("still refused with {code}"),
        }
    }
}

/// The value of one series in an exposition (`name{labels}` exactly).
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{exposition}"))
}

fn fetches(server: &wsauth_server::ServerHandle, outcome: &str) -> f64 {
    sample(
        &server.metrics.render(0),
        &format!("wsauth_jwks_fetch_total{{outcome=\"{outcome}\"}}"),
    )
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT * 2;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_the_published_key_authenticates_over_a_websocket() {
    let (idp, url) = Idp::start(jwks(&[jwk("rsa.pub.pem", Algorithm::RS256, "rsa-1")])).await;
    let server = common::server(config(&url)).await;
    let key = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let claims = json!({"sub": "alice", "exp": now_s() + 3600});
    let token = sign(&key, Algorithm::RS256, Some("rsa-1"), &claims).expect("sign");
    assert_eq!(auth(server.ws_addr, &token).await, Ok("alice".to_owned()));
    assert_eq!(idp.hits(), 1, "fetched once, at the start");
    let metrics = server.metrics.render(0);
    assert_eq!(sample(&metrics, "wsauth_jwks_keys"), 1.0);
    assert_eq!(
        sample(&metrics, "wsauth_jwks_fetch_total{outcome=\"ok\"}"),
        1.0
    );
    // A token the keys do not verify is still refused.
    assert_eq!(
        auth(server.ws_addr, &forged("rsa-1")).await,
        Err("AUTH_FAILED".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_verifies_at_its_first_use_after_one_refetch_and_the_retired_one_stops() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("old")])).await;
    let server = common::server(config(&url)).await;
    let old = ec_token("old", "alice");
    assert_eq!(auth(server.ws_addr, &old).await, Ok("alice".to_owned()));

    // Within jwks_min_refetch_s of the last fetch, an unknown kid is refused
    // at once (no fetch may start).
    let started = common::server(config(&url)).await;
    assert_eq!(
        auth(started.ws_addr, &ec_token("new", "bob")).await,
        Err("AUTH_FAILED".to_owned()),
        "an unknown kid right after a fetch is refused at once"
    );
    started.shutdown().await;

    // The provider publishes the new key and retires the old one. Past the
    // interval, the first token with the new kid waits for one refetch and
    // authenticates: no refusal, no restart.
    idp.publish(jwks(&[ec_jwk("new")]));
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let before = idp.hits();
    let new = ec_token("new", "bob");
    assert_eq!(auth(server.ws_addr, &new).await, Ok("bob".to_owned()));
    assert_eq!(idp.hits() - before, 1, "one refetch, no restart");
    // The old token was verified (and cached) before: the retired key's
    // tokens no longer verify.
    assert_eq!(
        auth(server.ws_addr, &old).await,
        Err("AUTH_FAILED".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_control_max_age_sets_the_refresh_within_its_bounds() {
    // Without max-age, jwks_refresh_s (1 s here) applies.
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let mut c = config(&url);
    c.jwt.jwks_refresh_s = 1;
    let server = common::server(c.clone()).await;
    until("a scheduled refresh", || idp.hits() >= 3).await;
    server.shutdown().await;

    // max-age=1 is raised to the 60 s floor: no refresh within a few seconds,
    // although jwks_refresh_s is 1.
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    idp.set(|a| a.cache_control = Some("public, max-age=1"));
    c.jwt.jwks_url = Some(url);
    let server = common::server(c).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(idp.hits(), 1, "max-age (bounded to 60 s) wins over 1 s");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_at_most_once_per_min_refetch() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let mut c = config(&url);
    c.validate(false).expect("valid");
    c.jwt.jwks_min_refetch_s = 1;
    let keys = KeySource::from_config(&c, None).await.expect("keys");
    let after_start = idp.hits();
    assert_eq!(after_start, 1);
    let started = Instant::now();
    for batch in 0..100 {
        for i in 0..100 {
            let kid = format!("random-{batch}-{i}-{}", rand_u64());
            assert_eq!(
                keys.verify(&forged(&kid), common::now_ms()).await.err(),
                Some(TokenError::UnknownKid)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Let a fetch asked for at the end land before counting.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let refetches = idp.hits() - after_start;
    assert!(refetches >= 1, "the unknown kids asked for no refetch");
    assert!(
        refetches as f64 <= elapsed / 1.0 + 1.0,
        "{refetches} refetches in {elapsed:.1} s with jwks_min_refetch_s = 1"
    );
    // The known key still verifies.
    assert!(
        keys.verify(&ec_token("k", "alice"), common::now_ms())
            .await
            .is_ok()
    );
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_slow_refetch_keeps_the_old_keys_and_is_counted() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let server = common::server(config(&url)).await;
    let token = ec_token("k", "alice");

    idp.set(|a| a.status = StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        auth(server.ws_addr, &forged("unknown")).await,
        Err("AUTH_FAILED".to_owned())
    );
    until("the failed refetch", || {
        fetches(&server, "http_error") >= 1.0
    })
    .await;
    assert_eq!(auth(server.ws_addr, &token).await, Ok("alice".to_owned()));
    assert_eq!(fetches(&server, "ok"), 1.0);
    assert_eq!(sample(&server.metrics.render(0), "wsauth_jwks_keys"), 1.0);

    // A slow provider (5 s): an unknown kid waits for the refetch at most
    // UNKNOWN_KID_WAIT (3 s), then is refused; a known key does not wait at all.
    idp.set(|a| {
        a.status = StatusCode::OK;
        a.delay = Duration::from_secs(5);
    });
    let hits = idp.hits();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let addr = server.ws_addr;
    let unknown = tokio::spawn(async move { auth(addr, &forged("unknown-2")).await });
    until("the slow refetch to start", || idp.hits() > hits).await;
    assert_eq!(auth(server.ws_addr, &token).await, Ok("alice".to_owned()));
    assert!(!unknown.is_finished(), "the unknown kid did not wait");
    assert_eq!(
        unknown.await.expect("auth task"),
        Err("AUTH_FAILED".to_owned())
    );
    assert_eq!(
        fetches(&server, "ok"),
        1.0,
        "the unknown kid waited for the whole slow fetch"
    );
    until("the slow refetch to end", || fetches(&server, "ok") >= 2.0).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_documents_are_refused_and_the_old_keys_stay() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let mut c = config(&url);
    c.jwt.jwks_min_refetch_s = 1;
    let keys = KeySource::from_config(&c, None).await.expect("keys");
    let metrics = keys.jwks_metrics();
    let token = ec_token("k", "alice");
    let huge = format!("{}{}", jwks(&[ec_jwk("k")]), " ".repeat(1024 * 1024 + 1));
    let many: Vec<Value> = (0..101).map(|i| ec_jwk(&format!("k{i}"))).collect();
    let mut enc = ec_jwk("k");
    enc["use"] = json!("enc");
    let mut encrypt_ops = ec_jwk("k");
    encrypt_ops["key_ops"] = json!(["encrypt"]);
    let mut oaep = jwk("rsa.pub.pem", Algorithm::RS256, "k");
    oaep["alg"] = json!("RSA-OAEP");
    let hostile: Vec<(&str, String, &str)> = vec![
        ("over 1 MiB", huge, "too_large"),
        ("101 keys", jwks(&many), "invalid"),
        (
            "an oct key",
            jwks(&[
                ec_jwk("k"),
                json!({"kty": "oct", "kid": "s", "k": b64url(&[1; 32])}),
            ]),
            "invalid",
        ),
        (
            "RSA 1024",
            jwks(&[jwk("rsa1024.pub.pem", Algorithm::RS256, "k")]),
            "invalid",
        ),
        (
            "a duplicate kid",
            jwks(&[ec_jwk("k"), ec_jwk("k")]),
            "invalid",
        ),
        ("use: enc only", jwks(&[enc]), "invalid"),
        ("key_ops without verify", jwks(&[encrypt_ops]), "invalid"),
        ("an encryption alg", jwks(&[oaep]), "invalid"),
        ("not JSON", "<html>".to_owned(), "invalid"),
    ];
    for (what, body, outcome) in hostile {
        idp.publish(body);
        let before = metrics.count(outcome);
        let hits = idp.hits();
        // Each refusal of an unknown kid asks; the source fetches once a second.
        let deadline = Instant::now() + WAIT * 2;
        while metrics.count(outcome) == before {
            assert!(
                Instant::now() < deadline,
                "{what}: not refused as {outcome}"
            );
            let _ = keys.verify(&forged("unknown"), common::now_ms()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(idp.hits() > hits);
        assert!(
            keys.verify(&token, common::now_ms()).await.is_ok(),
            "{what}: the old key was dropped"
        );
    }
    assert_eq!(metrics.count("ok"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_first_fetch_stops_the_start_unless_told_to_start_without_keys() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    idp.set(|a| a.status = StatusCode::SERVICE_UNAVAILABLE);
    let c = config(&url);
    c.validate(false).expect("valid");
    let Err(StartError::Keys(message)) = wsauth_server::start(c.clone(), None).await else {
        panic!("started without its keys");
    };
    for part in [
        "jwks_url",
        "first fetch failed",
        "503",
        "jwks_start_without_keys",
    ] {
        assert!(message.contains(part), "{part} not in: {message}");
    }

    // Nobody listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nobody = format!("http://{}/jwks", closed.local_addr().expect("addr"));
    drop(closed);
    let Err(StartError::Keys(message)) = wsauth_server::start(config(&nobody), None).await else {
        panic!("started without its keys");
    };
    assert!(message.contains("request failed"), "{message}");

    let mut c = c;
    c.jwt.jwks_start_without_keys = true;
    let server = common::server(c).await;
    let token = ec_token("k", "alice");
    assert_eq!(
        auth(server.ws_addr, &token).await,
        Err("AUTH_FAILED".to_owned())
    );
    let (status, _) = http(server.admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "not ready without the provider's keys");
    idp.set(|a| a.status = StatusCode::OK);
    assert_eq!(auth_eventually(server.ws_addr, &token).await, "alice");
    let (status, _) = http(server.admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_once_the_keys_are_older_than_max_stale() {
    let (idp, url) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let mut c = config(&url);
    c.jwt.jwks_max_stale_s = 3;
    let server = common::server(c).await;
    let readyz = || async { http(server.admin_addr, "GET", "/readyz", None, None).await };
    assert_eq!(readyz().await.0, 200);
    idp.set(|a| a.status = StatusCode::BAD_GATEWAY);
    let deadline = Instant::now() + WAIT * 2;
    let body = loop {
        let (status, body) = readyz().await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.contains("jwks_max_stale_s"), "{body}");
    // Still verifying with the stale keys.
    assert_eq!(
        auth(server.ws_addr, &ec_token("k", "alice")).await,
        Ok("alice".to_owned())
    );
    // A good fetch (asked for by an unknown kid) makes it ready again.
    idp.set(|a| a.status = StatusCode::OK);
    let deadline = Instant::now() + WAIT * 2;
    while readyz().await.0 != 200 {
        assert!(Instant::now() < deadline, "not ready again");
        let _ = auth(server.ws_addr, &forged("unknown")).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}
