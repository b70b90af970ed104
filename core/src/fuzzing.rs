//! Fuzz target bodies, compiled with the `fuzzing` feature. Each `fuzz/` target is a
//! one-line call into here, and `core/tests/fuzz_corpus.rs` replays every corpus file
//! through the same functions on stable, so a crash found once stays fixed.

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

use crate::jwt::{Claims, KeySet, TokenError, Verifier, VerifierConfig, b64url};
use crate::upgrade::{UpgradeDecision, UpgradePolicy, inspect_upgrade};
use crate::{ErrorCode, decode_client_message};

/// Target 1: the client message decoder on arbitrary bytes. Never panics; whatever
/// decodes re-encodes and decodes to the same value.
pub fn decode(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match decode_client_message(text, 64 * 1024) {
        Ok(msg) => {
            // Read as a map of anything: a JSON array cannot pass, while numbers beyond
            // f64 (valid JSON, which `Value` refuses) can.
            type AnyObject = std::collections::BTreeMap<String, serde::de::IgnoredAny>;
            assert!(
                serde_json::from_str::<AnyObject>(text).is_ok(),
                "only a JSON object decodes"
            );
            let again = decode_client_message(&msg.to_json(), usize::MAX);
            assert_eq!(
                again.as_ref(),
                Ok(&msg),
                "a decoded message must survive a round trip"
            );
        }
        Err(e) => {
            assert!(
                matches!(e.code, ErrorCode::BadRequest | ErrorCode::MessageTooLarge),
                "decode errors are BAD_REQUEST or MESSAGE_TOO_LARGE"
            );
            // The reason is one of ours: it never quotes the input.
            assert!(e.reason.len() < 120, "reason too long: {}", e.reason);
        }
    }
}

/// Target 2: the upgrade request decisions on arbitrary header sets.
pub fn upgrade(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(headers) = Vec::<(String, Vec<u8>)>::arbitrary(&mut u) else {
        return;
    };
    let query: Option<String> = Option::arbitrary(&mut u).unwrap_or(None);
    let allow_query_token = bool::arbitrary(&mut u).unwrap_or(false);
    let allowed_origins: Vec<String> = Vec::arbitrary(&mut u).unwrap_or_default();
    let policy = UpgradePolicy {
        allowed_origins: allowed_origins.clone(),
        allow_query_token,
    };
    let decision = inspect_upgrade(
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
        query.as_deref(),
        &policy,
    );
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
    };
    let has_auth = named("authorization").next().is_some();
    // 400 exactly when a header that must appear once repeats, or the key is malformed.
    let malformed = ["authorization", "origin", "sec-websocket-key"]
        .iter()
        .any(|h| named(h).count() > 1)
        || named("sec-websocket-key").any(|(_, k)| !crate::upgrade::is_websocket_key(k));
    match decision {
        UpgradeDecision::Refuse { status, body } => {
            assert_eq!(status == 400, malformed, "400 exactly for a malformed head");
            assert!(
                matches!(status, 400 | 401 | 403),
                "refusals are 400, 401 or 403"
            );
            assert_eq!(status, body.code.http_status());
            if status == 403 {
                assert!(!allowed_origins.is_empty(), "403 only with an allow-list");
            }
        }
        UpgradeDecision::Proceed { subprotocol, token } => {
            assert!(!malformed, "a malformed head is never upgraded");
            if let Some(p) = subprotocol {
                assert_eq!(p, "wsauth.v1");
            }
            match token {
                Some((crate::AuthMethod::Header, t)) => {
                    assert!(has_auth, "a header token needs an Authorization header");
                    assert!(!t.expose().is_empty() && !t.expose().contains(char::is_whitespace));
                }
                Some((crate::AuthMethod::Query, _)) => {
                    assert!(
                        allow_query_token && !has_auth,
                        "a query token only when enabled, header first"
                    );
                }
                Some(_) => panic!("the upgrade only yields header or query tokens"),
                None => assert!(!has_auth, "an Authorization header is used or refused"),
            }
        }
    }
}

const FUZZ_SECRET: &[u8] = b"fuzzing-secret-of-at-least-32-bytes!";
/// The fuzz targets' fixed "now", in seconds (2026-01-01T00:00:00Z).
pub const FUZZ_NOW_S: u64 = 1_767_225_600;

fn fuzz_verifier(config: VerifierConfig) -> Verifier {
    let mut keys = KeySet::new();
    // A fixed secret of valid length cannot fail to load.
    let _ = keys.add_hmac_secret(None, FUZZ_SECRET);
    match Verifier::new(keys, config) {
        Ok(v) => v,
        Err(e) => panic!("the fuzz verifier must build: {e}"),
    }
}

