//! The standalone way in (PROTOCOL §8): the real server forwards its users' calls
//! to an HTTP backend. The backends are the documented examples
//! (`examples/backends/backend.py` and `backend.mjs`, which check the signature),
//! plus a Rust backend that records what it receives and misbehaves on request.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use wsauth_server::config::Config;
use wsauth_test_support::{python, skip};

const RPC_SECRET: &str = "rpc-secret-shared-with-the-backend-0123";

fn proxied(url: String) -> Config {
    let mut config = test_config();
    config.app.rpc_url = Some(url);
    config.app.rpc_secret = Some(RPC_SECRET.into());
    config.app.rpc_timeout_ms = 1_000;
    config
}

/// Starts an example backend with `program script 0` and reads its port.
async fn start_backend(program: &std::path::Path, script: &str, secret: &str) -> (Child, u16) {
    let path = format!("{}/examples/backends/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(program)
        .args([path.as_str(), "0"])
        .env("WSAUTH_RPC_SECRET", secret)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} {script}: {e}", program.display()));
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("the backend prints its port")
        .expect("read");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port line: {line:?}"));
    (child, port)
}

async fn call(c: &mut Client, id: u64, method: &str, data: Value) -> Value {
    c.send(json!({"type": "rpc", "id": id, "method": method, "data": data}))
        .await;
    c.recv().await
}

