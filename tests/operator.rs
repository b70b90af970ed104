//! What an operator sees: `/metrics` moves by exactly what the clients did, the
//! admin API refuses without its key and does what each call says, and the
//! feature switches change behaviour and are reported.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// One scrape: `name{labels}` → value, labels as the exposition writes them.
async fn scrape(addr: std::net::SocketAddr) -> BTreeMap<String, f64> {
    let (status, body) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

fn delta(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, series: &str) -> f64 {
    after.get(series).copied().unwrap_or(0.0) - before.get(series).copied().unwrap_or(0.0)
}

async fn stats(addr: std::net::SocketAddr) -> Value {
    let (status, body) = http(addr, "GET", "/api/stats", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Polls until `ok` holds for a fresh scrape (counters move after the close frame
/// the client sees, by a few microseconds).
async fn scrape_until(
    addr: std::net::SocketAddr,
    ok: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let m = scrape(addr).await;
        if ok(&m) || std::time::Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_exactly_what_the_clients_did() {
    let mut config = test_config();
    config.jwt.leeway_s = 0;
    let s = server(config).await;
    let before = scrape(s.admin_addr).await;

    // Three expired tokens: three TOKEN_EXPIRED refusals, three 4401 closes.
    for _ in 0..3 {
        let mut c = Client::connect(s.ws_addr).await;
        let expired = token(
            "mallory",
            json!({"exp": now_s() - 10, "iat": now_s() - 100}),
        );
        c.send(json!({"type": "auth", "id": 1, "token": expired}))
            .await;
        c.expect_fatal("TOKEN_EXPIRED", 4401).await;
    }
    // Two message auths and one header auth that succeed.
    let (mut alice, reply) =
        Client::authed(s.ws_addr, &token("alice", json!({"jti": "a-1"}))).await;
    let (_bob, _) = Client::authed(s.ws_addr, &token("bob", json!({}))).await;
    let header = format!("Bearer {}", token("carol", json!({})));
    let mut carol = Client::connect_with(s.ws_addr, &[("Authorization", &header)])
        .await
        .expect("header auth");
    assert_eq!(carol.recv().await["type"], "authenticated");
    // One refresh, one drop and resume.
    alice
        .send(json!({"type": "refresh", "id": 2, "token": token("alice", json!({"jti": "a-2"}))}))
        .await;
    assert_eq!(alice.recv().await["type"], "refreshed");
    alice.drop_connection();
    let mut again = Client::connect(s.ws_addr).await;
    again
        .send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]}))
        .await;
    assert_eq!(again.recv().await["type"], "resumed");
    // One revocation through the admin API closes that socket.
    let (status, _) = revoke(s.admin_addr, json!({"jti": "a-2"})).await;
    assert_eq!(status, 200);
    again.expect_fatal("TOKEN_REVOKED", 4403).await;

    let after = scrape_until(s.admin_addr, |m| {
        delta(&before, m, "wsauth_revocation_closes_total") >= 1.0
    })
    .await;
    let d = |series: &str| delta(&before, &after, series);
    assert_eq!(
        d(r#"wsauth_auth_total{method="message",outcome="refused",code="TOKEN_EXPIRED"}"#),
        3.0
    );
    assert_eq!(
        d(r#"wsauth_closes_total{close_code="4401",error_code="TOKEN_EXPIRED"}"#),
        3.0
    );
    assert_eq!(
        d(r#"wsauth_auth_total{method="message",outcome="ok",code="none"}"#),
        2.0
    );
    assert_eq!(
        d(r#"wsauth_auth_total{method="header",outcome="ok",code="none"}"#),
        1.0
    );
    assert_eq!(d("wsauth_auth_duration_seconds_count"), 3.0);
    // Five tokens verified at auth, one at refresh.
    assert_eq!(d("wsauth_token_verify_duration_seconds_count"), 7.0);
    assert_eq!(d(r#"wsauth_refresh_total{outcome="ok",code="none"}"#), 1.0);
    assert_eq!(d("wsauth_refresh_duration_seconds_count"), 1.0);
    assert_eq!(d("wsauth_refresh_time_left_seconds_count"), 1.0);
    assert_eq!(d(r#"wsauth_resume_total{outcome="ok",code="none"}"#), 1.0);
    assert_eq!(d(r#"wsauth_revocations_total{kind="jti"}"#), 1.0);
    assert_eq!(d("wsauth_revocation_closes_total"), 1.0);
    assert_eq!(d("wsauth_revocation_propagation_seconds_count"), 1.0);
    assert_eq!(
        d(r#"wsauth_closes_total{close_code="4403",error_code="TOKEN_REVOKED"}"#),
        1.0
    );
    assert!(d(r#"wsauth_store_duration_seconds_count{op="create"}"#) >= 3.0);
    assert_eq!(
        after.get("wsauth_sessions_live"),
        Some(&2.0),
        "bob and carol"
    );

    // No user, session or token in any series.
    let (_, text) = http(s.admin_addr, "GET", "/metrics", None, None).await;
    let session_id = reply["session_id"].as_str().expect("id");
    let resume_token = reply["resume_token"].as_str().expect("token");
    for secret in [
        "alice",
        "mallory",
        "a-1",
        "a-2",
        session_id,
        resume_token,
        "eyJ",
    ] {
        assert!(!text.contains(secret), "{secret} appears in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_at_expiry_is_counted() {
    let mut config = test_config();
    config.jwt.leeway_s = 0;
    let s = server(config).await;
    let before = scrape(s.admin_addr).await;
    let short = token("dave", json!({"exp": now_s() + 2}));
    let (mut c, _) = Client::authed(s.ws_addr, &short).await;
    let (seen, ended) = c.until_closed().await;
    assert_eq!(ended, Ended::Close(4401));
    assert!(seen.iter().any(|m| m["code"] == "SESSION_EXPIRED"));
    let after = scrape_until(s.admin_addr, |m| {
        delta(&before, m, "wsauth_sessions_expired_total") >= 1.0
    })
    .await;
    assert_eq!(delta(&before, &after, "wsauth_sessions_expired_total"), 1.0);
    assert_eq!(delta(&before, &after, "wsauth_expiring_sent_total"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_need_the_key_and_reveal_nothing_without_it() {
    let s = server(test_config()).await;
    let calls = [
        ("GET", "/api/stats", None),
        ("GET", "/admin/sessions?sub=alice", None),
        ("DELETE", "/admin/sessions/s_whatever", None),
        ("GET", "/admin/refusals", None),
        ("POST", "/admin/revoke", Some(json!({"sub": "alice"}))),
    ];
    for (method, path, body) in calls {
        for key in [None, Some("wrong-key-of-some-length")] {
            let (status, text) = http(s.admin_addr, method, path, key, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with {key:?}");
            assert!(text.is_empty(), "{method} {path} said {text:?}");
        }
    }
    // The open routes stay open.
    assert_eq!(
        http(s.admin_addr, "GET", "/healthz", None, None).await.0,
        200
    );
    assert_eq!(
        http(s.admin_addr, "GET", "/readyz", None, None).await.0,
        200
    );
    assert_eq!(
        http(s.admin_addr, "GET", "/metrics", None, None).await.0,
        200
    );
    assert_eq!(
        http(s.admin_addr, "GET", "/dashboard", None, None).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_admin_call_does_what_it_says() {
    let mut config = test_config();
    config.node_id = Some("node-7".into());
    let s = server(config).await;
    let (mut alice, reply) =
        Client::authed(s.ws_addr, &token("alice", json!({"channels": ["general"]}))).await;
    alice
        .send(json!({"type": "join", "id": 2, "channel": "general"}))
        .await;
    assert_eq!(alice.recv().await["type"], "joined");

    // The user's sessions: node, times, channels; never a token.
    let (status, body) = http(
        s.admin_addr,
        "GET",
        "/admin/sessions?sub=alice",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let listed: Value = serde_json::from_str(&body).expect("JSON");
    let session = &listed["sessions"][0];
    assert_eq!(session["session_id"], reply["session_id"]);
    assert_eq!(session["node"], "node-7");
    assert_eq!(session["attached"], true);
    assert_eq!(session["channels"], json!(["general"]));
    assert!(session["expires_at"].as_u64() > session["created_at"].as_u64());
    assert!(!body.contains(reply["resume_token"].as_str().expect("token")));

    // Ending a session closes its socket.
    let path = format!(
        "/admin/sessions/{}",
        reply["session_id"].as_str().expect("id")
    );
    let (status, body) = http(s.admin_addr, "DELETE", &path, Some(ADMIN_KEY), None).await;
    assert_eq!((status, body.as_str()), (200, r#"{"ended":true}"#));
    alice.expect_fatal("SESSION_REVOKED", 4403).await;
    let (status, body) = http(s.admin_addr, "DELETE", &path, Some(ADMIN_KEY), None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"ended":false}"#),
        "gone now"
    );

    // Refusals: a revoked user who keeps trying is listed, by name, here only.
    let (status, _) = revoke(s.admin_addr, json!({"sub": "mallory"})).await;
    assert_eq!(status, 200);
    for _ in 0..3 {
        let old = token("mallory", json!({"jti": "m-1", "iat": now_s() - 60}));
        let mut c = Client::connect(s.ws_addr).await;
        c.send(json!({"type": "auth", "id": 1, "token": old})).await;
        c.expect_fatal("TOKEN_REVOKED", 4403).await;
    }
    let (status, body) = http(
        s.admin_addr,
        "GET",
        "/admin/refusals",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let refusals: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(refusals["users"][0], json!({"sub": "mallory", "count": 3}));
    assert_eq!(refusals["jtis"][0], json!({"jti": "m-1", "count": 3}));

    // The stats snapshot.
    let snapshot = stats(s.admin_addr).await;
    assert_eq!(snapshot["node"], "node-7");
    assert_eq!(snapshot["auth"]["ok"], 1);
    assert_eq!(snapshot["auth"]["refused_by_code"]["TOKEN_REVOKED"], 3);
    assert_eq!(snapshot["revocations"]["issued"], 2);
    assert_eq!(snapshot["store"]["kind"], "memory");
    assert_eq!(snapshot["store"]["ready"], true);
    assert!(snapshot["auth_latency_ms"]["p99"].as_f64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_switches_change_behaviour_and_are_reported() {
    let mut config = test_config();
    config.features.resume = false;
    config.features.session_limits = false;
    config.features.dashboard = false;
    config.session.max_sessions_per_user = Some(1);
    let s = server(config).await;
    let snapshot = stats(s.admin_addr).await;
    assert_eq!(
        snapshot["features"],
        json!({"session_limits": false, "resume": false, "query_token": false, "dashboard": false})
    );
    assert_eq!(
        http(s.admin_addr, "GET", "/dashboard", None, None).await.0,
        404
    );
    // No limit: a second session of the same user is admitted.
    let (first, reply) = Client::authed(s.ws_addr, &token("erin", json!({}))).await;
    let (_second, _) = Client::authed(s.ws_addr, &token("erin", json!({}))).await;
    // No resume: a dropped session is gone.
    first.drop_connection();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "resume", "id": 1, "session_id": reply["session_id"], "resume_token": reply["resume_token"]}))
        .await;
    c.expect_fatal("SESSION_NOT_FOUND", 4401).await;
}
