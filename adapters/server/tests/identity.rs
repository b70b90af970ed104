//! Identity providers beyond one JWKS URL: several issuers routed by `iss`
//! before any `kid`, OpenID Connect discovery, opaque tokens by introspection
//! (RFC 7662), and an embedder's own verifier. The provider is the test's
//! (`idp/mod.rs`); keys are the verifier tests' (`core/testdata/keys`).

#[path = "../../../tests/common/mod.rs"]
mod common;
mod idp;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Client, now_s};
use idp::{DISCOVERY, INTROSPECT, Idp, auth, ec_jwk, jwk, jwks, key_file, sample};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};
use tempfile::NamedTempFile;
use wsauth_core::jwt::{Claims, TokenError, sign, sign_hs256};
use wsauth_server::config::{Config, IssuerConfig};
use wsauth_server::{KeySource, StartError, TokenVerifier, VerifyFuture};

fn rsa_token(kid: &str, claims: Value) -> String {
    let key = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    sign(&key, Algorithm::RS256, Some(kid), &claims).expect("sign")
}

fn ec_token_for(kid: &str, claims: Value) -> String {
    let key = EncodingKey::from_ec_pem(&key_file("p256.key")).expect("p256");
    sign(&key, Algorithm::ES256, Some(kid), &claims).expect("sign")
}

fn claims(sub: &str, iss: &str) -> Value {
    json!({"sub": sub, "iss": iss, "exp": now_s() + 3600, "iat": now_s()})
}

fn file(text: &str) -> NamedTempFile {
    let f = tempfile::Builder::new()
        .suffix(".json")
        .tempfile()
        .expect("file");
    std::fs::write(f.path(), text).expect("write");
    f
}

/// No key in `[jwt]`: only what the test adds.
fn bare_config() -> Config {
    let mut c = common::test_config();
    c.jwt.hs256_secret = None;
    c
}