/// A header and claims as JSON members, for target 4's structured half.
#[derive(Debug, Arbitrary)]
pub struct TokenParts {
    header: Vec<(String, JsonLeaf)>,
    claims: Vec<(String, JsonLeaf)>,
    alg: u8,
    tamper: bool,
    now_offset_s: i32,
    require_iss: bool,
}

/// A JSON value, kept small.
#[derive(Debug, Arbitrary)]
pub enum JsonLeaf {
    /// `null`
    Null,
    /// a boolean
    Bool(bool),
    /// an integer
    Int(i64),
    /// a float
    Float(f64),
    /// a string
    Str(String),
    /// a list of strings
    Strs(Vec<String>),
}

impl JsonLeaf {
    fn value(&self) -> Value {
        match self {
            JsonLeaf::Null => Value::Null,
            JsonLeaf::Bool(b) => Value::Bool(*b),
            JsonLeaf::Int(i) => Value::from(*i),
            JsonLeaf::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            JsonLeaf::Str(s) => Value::String(s.clone()),
            JsonLeaf::Strs(v) => Value::from(v.clone()),
        }
    }
}

/// Target 4: the verifier on arbitrary strings, and on tokens with arbitrary header
/// and claims JSON signed by the real key. Never panics; never accepts a token whose
/// signature, algorithm or required claims are wrong.
pub fn verifier(data: &[u8]) {
    let v = fuzz_verifier(VerifierConfig::default());
    let now = FUZZ_NOW_S * 1000;
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(claims) = v.verify(text, now)
    {
        // Only a token signed with the secret can pass; the fuzzer cannot forge one.
        panic!("an arbitrary string verified: {claims:?}");
    }
    let mut u = Unstructured::new(data);
    let Ok(parts) = TokenParts::arbitrary(&mut u) else {
        return;
    };
    let mut header = Map::new();
    for (k, leaf) in &parts.header {
        header.insert(k.clone(), leaf.value());
    }
    let alg =
        ["HS256", "HS384", "HS512", "none", "RS256", "ES256", "hs256"][usize::from(parts.alg) % 7];
    header.insert("alg".into(), Value::String(alg.into()));
    let mut claims = Map::new();
    for (k, leaf) in &parts.claims {
        claims.insert(k.clone(), leaf.value());
    }
    let input = format!(
        "{}.{}",
        b64url(Value::Object(header.clone()).to_string().as_bytes()),
        b64url(Value::Object(claims.clone()).to_string().as_bytes())
    );
    let signature = match jsonwebtoken::EncodingKey::from_secret(FUZZ_SECRET) {
        Ok(key) => {
            let real = match alg {
                "HS384" => jsonwebtoken::Algorithm::HS384,
                "HS512" => jsonwebtoken::Algorithm::HS512,
                _ => jsonwebtoken::Algorithm::HS256,
            };
            jsonwebtoken::crypto::sign(input.as_bytes(), &key, real).unwrap_or_default()
        }
        Err(_) => String::new(),
    };
    let tampered = parts.tamper && !signature.starts_with('A');
    let signature = if tampered {
        format!("A{}", signature.get(1..).unwrap_or(""))
    } else {
        signature
    };
    let token = format!("{input}.{signature}");
    let config = VerifierConfig {
        issuer: parts.require_iss.then(|| "https://idp.example".to_owned()),
        ..VerifierConfig::default()
    };
    let v = fuzz_verifier(config.clone());
    let now = (FUZZ_NOW_S as i64 + i64::from(parts.now_offset_s)).max(0) as u64 * 1000;
    match v.verify(&token, now) {
        Ok(c) => check_accepted(&c, &header, alg, tampered, &config, now),
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains(&token), "an error quoted the token");
            let _ = e.code();
            if matches!(e, TokenError::Revoked) {
                panic!("the verifier never decides revocation");
            }
        }
    }
}

fn check_accepted(
    c: &Claims,
    header: &Map<String, Value>,
    alg: &str,
    tampered: bool,
    config: &VerifierConfig,
    now: u64,
) {
    assert!(
        matches!(alg, "HS256" | "HS384" | "HS512"),
        "accepted alg {alg}"
    );
    assert!(!tampered, "accepted a tampered signature");
    assert!(!header.contains_key("crit"), "accepted a crit header");
    assert!(!c.sub.is_empty(), "accepted an empty sub");
    assert!(
        now < c.exp_ms + config.leeway_s * 1000,
        "accepted an expired token"
    );
    if let Some(iss) = &config.issuer {
        assert_eq!(c.iss.as_ref(), Some(iss), "accepted a wrong or missing iss");
    }
    if let Some(typ) = header.get("typ") {
        let t = typ.as_str().unwrap_or("").to_ascii_lowercase();
        assert!(
            matches!(t.as_str(), "jwt" | "at+jwt" | "application/at+jwt"),
            "accepted typ {t}"
        );
    }
}
