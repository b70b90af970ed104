//! The protocol from another ecosystem: a Python client (`websockets`) against the
//! real server. `cargo xtask test` installs the package (tests/requirements.txt) into
//! `.venv/`; without it the test is skipped with a visible `WSAUTH-SKIPPED` line, or fails
//! when `WSAUTH_REQUIRE_PYTHON` is set (CI sets it).

mod common;

use common::*;
use serde_json::json;
use wsauth_test_support::{python, python_has, skip};

/// Whether `websockets` can be imported; if not, the test is skipped (visibly).
fn python_ready(test: &str) -> bool {
    if python_has(&["websockets"]) {
        return true;
    }
    let why = format!(
        "{} cannot import `websockets` (tests/requirements.txt)",
        python().display()
    );
    skip(test, &why, "WSAUTH_REQUIRE_PYTHON");
    false
}

/// Runs `tests/clients/<script>` with `args` and checks that it ends with `done`.
async fn run_check(script: &str, args: &[&str], done: &str) {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(done),
        "{script} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_speaks_the_protocol() {
    if !python_ready("the Python client test") {
        return;
    }
    let s = server(test_config()).await;
    let good = token("pyuser", json!({"channels": ["general"]}));
    let bad = wsauth_core::jwt::sign_hs256(
        b"not-the-server-secret-but-32-bytes!!",
        &json!({"sub": "x", "exp": now_s() + 60}),
    );
    let url = format!("ws://{}/ws", s.ws_addr);
    run_check(
        "python_client.py",
        &[&url, &good, &bad],
        "python client: all ok",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_makes_application_calls() {
    use wsauth_server::app::AppError;
    if !python_ready("the Python rpc test") {
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
    let url = format!("ws://{}/ws", s.ws_addr);
    let t = token("pyuser", json!({}));
    run_check("python_rpc.py", &[&url, &t], "python rpc: all ok").await;
}
