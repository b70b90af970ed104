//! Fuzz target bodies, compiled with the `fuzzing` feature. Each `fuzz/` target is a
//! one-line call into here, and `core/tests/fuzz_corpus.rs` replays every corpus file
//! through the same functions on stable, so a crash found once stays fixed.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use serde_json::{Map, Value};

use crate::jwt::{Claims, KeySet, TokenError, Verifier, VerifierConfig, b64url};
use crate::machine::{Frame, PeerClose, Revocation, SessionConfig};
use crate::sim::{InvariantChecker, LimitPolicy, StoreConfig, World};
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
    let has_auth = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    match decision {
        UpgradeDecision::Refuse { status, body } => {
            assert!(matches!(status, 401 | 403), "refusals are 401 or 403");
            assert_eq!(status, body.code.http_status());
            if status == 403 {
                assert!(!allowed_origins.is_empty(), "403 only with an allow-list");
            }
        }
        UpgradeDecision::Proceed { subprotocol, token } => {
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
const FUZZ_NOW_S: u64 = 1_767_225_600;

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

/// One step of target 3, the state machine.
#[derive(Debug, Arbitrary)]
pub enum Op {
    /// A connection opens (message auth).
    Open(u8),
    /// A text frame from a fixed set, with a variable id.
    Send(u8, MsgKind, u8),
    /// Arbitrary text.
    Text(u8, String),
    /// A binary frame.
    Binary(u8),
    /// Invalid UTF-8.
    InvalidUtf8(u8),
    /// A frame over the size limit.
    TooLarge(u8),
    /// A pong.
    Pong(u8),
    /// Time passes (ms, up to ~65 s).
    Wait(u16),
    /// A long wait (seconds, up to ~4 min).
    WaitLong(u8),
    /// The socket closes.
    Close(u8, Option<u16>),
    /// The TCP connection is lost.
    Lose(u8),
    /// An operator revocation.
    Revoke(RevokeKind),
    /// A publish from elsewhere.
    External(u8),
    /// The store goes down or comes back.
    Store(bool),
    /// Replies are held, or released.
    Hold(bool),
    /// The server shuts down a connection.
    Shutdown(u8),
    /// The driver reports a slow consumer.
    Slow(u8),
}

/// Messages target 3 sends.
#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum MsgKind {
    /// auth, valid
    AuthValid,
    /// auth, short-lived
    AuthShort,
    /// auth, expired
    AuthExpired,
    /// auth, garbage
    AuthGarbage,
    /// auth as bob
    AuthBob,
    /// refresh, valid
    RefreshValid,
    /// refresh as another sub
    RefreshOther,
    /// refresh, expired
    RefreshExpired,
    /// resume with the store's current token
    Resume,
    /// resume with a wrong token
    ResumeWrong,
    /// join an allowed channel
    Join,
    /// join a forbidden channel
    JoinForbidden,
    /// leave
    Leave,
    /// publish
    Publish,
    /// logout
    Logout,
}

/// Revocations target 3 issues.
#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum RevokeKind {
    /// jti j1
    Jti,
    /// user alice
    Sub,
    /// session s of the first connection
    Session,
}

