//! The operator dashboard in a real browser: the server runs in-process and
//! `tests/browser/dashboard_check.py` drives Debian's headless Chromium through
//! Playwright against it while WebSocket clients authenticate (and one fails).
//!
//! Skipped (with a visible `WSAUTH-SKIPPED` line) when `/usr/bin/chromium` or the Python
//! `playwright` module is missing, unless `WSAUTH_REQUIRE_BROWSER` is set (CI sets it).
//! `cargo xtask test` installs both.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{ADMIN_KEY, now_s, server, test_config, token};
use serde_json::json;
use wsauth_test_support::{python, python_has, skip};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether the browser and Playwright are installed; reports the test as skipped when
/// not. With `WSAUTH_REQUIRE_BROWSER` set, a missing one is a failure.
fn browser_available() -> bool {
    let missing = if !Path::new(CHROMIUM).exists() {
        Some(format!(
            "{CHROMIUM} is not installed (`apt-get install chromium`)"
        ))
    } else if !python_has(&["playwright.async_api", "websockets"]) {
        Some(format!(
            "{} cannot import `playwright` and `websockets` (tests/requirements.txt)",
            python().display()
        ))
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) => {
            skip("the dashboard browser test", &why, "WSAUTH_REQUIRE_BROWSER");
            false
        }
    }
}

/// `<target dir>/dashboard.png`: next to the build, where CI can pick it up.
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("dashboard.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_figures_in_a_browser() {
    if !browser_available() {
        return;
    }
    let s = server(test_config()).await;
    let tokens: Vec<String> = (0..4)
        .map(|i| token(&format!("dash-user-{i}"), json!({})))
        .collect();
    let expired = token(
        "dash-late",
        json!({"exp": now_s() - 600, "iat": now_s() - 4200}),
    );
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/browser/dashboard_check.py"
    );
    let url = format!("http://{}/dashboard", s.admin_addr);
    let ws = format!("ws://{}/ws", s.ws_addr);
    let mut args = vec![
        script.to_owned(),
        "--url".into(),
        url,
        "--key".into(),
        ADMIN_KEY.into(),
        "--ws".into(),
        ws,
        "--bad-token".into(),
        expired,
        "--screenshot".into(),
        shot.display().to_string(),
    ];
    args.extend(tokens);
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(90),
        tokio::process::Command::new(python())
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the dashboard check ends within 90 s")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("dashboard check: all ok"),
        "the dashboard check failed:\n{stdout}\n{stderr}"
    );

    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    println!("dashboard screenshot: {}", shot.display());
    s.shutdown().await;
}
