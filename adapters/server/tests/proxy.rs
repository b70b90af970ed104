//! The RPC proxy against a real HTTP backend on 127.0.0.1: the request as the
//! contract says (body fields, signature, timestamp), every answer's mapping, the
//! timeout, a refused connection, the bound on concurrent backend calls and the
//! reuse of connections.
//!
//! The backend checks the signature with its own HMAC code (the `hmac` crate's
//! constant-time `verify_slice`, not `wsauth_server::proxy::signature`) and
//! answers 401 to a bad or stale one, which the proxy maps to `UNAVAILABLE`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::serve::ListenerExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wsauth_core::jwt::Claims;
use wsauth_core::{CallContext, CallResult, Payload};
use wsauth_server::config::AppSettings;
use wsauth_server::proxy::Proxy;

const SECRET: &str = "proxy-backend-secret-0123456789abcdef";
/// How far the backend lets a timestamp be from its own clock, in seconds.
const FRESH_S: u64 = 300;

#[derive(Default)]
struct Backend {
    /// TCP connections accepted.
    connections: AtomicUsize,
    /// Requests being handled now, and the most ever at once.
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Requests whose signature failed.
    refused: AtomicUsize,
    /// Requests handled.
    requests: AtomicUsize,
}

/// The backend's own check: `X-Wsauth-Signature: sha256=<hex>` over
/// `"<X-Wsauth-Timestamp>.<body>"`, and a timestamp within [`FRESH_S`].
fn verified(headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (header("x-wsauth-timestamp"), header("x-wsauth-signature")) else {
        return false;
    };
    let Ok(ts_s) = ts.parse::<u64>() else {
        return false;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if now.abs_diff(ts_s) > FRESH_S {
        return false;
    }
    let Some(Ok(mac_bytes)) = sig.strip_prefix("sha256=").map(hex::decode) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&mac_bytes).is_ok()
}

