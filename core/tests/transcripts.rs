//! The readable specification: one transcript per flow of the protocol and per row
//! of its error table, driven through the real machine and the real JWT verifier.
//!
//! Each transcript is a snapshot in `core/tests/spec/`; `docs/specification.md`
//! lists them. Reading a line:
//!
//! ```text
//! +12ms     A  <- {...}          the client (connection A) sends a frame
//! +12ms     A  -> {...}          the server sends a frame
//! +12ms     A  .. verify …       the machine asks its driver (verifier, store) and the answer
//! +12ms     A  == …              an event for logs and metrics
//! +0ms         ... 5s pass       virtual time passes; timers fire on the way
//! ```
//! Tokens are shown as `<labels>`; session ids and resume tokens are the simulated
//! store's (`s_1`, `r_2`).

mod support;

use serde_json::json;
use support::{T0, T0_S};
use wsauth_core::jwt::{KeySet, Verifier, VerifierConfig, sign_hs256};
use wsauth_core::sim::{LimitPolicy, StoreConfig, World};
use wsauth_core::upgrade::UpgradePolicy;
use wsauth_core::{Frame, PeerClose, Revocation, SessionConfig};

const SECRET: &[u8] = b"transcripts-secret-at-least-32-bytes!";
const OTHER_SECRET: &[u8] = b"someone-elses-secret-at-least-32-bytes";

fn verifier_fn() -> wsauth_core::sim::VerifyFn {
    let mut keys = KeySet::new();
    keys.add_hmac_secret(None, SECRET).expect("secret");
    let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    std::sync::Arc::new(move |token: &str, now: u64| verifier.verify(token, now))
}

fn world_with(config: SessionConfig, store: StoreConfig) -> World {
    World::new(T0, config, store, verifier_fn())
}

fn world() -> World {
    world_with(SessionConfig::default(), StoreConfig::default())
}

/// Mints a token for `sub` valid `ttl_s` seconds from the start, with extra claims,
/// and shows it as `<label>` in the transcript.
fn token(w: &mut World, label: &str, sub: &str, ttl_s: i64, extra: serde_json::Value) -> String {
    let mut claims = json!({"sub": sub, "exp": T0_S as i64 + ttl_s, "iat": T0_S});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let t = sign_hs256(SECRET, &claims);
    w.label(&t, label);
    t
}

fn auth(w: &mut World, conn: &str, id: u64, token: &str) {
    w.send(
        conn,
        &format!(r#"{{"type":"auth","id":{id},"token":"{token}"}}"#),
    );
}

/// Opens `conn` and authenticates it as alice (1 h token, channels general and team:*).
fn alice_live(w: &mut World, conn: &str) -> String {
    let t = token(
        w,
        "alice, 1h, channels general team:*",
        "alice",
        3600,
        json!({"jti": "t-alice-1", "channels": ["general", "team:*"]}),
    );
    w.open(conn);
    auth(w, conn, 1, &t);
    t
}

macro_rules! spec {
    ($name:ident, $description:literal, |$w:ident| $body:block) => {
        #[test]
        fn $name() {
            let mut $w = world();
            $body
            insta::with_settings!({
                description => $description,
                snapshot_path => "spec",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(stringify!($name), $w.transcript());
            });
        }
    };
    ($name:ident, $description:literal, $setup:expr, |$w:ident| $body:block) => {
        #[test]
        fn $name() {
            let mut $w = $setup;
            $body
            insta::with_settings!({
                description => $description,
                snapshot_path => "spec",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(stringify!($name), $w.transcript());
            });
        }
    };
}

// ----- §2 Authentication -------------------------------------------------------

spec!(
    auth_header_success,
    "A non-browser client sends its token in the Authorization header: the server verifies it before completing the upgrade, then sends `authenticated` without an id.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open_upgrade(
            "A",
            &[
                ("Authorization", &format!("Bearer {t}")),
                ("Sec-WebSocket-Protocol", "wsauth.v1"),
            ],
            None,
            &UpgradePolicy::default(),
        );
    }
);

spec!(
    auth_header_refused,
    "A bad header token refuses the upgrade with HTTP 401 and a JSON body; no WebSocket is opened.",
    |w| {
        let t = token(&mut w, "alice, expired 1h ago", "alice", -3600, json!({}));
        w.open_upgrade(
            "A",
            &[("Authorization", &format!("Bearer {t}"))],
            None,
            &UpgradePolicy::default(),
        );
    }
);

