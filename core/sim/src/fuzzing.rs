//! The state-machine fuzz target's body (`fuzz/fuzz_targets/state_machine.rs` is one
//! line calling [`machine`]), replayed on stable by `core/tests/fuzz_corpus.rs`: connections
//! on the real in-memory store driven by arbitrary steps, every invariant checked
//! after every step.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use wsauth_core::fuzzing::FUZZ_NOW_S;
use wsauth_core::jwt::{Claims, TokenError};
use wsauth_core::{CallResult, Frame, Input, Revocation, SessionConfig};
use wsauth_store::{LimitPolicy, StoreSettings};

use crate::{InvariantChecker, VerifyFn, World};

/// One step of target 3, the state machine: a world event, or any [`Input`] fed
/// straight through a connection's one door.
#[derive(Debug, Arbitrary)]
pub enum Op<'a> {
    /// A connection opens (message auth), on node-1 or node-2.
    Open(u8, bool),
    /// A well-formed client message from a fixed set, with a variable id.
    Send(u8, MsgKind, u8),
    /// Any input at all: frames of any text, control frames, replies (fitting or
    /// not), notices, transport events, ticks.
    Input(u8, Input<'a>),
    /// Time passes (ms, up to ~65 s).
    Wait(u16),
    /// A long wait (seconds, up to ~4 min).
    WaitLong(u8),
    /// An operator revocation.
    Revoke(RevokeKind),
    /// A publish from elsewhere.
    External(u8),
    /// The store goes down or comes back.
    Store(bool),
    /// Replies are held, or released.
    Hold(bool),
    /// Node-1 or node-2 may have missed notices.
    LoseNotices(bool),
    /// Call results are held, or released (in order, or in reverse).
    HoldCalls(bool, bool),
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
    /// rpc, answered
    Rpc,
    /// rpc, refused by the application
    RpcFails,
    /// rpc with a method outside the charset
    RpcBadMethod,
    /// application-level ping
    Ping,
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
pub fn symbolic_verifier(leeway_ms: u64) -> VerifyFn {
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
/// [`crate::INVARIANTS`] checked after every step.
pub fn machine(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let limit = u8::arbitrary(&mut u).unwrap_or(0);
    let store = StoreSettings {
        max_sessions_per_user: (limit % 3 > 0).then_some(usize::from(limit % 3)),
        limit_policy: if limit & 4 == 0 {
            LimitPolicy::EvictOldest
        } else {
            LimitPolicy::RejectNew
        },
        resume_buffer: 4,
        ..StoreSettings::default()
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
    w.set_call_handler(Arc::new(|method, data, _| match method {
        "chat.send" => CallResult::Ok(data.clone()),
        "chat.fail" => CallResult::AppError {
            message: "refused".into(),
            details: None,
        },
        _ => CallResult::NotFound,
    }));
    let mut checker = InvariantChecker::new();
    let mut next_id = 1u64;
    // Steps until the bytes run out: a `Vec` would draw a "go on?" flag before each
    // element, and random bytes would end most sequences after one step.
    for _ in 0..200 {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        step(&mut w, &mut checker, &mut next_id, op);
        if let Err(v) = checker.check(&mut w) {
            panic!(
                "invariant {} broken on {}: {}",
                v.invariant, v.conn, v.detail
            );
        }
    }
}

fn node(second: bool) -> &'static str {
    if second { "node-2" } else { "node-1" }
}

fn step(w: &mut World, checker: &mut InvariantChecker, next_id: &mut u64, op: Op<'_>) {
    const NAMES: [&str; 3] = ["A", "B", "C"];
    let pick = |c: u8| NAMES[usize::from(c) % NAMES.len()];
    let now_s = w.now() / 1000;
    match op {
        Op::Open(c, second) => {
            if w.conn(pick(c)).is_none_or(|conn| conn.is_closed()) {
                // The name now stands for a new connection.
                checker.forget(pick(c));
                w.open_on(pick(c), node(second));
            }
        }
        Op::Send(c, kind, id) => {
            let name = pick(c);
            if w.conn(name).is_some() {
                let id = u64::from(id) + *next_id * 256;
                *next_id += 1;
                let text = message(w, kind, id, now_s);
                checker.client_sent(name, &text);
                w.send(name, &text);
            }
        }
        Op::Input(c, input) => {
            let name = pick(c);
            if w.conn(name).is_some() {
                if let Input::Frame(Frame::Text(text)) = &input {
                    checker.client_sent(name, text);
                }
                w.feed(name, input);
            }
        }
        Op::Wait(ms) => w.advance(u64::from(ms)),
        Op::WaitLong(s) => w.advance(u64::from(s) * 1000),
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
            w.hold_replies = hold;
            if !hold {
                w.release();
            }
        }
        Op::LoseNotices(second) => w.lose_notices(node(second)),
        Op::HoldCalls(hold, reverse) => {
            w.hold_calls = hold;
            if !hold {
                w.release_calls(reverse);
            }
        }
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
        MsgKind::Rpc => format!(r#"{{"type":"rpc","id":{id},"method":"chat.send","data":{id}}}"#),
        MsgKind::RpcFails => format!(r#"{{"type":"rpc","id":{id},"method":"chat.fail"}}"#),
        MsgKind::RpcBadMethod => format!(r#"{{"type":"rpc","id":{id},"method":"a b"}}"#),
        MsgKind::Ping => format!(r#"{{"type":"ping","id":{id}}}"#),
    }
}