const A: &str = "https://a.example/";
const B: &str = "https://b.example/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kid_of_one_issuer_never_selects_another_issuers_key() {
    // Both issuers publish a key with kid "shared": A an EC key, B an RSA key.
    let a_keys = file(&jwks(&[ec_jwk("shared")]));
    let b_keys = file(&jwks(&[jwk("rsa.pub.pem", Algorithm::RS256, "shared")]));
    let mut c = bare_config();
    for (issuer, keys) in [(A, &a_keys), (B, &b_keys)] {
        c.jwt.issuers.push(IssuerConfig {
            issuer: Some(issuer.to_owned()),
            jwks_file: Some(keys.path().to_owned()),
            ..IssuerConfig::default()
        });
    }
    c.validate(false).expect("valid");
    let keys = KeySource::from_config(&c, None).await.expect("keys");
    let now = common::now_ms();

    // Each issuer's own tokens verify.
    let from_a = ec_token_for("shared", claims("alice", A));
    let from_b = rsa_token("shared", claims("bob", B));
    assert_eq!(keys.verify(&from_a, now).await.expect("A").sub, "alice");
    assert_eq!(keys.verify(&from_b, now).await.expect("B").sub, "bob");

    // A token claiming issuer A, with A's kid, signed by B's key: checked with
    // A's keys only, so refused (a key set keyed by kid alone would accept it).
    let forged = rsa_token("shared", claims("mallory", A));
    assert_eq!(
        keys.verify(&forged, now).await.err(),
        Some(TokenError::NoMatchingKey)
    );
    // An issuer nobody configured, and no `[jwt]` keys: refused.
    let stranger = rsa_token("shared", claims("eve", "https://c.example/"));
    assert_eq!(
        keys.verify(&stranger, now).await.err(),
        Some(TokenError::WrongIssuer)
    );

    // The same over a WebSocket.
    let server = common::server(c).await;
    assert_eq!(auth(server.ws_addr, &from_b).await, Ok("bob".to_owned()));
    assert_eq!(
        auth(server.ws_addr, &forged).await,
        Err("AUTH_FAILED".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_no_issuer_entry_takes_go_to_the_jwt_section_keys_unchanged() {
    let b_keys = file(&jwks(&[jwk("rsa.pub.pem", Algorithm::RS256, "b-1")]));
    let mut c = common::test_config();
    c.jwt.issuers.push(IssuerConfig {
        issuer: Some(B.to_owned()),
        jwks_file: Some(b_keys.path().to_owned()),
        ..IssuerConfig::default()
    });
    let server = common::server(c).await;
    // The section's HMAC secret still verifies the tokens it always did.
    assert_eq!(
        auth(server.ws_addr, &common::token("carol", json!({}))).await,
        Ok("carol".to_owned())
    );
    // A token claiming issuer B is checked with B's keys, never the secret.
    let hs_as_b = sign_hs256(common::SECRET.as_bytes(), &claims("mallory", B));
    assert_eq!(
        auth(server.ws_addr, &hs_as_b).await,
        Err("AUTH_FAILED".to_owned())
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entries_for_one_issuer_are_a_configuration_error() {
    let keys = file(&jwks(&[ec_jwk("k")]));
    let entry = |issuer: &str| IssuerConfig {
        issuer: Some(issuer.to_owned()),
        jwks_file: Some(keys.path().to_owned()),
        ..IssuerConfig::default()
    };
    let refusal = |change: &dyn Fn(&mut Config)| {
        let mut c = common::test_config();
        change(&mut c);
        c.validate(false).expect_err("refused").to_string()
    };
    let twice = refusal(&|c| c.jwt.issuers = vec![entry(A), entry(A)]);
    assert!(twice.contains("entry 2 repeats the issuer"), "{twice}");
    let as_section = refusal(&|c| {
        c.jwt.issuer = Some(A.to_owned());
        c.jwt.issuers = vec![entry(A)];
    });
    assert!(
        as_section.contains("entry 1 repeats the issuer"),
        "{as_section}"
    );
    let keyless = refusal(&|c| {
        c.jwt.issuers = vec![IssuerConfig {
            issuer: Some(B.to_owned()),
            ..IssuerConfig::default()
        }]
    });
    assert!(keyless.contains("entry 1 has no key source"), "{keyless}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_the_jwks_and_requires_the_exact_issuer() {
    let (idp, _) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let issuer = idp.base.clone();
    idp.discover_as(&issuer);
    let mut c = bare_config();
    c.jwt.oidc_issuer = Some(issuer.clone());
    let server = common::server(c.clone()).await;
    assert_eq!(idp.hits_at(DISCOVERY), 1);
    assert_eq!(idp.hits(), 1, "the JWKS the document names was fetched");
    assert_eq!(
        auth(server.ws_addr, &ec_token_for("k", claims("alice", &issuer))).await,
        Ok("alice".to_owned())
    );
    // The discovered issuer is required of tokens.
    assert_eq!(
        auth(server.ws_addr, &ec_token_for("k", claims("alice", A))).await,
        Err("AUTH_FAILED".to_owned())
    );
    server.shutdown().await;

    // The document's issuer differs by a trailing slash: the start fails.
    c.jwt.oidc_issuer = Some(format!("{issuer}/"));
    let Err(StartError::Keys(message)) = wsauth_server::start(c.clone(), None).await else {
        panic!("started with a mismatched issuer");
    };
    assert!(message.contains("jwt.oidc_issuer"), "{message}");
    assert!(message.contains("trailing slash"), "{message}");

    // A document naming a JWKS over plain HTTP off loopback is refused.
    idp.set_at(DISCOVERY, |a| {
        a.body = json!({"issuer": issuer, "jwks_uri": "http://keys.example/jwks"}).to_string();
    });
    c.jwt.oidc_issuer = Some(issuer.clone());
    let Err(StartError::Keys(message)) = wsauth_server::start(c, None).await else {
        panic!("started with a cleartext jwks_uri");
    };
    assert!(message.contains("jwks_uri must be https://"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_jwks_fetch_discovers_again() {
    let (idp, _) = Idp::start(jwks(&[ec_jwk("k")])).await;
    let issuer = idp.base.clone();
    idp.discover_as(&issuer);
    let mut c = bare_config();
    c.jwt.oidc_issuer = Some(issuer.clone());
    c.jwt.jwks_min_refetch_s = 1;
    let server = common::server(c).await;
    // The provider moves its keys: the old JWKS URL answers 404.
    idp.set(|a| a.status = StatusCode::NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _ = auth(
        server.ws_addr,
        &ec_token_for("unknown", claims("x", &issuer)),
    )
    .await;
    idp::until("a failed fetch", || idp.hits() >= 2).await;
    idp.set(|a| a.status = StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let _ = auth(
        server.ws_addr,
        &ec_token_for("unknown", claims("x", &issuer)),
    )
    .await;
    idp::until("discovery again", || idp.hits_at(DISCOVERY) >= 2).await;
    server.shutdown().await;
}

/// A configuration whose only verifier is the provider's introspection
/// endpoint, with client credentials the provider checks.
fn introspection_config(idp: &Idp) -> Config {
    let mut c = bare_config();
    c.jwt.introspection_url = Some(format!("{}{INTROSPECT}", idp.base));
    c.jwt.introspection_client_id = Some("wsauth".to_owned());
    c.jwt.introspection_client_secret = Some("s3cret".to_owned());
    c.jwt.introspection_timeout_ms = 500;
    // Basic base64("wsauth:s3cret").
    *idp.introspection_auth.lock().expect("auth") = Some("Basic d3NhdXRoOnMzY3JldA==".to_owned());
    idp.set_at(INTROSPECT, |_| {});
    c
}

fn introspected(server: &wsauth_server::ServerHandle, outcome: &str) -> f64 {
    sample(
        &server.metrics.render(0),
        &format!("wsauth_introspection_requests_total{{outcome=\"{outcome}\"}}"),
    )
}

/// Authenticates `token`, expecting a fatal error: its code and close code.
async fn refused(addr: std::net::SocketAddr, token: &str) -> (String, u16) {
    let mut c = Client::connect(addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": token}))
        .await;
    let reply = c.recv().await;
    let code = reply["code"].as_str().unwrap_or("?").to_owned();
    let (_, ended) = c.until_closed().await;
    let close = match ended {
        common::Ended::Close(code) => code,
        common::Ended::NoCloseFrame => 0,
    };
    (code, close)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tokens_are_introspected_active_inactive_unreachable_and_slow() {
    let (idp, _) = Idp::start(jwks(&[])).await;
    let c = introspection_config(&idp);
    let token = "2YotnFZFEjr1zCsicMWpAA";
    idp.introspected.lock().expect("map").insert(
        token.to_owned(),
        json!({"active": true, "sub": "carol", "exp": now_s() + 3600, "scope": "chat",
               "client_id": "web"})
        .to_string(),
    );
    let server = common::server(c.clone()).await;

    // Active: authenticated, then answered from the cache.
    assert_eq!(auth(server.ws_addr, token).await, Ok("carol".to_owned()));
    let hits = idp.hits_at(INTROSPECT);
    assert_eq!(auth(server.ws_addr, token).await, Ok("carol".to_owned()));
    assert_eq!(idp.hits_at(INTROSPECT), hits, "the second use was cached");
    assert_eq!(introspected(&server, "active"), 1.0);

    // Inactive (the provider knows no such token): AUTH_FAILED, not cached.
    assert_eq!(
        refused(server.ws_addr, "revoked-or-unknown").await,
        ("AUTH_FAILED".to_owned(), 4401)
    );
    assert_eq!(introspected(&server, "inactive"), 1.0);

    // Slow (past introspection_timeout_ms): fails closed with INTERNAL.
    idp.set_at(INTROSPECT, |a| a.delay = Duration::from_secs(2));
    assert_eq!(
        refused(server.ws_addr, "slow-token").await,
        ("INTERNAL".to_owned(), 1011)
    );
    // Broken (500): INTERNAL.
    idp.set_at(INTROSPECT, |a| {
        a.delay = Duration::ZERO;
        a.status = StatusCode::INTERNAL_SERVER_ERROR;
    });
    assert_eq!(
        refused(server.ws_addr, "another-token").await,
        ("INTERNAL".to_owned(), 1011)
    );
    assert_eq!(introspected(&server, "error"), 2.0);
    // The cached token still authenticates while the endpoint is down.
    assert_eq!(auth(server.ws_addr, token).await, Ok("carol".to_owned()));
    server.shutdown().await;

    // Wrong client credentials (401) and an unreachable endpoint: INTERNAL.
    let mut wrong = c.clone();
    wrong.jwt.introspection_client_secret = Some("wrong".to_owned());
    idp.set_at(INTROSPECT, |a| a.status = StatusCode::OK);
    let server = common::server(wrong).await;
    assert_eq!(
        refused(server.ws_addr, token).await,
        ("INTERNAL".to_owned(), 1011)
    );
    server.shutdown().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut unreachable = c;
    unreachable.jwt.introspection_url = Some(format!(
        "http://{}/introspect",
        closed.local_addr().expect("addr")
    ));
    drop(closed);
    let server = common::server(unreachable).await;
    assert_eq!(
        refused(server.ws_addr, token).await,
        ("INTERNAL".to_owned(), 1011)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_jwt_keys_too_only_opaque_tokens_are_introspected() {
    let (idp, _) = Idp::start(jwks(&[])).await;
    let mut c = introspection_config(&idp);
    c.jwt.hs256_secret = Some(common::SECRET.to_owned());
    idp.introspected.lock().expect("map").insert(
        "opaque".to_owned(),
        json!({"active": true, "sub": "dave", "exp": now_s() + 3600}).to_string(),
    );
    let server = common::server(c).await;
    assert_eq!(
        auth(server.ws_addr, &common::token("erin", json!({}))).await,
        Ok("erin".to_owned())
    );
    assert_eq!(idp.hits_at(INTROSPECT), 0, "a JWT went to the JWT path");
    assert_eq!(auth(server.ws_addr, "opaque").await, Ok("dave".to_owned()));
    assert_eq!(idp.hits_at(INTROSPECT), 1);
    // A forged JWT is refused by the keys, never introspected.
    assert_eq!(
        auth(server.ws_addr, &sign_hs256(&[9; 32], &claims("x", A))).await,
        Err("AUTH_FAILED".to_owned())
    );
    assert_eq!(idp.hits_at(INTROSPECT), 1);
    server.shutdown().await;
}

/// An embedder's verifier that asks a (pretend) remote service: it takes a
/// while, and knows one token.
struct RemoteCheck;

impl TokenVerifier for RemoteCheck {
    fn verify<'a>(&'a self, token: &'a str, now_ms: u64) -> VerifyFuture<'a> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            match token {
                "let-me-in" => Ok(Arc::new(Claims::new("frank", now_ms + 3_600_000))),
                "down" => Err(TokenError::Unavailable),
                _ => Err(TokenError::Inactive),
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_verifier_answers_on_its_own_task() {
    let config = common::test_config();
    let hub = wsauth_store::hub::Hub::new(config.limits.outbound_queue);
    let store = Arc::new(wsauth_store::MemoryStore::new(
        wsauth_server::server::store_settings(&config),
        hub.clone() as Arc<dyn wsauth_store::Notify>,
    ));
    let server = wsauth_server::server::start_with_keys(
        config,
        KeySource::custom(RemoteCheck),
        hub,
        store,
        wsauth_server::App::new(),
    )
    .await
    .expect("server starts");
    assert_eq!(
        auth(server.ws_addr, "let-me-in").await,
        Ok("frank".to_owned())
    );
    assert_eq!(
        refused(server.ws_addr, "nope").await,
        ("AUTH_FAILED".to_owned(), 4401)
    );
    assert_eq!(
        refused(server.ws_addr, "down").await,
        ("INTERNAL".to_owned(), 1011)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_rereads_every_issuers_files_all_or_nothing() {
    let a_keys = file(&jwks(&[ec_jwk("a-1")]));
    let b_keys = file(&jwks(&[jwk("rsa.pub.pem", Algorithm::RS256, "b-1")]));
    let mut c = common::test_config();
    for (issuer, keys) in [(A, &a_keys), (B, &b_keys)] {
        c.jwt.issuers.push(IssuerConfig {
            issuer: Some(issuer.to_owned()),
            jwks_file: Some(keys.path().to_owned()),
            ..IssuerConfig::default()
        });
    }
    c.validate(false).expect("valid");
    let keys = KeySource::from_config(&c, None).await.expect("keys");
    let now = common::now_ms();
    let b_old = rsa_token("b-1", claims("bob", B));
    let b_new = rsa_token("b-2", claims("bob", B));
    assert!(keys.verify(&b_old, now).await.is_ok());

    // B rotates its file; A's file is now broken: nothing changes.
    std::fs::write(
        b_keys.path(),
        jwks(&[jwk("rsa.pub.pem", Algorithm::RS256, "b-2")]),
    )
    .expect("write");
    std::fs::write(a_keys.path(), "{not json").expect("write");
    let refused = TokenVerifier::reload(&keys).expect_err("a broken file is refused");
    assert!(refused.contains("jwt.issuers entry 1"), "{refused}");
    assert!(keys.verify(&b_old, now).await.is_ok(), "the old keys stay");

    // A's file repaired: both are re-read.
    std::fs::write(a_keys.path(), jwks(&[ec_jwk("a-1")])).expect("write");
    assert_eq!(TokenVerifier::reload(&keys), Ok(true));
    assert!(keys.verify(&b_new, now).await.is_ok());
    assert_eq!(
        keys.verify(&b_old, now).await.err(),
        Some(TokenError::UnknownKid)
    );
}