spec!(
    auth_message_success,
    "A browser authenticates with its first message; `user_id` (or `userId`), when sent, must equal the token's `sub`.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open("A");
        w.advance(12);
        w.send(
            "A",
            &format!(r#"{{"type":"auth","id":1,"token":"{t}","userId":"alice"}}"#),
        );
    }
);

spec!(
    auth_query_token,
    "With `allow_query_token` on, `?access_token=` is treated like the header: verified before the upgrade. When off, the parameter is ignored and the client must send `auth`.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        let on = UpgradePolicy {
            allow_query_token: true,
            ..UpgradePolicy::default()
        };
        w.open_upgrade("A", &[], Some(&format!("access_token={t}")), &on);
        w.open_upgrade(
            "B",
            &[],
            Some(&format!("access_token={t}")),
            &UpgradePolicy::default(),
        );
        auth(&mut w, "B", 1, &t);
    }
);

spec!(
    error_auth_failed_user_id_mismatch,
    "AUTH_FAILED: `user_id` differs from the token's `sub`. Fatal, retry reauth, close 4401.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open("A");
        w.send(
            "A",
            &format!(r#"{{"type":"auth","id":1,"token":"{t}","user_id":"mallory"}}"#),
        );
    }
);

spec!(
    error_auth_failed_signature,
    "AUTH_FAILED: a token signed with a key the server does not have.",
    |w| {
        let t = sign_hs256(OTHER_SECRET, &json!({"sub": "alice", "exp": T0_S + 3600}));
        w.label(&t, "alice, signed with another key");
        w.open("A");
        auth(&mut w, "A", 1, &t);
    }
);

spec!(
    error_invalid_token,
    "INVALID_TOKEN: not a JWT at all. Fatal, retry reauth, close 4401.",
    |w| {
        w.open("A");
        auth(&mut w, "A", 1, "not-a-jwt");
    }
);

