//! The chat page in a real browser with the real client (`clients/js/dist`): the
//! chat runs in-process with 6-second tokens, a TCP proxy in front of its
//! WebSocket can drop every connection, and `tests/browser/chat_check.py` drives
//! Debian's headless Chromium through Playwright as alice and bob.
//!
//! Skipped (with a visible `WSAUTH-SKIPPED` line) when `/usr/bin/chromium`, the
//! Python `playwright` module or the built client is missing, unless
//! `WSAUTH_REQUIRE_BROWSER` is set.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use wsauth_chat::{ChatConfig, default_client_dir, serve};
use wsauth_test_support::{python, python_has, skip};

const CHROMIUM: &str = "/usr/bin/chromium";
const TEST: &str = "the chat browser test";
const TOKEN_TTL_S: u64 = 6;
const LEEWAY_S: u64 = 1;

/// What is missing to run the test, if anything.
fn missing() -> Option<String> {
    let client = default_client_dir().join("index.js");
    if !Path::new(CHROMIUM).exists() {
        Some(format!(
            "{CHROMIUM} is not installed (`apt-get install chromium`)"
        ))
    } else if !python_has(&["playwright.async_api"]) {
        Some(format!(
            "{} cannot import `playwright` (tests/requirements.txt)",
            python().display()
        ))
    } else if !client.is_file() {
        Some(format!(
            "{} is missing: run `npm ci` in clients/js",
            client.display()
        ))
    } else {
        None
    }
}

/// `<target dir>/chat.png`.
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("chat.png")
}

/// A TCP proxy to `upstream` that drops every connection it carries when
/// anything connects to its control address (and answers `cut <n>`).
struct Proxy {
    addr: SocketAddr,
    control: SocketAddr,
}

async fn proxy(upstream: SocketAddr) -> Proxy {
    let front = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let control = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = front.local_addr().expect("addr");
    let control_addr = control.local_addr().expect("addr");
    let carried: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
    let carrying = carried.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = front.accept().await {
            let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let pipe = tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
            let mut carrying = carrying.lock().expect("lock");
            carrying.retain(|c| !c.is_finished());
            carrying.push(pipe.abort_handle());
        }
    });
    tokio::spawn(async move {
        while let Ok((mut asker, _)) = control.accept().await {
            // Dropping a pipe drops both of its sockets: no close frame, as when
            // a network fails.
            let cut = {
                let mut carried = carried.lock().expect("lock");
                let open = carried.iter().filter(|c| !c.is_finished()).count();
                carried.drain(..).for_each(|c| c.abort());
                open
            };
            let _ = asker.write_all(format!("cut {cut}\n").as_bytes()).await;
        }
    });
    Proxy {
        addr,
        control: control_addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_people_chat_through_a_dropped_connection_in_a_browser() {
    if let Some(why) = missing() {
        skip(TEST, &why, "WSAUTH_REQUIRE_BROWSER");
        return;
    }
    let mut config = ChatConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token_ttl_s: TOKEN_TTL_S,
        ..ChatConfig::default()
    };
    // Without a refresh a session would end 1 s after its token: the test
    // outlives that.
    config.wsauth.jwt.leeway_s = LEEWAY_S;
    let running = serve(config).await.expect("the chat starts");
    let proxy = proxy(running.addr()).await;
    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/chat_check.py");
    let args = [
        script.to_owned(),
        "--url".into(),
        running.url(),
        "--ws".into(),
        format!("ws://{}/ws", proxy.addr),
        "--cut".into(),
        proxy.control.to_string(),
        "--outlast".into(),
        (TOKEN_TTL_S + LEEWAY_S + 3).to_string(),
        "--screenshot".into(),
        shot.display().to_string(),
    ];
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .args(&args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the chat check ends within 120 s")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("chat check: all ok"),
        "the chat check failed:\n{stdout}\n{stderr}"
    );

    // The first token of each came from signing in; later ones from getToken,
    // when the client refreshed.
    for name in ["alice", "bob"] {
        assert!(
            running.logins(name) >= 2,
            "{name}'s page never asked for a second token ({} logins)",
            running.logins(name)
        );
    }
    let lobby = running.chat().last("lobby", 100);
    assert_eq!(
        lobby.len(),
        7,
        "the lobby keeps the conversation: {lobby:?}"
    );
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    println!("chat screenshot: {}", shot.display());
    running.shutdown().await;
}
