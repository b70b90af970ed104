//! Core benches: message decode, a full authentication pass through the machine
//! (signature check excluded), token verification per algorithm, and the
//! server's key sources (a key file against a JWKS URL, issue 14).
//!
//! Run: `cargo bench -p wsauth --bench core`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use wsauth::jwt::Claims;
use wsauth::{
    Attachment, Connection, Input, Output, Reply, Secret, SessionConfig, StoreRequest,
    decode_client_message,
};

const NOW: u64 = 1_767_225_600_000;

fn decode(c: &mut Criterion) {
    let publish = r#"{"type":"publish","id":4,"channel":"team:42","data":{"text":"hello, team","at":1767225600000}}"#;
    let join = r#"{"type":"join","id":2,"channel":"team:42"}"#;
    c.bench_function("decode/publish", |b| {
        b.iter(|| decode_client_message(black_box(publish), 65_536).expect("decodes"))
    });
    c.bench_function("decode/join", |b| {
        b.iter(|| decode_client_message(black_box(join), 65_536).expect("decodes"))
    });
}

/// One connection from open to `authenticated`: decode `auth`, ask for verification,
/// take the verified claims, ask the store, take the session, emit `authenticated`.
fn auth_pass(c: &mut Criterion) {
    let config = Arc::new(SessionConfig::default());
    let mut claims = Claims::new("alice", NOW + 3_600_000);
    claims.channels = Some(vec!["general".into(), "team:*".into()]);
    let claims = Arc::new(claims);
    let auth = r#"{"type":"auth","id":1,"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"}"#;
    c.bench_function("machine/auth_pass", |b| {
        b.iter(|| {
            let mut conn = Connection::new(config.clone(), NOW);
            conn.handle(NOW, Input::Frame(wsauth::Frame::Text(black_box(auth))));
            let Some(Output::Verify { request, .. }) = conn.poll_output() else {
                panic!("expected a verify request")
            };
            conn.handle(NOW, Input::Reply(request, Reply::Verified(claims.clone())));
            let Some(Output::Store(StoreRequest::CreateSession { request, .. })) =
                conn.poll_output()
            else {
                panic!("expected a create request")
            };
            let created = Reply::Created {
                attachment: Attachment {
                    session_id: "s_Zm9vYmFyYmF6cXV4".into(),
                    epoch: 1,
                },
                resume_token: Secret::new("r_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFy"),
                evicted: 0,
            };
            conn.handle(NOW, Input::Reply(request, created));
            let mut sent = 0;
            while let Some(out) = conn.poll_output() {
                if let Output::Send(msg) = out {
                    black_box(msg.to_json());
                    sent += 1;
                }
            }
            assert_eq!(sent, 1);
            conn
        })
    });
}

fn key_file(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/core/testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

/// Token verification per algorithm, with a typical 6-claim payload.
fn verify(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, EncodingKey};
    use wsauth::jwt::{KeySet, Verifier, VerifierConfig, sign};
    let secret = b"bench-secret-of-at-least-32-bytes-long";
    let claims = serde_json::json!({
        "sub": "alice", "exp": NOW / 1000 + 3600, "iat": NOW / 1000, "jti": "0f8a7c31",
        "iss": "https://idp.example", "channels": ["general", "team:*", "user:{sub}"]
    });
    let hs = EncodingKey::from_secret(secret).expect("hs");
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let ec = EncodingKey::from_ec_pem(&key_file("p256.key")).expect("ec");
    let ed = EncodingKey::from_ed_pem(&key_file("ed25519.key")).expect("ed");
    // (name, algorithm, signing key, public key file; None: the HMAC secret)
    let cases = [
        ("HS256", Algorithm::HS256, &hs, None),
        ("RS256", Algorithm::RS256, &rsa, Some("rsa.pub.pem")),
        ("ES256", Algorithm::ES256, &ec, Some("p256.pub.pem")),
        ("EdDSA", Algorithm::EdDSA, &ed, Some("ed25519.pub.pem")),
    ];
    for (name, alg, key, public) in cases {
        let mut keys = KeySet::new();
        match public {
            None => keys.add_hmac_secret(None, secret).expect("hs"),
            Some(file) => keys
                .add_public_key_pem(None, &key_file(file))
                .expect("public key"),
        }
        let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
        let token = sign(key, alg, None, &claims).expect("sign");
        c.bench_function(&format!("verify/{name}"), |b| {
            b.iter(|| verifier.verify(black_box(&token), NOW).expect("valid"))
        });
        if public.is_some() {
            // The same token again, answered by the validation cache.
            let cache = std::sync::Mutex::new(wsauth::jwt::VerifyCache::new(10_000));
            verifier.verify_cached(&token, NOW, &cache).expect("valid");
            c.bench_function(&format!("verify_cached/{name}"), |b| {
                b.iter(|| {
                    verifier
                        .verify_cached(black_box(&token), NOW, &cache)
                        .expect("valid")
                })
            });
        }
    }
}

