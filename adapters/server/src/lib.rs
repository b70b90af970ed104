//! `wsauth-server`: the tokio-tungstenite adapter that runs the wsauth protocol
//! from real sockets. It holds no protocol decision of its own: it moves bytes,
//! owns timers and sockets, and answers the core's requests (verifier, store).
//!
//! Run it as the `wsauth-server` binary (`docs/configuration.md`), or start the same
//! server inside your own tokio program: [`start`], or [`start_with_app`] with your
//! handlers for your users' calls ([`App`]). The admin API, the metrics and the
//! dashboard listen on a second address. [`KeySource`] and [`TokenVerifier`] plug in
//! identity providers; `wsauth-axum` serves the same connections on an axum route.
//!
//! ```
//! use futures_util::{SinkExt, StreamExt};
//! use tokio_tungstenite::tungstenite::Message;
//! use wsauth_server::config::Config;
//!
//! # #[tokio::main]
//! # async fn main() {
//! let secret = "an example secret of at least 32 bytes";
//! let mut config = Config {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     admin_listen: "127.0.0.1:0".parse().unwrap(),
//!     ..Config::default()
//! };
//! config.jwt.hs256_secret = Some(secret.to_owned());
//! let server = wsauth_server::start(config, None).await.expect("the server starts");
//!
//! // A client: the token comes from your login service; here it is signed locally.
//! let exp = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH)
//!     .unwrap()
//!     .as_secs()
//!     + 3600;
//! let claims = serde_json::json!({ "sub": "alice", "exp": exp });
//! let token = wsauth_core::jwt::sign_hs256(secret.as_bytes(), &claims);
//! let url = format!("ws://{}/ws", server.ws_addr);
//! let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
//! let auth = serde_json::json!({ "type": "auth", "id": 1, "token": token });
//! ws.send(Message::text(auth.to_string())).await.unwrap();
//! let Some(Ok(Message::Text(reply))) = ws.next().await else {
//!     panic!("an answer");
//! };
//! assert!(reply.starts_with(r#"{"type":"authenticated""#), "{reply}");
//!
//! // Connections are closed 1001 with their sessions resumable.
//! server.shutdown().await;
//! # }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod conn;
pub mod dev;
pub mod driver;
pub mod fdlimit;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod handshake;
pub mod introspect;
pub mod keys;
pub mod limits;
pub mod logging;
pub mod meter;
pub mod metrics;
pub mod outbound;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod state;
pub mod systemd;
pub mod tls;
pub mod verify;

pub use api::{Api, ApiError};
pub use app::App;
pub use server::{ServerHandle, StartError, start, start_with_app};
pub use verify::{KeySource, TokenVerifier, VerifyFuture};