/// The example backend answers `chat.send` with the sender wsauth vouches for,
/// refuses an empty text with details, and knows no other method.
async fn check_example_backend(program: &std::path::Path, script: &str) {
    let (_backend, port) = start_backend(program, script, RPC_SECRET).await;
    let s = server(proxied(format!("http://127.0.0.1:{port}/rpc"))).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({"team": "red"}))).await;
    assert_eq!(
        call(
            &mut c,
            1,
            "chat.send",
            json!({"text": "hi", "from": "mallory"})
        )
        .await,
        json!({"type": "rpc_result", "id": 1, "data": {"from": "alice", "text": "hi", "team": "red"}}),
        "{script}: the sender is the token's sub, not a field of data"
    );
    assert_eq!(
        call(&mut c, 2, "chat.send", json!({"text": ""})).await,
        json!({"type": "error", "id": 2, "code": "APP_ERROR", "message": "text is required",
               "fatal": false, "details": {"field": "text"}})
    );
    assert_eq!(
        call(&mut c, 3, "chat.delete", json!(null)).await["code"],
        "METHOD_NOT_FOUND"
    );

    // A server with another secret: the backend refuses its calls (401), and the
    // client gets UNAVAILABLE.
    let (_other, port) =
        start_backend(program, script, "a-different-secret-of-32-bytes-or-more").await;
    let s = server(proxied(format!("http://127.0.0.1:{port}/rpc"))).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    assert_eq!(
        call(&mut c, 1, "chat.send", json!({"text": "hi"})).await["code"],
        "UNAVAILABLE"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_backend_answers_calls_it_verified() {
    if !python().exists() && which("python3").is_none() {
        skip(
            "the Python backend test",
            "no python3",
            "WSAUTH_REQUIRE_PYTHON",
        );
        return;
    }
    check_example_backend(&python(), "backend.py").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_example_backend_answers_calls_it_verified() {
    let Some(node) = which("node") else {
        skip(
            "the Node backend test",
            "`node` is not on PATH",
            "WSAUTH_REQUIRE_NODE",
        );
        return;
    };
    check_example_backend(&node, "backend.mjs").await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// A backend that records every body and answers as its route says.
#[derive(Default)]
struct Recorder {
    bodies: Mutex<Vec<String>>,
}

async fn recorder() -> (Arc<Recorder>, SocketAddr) {
    async fn answer(State(r): State<Arc<Recorder>>, body: Bytes) -> (StatusCode, String) {
        let text = String::from_utf8_lossy(&body).into_owned();
        r.bodies.lock().expect("lock").push(text.clone());
        let call: Value = serde_json::from_str(&text).expect("a JSON body");
        match call["method"].as_str().unwrap_or_default() {
            "echo" => (StatusCode::OK, json!({"result": call}).to_string()),
            "hang" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                (StatusCode::OK, "{}".into())
            }
            "fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom".into()),
            _ => (StatusCode::OK, "not json at all".into()),
        }
    }
    let r = Arc::new(Recorder::default());
    let app = Router::new()
        .route("/rpc", post(answer))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (r, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_gets_the_verified_context_and_never_the_token() {
    let (recorded, addr) = recorder().await;
    let mut config = proxied(format!("http://{addr}/rpc"));
    config.node_id = Some("node-a".into());
    let s = server(config).await;
    let t = token("alice", json!({"team": "red", "jti": "j-1"}));
    let (mut c, authed) = Client::authed(s.ws_addr, &t).await;
    let echoed = call(&mut c, 1, "echo", json!({"x": 1})).await;
    assert_eq!(echoed["type"], "rpc_result", "{echoed}");
    let body = &echoed["data"];
    assert_eq!(body["method"], "echo");
    assert_eq!(body["data"], json!({"x": 1}));
    assert_eq!(body["sub"], "alice");
    assert_eq!(body["session_id"], authed["session_id"]);
    assert_eq!(body["node"], "node-a");
    assert_eq!(
        (
            body["claims"]["team"].as_str(),
            body["claims"]["jti"].as_str()
        ),
        (Some("red"), Some("j-1"))
    );
    let refreshed = token("alice", json!({"team": "blue"}));
    c.send(json!({"type": "refresh", "id": 2, "token": refreshed}))
        .await;
    assert_eq!(c.recv().await["type"], "refreshed");
    assert_eq!(
        call(&mut c, 3, "echo", json!(null)).await["data"]["claims"]["team"],
        "blue",
        "claims follow a refresh"
    );
    for body in recorded.bodies.lock().expect("lock").iter() {
        assert!(
            !body.contains(&t) && !body.contains(&refreshed),
            "a token reached the backend: {body}"
        );
        assert!(!body.contains(authed["resume_token"].as_str().expect("resume token")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_hangs_fails_or_talks_nonsense_is_unavailable_for_that_call_only() {
    let (_, addr) = recorder().await;
    let s = server(proxied(format!("http://{addr}/rpc"))).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let started = Instant::now();
    assert_eq!(
        call(&mut c, 1, "hang", json!(null)).await["code"],
        "UNAVAILABLE"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at rpc_timeout_ms"
    );
    assert_eq!(
        call(&mut c, 2, "fail", json!(null)).await["code"],
        "UNAVAILABLE"
    );
    assert_eq!(
        call(&mut c, 3, "garbage", json!(null)).await["code"],
        "UNAVAILABLE"
    );
    assert_eq!(
        call(&mut c, 4, "echo", json!(1)).await["type"],
        "rpc_result",
        "the session goes on"
    );

    // Nobody listening at rpc_url.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let s = server(proxied(format!("http://{dead}/rpc"))).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    let refused = call(&mut c, 1, "echo", json!(null)).await;
    assert_eq!(
        (refused["code"].as_str(), refused["fatal"].as_bool()),
        (Some("UNAVAILABLE"), Some(false))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_handlers_come_first_and_rpc_methods_limits_both() {
    let (recorded, addr) = recorder().await;
    let mut config = proxied(format!("http://{addr}/rpc"));
    config.app.rpc_methods = vec!["echo".into(), "local.*".into()];
    let app = wsauth_server::App::new()
        .handle("local.time", |_, _| async move { Ok(json!("embedded")) })
        .handle("hidden", |_, _| async move { Ok(json!("never")) });
    let s = started_with_app(config, app).await;
    let (mut c, _) = Client::authed(s.ws_addr, &token("alice", json!({}))).await;
    assert_eq!(
        call(&mut c, 1, "local.time", json!(null)).await["data"],
        "embedded"
    );
    assert_eq!(
        call(&mut c, 2, "echo", json!(null)).await["data"]["method"],
        "echo",
        "the backend takes the rest"
    );
    assert_eq!(
        call(&mut c, 3, "hidden", json!(null)).await["code"],
        "METHOD_NOT_FOUND",
        "not in rpc_methods"
    );
    assert_eq!(
        call(&mut c, 4, "other", json!(null)).await["code"],
        "METHOD_NOT_FOUND"
    );
    assert_eq!(
        recorded.bodies.lock().expect("lock").len(),
        1,
        "only `echo` reached the backend"
    );
}