/// The server's verifier as `KeySource::from_config` builds it, through the
/// synchronous fast path (`TokenVerifier::verify_now`) every token takes: an
/// RS256 key from a PEM file against the same key fetched from a JWKS URL (a
/// small HTTP server on loopback, started here), each with its validation
/// cache hit (`_cached`) and with the cache off (`_cold`:
/// `jwt.verify_cache_entries = 0`, so each call decodes the header, looks the
/// key up, checks the RSA signature and the claims; the cache key is still
/// computed and looked up, as on a real miss; only the insert is skipped). And a
/// token whose `kid` the JWKS does not hold, within `jwt.jwks_min_refetch_s`
/// of the last fetch: refused at once, without waiting on a refetch.
fn key_source(c: &mut Criterion) {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
    use wsauth::jwt::{TokenError, b64url, sign};
    use wsauth_server::config::Config;
    use wsauth_server::{KeySource, TokenVerifier};

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let public = DecodingKey::from_rsa_pem(&key_file("rsa.pub.pem")).expect("rsa public");
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_decoding_key(&public, Some(Algorithm::RS256)).expect("jwk"),
    )
    .expect("json");
    jwk["kid"] = "bench-rsa".into();
    let jwks = serde_json::json!({ "keys": [jwk] }).to_string();
    let url = runtime.block_on(async move {
        let app = axum::Router::new().route("/jwks", axum::routing::get(move || async { jwks }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    });
    let build = |jwks_url: bool, cache_entries: usize| {
        let mut config = Config::default();
        if jwks_url {
            config.jwt.jwks_url = Some(url.clone());
        } else {
            config.jwt.public_key_files = vec![
                format!(
                    "{}/core/testdata/keys/rsa.pub.pem",
                    env!("CARGO_MANIFEST_DIR")
                )
                .into(),
            ];
        }
        config.jwt.verify_cache_entries = cache_entries;
        // No refetch within the run: an unknown kid is always refused at once.
        config.jwt.jwks_min_refetch_s = 3600;
        runtime
            .block_on(KeySource::from_config(&config, None))
            .expect("key source")
    };
    let rsa = EncodingKey::from_rsa_pem(&key_file("rsa.key")).expect("rsa");
    let claims = serde_json::json!({
        "sub": "alice", "exp": NOW / 1000 + 3600, "iat": NOW / 1000, "jti": "0f8a7c31",
        "iss": "https://idp.example", "channels": ["general", "team:*", "user:{sub}"]
    });
    // (name, from the JWKS URL, the kid the key has there: a file's stem)
    for (name, jwks_url, kid) in [
        ("rs256_file", false, "rsa.pub"),
        ("rs256_jwks_url", true, "bench-rsa"),
    ] {
        let token = sign(&rsa, Algorithm::RS256, Some(kid), &claims).expect("sign");
        for (suffix, cache_entries) in [("cached", 10_000), ("cold", 0)] {
            let source = build(jwks_url, cache_entries);
            let verify = || {
                source
                    .verify_now(black_box(&token), NOW)
                    .expect("answered now")
                    .expect("valid")
            };
            verify();
            c.bench_function(&format!("key_source/{name}_{suffix}"), |b| b.iter(verify));
        }
    }
    // Tokens with kids the JWKS does not hold (a flood's), a fresh one each call.
    let source = build(true, 10_000);
    let forged: Vec<String> = (0..1024)
        .map(|i| {
            let header = serde_json::json!({"alg": "RS256", "kid": format!("unknown-{i:04}")});
            format!(
                "{}.{}.{}",
                b64url(header.to_string().as_bytes()),
                b64url(claims.to_string().as_bytes()),
                b64url(&[7u8; 256])
            )
        })
        .collect();
    let mut next = 0;
    c.bench_function("key_source/unknown_kid_refused", |b| {
        b.iter(|| {
            next = (next + 1) % forged.len();
            let answer = source.verify_now(black_box(&forged[next]), NOW);
            assert!(matches!(answer, Some(Err(TokenError::UnknownKid))));
        })
    });
}

criterion_group!(benches, decode, auth_pass, verify, key_source);
criterion_main!(benches);