spec!(
    error_token_expired,
    "TOKEN_EXPIRED: the token is past `exp` plus the leeway (30 s) when presented.",
    |w| {
        let t = token(&mut w, "alice, expired 31s ago", "alice", -31, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
    }
);

spec!(
    error_token_not_yet_valid,
    "TOKEN_NOT_YET_VALID: `nbf` is further in the future than the leeway.",
    |w| {
        let t = token(
            &mut w,
            "alice, nbf in 60s",
            "alice",
            3600,
            json!({"nbf": T0_S + 60}),
        );
        w.open("A");
        auth(&mut w, "A", 1, &t);
    }
);

spec!(
    error_token_revoked,
    "TOKEN_REVOKED: the token's `jti` was revoked before it was presented. Fatal, retry none, close 4403.",
    |w| {
        let t = token(
            &mut w,
            "alice, jti t-9",
            "alice",
            3600,
            json!({"jti": "t-9"}),
        );
        w.revoke(Revocation::Token { jti: "t-9".into() });
        w.open("A");
        auth(&mut w, "A", 1, &t);
    }
);

spec!(
    error_not_authenticated,
    "NOT_AUTHENTICATED: anything but `auth` or `resume` before authentication is fatal.",
    |w| {
        w.open("A");
        w.send("A", r#"{"type":"join","id":1,"channel":"general"}"#);
    }
);

spec!(
    error_already_authenticated,
    "ALREADY_AUTHENTICATED: a second `auth` (or `resume`) is refused, not fatally.",
    |w| {
        let t = alice_live(&mut w, "A");
        auth(&mut w, "A", 2, &t);
        w.send(
            "A",
            r#"{"type":"resume","id":3,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    error_auth_timeout,
    "AUTH_TIMEOUT: nothing within `auth_timeout_ms` (5 s). Fatal, retry reconnect, close 4408.",
    |w| {
        w.open("A");
        w.advance(6_000);
    }
);

spec!(
    error_bad_request_malformed,
    "BAD_REQUEST: a frame that is not a JSON object. Fatal, retry none, close 4400.",
    |w| {
        w.open("A");
        w.send("A", "{\"type\":\"auth\",");
    }
);

spec!(
    error_bad_request_array,
    "BAD_REQUEST: a JSON array is not a message, even one whose elements line up with the fields of `auth`. No id is echoed. Fatal, close 4400.",
    |w| {
        let t = token(&mut w, "alice-token", "alice", 600, json!({}));
        w.open("A");
        w.send("A", &format!(r#"["auth", 6, "{t}"]"#));
    }
);

spec!(
    error_bad_request_fields,
    "BAD_REQUEST: an unknown type, or a field of the wrong type. The id is echoed when it can be read; the message never quotes what was sent.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":7,"channel":42}"#);
        w.open("B");
        w.send("B", r#"{"type":"dance","id":3}"#);
    }
);

spec!(
    error_bad_request_binary,
    "BAD_REQUEST: binary frames are not part of the protocol.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::Binary(16));
    }
);

spec!(
    invalid_utf8_closes_1007,
    "A text frame that is not valid UTF-8 is closed 1007.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::InvalidUtf8);
    }
);

spec!(
    error_message_too_large,
    "MESSAGE_TOO_LARGE: a message over the size limit (64 KiB). Fatal, retry reconnect, close 1009; the session stays resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::TooLarge(70_000));
    }
);

spec!(
    error_origin_not_allowed,
    "ORIGIN_NOT_ALLOWED: a browser from an origin outside the allow-list is refused at the upgrade with HTTP 403, never a close.",
    |w| {
        let policy = UpgradePolicy {
            allowed_origins: vec!["https://chat.example".into()],
            allow_query_token: false,
        };
        w.open_upgrade("A", &[("Origin", "https://evil.example")], None, &policy);
        w.open_upgrade("B", &[("Origin", "https://chat.example")], None, &policy);
    }
);

spec!(
    pipelined_requests_are_answered_in_order,
    "A client may send `auth` and its first requests at once: they are answered in order.",
    |w| {
        let t = token(
            &mut w,
            "alice, 1h, channels general",
            "alice",
            3600,
            json!({"channels": ["general"]}),
        );
        w.open("A");
        w.hold_replies = true;
        auth(&mut w, "A", 1, &t);
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":"hi"}"#,
        );
        w.hold_replies = false;
        w.release();
    }
);

// ----- §3 Session lifetime -----------------------------------------------------

spec!(
    expiring_then_session_expired,
    "With a 10-minute token the `expiring` notice comes 60 s before `exp`; without a refresh the session ends at `exp` plus the leeway with SESSION_EXPIRED, close 4401.",
    |w| {
        let t = token(&mut w, "alice, 10min", "alice", 600, json!({}));
        w.show_timers = false;
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.note("the client answers pings, so only expiry matters");
        for _ in 0..12 {
            w.advance(50_000);
            w.pong("A");
        }
        w.advance(50_000);
    }
);

spec!(
    expiring_lead_for_short_tokens,
    "The notice lead is min(refresh_notice_ms, lifetime / 2): a 40 s token gets it after 20 s.",
    |w| {
        let t = token(&mut w, "alice, 40s", "alice", 40, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(20_000);
    }
);

spec!(
    refresh_success,
    "A refresh with a new token of the same `sub` moves the expiry; the `expiring` notice is armed again for the new token.",
    |w| {
        let t1 = token(&mut w, "alice, 2min", "alice", 120, json!({}));
        let t2 = token(&mut w, "alice, 5min", "alice", 300, json!({}));
        w.show_timers = false;
        w.open("A");
        auth(&mut w, "A", 1, &t1);
        w.note("the client answers pings, so only the token's expiry matters");
        w.advance(50_000);
        w.pong("A");
        w.advance(10_000);
        w.send(
            "A",
            &format!(r#"{{"type":"refresh","id":7,"token":"{t2}"}}"#),
        );
        w.note("the old token's end (+120s, +150s with the leeway) passes unnoticed");
        for _ in 0..3 {
            w.advance(50_000);
            w.pong("A");
        }
        w.note("the notice comes 60 s before the new token's exp");
        w.advance(30_000);
    }
);

spec!(
    refresh_failures_are_not_fatal,
    "While the current token is valid a failed refresh is a non-fatal error and the session keeps its expiry: SUBJECT_MISMATCH, TOKEN_EXPIRED, INVALID_TOKEN, AUTH_FAILED, TOKEN_REVOKED, TOKEN_NOT_YET_VALID.",
    |w| {
        alice_live(&mut w, "A");
        let bob = token(&mut w, "bob, 1h", "bob", 3600, json!({}));
        let expired = token(&mut w, "alice, expired", "alice", -100, json!({}));
        let forged = sign_hs256(OTHER_SECRET, &json!({"sub": "alice", "exp": T0_S + 3600}));
        w.label(&forged, "alice, signed with another key");
        let revoked = token(
            &mut w,
            "alice, jti t-r",
            "alice",
            3600,
            json!({"jti": "t-r"}),
        );
        let future = token(
            &mut w,
            "alice, iat in 1h",
            "alice",
            7200,
            json!({"iat": T0_S + 3600}),
        );
        w.revoke(Revocation::Token { jti: "t-r".into() });
        for (id, t) in [
            (2, &bob),
            (3, &expired),
            (5, &forged),
            (6, &revoked),
            (7, &future),
        ] {
            w.send(
                "A",
                &format!(r#"{{"type":"refresh","id":{id},"token":"{t}"}}"#),
            );
        }
        w.send("A", r#"{"type":"refresh","id":4,"token":"garbage"}"#);
    }
);

spec!(
    refresh_narrows_channels,
    "A refreshed token's claims replace the old ones: channels it no longer allows are left, each with a `left` and reason FORBIDDEN after `refreshed`.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("A", r#"{"type":"join","id":3,"channel":"team:42"}"#);
        let narrower = token(
            &mut w,
            "alice, 1h, channels general",
            "alice",
            3600,
            json!({"channels": ["general"]}),
        );
        w.send(
            "A",
            &format!(r#"{{"type":"refresh","id":4,"token":"{narrower}"}}"#),
        );
    }
);

spec!(
    error_idle_timeout,
    "IDLE_TIMEOUT: pings go out every 25 s; a client that sends nothing, pongs included, for 60 s is closed 4408 and its session stays resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.advance(30_000);
        w.pong("A");
        w.advance(61_000);
    }
);

spec!(
    logout_ends_the_session,
    "`logout` ends the session for good and closes 1000 with no other reply; the resume token is useless afterwards.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"logout","id":9}"#);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    error_session_replaced_evict_oldest,
    "SESSION_REPLACED: with max_sessions_per_user = 1 and policy evict_oldest, a second login closes the first connection with 4409.",
    world_with(
        SessionConfig::default(),
        StoreConfig {
            max_sessions_per_user: Some(1),
            limit_policy: LimitPolicy::EvictOldest,
            ..StoreConfig::default()
        }
    ),
    |w| {
        let t = alice_live(&mut w, "A");
        w.open("B");
        auth(&mut w, "B", 1, &t);
    }
);

spec!(
    error_too_many_sessions_reject_new,
    "TOO_MANY_SESSIONS: with policy reject_new the new connection is refused, close 4429, and the old one lives on.",
    world_with(
        SessionConfig::default(),
        StoreConfig {
            max_sessions_per_user: Some(1),
            limit_policy: LimitPolicy::RejectNew,
            ..StoreConfig::default()
        }
    ),
    |w| {
        let t = alice_live(&mut w, "A");
        w.open("B");
        auth(&mut w, "B", 1, &t);
    }
);

spec!(
    error_session_revoked,
    "SESSION_REVOKED: an operator revokes one session; its connection gets the error and close 4403, and it cannot be resumed.",
    |w| {
        alice_live(&mut w, "A");
        w.revoke(Revocation::Session {
            session_id: "s_1".into(),
        });
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    revoke_user_refuses_older_tokens_only,
    "Revoking a user closes every live session of that user with TOKEN_REVOKED and refuses tokens issued at or before the revocation; a token issued later is accepted.",
    |w| {
        alice_live(&mut w, "A");
        let second = token(
            &mut w,
            "alice, 1h, jti t-alice-2",
            "alice",
            3600,
            json!({"jti": "t-alice-2"}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &second);
        let bob = token(&mut w, "bob, 1h", "bob", 3600, json!({}));
        w.open("C");
        auth(&mut w, "C", 1, &bob);
        w.advance(2_000);
        w.revoke(Revocation::Subject {
            sub: "alice".into(),
            at_s: T0_S + 2,
        });
        let old = token(&mut w, "alice, issued at start", "alice", 3600, json!({}));
        w.open("D");
        auth(&mut w, "D", 1, &old);
        w.advance(1_000);
        let newer = json!({"sub": "alice", "exp": T0_S + 3600, "iat": T0_S + 3});
        let fresh = sign_hs256(SECRET, &newer);
        w.label(&fresh, "alice, issued after the revocation");
        w.open("E");
        auth(&mut w, "E", 1, &fresh);
    }
);

spec!(
    revoke_token_by_jti,
    "Revoking a token by `jti` closes the connections using it (4403) and leaves others alone.",
    |w| {
        alice_live(&mut w, "A");
        let other = token(
            &mut w,
            "alice, jti t-2",
            "alice",
            3600,
            json!({"jti": "t-2"}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &other);
        w.revoke(Revocation::Token {
            jti: "t-alice-1".into(),
        });
    }
);

// ----- §4 Reconnect and resume -------------------------------------------------

spec!(
    resume_with_replay,
    "After a TCP drop the session stays resumable: the client resumes with its last seen seq and gets the missed messages in order, with a new resume token.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"text":"one"}"#);
        w.peer_close("A", PeerClose::Lost);
        w.advance(2_000);
        w.publish_external("general", "bob", r#"{"text":"two"}"#);
        w.publish_external("general", "bob", r#"{"text":"three"}"#);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":1}"#,
        );
        w.publish_external("general", "bob", r#"{"text":"four"}"#);
    }
);

spec!(
    resume_with_gap,
    "When more messages were missed than the buffer keeps (resume_buffer = 2 here), the oldest are gone and `gap` is true.",
    world_with(
        SessionConfig::default(),
        StoreConfig {
            resume_buffer: 2,
            ..StoreConfig::default()
        }
    ),
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.peer_close("A", PeerClose::Closed(Some(1001)));
        for n in 1..=4 {
            w.publish_external("general", "bob", &format!(r#"{{"n":{n}}}"#));
        }
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    }
);

spec!(
    resume_with_a_last_seq_beyond_what_was_sent,
    "A `last_seq` larger than anything the session received replays nothing (gap false) and does not hold back later messages.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"n":1}"#);
        w.peer_close("A", PeerClose::Lost);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":50}"#,
        );
        w.publish_external("general", "bob", r#"{"n":2}"#);
    }
);

spec!(
    error_session_not_found_token_reuse,
    "SESSION_NOT_FOUND: a resume token is single-use; the second use fails, fatal, close 4401.",
    |w| {
        alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Lost);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
        w.peer_close("B", PeerClose::Lost);
        w.open("C");
        w.send(
            "C",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    resume_after_grace_fails,
    "A resume after resume_grace_ms (30 s) finds nothing: SESSION_NOT_FOUND.",
    |w| {
        alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Lost);
        w.advance(31_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    resume_takes_over_a_half_open_connection,
    "If the server still holds a connection for the session (a half-open socket), the resume wins and the old connection gets SESSION_REPLACED, close 4409.",
    |w| {
        alice_live(&mut w, "A");
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    resume_sends_a_missed_expiring_notice,
    "If the `expiring` notice time passed while the client was away, `expiring` follows `resumed` at once.",
    |w| {
        let t = token(&mut w, "alice, 2min", "alice", 120, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(50_000);
        w.peer_close("A", PeerClose::Lost);
        w.advance(15_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    resume_of_an_expired_session_fails,
    "A resume is a full re-authorization: when the session's token has expired meanwhile, SESSION_NOT_FOUND.",
    |w| {
        let t = token(&mut w, "alice, 20s", "alice", 20, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(25_000);
        w.peer_close("A", PeerClose::Lost);
        w.note("the token ends at +50s (exp plus the 30 s leeway); the session stays resumable until +55s");
        w.advance(26_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

spec!(
    close_1000_ends_the_session,
    "A client close with 1000 ends the session for good; any other close keeps it resumable.",
    |w| {
        let t = alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Closed(Some(1000)));
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
        w.note("any other code, here 1001 (a browser leaving the page), keeps the session");
        w.open("C");
        auth(&mut w, "C", 1, &t);
        w.peer_close("C", PeerClose::Closed(Some(1001)));
        w.open("D");
        w.send(
            "D",
            r#"{"type":"resume","id":1,"session_id":"s_3","resume_token":"r_4"}"#,
        );
    }
);

spec!(
    shutdown_then_resume,
    "A server shutdown closes 1001 and keeps the session resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.feed("A", wsauth_core::Input::Shutdown);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    }
);

// ----- §5 Errors that the driver raises ----------------------------------------

spec!(
    error_rate_limited,
    "RATE_LIMITED: more than the burst (200 frames here at once, refilled 100/s). Fatal, retry reconnect, close 4429.",
    |w| {
        alice_live(&mut w, "A");
        w.record_transcript = false;
        for n in 0..199 {
            w.send(
                "A",
                &format!(r#"{{"type":"leave","id":{},"channel":"x"}}"#, n + 10),
            );
        }
        w.record_transcript = true;
        w.note("199 leave requests later (200 frames with the auth), one more:");
        w.send("A", r#"{"type":"leave","id":999,"channel":"x"}"#);
    }
);

spec!(
    error_slow_consumer,
    "SLOW_CONSUMER: the driver reports that the client's outbound queue is full. Fatal, retry reconnect, close 1013.",
    |w| {
        alice_live(&mut w, "A");
        w.feed("A", wsauth_core::Input::SlowConsumer);
    }
);

spec!(
    error_internal_at_auth,
    "INTERNAL: the store cannot be reached during authentication; fail closed, close 1011.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.store_available = false;
        w.open("A");
        auth(&mut w, "A", 1, &t);
    }
);

spec!(
    internal_on_a_live_session_is_not_fatal,
    "A store fault while answering a live session's request fails that request only.",
    |w| {
        alice_live(&mut w, "A");
        w.store_available = false;
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":1}"#,
        );
        w.store_available = true;
        w.send("A", r#"{"type":"join","id":4,"channel":"general"}"#);
    }
);

// ----- §6 Channels -------------------------------------------------------------

spec!(
    channels_join_publish_leave,
    "Join, publish and leave; every session joined to the channel gets `message` with its own `seq`, the sender too when it joined.",
    |w| {
        alice_live(&mut w, "A");
        let bob = token(
            &mut w,
            "bob, 1h, channels general",
            "bob",
            3600,
            json!({"channels": ["general"]}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &bob);
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("B", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":{"text":"hi bob"}}"#,
        );
        w.send(
            "B",
            r#"{"type":"publish","id":3,"channel":"general","data":{"text":"hi alice"}}"#,
        );
        w.send("A", r#"{"type":"leave","id":4,"channel":"general"}"#);
        w.send(
            "B",
            r#"{"type":"publish","id":4,"channel":"general","data":{"text":"gone?"}}"#,
        );
    }
);

spec!(
    error_forbidden_channels,
    "FORBIDDEN: a channel the token's `channels` claim does not allow, for join or publish (not fatal). `user:{sub}` is always allowed; publishing needs no join.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"admin"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":4,"channel":"team","data":1}"#,
        );
        w.send("A", r#"{"type":"join","id":5,"channel":"user:bob"}"#);
        w.send("A", r#"{"type":"join","id":6,"channel":"user:alice"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":7,"channel":"team:7","data":1}"#,
        );
    }
);

spec!(
    channel_patterns,
    "Patterns: exact names, a trailing `*` for one or more characters, `{sub}` replaced by the subject and matched literally; a `*` elsewhere grants nothing.",
    |w| {
        let t = token(
            &mut w,
            "carol*, channels dm:{sub}:* room:{sub} x*y",
            "carol*",
            3600,
            json!({"channels": ["dm:{sub}:*", "room:{sub}", "x*y"]}),
        );
        w.open("A");
        auth(&mut w, "A", 1, &t);
        for (id, channel) in (2..).zip([
            "dm:carol*:dave",
            "dm:carol*:",
            "dm:carolX:dave",
            "room:carol*",
            "room:carolX",
            "x*y",
            "xay",
            "user:carol*",
        ]) {
            w.send(
                "A",
                &format!(r#"{{"type":"join","id":{id},"channel":"{channel}"}}"#),
            );
        }
    }
);

/// The specification covers every row of the error table.
#[test]
fn every_error_code_has_a_transcript() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut all = String::new();
    for entry in std::fs::read_dir(&dir).expect("tests/spec") {
        let path = entry.expect("entry").path();
        all.push_str(&std::fs::read_to_string(path).expect("snapshot"));
    }
    for code in wsauth_core::ErrorCode::ALL {
        assert!(
            all.contains(&format!("\"code\":\"{}\"", code.as_str())),
            "no transcript shows {code}"
        );
    }
}
