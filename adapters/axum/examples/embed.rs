//! Embed wsauth in an axum application: the application's own route at `/`,
//! wsauth at `/ws` beside it, with development defaults (a generated HS256
//! secret, sessions in memory). The application answers its users' `chat.send`
//! calls, and its `POST /announce` pushes to everyone in `general`.
//!
//! `cargo run -p wsauth-axum --example embed` (`ADDR=127.0.0.1:3001` to move it),
//! then connect a WebSocket client to `ws://127.0.0.1:3000/ws` with the printed
//! token, as `Authorization: Bearer <token>` or in an `auth` message.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::routing::{get, post};
use serde_json::json;
use wsauth_axum::WsAuth;
use wsauth_server::app::{App, AppError};
use wsauth_server::config::Config;

/// The application's answers to its users' calls.
pub fn calls() -> App {
    App::new().handle("chat.send", |ctx, data| async move {
        let text = data["text"]
            .as_str()
            .ok_or(AppError::new("text is required"))?;
        Ok(json!({ "from": ctx.sub, "text": text }))
    })
}

/// The application: its own routes, and wsauth's beside them.
pub fn app(wsauth: &WsAuth) -> Router {
    let api = wsauth.api();
    let announce = move |text: String| publish_announcement(api.clone(), text);
    Router::new()
        .route("/", get(|| async { "hello from the application\n" }))
        .route("/ws", wsauth.route())
        .route("/announce", post(announce))
}

/// Pushes `text` to every session in `general`, on every node.
async fn publish_announcement(api: wsauth_server::Api, text: String) -> String {
    match api
        .publish("general", &json!({ "announcement": text }))
        .await
    {
        Ok(sessions) => format!("sent to {sessions} sessions\n"),
        Err(e) => format!("not sent: {e}\n"),
    }
}

/// wsauth with development defaults, and the HS256 secret its tokens are signed
/// with (a real application configures its issuer's keys instead).
pub async fn dev_wsauth() -> (WsAuth, String) {
    let mut config = Config::default();
    let secrets = wsauth_server::dev::prepare(&mut config);
    config
        .validate(true)
        .expect("the development configuration");
    let started = WsAuth::from_config_with_app(config, calls()).await;
    let wsauth = started.expect("wsauth starts");
    (wsauth, secrets.hs256_secret)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt().with_env_filter("info").init();
    let (wsauth, secret) = dev_wsauth().await;
    let addr: SocketAddr = std::env::var("ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or(([127, 0, 0, 1], 3000).into());
    // An accept queue and TCP_NODELAY, as the server's listener (your own works too).
    let listener = wsauth_axum::listener(addr, 1024)?;
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let token = wsauth_server::dev::mint(&secret, "alice", 3600, &["general".into()], now_s);
    println!(
        "the application: http://{addr}/\nwsauth: ws://{addr}/ws\na token for alice:\n{token}"
    );
    // The peer address feeds wsauth's per-IP cap of unauthenticated connections.
    let service = app(&wsauth).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    // Upgraded connections are wsauth's: closed with 1001, sessions resumable.
    wsauth.shutdown().await;
    Ok(())
}
