//! The protocol from another ecosystem: a Python client (`websockets`) against the
//! real server. `cargo xtask test` installs the package (tests/requirements.txt) into
//! `.venv/`; without it the test is skipped with a visible `WSAUTH-SKIPPED` line, or fails
//! when `WSAUTH_REQUIRE_PYTHON` is set (CI sets it).

mod common;

use common::*;
use serde_json::json;
use wsauth_test_support::{python, python_has, skip};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_speaks_the_protocol() {
    if !python_has(&["websockets"]) {
        let why = format!(
            "{} cannot import `websockets` (tests/requirements.txt)",
            python().display()
        );
        skip("the Python client test", &why, "WSAUTH_REQUIRE_PYTHON");
        return;
    }
    let s = server(test_config()).await;
    let good = token("pyuser", json!({"channels": ["general"]}));
    let bad = wsauth_core::jwt::sign_hs256(
        b"not-the-server-secret-but-32-bytes!!",
        &json!({"sub": "x", "exp": now_s() + 60}),
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_client.py"
    );
    let url = format!("ws://{}/ws", s.ws_addr);
    let out = tokio::process::Command::new(python())
        .args([script, &url, &good, &bad])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("python client: all ok"),
        "python client failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_makes_application_calls() {
    use wsauth_server::app::AppError;
    if !python_has(&["websockets"]) {
        let why = format!(
            "{} cannot import `websockets` (tests/requirements.txt)",
            python().display()
        );
        skip("the Python rpc test", &why, "WSAUTH_REQUIRE_PYTHON");
        return;
    }
    let app = wsauth_server::App::new()
        .handle("whoami", |ctx, data| async move {
            Ok(json!({"sub": ctx.sub, "session_id": ctx.session_id, "data": data}))
        })
        .handle("slow.*", |_, data| async move {
            let ms = data.as_u64().unwrap_or(0);
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            Ok(json!(ms))
        })
        .handle("refuse", |_, _| async move {
            Err(AppError::new("room is full").with_details(json!({"capacity": 2})))
        });
    let s = started_with_app(test_config(), app).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/python_rpc.py");
    let url = format!("ws://{}/ws", s.ws_addr);
    let out = tokio::process::Command::new(python())
        .args([script, &url, &token("pyuser", json!({}))])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("python rpc: all ok"),
        "python rpc client failed:\n{stdout}\n{stderr}"
    );
}