async fn handle(
    State(backend): State<Arc<Backend>>,
    Path(mode): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    backend.requests.fetch_add(1, Ordering::SeqCst);
    if !verified(&headers, &body) {
        backend.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::UNAUTHORIZED, "bad signature".into());
    }
    let ok = |v: Value| (StatusCode::OK, v.to_string());
    match mode.as_str() {
        "echo" => {
            let received: Value = serde_json::from_slice(&body).expect("the body is JSON");
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            ok(json!({"result": {"received": received, "content_type": content_type}}))
        }
        "null" => ok(json!({"result": null})),
        "error" => ok(json!({
            "error": {"message": "room is full", "details": {"room": "lobby", "max": 3}}
        })),
        "error-plain" => ok(json!({"error": {"message": "no"}})),
        "error-no-message" => ok(json!({"error": {"details": {}}})),
        "neither" => ok(json!({"other": 1})),
        "both" => ok(json!({"result": 1, "error": {"message": "x"}})),
        "garbage" => (StatusCode::OK, "<html>not json".into()),
        "huge" => ok(json!({"result": "x".repeat(1024 * 1024 + 10)})),
        "404" => (StatusCode::NOT_FOUND, "no such method".into()),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "oops".into()),
        "redirect" => (StatusCode::TEMPORARY_REDIRECT, String::new()),
        "hang" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            ok(json!({"result": "too late"}))
        }
        "slow" => {
            let now = backend.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            backend.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(40)).await;
            backend.in_flight.fetch_sub(1, Ordering::SeqCst);
            ok(json!({"result": "done"}))
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Starts a backend on 127.0.0.1:0; returns its base URL and counters.
async fn start_backend() -> (String, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    let app = Router::new()
        .route("/rpc/{mode}", post(handle))
        .with_state(backend.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = backend.clone();
    let listener = listener.tap_io(move |_| {
        counter.connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/rpc"), backend)
}

fn settings(url: String) -> AppSettings {
    AppSettings {
        rpc_url: Some(url),
        rpc_secret: Some(SECRET.to_owned()),
        ..AppSettings::default()
    }
}

fn proxy(settings: &AppSettings) -> Proxy {
    Proxy::new(settings, "node-7")
        .unwrap()
        .expect("rpc_url is set")
}

fn context() -> CallContext {
    let mut claims = Claims::new("alice", 1_900_000_000_000);
    claims.iat_ms = Some(1_800_000_000_000);
    claims.jti = Some("token-1".into());
    claims.aud = vec!["chat".into()];
    claims.extra.insert("tenant".into(), json!("acme"));
    CallContext {
        sub: "alice".into(),
        session_id: "sess-123".into(),
        claims: Arc::new(claims),
    }
}

fn data() -> Payload {
    Payload::from_json(r#"{"text":"hi","to":["bob"]}"#).unwrap()
}

async fn call(proxy: &Proxy, method: &str) -> CallResult {
    proxy.call(method, &data(), &context()).await
}

fn result_json(result: CallResult) -> Value {
    match result {
        CallResult::Ok(payload) => serde_json::from_str(payload.get()).unwrap(),
        other => panic!("expected a result, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_is_a_signed_post_with_exactly_the_contracts_fields() {
    let (base, backend) = start_backend().await;
    let proxy = proxy(&settings(format!("{base}/echo")));
    let echoed = result_json(call(&proxy, "chat.send").await);
    assert_eq!(
        backend.refused.load(Ordering::SeqCst),
        0,
        "signature verified"
    );
    assert_eq!(echoed["content_type"], "application/json");
    assert_eq!(
        echoed["received"],
        json!({
            "method": "chat.send",
            "data": {"text": "hi", "to": ["bob"]},
            "sub": "alice",
            "session_id": "sess-123",
            "claims": {
                "sub": "alice", "exp": 1_900_000_000u64, "iat": 1_800_000_000u64,
                "jti": "token-1", "aud": "chat", "tenant": "acme"
            },
            "node": "node-7"
        })
    );
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_backend_and_is_unavailable() {
    let (base, backend) = start_backend().await;
    let mut wrong = settings(format!("{base}/echo"));
    wrong.rpc_secret = Some(SECRET.replace('0', "1"));
    assert_eq!(
        call(&proxy(&wrong), "chat.send").await,
        CallResult::Unavailable
    );
    assert_eq!(backend.refused.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_secret_file_signs_like_the_secret() {
    let (base, backend) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rpc.key");
    std::fs::write(&path, format!("{SECRET}\n")).unwrap();
    let from_file = AppSettings {
        rpc_url: Some(format!("{base}/null")),
        rpc_secret_file: Some(path),
        ..AppSettings::default()
    };
    assert_eq!(
        result_json(call(&proxy(&from_file), "m").await),
        Value::Null
    );
    assert_eq!(backend.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_null_result_is_a_result() {
    let (base, _) = start_backend().await;
    let proxy = proxy(&settings(format!("{base}/null")));
    assert_eq!(result_json(call(&proxy, "m").await), Value::Null);
}

#[tokio::test]
async fn an_error_answer_is_an_app_error_with_its_details() {
    let (base, _) = start_backend().await;
    let result = call(&proxy(&settings(format!("{base}/error"))), "rooms.join").await;
    let CallResult::AppError { message, details } = result else {
        panic!("expected an app error, got {result:?}");
    };
    assert_eq!(message, "room is full");
    let details: Value = serde_json::from_str(details.expect("details").get()).unwrap();
    assert_eq!(details, json!({"room": "lobby", "max": 3}));

    let result = call(&proxy(&settings(format!("{base}/error-plain"))), "m").await;
    assert_eq!(
        result,
        CallResult::AppError {
            message: "no".into(),
            details: None
        }
    );
}

#[tokio::test]
async fn a_404_is_not_found() {
    let (base, backend) = start_backend().await;
    let proxy = proxy(&settings(format!("{base}/404")));
    assert_eq!(call(&proxy, "nope").await, CallResult::NotFound);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn other_statuses_and_malformed_answers_are_unavailable() {
    let (base, backend) = start_backend().await;
    for mode in [
        "500",
        "redirect",
        "garbage",
        "neither",
        "both",
        "error-no-message",
        "huge",
    ] {
        let proxy = proxy(&settings(format!("{base}/{mode}")));
        assert_eq!(call(&proxy, "m").await, CallResult::Unavailable, "{mode}");
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 7);
    assert_eq!(backend.refused.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_backend_that_hangs_is_unavailable_after_the_timeout() {
    let (base, _) = start_backend().await;
    let mut hang = settings(format!("{base}/hang"));
    hang.rpc_timeout_ms = 200;
    let proxy = proxy(&hang);
    let started = Instant::now();
    assert_eq!(call(&proxy, "m").await, CallResult::Unavailable);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    // Generous: the backend would answer after 30 s.
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap();
    drop(listener);
    let proxy = proxy(&settings(format!("http://{dead}/rpc")));
    assert_eq!(call(&proxy, "m").await, CallResult::Unavailable);
}

#[tokio::test]
async fn methods_outside_rpc_methods_are_not_found_without_a_request() {
    let (base, backend) = start_backend().await;
    let mut only_chat = settings(format!("{base}/null"));
    only_chat.rpc_methods = vec!["chat.*".into(), "rooms.list".into()];
    let proxy = proxy(&only_chat);
    assert_eq!(call(&proxy, "admin.ban").await, CallResult::NotFound);
    assert_eq!(call(&proxy, "rooms.listx").await, CallResult::NotFound);
    assert_eq!(backend.requests.load(Ordering::SeqCst), 0);
    assert!(matches!(call(&proxy, "chat.send").await, CallResult::Ok(_)));
    assert!(matches!(
        call(&proxy, "rooms.list").await,
        CallResult::Ok(_)
    ));
    assert_eq!(backend.requests.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_max_backend_calls_run_at_once() {
    let (base, backend) = start_backend().await;
    let mut bounded = settings(format!("{base}/slow"));
    bounded.max_backend_calls = 2;
    let proxy = Arc::new(proxy(&bounded));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let proxy = proxy.clone();
            tokio::spawn(async move { call(&proxy, "m").await })
        })
        .collect();
    for call in calls {
        assert!(matches!(call.await.unwrap(), CallResult::Ok(_)));
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 20);
    // Never more than 2; and 20 calls of 40 ms each did overlap up to the bound.
    assert_eq!(backend.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(backend.connections.load(Ordering::SeqCst) <= 2 + 1);
}

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let (base, backend) = start_backend().await;
    let proxy = proxy(&settings(format!("{base}/null")));
    for _ in 0..50 {
        assert!(matches!(call(&proxy, "m").await, CallResult::Ok(_)));
    }
    // A 404 and an app error leave the connection usable too.
    let errors = settings(format!("{base}/error"));
    let errors = Proxy::new(&errors, "node-7").unwrap().unwrap();
    for _ in 0..5 {
        assert!(matches!(
            call(&errors, "m").await,
            CallResult::AppError { .. }
        ));
    }
    assert_eq!(backend.requests.load(Ordering::SeqCst), 55);
    let connections = backend.connections.load(Ordering::SeqCst);
    assert!(
        connections <= 2,
        "55 calls from two proxies took {connections} connections"
    );
}

/// Log lines written while the guard lives, on this thread.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn warnings_name_the_method_and_cause_but_no_secret_body_or_userinfo() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (base, _) = start_backend().await;
    let with_userinfo = |mode: &str| base.replace("http://", "http://user:hunter2@") + "/" + mode;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let cases = [
        ("m.status", with_userinfo("500"), "unexpected status"),
        (
            "m.garbage",
            with_userinfo("garbage"),
            "not a JSON object with result",
        ),
        ("m.huge", with_userinfo("huge"), "over 1048576 bytes"),
        (
            "m.refused",
            format!("http://user:hunter2@{dead}/rpc"),
            "connection failed",
        ),
        ("m.hang", with_userinfo("hang"), "timed out after 200 ms"),
    ];
    for (method, url, cause) in cases {
        let mut s = settings(url);
        s.rpc_timeout_ms = 200;
        assert_eq!(call(&proxy(&s), method).await, CallResult::Unavailable);
        let shown = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let line = shown
            .lines()
            .find(|l| {
                l.contains(&format!("method=\"{method}\""))
                    || l.contains(&format!("method={method}"))
            })
            .unwrap_or_else(|| panic!("no line for {method}: {shown}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(cause), "{method}: {line}");
    }
    let shown = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    for never in [SECRET, "hunter2", "<html>", "xxxxxxxx", "sha256=", "acme"] {
        assert!(!shown.contains(never), "{never} in the logs: {shown}");
    }
}
