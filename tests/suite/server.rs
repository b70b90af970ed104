// The server suite: compiled into `tests/server.rs` (in-memory store),
// `tests/server_redis.rs` (Redis store) and `adapters/axum/tests/suite.rs` (the
// axum route), each of which defines how a server is started:
// - `server(config)`, a server on the store of that file;
// - `start_with_store(config, verifier, hub, store)`, a server on a given store;
// - `server_with_app(config, app)`, a server whose calls `app` answers;
// - `listener_case!`, which runs a case about the listener itself (the head's
//   deadline, TLS), or marks it ignored, with the case's reason, where the
//   application owns the listener.
// Each returns a handle with `ws_addr`, `admin_addr`, `metrics` and `shutdown()`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::{server, server_with_app, start_with_store};
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsauth_server::config::LimitPolicy;

// ----- §2 Authentication --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_auth_succeeds_before_the_upgrade_and_selects_the_subprotocol() {
    let s = server(test_config()).await;
    let t = token("alice", json!({}));
    let auth = format!("Bearer {t}");
    let mut c = Client::connect_with(
        s.ws_addr,
        &[
            ("Authorization", &auth),
            ("Sec-WebSocket-Protocol", "wsauth.v1"),
        ],
    )
    .await
    .expect("upgrade accepted");
    let first = c.recv().await;
    assert_eq!(first["type"], "authenticated");
    assert!(first.get("id").is_none(), "no id for header authentication");
    assert_eq!(first["user_id"], "alice");
    assert_eq!(first["protocol"], "wsauth.v1");
    assert!(first["session_id"].as_str().expect("id").starts_with("s_"));
    assert!(first["resume_token"].as_str().expect("token").len() >= 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_auth_failures_refuse_the_upgrade_with_a_json_body() {
    let s = server(test_config()).await;
    let expired = token("alice", json!({"exp": now_s() - 3600}));
    let cases = [
        (format!("Bearer {expired}"), 401, "TOKEN_EXPIRED"),
        ("Bearer not-a-jwt".to_owned(), 401, "INVALID_TOKEN"),
        ("Basic YWxpY2U6cHc=".to_owned(), 401, "INVALID_TOKEN"),
    ];
    for (header, status, code) in cases {
        let (got, body) = Client::connect_with(s.ws_addr, &[("Authorization", &header)])
            .await
            .err()
            .expect("refused");
        assert_eq!(got, status, "{code}");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
        assert_eq!(body["code"], code);
        assert!(body["retry"].is_string());
        assert!(!body.to_string().contains(&expired));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_outside_the_allow_list_gets_403() {
    let mut config = test_config();
    config.allowed_origins = vec!["https://chat.example".into()];
    let s = server(config).await;
    let (status, body) = Client::connect_with(s.ws_addr, &[("Origin", "https://evil.example")])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 403);
    assert!(body.contains("ORIGIN_NOT_ALLOWED"), "{body}");
    assert!(
        Client::connect_with(s.ws_addr, &[("Origin", "https://chat.example")])
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_token_only_when_enabled() {
    let t = token("alice", json!({}));
    let mut config = test_config();
    config.allow_query_token = true;
    let s = server(config).await;
    let mut c = Client::connect_url(&format!("ws://{}/ws?access_token={t}", s.ws_addr), &[])
        .await
        .expect("accepted");
    assert_eq!(c.recv().await["type"], "authenticated");

    let off = server(test_config()).await;
    let mut c = Client::connect_url(&format!("ws://{}/ws?access_token={t}", off.ws_addr), &[])
        .await
        .expect("accepted, unauthenticated");
    c.send(json!({"type": "join", "id": 1, "channel": "general"}))
        .await;
    c.expect_fatal("NOT_AUTHENTICATED", 4401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_auth_and_each_token_failure_with_its_close_code() {
    let s = server(test_config()).await;
    let (_c, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    assert_eq!(reply["id"], 1);

    let other_key = wsauth_core::jwt::sign_hs256(
        b"another-secret-that-is-32-bytes-long!",
        &json!({"sub": "alice", "exp": now_s() + 60}),
    );
    let cases = [
        (
            token("alice", json!({"exp": now_s() - 120})),
            "TOKEN_EXPIRED",
            4401,
        ),
        (
            token("alice", json!({"nbf": now_s() + 600})),
            "TOKEN_NOT_YET_VALID",
            4401,
        ),
        ("garbage".to_owned(), "INVALID_TOKEN", 4401),
        (other_key, "AUTH_FAILED", 4401),
    ];
    for (t, code, close) in cases {
        let mut c = Client::connect(s.ws_addr).await;
        c.send(json!({"type": "auth", "id": 5, "token": t})).await;
        let err = c.expect_fatal(code, close).await;
        assert_eq!(err["id"], 5);
        assert!(!err.to_string().contains(&t) || t == "garbage");
    }
    // user_id must equal sub.
    let mut c = Client::connect(s.ws_addr).await;
    c.send(
        json!({"type": "auth", "id": 1, "token": token("alice", json!({})), "user_id": "mallory"}),
    )
    .await;
    c.expect_fatal("AUTH_FAILED", 4401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_timeout_closes_4408() {
    let mut config = test_config();
    config.session.auth_timeout_ms = 300;
    let s = server(config).await;
    let mut c = Client::connect(s.ws_addr).await;
    let started = Instant::now();
    c.expect_fatal("AUTH_TIMEOUT", 4408).await;
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_auth_and_malformed_frames() {
    let s = server(test_config()).await;
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "publish", "id": 3, "channel": "x", "data": 1}))
        .await;
    assert_eq!(c.expect_fatal("NOT_AUTHENTICATED", 4401).await["id"], 3);

    let mut c = Client::connect(s.ws_addr).await;
    c.send_text("{not json").await;
    c.expect_fatal("BAD_REQUEST", 4400).await;

    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.ws.send(Message::binary(vec![1, 2, 3]))
        .await
        .expect("send");
    c.expect_fatal("BAD_REQUEST", 4400).await;

    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    c.ws.send(Message::Frame(frame)).await.expect("send");
    let (_, ended) = c.until_closed().await;
    assert_eq!(ended, Ended::Close(1007));

    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.send(json!({"type": "auth", "id": 2, "token": token("alice", json!({}))}))
        .await;
    let reply = c.recv().await;
    assert_eq!(
        (reply["code"].as_str(), reply["fatal"].as_bool()),
        (Some("ALREADY_AUTHENTICATED"), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_closes_1009() {
    let mut config = test_config();
    config.limits.max_message_bytes = 1024;
    config.limits.max_frame_bytes = 1024;
    config.jwt.max_token_bytes = 1024;
    let s = server(config).await;
    let (mut c, _) =
        Client::authed(s.ws_addr, &token("alice", json!({"channels": ["general"]}))).await;
    let big = json!({"type": "publish", "id": 2, "channel": "general", "data": "x".repeat(2000)});
    c.send(big).await;
    let (seen, ended) = c.until_closed().await;
    assert_eq!(ended, Ended::Close(1009), "{seen:?}");
    if let Some(e) = seen.iter().find(|m| m["type"] == "error") {
        assert_eq!(e["code"], "MESSAGE_TOO_LARGE");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_closes_4429() {
    let mut config = test_config();
    config.limits.messages_per_second = 5;
    config.limits.message_burst = 10;
    let s = server(config).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    for i in 0..20 {
        c.send(json!({"type": "leave", "id": 10 + i, "channel": "x"}))
            .await;
    }
    c.expect_fatal("RATE_LIMITED", 4429).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_closes_4429_once_authenticated_and_1008_before() {
    let mut config = test_config();
    config.limits.frames_per_second = 100;
    config.limits.frame_burst = 200;
    let s = server(config).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    for _ in 0..400 {
        let _ = c.ws.feed(Message::Ping(Default::default())).await;
    }
    let _ = c.ws.flush().await;
    c.expect_fatal("RATE_LIMITED", 4429).await;

    let mut c = Client::connect(s.ws_addr).await;
    for _ in 0..400 {
        let _ = c.ws.feed(Message::Ping(Default::default())).await;
    }
    let _ = c.ws.flush().await;
    c.expect_fatal("RATE_LIMITED", 1008).await;
}

/// A count, not a timing: pings are answered in order and a pong echoes its ping, so the
/// highest number a pong echoes before the close is at most how many pings the server
/// handled. That stays within the budget over the time the client saw, which is longer than
/// the connection's life on the server; without the budget all 20,000 would be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_is_handled_no_further_than_the_frame_budget() {
    let mut config = test_config();
    config.limits.frames_per_second = 100;
    config.limits.frame_burst = 200;
    let s = server(config).await;
    let start = Instant::now();
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    for seq in 1..=20_000u64 {
        let _ =
            c.ws.feed(Message::Ping(seq.to_be_bytes().to_vec().into()))
                .await;
    }
    let _ = c.ws.flush().await;
    let (mut echoed, mut close) = (0, None);
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), c.ws.next()).await {
        match m {
            Message::Pong(p) => {
                if let Ok(seq) = <[u8; 8]>::try_from(&p[..]) {
                    echoed = echoed.max(u64::from_be_bytes(seq));
                }
            }
            Message::Close(f) => {
                close = f.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(close, Some(4429));
    assert!(
        echoed > 0,
        "no pong at all: the bound below would say nothing"
    );
    // The burst and the rate over the life, less the `auth` message, plus the ping that
    // went over (its pong may be queued before the budget refuses it).
    let bound = (200.0 + 100.0 * elapsed).floor() as u64;
    assert!(
        echoed <= bound,
        "{echoed} pings handled in {elapsed:.3} s; the budget allows {bound}"
    );
}

listener_case! {
why = "axum reassembles continuation frames below wsauth, which never sees them";
async fn a_flood_of_empty_continuation_frames_is_counted_and_closed() {
    let mut config = test_config();
    config.limits.frames_per_second = 100;
    config.limits.frame_burst = 200;
    let s = server(config).await;
    for authenticated in [true, false] {
        let mut c = if authenticated {
            Client::authed(s.ws_addr, &token("alice", json!({}))).await.0
        } else {
            Client::connect(s.ws_addr).await
        };
        // A text message that never ends: its first frame, then empty
        // non-final continuations, which produce no message at all.
        let first = Frame::message(b"{".to_vec(), OpCode::Data(Data::Text), false);
        let _ = c.ws.feed(Message::Frame(first)).await;
        for _ in 0..1_000 {
            let more = Frame::message(Vec::new(), OpCode::Data(Data::Continue), false);
            let _ = c.ws.feed(Message::Frame(more)).await;
        }
        let _ = c.ws.flush().await;
        let close = if authenticated { 4429 } else { 1008 };
        c.expect_fatal("RATE_LIMITED", close).await;
    }
}
}

// ----- §3 Session lifetime ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_notice_then_session_expired() {
    let mut config = test_config();
    config.jwt.leeway_s = 0;
    let s = server(config).await;
    let exp = now_s() + 3;
    let (mut c, reply) = Client::authed(s.ws_addr, &token("alice", json!({"exp": exp}))).await;
    assert_eq!(reply["expires_at"], exp * 1000);
    let notice = c.recv().await;
    assert_eq!(notice["type"], "expiring");
    assert_eq!(notice["expires_at"], exp * 1000);
    assert!(notice["in_ms"].as_u64().expect("in_ms") <= 2_000);
    c.expect_fatal("SESSION_EXPIRED", 4401).await;
    assert!(now_ms() >= exp * 1000, "not closed before exp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_success_and_non_fatal_failures() {
    let s = server(test_config()).await;
    let (mut c, _) = Client::authed(
        s.ws_addr,
        &token("alice", json!({"channels": ["general", "team:*"]})),
    )
    .await;
    c.send(json!({"type": "join", "id": 2, "channel": "team:1"}))
        .await;
    assert_eq!(c.recv().await["type"], "joined");
    let later = now_s() + 7200;
    c.send(json!({"type": "refresh", "id": 3, "token": token("alice", json!({"exp": later, "channels": ["general"]}))})).await;
    let r = c.recv().await;
    assert_eq!(
        (
            r["type"].as_str(),
            r["id"].as_u64(),
            r["expires_at"].as_u64()
        ),
        (Some("refreshed"), Some(3), Some(later * 1000))
    );
    let left = c.recv().await;
    assert_eq!(
        (
            left["type"].as_str(),
            left["channel"].as_str(),
            left["reason"].as_str()
        ),
        (Some("left"), Some("team:1"), Some("FORBIDDEN"))
    );

    // A revoked token is refused as a refresh too.
    let (status, _) = revoke(s.admin_addr, json!({"jti": "burned"})).await;
    assert_eq!(status, 200);
    let other_key = wsauth_core::jwt::sign_hs256(
        b"another-secret-that-is-32-bytes-long!",
        &json!({"sub": "alice", "exp": now_s() + 60}),
    );
    let failures = [
        (token("alice", json!({"jti": "burned"})), "TOKEN_REVOKED"),
        (other_key, "AUTH_FAILED"),
        (token("bob", json!({})), "SUBJECT_MISMATCH"),
        (
            token("alice", json!({"exp": now_s() - 100})),
            "TOKEN_EXPIRED",
        ),
        ("x.y.z".to_owned(), "INVALID_TOKEN"),
        (
            token("alice", json!({"iat": now_s() + 3600})),
            "TOKEN_NOT_YET_VALID",
        ),
    ];
    for (i, (t, code)) in failures.into_iter().enumerate() {
        let id = 10 + i as u64;
        c.send(json!({"type": "refresh", "id": id, "token": t}))
            .await;
        let e = c.recv().await;
        assert_eq!(
            (e["code"].as_str(), e["fatal"].as_bool(), e["id"].as_u64()),
            (Some(code), Some(false), Some(id))
        );
    }
    // Still alive and on the refreshed token.
    c.send(json!({"type": "join", "id": 20, "channel": "general"}))
        .await;
    assert_eq!(c.recv().await["type"], "joined");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_4408_and_keeps_the_session() {
    let mut config = test_config();
    config.session.heartbeat_ms = 100;
    config.session.idle_timeout_ms = 400;
    let s = server(config).await;
    let (mut c, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    // Not reading means not answering pings: the client is silent.
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.expect_fatal("IDLE_TIMEOUT", 4408).await;
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    assert_eq!(
        c.recv().await["type"],
        "resumed",
        "still resumable after an idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_1000_and_ends_the_session() {
    let s = server(test_config()).await;
    let (mut c, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.send(json!({"type": "logout", "id": 2})).await;
    let (seen, ended) = c.until_closed().await;
    assert!(seen.is_empty(), "logout has no other reply: {seen:?}");
    assert_eq!(ended, Ended::Close(1000));
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    c.expect_fatal("SESSION_NOT_FOUND", 4401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_at_once() {
    let s = server(test_config()).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let started = Instant::now();
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: 1000.into(),
        reason: "".into(),
    };
    c.ws.send(Message::Close(Some(frame)))
        .await
        .expect("close sent");
    let (_, ended) = c.until_closed().await;
    assert_eq!(ended, Ended::Close(1000), "the close is echoed");
    // Not a speed target: a reply that waited for a timeout would take 2 s.
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the close reply took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_under_both_policies() {
    let mut config = test_config();
    config.session.max_sessions_per_user = Some(1);
    let s = server(config.clone()).await;
    let (mut first, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let (_second, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    first.expect_fatal("SESSION_REPLACED", 4409).await;

    config.session.limit_policy = LimitPolicy::RejectNew;
    let s = server(config).await;
    let (mut first, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let mut second = Client::connect(s.ws_addr).await;
    second
        .send(json!({"type": "auth", "id": 1, "token": token("alice", json!({}))}))
        .await;
    second.expect_fatal("TOO_MANY_SESSIONS", 4429).await;
    first
        .send(json!({"type": "leave", "id": 2, "channel": "x"}))
        .await;
    assert_eq!(first.recv().await["type"], "left", "the first one lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_one_user_holds_at_most_32_sessions() {
    let s = server(test_config()).await;
    let (mut oldest, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let mut others = Vec::new();
    for _ in 1..32 {
        others.push(
            Client::authed(s.ws_addr, &token("alice", json!({})))
                .await
                .0,
        );
    }
    // 32 live: the oldest is still there.
    oldest
        .send(json!({"type": "leave", "id": 2, "channel": "x"}))
        .await;
    assert_eq!(oldest.recv().await["type"], "left");
    // The 33rd evicts it.
    others.push(
        Client::authed(s.ws_addr, &token("alice", json!({})))
            .await
            .0,
    );
    oldest.expect_fatal("SESSION_REPLACED", 4409).await;
}

// ----- §4 Resume ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_drop_replays_in_order_then_gap_and_reuse() {
    let mut config = test_config();
    config.session.resume_buffer = 3;
    let s = server(config).await;
    let t = token("alice", json!({"channels": ["general"]}));
    let (mut a, reply) = Client::authed(s.ws_addr, &t).await;
    a.send(json!({"type": "join", "id": 2, "channel": "general"}))
        .await;
    assert_eq!(a.recv().await["type"], "joined");
    let (mut bob, _) =
        Client::authed(s.ws_addr, &token("bob", json!({"channels": ["general"]}))).await;
    bob.send(json!({"type": "publish", "id": 2, "channel": "general", "data": {"n": 1}}))
        .await;
    assert_eq!(bob.recv().await["type"], "published");
    let m1 = a.recv().await;
    assert_eq!(
        (m1["seq"].as_u64(), m1["data"]["n"].as_u64()),
        (Some(1), Some(1))
    );
    a.drop_connection();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 2..=3 {
        bob.send(json!({"type": "publish", "id": n, "channel": "general", "data": {"n": n}}))
            .await;
        assert_eq!(bob.recv().await["type"], "published");
    }
    let mut a = Client::connect(s.ws_addr).await;
    a.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"], "last_seq": 1})).await;
    let r = a.recv().await;
    assert_eq!(
        (
            r["type"].as_str(),
            r["replayed"].as_u64(),
            r["gap"].as_bool()
        ),
        (Some("resumed"), Some(2), Some(false)),
        "{r}"
    );
    assert_eq!(r["channels"], json!(["general"]));
    assert_ne!(r["resume_token"], reply["resume_token"], "rotated");
    for n in 2..=3 {
        let m = a.recv().await;
        assert_eq!(
            (m["seq"].as_u64(), m["data"]["n"].as_u64()),
            (Some(n), Some(n))
        );
    }
    // Live delivery continues the numbering.
    bob.send(json!({"type": "publish", "id": 9, "channel": "general", "data": {"n": 4}}))
        .await;
    assert_eq!(
        bob.recv().await["id"],
        9,
        "bob's ack, so that later acks match their publishes"
    );
    assert_eq!(a.recv().await["seq"], 4);

    // Too many missed: gap.
    let token2 = r["resume_token"].clone();
    a.close(1001).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 5..=9 {
        bob.send(json!({"type": "publish", "id": 10 + n, "channel": "general", "data": {"n": n}}))
            .await;
        assert_eq!(bob.recv().await, json!({"type": "published", "id": 10 + n}));
    }
    let mut a = Client::connect(s.ws_addr).await;
    a.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": token2, "last_seq": 4})).await;
    let r = a.recv().await;
    assert_eq!(
        (r["replayed"].as_u64(), r["gap"].as_bool()),
        (Some(3), Some(true)),
        "{r}"
    );
    for n in 7..=9 {
        let m = a.recv().await;
        assert_eq!(m["seq"], n, "after {r}: {m}");
    }
    // The spent token is refused.
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": token2})).await;
    c.expect_fatal("SESSION_NOT_FOUND", 4401).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_the_grace_period_fails_and_takeover_replaces() {
    let mut config = test_config();
    config.session.resume_grace_ms = 300;
    let s = server(config).await;
    let (a, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    a.drop_connection();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    c.expect_fatal("SESSION_NOT_FOUND", 4401).await;

    // A half-open old connection loses to the resume.
    let (mut old, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let mut new = Client::connect(s.ws_addr).await;
    new.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    assert_eq!(new.recv().await["type"], "resumed");
    old.expect_fatal("SESSION_REPLACED", 4409).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_1001_and_the_session_resumes_on_the_next_server() {
    let config = test_config();
    let verifier = wsauth_server::server::build_verifier(&config, None).expect("verifier");
    let hub = wsauth_store::hub::Hub::new(16);
    let store = Arc::new(wsauth_store::MemoryStore::new(
        wsauth_server::server::store_settings(&config),
        hub.clone() as Arc<dyn wsauth_store::Notify>,
    ));
    let first =
        start_with_store(config.clone(), verifier.clone(), hub.clone(), store.clone()).await;
    let (mut c, reply) = Client::authed(first.ws_addr, &token("alice", json!({}))).await;
    let stopping = tokio::spawn(first.shutdown());
    let (_, ended) = c.until_closed().await;
    assert_eq!(ended, Ended::Close(1001));
    tokio::time::timeout(WAIT, stopping)
        .await
        .expect("shutdown ends in time")
        .expect("task");
    let second = start_with_store(config, verifier, hub, store).await;
    let mut c = Client::connect(second.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    assert_eq!(c.recv().await["type"], "resumed");
}

// ----- Revocation through the admin API ----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_revocation_of_each_kind_closes_4403_within_a_second() {
    let s = server(test_config()).await;
    let admin = s.admin_addr;
    // No key or a wrong key: 401 and nothing else.
    for key in [None, Some("wrong-key-wrong-key")] {
        let (status, body) = http(
            admin,
            "POST",
            "/admin/revoke",
            key,
            Some(json!({"sub": "alice"})),
        )
        .await;
        assert_eq!(status, 401);
        assert!(body.is_empty(), "{body}");
    }
    let (status, _) = http(admin, "GET", "/admin/sessions?sub=alice", None, None).await;
    assert_eq!(status, 401);

    // By jti.
    let (mut a, _) = Client::authed(s.ws_addr, &token("alice", json!({"jti": "t-1"}))).await;
    let (mut other, _) = Client::authed(s.ws_addr, &token("alice", json!({"jti": "t-2"}))).await;
    let started = Instant::now();
    let (status, body) = revoke(admin, json!({"jti": "t-1"})).await;
    assert_eq!((status, body.trim()), (200, r#"{"revoked":1}"#));
    a.expect_fatal("TOKEN_REVOKED", 4403).await;
    assert!(started.elapsed() < Duration::from_secs(1));
    let mut again = Client::connect(s.ws_addr).await;
    again
        .send(json!({"type": "auth", "id": 1, "token": token("alice", json!({"jti": "t-1"}))}))
        .await;
    again.expect_fatal("TOKEN_REVOKED", 4403).await;
    other
        .send(json!({"type": "leave", "id": 2, "channel": "x"}))
        .await;
    assert_eq!(
        other.recv().await["type"],
        "left",
        "another token of the same user is untouched"
    );

    // By session.
    let (status, body) = http(
        admin,
        "GET",
        "/admin/sessions?sub=alice",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let session_id = listed["sessions"][0]["session_id"]
        .as_str()
        .expect("a session")
        .to_owned();
    assert!(!body.contains("r_"), "never a resume token: {body}");
    let (status, body) = revoke(admin, json!({"session_id": session_id})).await;
    assert_eq!((status, body.trim()), (200, r#"{"revoked":1}"#));
    other.expect_fatal("SESSION_REVOKED", 4403).await;

    // By user: older tokens refused, newer accepted.
    let (mut b1, _) = Client::authed(s.ws_addr, &token("bob", json!({"iat": now_s() - 10}))).await;
    let (mut b2, _) = Client::authed(s.ws_addr, &token("bob", json!({"iat": now_s() - 10}))).await;
    let (status, body) = revoke(admin, json!({"sub": "bob"})).await;
    assert_eq!((status, body.trim()), (200, r#"{"revoked":2}"#));
    b1.expect_fatal("TOKEN_REVOKED", 4403).await;
    b2.expect_fatal("TOKEN_REVOKED", 4403).await;
    let mut old = Client::connect(s.ws_addr).await;
    old.send(json!({"type": "auth", "id": 1, "token": token("bob", json!({"iat": now_s() - 5}))}))
        .await;
    old.expect_fatal("TOKEN_REVOKED", 4403).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    Client::authed(s.ws_addr, &token("bob", json!({"iat": now_s()}))).await;

    let (status, _) = revoke(admin, json!({"sub": "a", "jti": "b"})).await;
    assert_eq!(status, 400, "exactly one of jti, sub, session_id");
}

// ----- §6 Channels --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_fan_out_with_per_session_seq_and_forbidden() {
    let s = server(test_config()).await;
    let (mut a, _) = Client::authed(
        s.ws_addr,
        &token("alice", json!({"channels": ["general", "team:*"]})),
    )
    .await;
    let (mut b, _) =
        Client::authed(s.ws_addr, &token("bob", json!({"channels": ["general"]}))).await;
    for c in [&mut a, &mut b] {
        c.send(json!({"type": "join", "id": 2, "channel": "general"}))
            .await;
        assert_eq!(
            c.recv().await,
            json!({"type": "joined", "id": 2, "channel": "general"})
        );
    }
    a.send(json!({"type": "join", "id": 3, "channel": "team:7"}))
        .await;
    assert_eq!(a.recv().await["type"], "joined");
    a.send(json!({"type": "publish", "id": 4, "channel": "team:7", "data": {"only": "alice"}}))
        .await;
    assert_eq!(a.recv().await, json!({"type": "published", "id": 4}));
    assert_eq!(a.recv().await["seq"], 1);
    a.send(json!({"type": "publish", "id": 5, "channel": "general", "data": [1, 2]}))
        .await;
    assert_eq!(a.recv().await["type"], "published");
    let am = a.recv().await;
    let bm = b.recv().await;
    assert_eq!(
        (am["seq"].as_u64(), bm["seq"].as_u64()),
        (Some(2), Some(1)),
        "seq is per session"
    );
    assert_eq!(
        bm,
        json!({"type": "message", "channel": "general", "from": "alice", "seq": 1, "data": [1, 2]})
    );
    b.send(json!({"type": "join", "id": 3, "channel": "team:7"}))
        .await;
    let e = b.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["fatal"].as_bool()),
        (Some("FORBIDDEN"), Some(false))
    );
    b.send(json!({"type": "publish", "id": 4, "channel": "user:bob", "data": 1}))
        .await;
    assert_eq!(
        b.recv().await["type"],
        "published",
        "user:{{sub}} is always allowed"
    );
    b.send(json!({"type": "leave", "id": 5, "channel": "general"}))
        .await;
    assert_eq!(b.recv().await["type"], "left");
    a.send(json!({"type": "publish", "id": 6, "channel": "general", "data": "after leave"}))
        .await;
    assert_eq!(a.recv().await["type"], "published");
    assert_eq!(a.recv().await["seq"], 3);
    b.send(json!({"type": "leave", "id": 6, "channel": "x"}))
        .await;
    assert_eq!(
        b.recv().await["id"],
        6,
        "nothing arrived for bob after left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_closed_slow_consumer() {
    let mut config = test_config();
    config.limits.outbound_queue = 8;
    config.limits.messages_per_second = 100_000;
    config.limits.message_burst = 100_000;
    let s = server(config).await;
    let (mut slow, _) =
        Client::authed(s.ws_addr, &token("slow", json!({"channels": ["firehose"]}))).await;
    slow.send(json!({"type": "join", "id": 2, "channel": "firehose"}))
        .await;
    assert_eq!(slow.recv().await["type"], "joined");
    let (mut fast, _) =
        Client::authed(s.ws_addr, &token("fast", json!({"channels": ["firehose"]}))).await;
    let chunk = "x".repeat(60_000);
    // Several MB, far more than the socket buffers hold.
    for i in 0..400 {
        fast.send(json!({"type": "publish", "id": 10 + i, "channel": "firehose", "data": chunk}))
            .await;
        assert_eq!(fast.recv().await["type"], "published");
        if s.metrics
            .closes()
            .keys()
            .any(|(_, e)| *e == "SLOW_CONSUMER")
        {
            break;
        }
    }
    let deadline = Instant::now() + WAIT;
    while !s
        .metrics
        .closes()
        .keys()
        .any(|(close, e)| *close == 1013 && *e == "SLOW_CONSUMER")
    {
        assert!(
            Instant::now() < deadline,
            "the slow client was not closed: {:?}",
            s.metrics.closes()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The client, reading at last, finds the stream ends (with the error and 1013
    // when the socket let them through).
    let (seen, ended) = slow.until_closed().await;
    if let Ended::Close(code) = ended {
        assert_eq!(code, 1013);
        assert!(seen.iter().any(|m| m["code"] == "SLOW_CONSUMER"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbound_queue_is_bounded_in_bytes_not_only_in_messages() {
    let mut config = test_config();
    // 256 messages of 60 KB would be 15 MB held for one client that does not read.
    config.limits.outbound_queue_bytes = 65_536;
    config.limits.messages_per_second = 100_000;
    config.limits.message_burst = 100_000;
    let s = server(config).await;
    // A reader whose kernel buffer is small and fixed (no autotuning), so that
    // what the server holds is the server's queue.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(8 * 1024).expect("rcvbuf");
    let stream = socket.connect(s.ws_addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/ws", s.ws_addr),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("upgrade");
    let mut slow = Client { ws };
    slow.send(
        json!({"type": "auth", "id": 1, "token": token("slow", json!({"channels": ["firehose"]}))}),
    )
    .await;
    assert_eq!(slow.recv().await["type"], "authenticated");
    slow.send(json!({"type": "join", "id": 2, "channel": "firehose"}))
        .await;
    assert_eq!(slow.recv().await["type"], "joined");
    let (mut fast, _) =
        Client::authed(s.ws_addr, &token("fast", json!({"channels": ["firehose"]}))).await;
    let chunk = "x".repeat(60_000);
    let closed = || {
        s.metrics
            .closes()
            .keys()
            .any(|(close, e)| *close == 1013 && *e == "SLOW_CONSUMER")
    };
    let mut published = 0;
    while published < 400 && !closed() {
        fast.send(
            json!({"type": "publish", "id": 10 + published, "channel": "firehose", "data": chunk}),
        )
        .await;
        assert_eq!(fast.recv().await["type"], "published");
        published += 1;
        if published % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(closed(), "not closed after {published} messages");
    // Counted in messages only, the queue would have taken 256 of them, on top
    // of what the socket buffers held.
    assert!(
        published < 256,
        "closed only after {published} messages of 60 KB"
    );
}

// ----- Malformed upgrades and frames ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sec_websocket_key_that_is_not_16_bytes_of_base64_gets_400() {
    let s = server(test_config()).await;
    for key in [
        "x",
        "dGhlIHNhbXBsZSBub25j",
        "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQ==AA",
        "!!!!!!!!!!!!!!!!!!!!!!==",
    ] {
        let (status, _) = raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {key}\r\n")).await;
        assert_eq!(status, 400, "key {key:?}");
    }
    let (status, _) = raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n")).await;
    assert_eq!(status, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_origin_key_or_authorization_headers_get_400() {
    let mut config = test_config();
    config.allowed_origins = vec!["https://good.example".into()];
    let s = server(config).await;
    let key = format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n");
    let t = token("alice", json!({}));
    let cases = [
        // An evil first Origin must not pass because a good one follows.
        format!("{key}Origin: https://evil.example\r\nOrigin: https://good.example\r\n"),
        format!("{key}Origin: https://good.example\r\nOrigin: https://good.example\r\n"),
        format!("{key}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"),
        format!("{key}Authorization: Bearer {t}\r\nAuthorization: Bearer {t}\r\n"),
    ];
    for extra in cases {
        let (status, _) = raw_upgrade(s.ws_addr, &extra).await;
        assert_eq!(status, 400, "{extra}");
    }
    let (status, _) =
        raw_upgrade(s.ws_addr, &format!("{key}Origin: https://good.example\r\n")).await;
    assert_eq!(status, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_closed_1002() {
    let s = server(test_config()).await;
    let cases: [(&str, Vec<u8>); 4] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i']),
        ("RSV1 without an extension", masked(0xC1, b"hi")),
        ("opcode 3", masked(0x83, b"")),
        ("126-byte ping", masked(0x89, &[0u8; 126])),
    ];
    for (what, frame) in cases {
        let (status, mut tcp) =
            raw_upgrade(s.ws_addr, &format!("Sec-WebSocket-Key: {GOOD_KEY}\r\n")).await;
        assert_eq!(status, 101);
        tcp.write_all(&frame).await.expect("frame");
        assert_eq!(close_code(&mut tcp).await, Some(1002), "{what}");
    }
}

/// `data` nested `depth` arrays deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_nested_deeper_than_the_limit_is_bad_request() {
    let s = server(test_config()).await;
    let alice = token("alice", json!({}));
    // 30,000 deep crashed a subscriber; 65 is one past the default 64. A
    // malformed message is fatal, as every malformed message.
    for depth in [30_000, 65] {
        let (mut c, _) = Client::authed(s.ws_addr, &alice).await;
        c.send_text(&format!(
            r#"{{"type":"publish","id":2,"channel":"general","data":{}}}"#,
            nested(depth)
        ))
        .await;
        let error = c.expect_fatal("BAD_REQUEST", 4400).await;
        assert_eq!(error["id"], 2, "{error}");
    }
    // At the limit, the message goes on (to the missing handler).
    let (mut c, _) = Client::authed(s.ws_addr, &alice).await;
    c.send_text(&format!(
        r#"{{"type":"rpc","id":4,"method":"chat.send","data":{}}}"#,
        nested(64)
    ))
    .await;
    let reply = c.recv().await;
    assert_eq!(reply["code"], "METHOD_NOT_FOUND", "{reply}");
    c.send_text(&format!(
        r#"{{"type":"rpc","id":5,"method":"chat.send","data":{}}}"#,
        nested(65)
    ))
    .await;
    c.expect_fatal("BAD_REQUEST", 4400).await;
}

// ----- Load ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_clients_authenticate_at_once_with_none_lost() {
    let mut config = test_config();
    config.limits.max_unauthenticated_per_ip = 4096;
    let s = server(config).await;
    let addr = s.ws_addr;
    let started = Instant::now();
    let tasks: Vec<_> = (0..2000)
        .map(|i| {
            tokio::spawn(async move {
                let t = token(&format!("user{i}"), json!({}));
                let (c, reply) = Client::authed(addr, &t).await;
                (c, reply["user_id"] == format!("user{i}"))
            })
        })
        .collect();
    let mut clients = Vec::with_capacity(2000);
    for t in tasks {
        let (c, ok) = t.await.expect("client task");
        assert!(ok);
        clients.push(c);
    }
    println!("2000 clients authenticated in {:?}", started.elapsed());
    assert_eq!(clients.len(), 2000);
    assert_eq!(s.metrics.snapshot()["auth"]["ok"], 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_per_ip_are_capped_with_429() {
    let mut config = test_config();
    config.limits.max_unauthenticated_per_ip = 3;
    let s = server(config).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(s.ws_addr).await);
    }
    let (status, body) = Client::connect_with(s.ws_addr, &[])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 429);
    assert!(body.contains("RATE_LIMITED"));
    // Authenticating frees a slot.
    held[0]
        .send(json!({"type": "auth", "id": 1, "token": token("alice", json!({}))}))
        .await;
    assert_eq!(held[0].recv().await["type"], "authenticated");
    assert!(Client::connect_with(s.ws_addr, &[]).await.is_ok());
}

listener_case! {
why = "hyper reads the request head: its deadline is the application's server's";
async fn a_slow_upgrade_request_is_dropped_at_the_handshake_timeout() {
    let mut config = test_config();
    config.limits.handshake_timeout_ms = 300;
    let s = server(config).await;
    let mut stream = tokio::net::TcpStream::connect(s.ws_addr)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let mut buf = [0u8; 64];
    let started = Instant::now();
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "the server closes without answering");
    assert!(started.elapsed() >= Duration::from_millis(250));
}
}

// ----- TLS ----------------------------------------------------------------------

listener_case! {
why = "TLS is the application's listener's: `tls` in the configuration is not used";
async fn wss_is_served_directly_with_the_configured_certificate() {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/testdata/tls");
    let mut config = test_config();
    config.tls = Some(wsauth_server::config::TlsConfig {
        cert_file: format!("{dir}/cert.pem").into(),
        key_file: format!("{dir}/key.pem").into(),
    });
    let s = server(config).await;

    let mut roots = RootCertStore::empty();
    let cert = CertificateDer::from_pem_file(format!("{dir}/ca.pem")).expect("ca");
    roots.add(cert).expect("root");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(s.ws_addr)
        .await
        .expect("tcp");
    let tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the configured certificate");
    let url = format!("wss://localhost:{}/ws", s.ws_addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls)
        .await
        .expect("upgrade over TLS");
    let auth = json!({"type": "auth", "id": 1, "token": token("alice", json!({}))});
    ws.send(Message::text(auth.to_string()))
        .await
        .expect("send");
    use futures_util::StreamExt;
    let reply = loop {
        if let Message::Text(t) = ws.next().await.expect("open").expect("message") {
            break serde_json::from_str::<serde_json::Value>(t.as_str()).expect("json");
        }
    };
    assert_eq!(reply["type"], "authenticated");

    // A plain-text client gets nothing useful from a TLS listener.
    let plain = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{}/ws", s.ws_addr)),
    )
    .await;
    assert!(
        matches!(plain, Ok(Err(_))),
        "plain ws:// must fail against wss://"
    );
}
}

// ----- Logs ---------------------------------------------------------------------

/// A writer that keeps what the log subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn one_log_line_per_connection_outcome_and_never_a_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // A current-thread runtime: every server task logs through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let s = server(test_config()).await;
    let good = token("alice", json!({"jti": "log-test"}));
    let (mut c, reply) = Client::authed(s.ws_addr, &good).await;
    c.send(json!({"type": "refresh", "id": 2, "token": good}))
        .await;
    assert_eq!(c.recv().await["type"], "refreshed");
    c.send(json!({"type": "logout"})).await;
    let _ = c.until_closed().await;
    let bad = token("mallory", json!({"exp": now_s() - 3600}));
    let mut b = Client::connect(s.ws_addr).await;
    b.send(json!({"type": "auth", "id": 1, "token": bad})).await;
    b.expect_fatal("TOKEN_EXPIRED", 4401).await;
    let header = format!("Bearer {bad}");
    let _ = Client::connect_with(s.ws_addr, &[("Authorization", &header)]).await;
    // Each connection's task logs its outcome as it ends; wait for the three
    // (bounded), not a fixed time: a loaded machine ends them later.
    let logs = || String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf8");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while logs().matches("connection closed").count() < 3 && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logs = logs();
    let closed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("connection closed"))
        .collect();
    assert_eq!(closed.len(), 3, "one line per connection outcome:\n{logs}");
    assert!(
        closed.iter().any(|l| l.contains("user=\"alice\"")
            && l.contains("close=1000")
            && l.contains("duration_ms")),
        "{logs}"
    );
    assert!(
        closed
            .iter()
            .any(|l| l.contains("code=\"TOKEN_EXPIRED\"") && l.contains("close=4401")),
        "{logs}"
    );
    assert!(
        closed
            .iter()
            .any(|l| l.contains("code=\"TOKEN_EXPIRED\"") && l.contains("close=0")),
        "the refused upgrade: {logs}"
    );
    let resume_token = reply["resume_token"].as_str().expect("resume token");
    for secret in [good.as_str(), bad.as_str(), resume_token, SECRET, ADMIN_KEY] {
        assert!(!logs.contains(secret), "a secret reached the logs:\n{logs}");
    }
    // Parts of a token are secrets too: its signature.
    let signature = good.rsplit('.').next().expect("signature");
    assert!(!logs.contains(signature));
}

// ----- Store faults -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_call_holds_up_neither_frames_nor_a_revocation() {
    use std::sync::atomic::Ordering;
    let (verifier, hub, store) = switchable_store(&test_config());
    let s = start_with_store(test_config(), verifier, hub, store.clone()).await;
    let (mut c, _) =
        Client::authed(s.ws_addr, &token("alice", json!({"channels": ["general"]}))).await;
    // Under the store timeout (5 s), far over what an answer at once takes.
    store.slow_joins_ms.store(4_000, Ordering::SeqCst);
    c.send(json!({"type": "join", "id": 2, "channel": "general"}))
        .await;
    // While the join waits on the store, the connection still reads: a ping is
    // answered at once...
    let started = Instant::now();
    c.ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .expect("ping");
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), c.ws.next())
            .await
            .expect("a frame in time");
        match frame {
            Some(Ok(Message::Pong(payload))) => {
                assert_eq!(&payload[..], b"still there?");
                break;
            }
            Some(Ok(Message::Text(t))) => panic!("nothing else before the pong: {t}"),
            Some(Ok(_)) => {}
            other => panic!("the socket ended before the pong: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_millis(2_000),
        "the pong waited for the store: {:?}",
        started.elapsed()
    );
    // ...and a revocation closes it without waiting for the store call.
    let (status, _) = revoke(s.admin_addr, json!({"sub": "alice"})).await;
    assert_eq!(status, 200);
    c.expect_fatal("TOKEN_REVOKED", 4403).await;
    assert!(
        started.elapsed() < Duration::from_millis(3_000),
        "the revocation waited for the store: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fails_auth_with_internal_1011_but_live_sessions_go_on() {
    use std::sync::atomic::Ordering;
    let (verifier, hub, store) = switchable_store(&test_config());
    let s = start_with_store(test_config(), verifier, hub, store.clone()).await;
    let (mut live, _) =
        Client::authed(s.ws_addr, &token("alice", json!({"channels": ["general"]}))).await;
    store.down.store(true, Ordering::SeqCst);

    let (status, _) = http(s.admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 503, "not ready while the store is down");
    let (status, _) = http(s.admin_addr, "GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "still alive");

    // New authentications fail closed.
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": token("bob", json!({}))}))
        .await;
    let e = c.expect_fatal("INTERNAL", 1011).await;
    assert_eq!(e["retry"], "reconnect");
    let header = format!("Bearer {}", token("bob", json!({})));
    let (status, body) = Client::connect_with(s.ws_addr, &[("Authorization", &header)])
        .await
        .err()
        .expect("refused");
    assert_eq!(status, 503);
    assert!(body.contains("INTERNAL"));

    // The live session's requests fail without closing it.
    live.send(json!({"type": "join", "id": 2, "channel": "general"}))
        .await;
    let e = live.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["fatal"].as_bool(), e["id"].as_u64()),
        (Some("INTERNAL"), Some(false), Some(2))
    );
    live.send(json!({"type": "refresh", "id": 3, "token": token("alice", json!({}))}))
        .await;
    let e = live.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["fatal"].as_bool()),
        (Some("INTERNAL"), Some(false))
    );

    // Back up: everything works again, the live session included.
    store.down.store(false, Ordering::SeqCst);
    live.send(json!({"type": "join", "id": 4, "channel": "general"}))
        .await;
    assert_eq!(live.recv().await["type"], "joined");
    Client::authed(s.ws_addr, &token("bob", json!({}))).await;
    let (status, _) = http(s.admin_addr, "GET", "/readyz", None, None).await;
    assert_eq!(status, 200);
}

// ----- §8 Application calls -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_without_a_handler_is_method_not_found_and_a_malformed_one_is_fatal() {
    let s = server(test_config()).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.send(json!({"type": "rpc", "id": 5, "method": "chat.send", "data": {"text": "hi"}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "id": 5, "code": "METHOD_NOT_FOUND",
               "message": "method not found", "fatal": false})
    );
    // Not fatal: the session goes on.
    c.send(json!({"type": "join", "id": 6, "channel": "user:alice"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "joined", "id": 6, "channel": "user:alice"})
    );
    c.send(json!({"type": "rpc", "id": 7, "method": "chat send!"}))
        .await;
    assert_eq!(c.expect_fatal("BAD_REQUEST", 4400).await["id"], 7);
}

/// The handlers the application-call cases share: `whoami` echoes the caller's
/// context and data, `refuse` refuses with details, `boom` panics, `slow.*`
/// answers after the milliseconds it is given, `chat.*` names its method.
fn call_handlers() -> wsauth_server::App {
    use wsauth_server::app::AppError;
    wsauth_server::App::new()
        .handle("whoami", |ctx, data| async move {
            Ok(json!({
                "sub": ctx.sub,
                "session_id": ctx.session_id,
                "team": ctx.claims.extra.get("team"),
                "node": &*ctx.node,
                "data": data,
            }))
        })
        .handle("refuse", |_, _| async move {
            Err(AppError::new("room is full").with_details(json!({"capacity": 2})))
        })
        .handle("boom", |_, _| async move {
            if true {
                panic!("a handler bug");
            }
            Ok(json!(null))
        })
        .handle("slow.*", |_, data| async move {
            let ms = data.as_u64().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(json!(ms))
        })
        .handle("chat.*", |_, _| async move { Ok(json!("chat.*")) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_reaches_the_embedded_handler_with_the_callers_verified_identity() {
    let mut config = test_config();
    config.node_id = Some("node-a".into());
    let s = server_with_app(config, call_handlers()).await;
    let (mut c, authed) = Client::authed(s.ws_addr, &token("alice", json!({"team": "red"}))).await;
    c.send(json!({"type": "rpc", "id": 5, "method": "whoami", "data": {"x": [1, 2]}}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "rpc_result", "id": 5, "data": {
            "sub": "alice", "session_id": authed["session_id"], "team": "red",
            "node": "node-a", "data": {"x": [1, 2]}}})
    );
    // `data` absent is null; a method under a prefix reaches the prefix's handler.
    c.send(json!({"type": "rpc", "id": 6, "method": "whoami"}))
        .await;
    assert_eq!(c.recv().await["data"]["data"], json!(null));
    c.send(json!({"type": "rpc", "id": 7, "method": "chat.send"}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "rpc_result", "id": 7, "data": "chat.*"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_error_is_answered_and_the_session_goes_on() {
    let mut config = test_config();
    config.app.rpc_timeout_ms = 300;
    let s = server_with_app(config, call_handlers()).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let mut call = async |id: u64, method: &str, data: serde_json::Value| {
        c.send(json!({"type": "rpc", "id": id, "method": method, "data": data}))
            .await;
        c.recv().await
    };
    assert_eq!(
        call(1, "refuse", json!(null)).await,
        json!({"type": "error", "id": 1, "code": "APP_ERROR", "message": "room is full",
               "fatal": false, "details": {"capacity": 2}})
    );
    let panicked = call(2, "boom", json!(null)).await;
    assert_eq!(
        (panicked["code"].as_str(), panicked["id"].as_u64()),
        (Some("UNAVAILABLE"), Some(2))
    );
    let started = Instant::now();
    let late = call(3, "slow.sleep", json!(5_000)).await;
    assert_eq!(
        (late["code"].as_str(), late["id"].as_u64()),
        (Some("UNAVAILABLE"), Some(3))
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at the deadline"
    );
    let missing = call(4, "nothing.here", json!(null)).await;
    assert_eq!(missing["code"], "METHOD_NOT_FOUND");
    assert_eq!(
        call(5, "slow.ok", json!(1)).await,
        json!({"type": "rpc_result", "id": 5, "data": 1})
    );
    let metrics = s.metrics.render(0);
    for outcome in ["ok", "app_error", "not_found", "unavailable"] {
        let line = format!("wsauth_rpc_total{{outcome=\"{outcome}\"}} ");
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in /metrics"));
        let expected = if outcome == "unavailable" { "2" } else { "1" };
        assert_eq!(count, expected, "{outcome}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_results_overtake_each_other_and_the_limit_answers_busy() {
    let mut config = test_config();
    config.app.max_rpc_in_flight = 2;
    let s = server_with_app(config, call_handlers()).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.send(json!({"type": "rpc", "id": 1, "method": "slow.a", "data": 400}))
        .await;
    c.send(json!({"type": "rpc", "id": 2, "method": "slow.b", "data": 0}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "rpc_result", "id": 2, "data": 0})
    );
    c.send(json!({"type": "rpc", "id": 3, "method": "slow.c", "data": 400}))
        .await;
    c.send(json!({"type": "rpc", "id": 4, "method": "slow.d", "data": 0}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "error", "id": 4, "code": "BUSY", "message": "too many calls in flight", "fatal": false})
    );
    let mut rest: Vec<u64> = Vec::new();
    for _ in 0..2 {
        rest.push(c.recv().await["id"].as_u64().expect("id"));
    }
    rest.sort_unstable();
    assert_eq!(rest, [1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_hooks_tell_the_application_each_start_and_end() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (started, ended) = (tx.clone(), tx);
    let app = wsauth_server::App::new()
        .on_session_start(move |e| {
            let tx = started.clone();
            async move {
                let _ = tx.send(format!("start {} resumed={}", e.sub, e.resumed));
            }
        })
        .on_session_end(move |e| {
            let tx = ended.clone();
            async move {
                let reason = e.reason.map_or("none", |c| c.as_str());
                let _ = tx.send(format!("end {} {reason} resumable={}", e.sub, e.resumable));
            }
        });
    let s = server_with_app(test_config(), app).await;
    let mut next = async || {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("a hook runs")
            .expect("hook message")
    };
    let (c, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    assert_eq!(next().await, "start alice resumed=false");
    c.drop_connection();
    assert_eq!(next().await, "end alice none resumable=true");
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]})).await;
    assert_eq!(c.recv().await["type"], "resumed");
    assert_eq!(next().await, "start alice resumed=true");
    c.send(json!({"type": "logout", "id": 2})).await;
    c.until_closed().await;
    assert_eq!(next().await, "end alice none resumable=false");
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": token("bob", json!({"exp": now_s() - 100}))}))
        .await;
    c.until_closed().await;
    let (c, _) = Client::authed(s.ws_addr, &token("carol", json!({}))).await;
    assert_eq!(
        next().await,
        "start carol resumed=false",
        "no hook for a failed auth"
    );
    drop(c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_sessions_calling_ten_times_at_once_each_get_their_own_answers() {
    let s = server_with_app(test_config(), call_handlers()).await;
    let mut clients = Vec::new();
    for i in 0..200 {
        let (c, authed) = Client::authed(s.ws_addr, &token(&format!("user{i}"), json!({}))).await;
        clients.push((i, c, authed["session_id"].clone()));
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|(i, mut c, session_id)| {
            tokio::spawn(async move {
                for id in 0..10u64 {
                    c.send(json!({"type": "rpc", "id": id, "method": "whoami", "data": id}))
                        .await;
                }
                let mut seen = Vec::new();
                for _ in 0..10 {
                    let r = c.recv().await;
                    assert_eq!(r["type"], "rpc_result", "{r}");
                    assert_eq!(r["data"]["sub"], format!("user{i}"));
                    assert_eq!(r["data"]["session_id"], session_id);
                    assert_eq!(
                        r["data"]["data"], r["id"],
                        "each answer carries its own call's data"
                    );
                    seen.push(r["id"].as_u64().expect("id"));
                }
                seen.sort_unstable();
                assert_eq!(seen, (0..10).collect::<Vec<_>>());
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
}

// ----- §9 Server API ------------------------------------------------------------

const API_KEY: &str = "the-application-backend-key";

fn api_config() -> wsauth_server::config::Config {
    let mut config = test_config();
    config.api_key = Some(API_KEY.into());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_reaches_the_channels_sessions_with_no_from() {
    let s = server(api_config()).await;
    let team = json!({"channels": ["team:*"]});
    let (mut alice, _) = Client::authed(s.ws_addr, &token("alice", team.clone())).await;
    let (mut bob, _) = Client::authed(s.ws_addr, &token("bob", team)).await;
    alice
        .send(json!({"type": "join", "id": 2, "channel": "team:42"}))
        .await;
    assert_eq!(alice.recv().await["type"], "joined");
    let body = json!({"channel": "team:42", "data": {"text": "deploy at 5"}});
    let (status, reply) = http(
        s.admin_addr,
        "POST",
        "/api/publish",
        Some(API_KEY),
        Some(body),
    )
    .await;
    assert_eq!((status, reply.as_str()), (200, r#"{"sessions":1}"#));
    assert_eq!(
        alice.recv().await,
        json!({"type": "message", "channel": "team:42", "seq": 1, "data": {"text": "deploy at 5"}})
    );
    // The admin key works too; bob, who never joined, gets nothing of either.
    let body = json!({"channel": "team:42", "data": 2});
    let (status, _) = http(
        s.admin_addr,
        "POST",
        "/api/publish",
        Some(ADMIN_KEY),
        Some(body),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(alice.recv().await["seq"], 2);
    bob.send(json!({"type": "join", "id": 3, "channel": "team:7"}))
        .await;
    assert_eq!(
        bob.recv().await["type"],
        "joined",
        "nothing came before this reply"
    );
    // From the application's own code, the same.
    assert_eq!(s.api().publish("team:42", &json!(3)).await, Ok(1));
    assert_eq!(alice.recv().await["data"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_send_reaches_every_session_of_the_user_live_or_resumable() {
    let s = server(api_config()).await;
    let (mut first, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let (mut second, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let (dropped, reply) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let (mut bob, _) = Client::authed(s.ws_addr, &token("bob", json!({}))).await;
    second
        .send(json!({"type": "join", "id": 2, "channel": "user:alice"}))
        .await;
    assert_eq!(second.recv().await["type"], "joined");
    dropped.drop_connection();
    // Wait until the store holds the dropped session as resumable.
    let deadline = Instant::now() + WAIT;
    while s
        .api()
        .live_sessions("alice")
        .await
        .expect("sessions")
        .len()
        != 2
    {
        assert!(
            Instant::now() < deadline,
            "the dropped session was never detached"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.api().sessions("alice").await.expect("sessions").len(), 3);

    let body = json!({"sub": "alice", "data": {"notice": "new invoice"}});
    let (status, reply_body) =
        http(s.admin_addr, "POST", "/api/send", Some(API_KEY), Some(body)).await;
    assert_eq!((status, reply_body.as_str()), (200, r#"{"sessions":3}"#));
    let expected = json!({"type": "message", "channel": "user:alice", "seq": 1, "data": {"notice": "new invoice"}});
    assert_eq!(first.recv().await, expected, "joined or not");
    assert_eq!(second.recv().await, expected);
    let mut resumed = Client::connect(s.ws_addr).await;
    resumed.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"], "last_seq": 0})).await;
    let r = resumed.recv().await;
    assert_eq!(r["type"], "resumed", "{r}");
    assert_eq!(resumed.recv().await, expected, "replayed on resume");
    bob.send(json!({"type": "join", "id": 2, "channel": "user:bob"}))
        .await;
    assert_eq!(bob.recv().await["type"], "joined", "bob got nothing");
    assert_eq!(s.api().send("nobody", &json!(1)).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_api_refuses_without_a_key_and_explains_bad_bodies() {
    let config = api_config();
    let too_large = "y".repeat(config.limits.max_message_bytes);
    let s = server(config).await;
    let publish = |body: serde_json::Value, key: Option<&'static str>| {
        let addr = s.admin_addr;
        async move { http(addr, "POST", "/api/publish", key, Some(body)).await }
    };
    let good = json!({"channel": "general", "data": 1});
    assert_eq!(publish(good.clone(), None).await, (401, String::new()));
    assert_eq!(
        publish(good.clone(), Some("not-the-api-key-at-all")).await,
        (401, String::new())
    );
    for (body, says) in [
        (json!({"data": 1}), "missing field `channel`"),
        (
            json!({"channel": "general", "data": 1, "chanel": "x"}),
            "unknown field `chanel`",
        ),
        (json!({"channel": "", "data": 1}), "non-empty"),
        (
            json!({"channel": "a\u{7}b", "data": 1}),
            "control characters",
        ),
        (
            json!({"channel": "x".repeat(257), "data": 1}),
            "longer than 256",
        ),
        (
            json!({"channel": "general", "data": too_large}),
            "limits.max_message_bytes",
        ),
    ] {
        let (status, reply) = publish(body.clone(), Some(API_KEY)).await;
        let reply: serde_json::Value = serde_json::from_str(&reply).expect("JSON error body");
        assert_eq!(
            (status, reply["code"].as_str()),
            (400, Some("BAD_REQUEST")),
            "{body}"
        );
        let message = reply["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, reply) = http(
        s.admin_addr,
        "POST",
        "/api/send",
        Some(API_KEY),
        Some(json!({"sub": "", "data": 1})),
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let metrics = s.metrics.render(0);
    for (labels, count) in [
        ("route=\"/api/publish\",status=\"401\"", "2"),
        ("route=\"/api/publish\",status=\"400\"", "6"),
        ("route=\"/api/send\",status=\"400\"", "1"),
    ] {
        let line = format!("wsauth_api_requests_total{{{labels}}} {count}");
        assert!(metrics.lines().any(|l| l == line), "no {line} in /metrics");
    }
}

// ----- §10 What a client library relies on --------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_ping_is_answered_pong_with_its_id() {
    let s = server(test_config()).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    c.send(json!({"type": "ping", "id": 42})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "id": 42}));
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
    let mut early = Client::connect(s.ws_addr).await;
    early.send(json!({"type": "ping", "id": 1})).await;
    assert_eq!(early.expect_fatal("NOT_AUTHENTICATED", 4401).await["id"], 1);
}