/// A stand-in verifier for tests of the machine (the real one has its own target):
/// `sym:<sub>:<exp s>:<jti>:<channels>` is valid, `bad:…` has a bad signature, anything
/// else is malformed.
pub fn symbolic_verifier(leeway_ms: u64) -> crate::sim::VerifyFn {
    Arc::new(move |token: &str, now: u64| {
        if token.starts_with("bad:") {
            return Err(TokenError::BadSignature);
        }
        let rest = token
            .strip_prefix("sym:")
            .ok_or(TokenError::Malformed("not a symbolic token"))?;
        let mut parts = rest.splitn(4, ':');
        let sub = parts.next().unwrap_or_default();
        let exp_s: u64 = parts
            .next()
            .and_then(|e| e.parse().ok())
            .ok_or(TokenError::MissingClaim("exp"))?;
        if sub.is_empty() {
            return Err(TokenError::MissingClaim("sub"));
        }
        let mut claims = Claims::new(sub, exp_s * 1000);
        claims.jti = parts.next().filter(|j| !j.is_empty()).map(str::to_owned);
        claims.channels = parts.next().map(|c| {
            c.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        });
        if now >= claims.exp_ms + leeway_ms {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    })
}

/// Target 3: the state machine driven by arbitrary inputs, with every invariant of
/// [`crate::sim::INVARIANTS`] checked after every step.
pub fn machine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let limit = u8::arbitrary(&mut u).unwrap_or(0);
    let store = StoreConfig {
        max_sessions_per_user: (limit % 3 > 0).then_some(usize::from(limit % 3)),
        limit_policy: if limit & 4 == 0 {
            LimitPolicy::EvictOldest
        } else {
            LimitPolicy::RejectNew
        },
        resume_buffer: 4,
        ..StoreConfig::default()
    };
    let config = SessionConfig::default();
    let start = FUZZ_NOW_S * 1000;
    let mut w = World::new(
        start,
        config.clone(),
        store,
        symbolic_verifier(config.leeway_ms),
    );
    w.record_transcript = false;
    let mut checker = InvariantChecker::new();
    let mut next_id = 1u64;
    let names = ["A", "B", "C"];
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else {
        return;
    };
    for op in ops.into_iter().take(200) {
        let pick = |c: u8| names[usize::from(c) % names.len()];
        let now_s = w.now() / 1000;
        match op {
            Op::Open(c) => {
                if w.conn(pick(c)).is_none_or(|conn| conn.is_closed()) {
                    // The name now stands for a new connection.
                    checker.forget(pick(c));
                    w.open(pick(c));
                }
            }
            Op::Send(c, kind, id) => {
                let name = pick(c);
                if w.conn(name).is_none() {
                    continue;
                }
                let id = u64::from(id) + next_id * 256;
                next_id += 1;
                let text = message(&w, kind, id, now_s);
                checker.client_sent(name, &text);
                w.send(name, &text);
            }
            Op::Text(c, t) => {
                let name = pick(c);
                if w.conn(name).is_some() {
                    checker.client_sent(name, &t);
                    w.send(name, &t);
                }
            }
            Op::Binary(c) => feed_frame(&mut w, pick(c), Frame::Binary(3)),
            Op::InvalidUtf8(c) => feed_frame(&mut w, pick(c), Frame::InvalidUtf8),
            Op::TooLarge(c) => feed_frame(&mut w, pick(c), Frame::TooLarge(1 << 20)),
            Op::Pong(c) => {
                if w.conn(pick(c)).is_some() {
                    w.pong(pick(c));
                }
            }
            Op::Wait(ms) => w.advance(u64::from(ms)),
            Op::WaitLong(s) => w.advance(u64::from(s) * 1000),
            Op::Close(c, code) => {
                if w.conn(pick(c)).is_some() {
                    w.peer_close(pick(c), PeerClose::Closed(code));
                }
            }
            Op::Lose(c) => {
                if w.conn(pick(c)).is_some() {
                    w.peer_close(pick(c), PeerClose::Lost);
                }
            }
            Op::Revoke(kind) => {
                let r = match kind {
                    RevokeKind::Jti => Revocation::Token { jti: "j1".into() },
                    RevokeKind::Sub => Revocation::Subject {
                        sub: "alice".into(),
                        at_s: now_s,
                    },
                    RevokeKind::Session => Revocation::Session {
                        session_id: w
                            .conn("A")
                            .and_then(|c| c.session_id().map(str::to_owned))
                            .unwrap_or_else(|| "s_0".into()),
                    },
                };
                w.revoke(r);
            }
            Op::External(n) => w.publish_external("general", "bob", &n.to_string()),
            Op::Store(up) => w.store_available = up,
            Op::Hold(hold) => {
                if hold {
                    w.hold_replies = true;
                } else {
                    w.hold_replies = false;
                    w.release();
                }
            }
            Op::Shutdown(c) => {
                if w.conn(pick(c)).is_some() {
                    w.feed(pick(c), crate::Input::Shutdown);
                }
            }
            Op::Slow(c) => {
                if w.conn(pick(c)).is_some() {
                    w.feed(pick(c), crate::Input::OutboundFull);
                }
            }
        }
        if let Err(v) = checker.check(&mut w) {
            panic!(
                "invariant {} broken on {}: {}",
                v.invariant, v.conn, v.detail
            );
        }
    }
}

fn feed_frame(w: &mut World, name: &str, frame: Frame<'_>) {
    if w.conn(name).is_some() {
        w.send_frame(name, frame);
    }
}

fn message(w: &World, kind: MsgKind, id: u64, now_s: u64) -> String {
    let token =
        |sub: &str, ttl: u64, jti: &str| format!("sym:{sub}:{}:{jti}:general,team:*", now_s + ttl);
    let auth = |t: String| format!(r#"{{"type":"auth","id":{id},"token":"{t}"}}"#);
    let refresh = |t: String| format!(r#"{{"type":"refresh","id":{id},"token":"{t}"}}"#);
    match kind {
        MsgKind::AuthValid => auth(token("alice", 600, "j1")),
        MsgKind::AuthShort => auth(token("alice", 20, "j2")),
        MsgKind::AuthExpired => auth(format!("sym:alice:{}:j3:", now_s.saturating_sub(100))),
        MsgKind::AuthGarbage => auth("garbage".into()),
        MsgKind::AuthBob => auth(token("bob", 600, "b1")),
        MsgKind::RefreshValid => refresh(token("alice", 900, "j4")),
        MsgKind::RefreshOther => refresh(token("bob", 900, "b2")),
        MsgKind::RefreshExpired => refresh(format!("sym:alice:{}:j5:", now_s.saturating_sub(100))),
        MsgKind::Resume | MsgKind::ResumeWrong => {
            let ids = w.sessions_of("alice");
            let session = ids.first().cloned().unwrap_or_else(|| "s_0".into());
            let token = match kind {
                MsgKind::Resume => w.resume_token_of(&session).unwrap_or_else(|| "r_0".into()),
                _ => "r_wrong".into(),
            };
            format!(
                r#"{{"type":"resume","id":{id},"session_id":"{session}","resume_token":"{token}","last_seq":1}}"#
            )
        }
        MsgKind::Join => format!(r#"{{"type":"join","id":{id},"channel":"general"}}"#),
        MsgKind::JoinForbidden => format!(r#"{{"type":"join","id":{id},"channel":"secret"}}"#),
        MsgKind::Leave => format!(r#"{{"type":"leave","id":{id},"channel":"general"}}"#),
        MsgKind::Publish => {
            format!(r#"{{"type":"publish","id":{id},"channel":"general","data":{id}}}"#)
        }
        MsgKind::Logout => r#"{"type":"logout"}"#.to_owned(),
    }
}
